// The argument checks of every C ABI entry point (both ops, CPU and CUDA).  The Python wrapper checks
// first, with friendlier messages; these make the library itself safe for any other caller: a bad
// size, a NULL pointer or an unsupported dtype returns a status and a message that names the argument,
// never a crash.  Each check returns 0, or fail(...) (common/error.h).
#pragma once

#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <string>

#include "common/error.h"
#include "common/macros.h"

namespace jmipose {
namespace abi {

struct Size {
  const char* name;
  int64_t value;
};

struct BoundedSize {
  const char* name;
  int64_t value, least, most;
};

struct Pointer {
  const char* name;
  const void* value;
};

// A bound as the messages print it: 2^k for the powers of two from 2^10 up, else the number.
inline std::string bound_text(int64_t value) {
  if (value >= 1024 && (value & (value - 1)) == 0) return "2^" + std::to_string(__builtin_ctzll(value));
  return std::to_string(value);
}

// Every size >= 0: "<where>: batch must be >= 0, got -1" for one size, else
// "<where>: sizes must be >= 0, got batch=1 heads=-2 ...".
inline int check_non_negative(const char* where, std::initializer_list<Size> sizes) {
  for (const Size& size : sizes) {
    if (size.value >= 0) continue;
    if (sizes.size() == 1) return fail("%s: %s must be >= 0, got %lld", where, size.name, (long long)size.value);
    std::string listed;
    for (const Size& s : sizes) {
      listed += std::string(listed.empty() ? "" : " ") + s.name + "=" + std::to_string(s.value);
    }
    return fail("%s: sizes must be >= 0, got %s", where, listed.c_str());
  }
  return 0;
}

// least <= value <= most for each: "<where>: stride_h must be in 1..2^30, got 0".
inline int check_ranges(const char* where, std::initializer_list<BoundedSize> sizes) {
  for (const BoundedSize& size : sizes) {
    if (size.value >= size.least && size.value <= size.most) continue;
    return fail("%s: %s must be in %s..%s, got %lld", where, size.name, bound_text(size.least).c_str(),
                bound_text(size.most).c_str(), (long long)size.value);
  }
  return 0;
}

// The product of `factors` (sizes >= 0) at most `limit`, without overflowing on the way:
// "<where>: the elements of <what> (a x b x ...) overflow the limit of 2^52".
inline int check_elements(const char* where, const char* what, std::initializer_list<int64_t> factors,
                          int64_t limit) {
  int64_t total = 1;
  bool overflow = false;
  for (int64_t f : factors) overflow = overflow || __builtin_mul_overflow(total, f, &total) || total > limit;
  if (!overflow) return 0;
  std::string product;
  for (int64_t f : factors) product += (product.empty() ? "" : " x ") + std::to_string(f);
  return fail("%s: the elements of %s (%s) overflow the limit of %s", where, what, product.c_str(),
              bound_text(limit).c_str());
}

// No pointer NULL: "<where>: weight is NULL (input, offset, weight and output must not be NULL)".
inline int check_not_null(const char* where, std::initializer_list<Pointer> pointers) {
  for (const Pointer& pointer : pointers) {
    if (pointer.value != nullptr) continue;
    std::string listed;
    size_t i = 0;
    for (const Pointer& p : pointers) {
      listed += std::string(i == 0 ? "" : (i + 1 == pointers.size() ? " and " : ", ")) + p.name;
      ++i;
    }
    return fail("%s: %s is NULL (%s must not be NULL)", where, pointer.name, listed.c_str());
  }
  return 0;
}

// The dtypes the CPU backends compute in: float32 and float64.
inline int check_cpu_dtype(int32_t dtype, const char* where) {
  if (dtype == kFloat32 || dtype == kFloat64) return 0;
  return fail("%s: dtype code %d is not supported on the CPU (float32, float64)", where, (int)dtype);
}

// body(T{}) with T the C++ type of a CPU dtype code (float or double); fails for any other code.
template <typename Body>
int dispatch_cpu_dtype(int32_t dtype, const char* where, Body&& body) {
  if (dtype == kFloat32) return body(float{});
  if (dtype == kFloat64) return body(double{});
  return check_cpu_dtype(dtype, where);
}

}  // namespace abi
}  // namespace jmipose
