// CPU emulation of __half (IEEE binary16) with round-to-nearest-even conversions.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

struct __half {
  uint16_t bits;
};

inline float __half2float(__half h) {
  const int exponent = (h.bits >> 10) & 0x1f;
  const int mantissa = h.bits & 0x3ff;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    magnitude = mantissa ? NAN : INFINITY;
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa + 1024), exponent - 25);
  }
  return (h.bits & 0x8000) ? -magnitude : magnitude;
}

inline __half __float2half_rn(float value) {
  const uint16_t sign = std::signbit(value) ? 0x8000 : 0;
  if (std::isnan(value)) return {0x7e00};
  const double magnitude = std::fabs(static_cast<double>(value));
  if (magnitude >= 65520.0) return {static_cast<uint16_t>(sign | 0x7c00)};
  if (magnitude < std::ldexp(1.0, -14)) {  // subnormal: multiples of 2^-24 (rounding up may reach 2^-14)
    return {static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(std::ldexp(magnitude, 24))))};
  }
  int exponent;
  const double fraction = std::frexp(magnitude, &exponent);  // magnitude = fraction * 2^exponent, [0.5, 1)
  double significand = std::nearbyint(fraction * 2048.0);     // 11 significant bits
  if (significand == 2048.0) {
    significand = 1024.0;
    ++exponent;
  }
  const int biased = exponent - 1 + 15;
  if (biased >= 31) return {static_cast<uint16_t>(sign | 0x7c00)};
  return {static_cast<uint16_t>(sign | (biased << 10) | (static_cast<int>(significand) - 1024))};
}
