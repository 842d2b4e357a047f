#include <cstdint>

#include "common/error.h"
#include "common/macros.h"
#include "scale_add/math.h"

namespace {

template <typename T>
void scale_add_cpu(const T* a, const T* b, T* out, int64_t n, T scale) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) out[i] = jmipose::scale_add_value(a[i], b[i], scale);
}

}  // namespace

// a, b, out: contiguous arrays of n elements of `dtype` (float32 or float64).
JMIPOSE_API int jmipose_scale_add_cpu(const void* a, const void* b, void* out, int64_t n, double scale,
                                      int32_t dtype) {
  return jmipose::guarded("scale_add (cpp)", [&]() -> int {
    if (n < 0) return jmipose::fail("scale_add (cpp): n must be >= 0, got %lld", (long long)n);
    switch (dtype) {
      case jmipose::kFloat32:
        scale_add_cpu(static_cast<const float*>(a), static_cast<const float*>(b), static_cast<float*>(out), n,
                      static_cast<float>(scale));
        return 0;
      case jmipose::kFloat64:
        scale_add_cpu(static_cast<const double*>(a), static_cast<const double*>(b), static_cast<double*>(out), n,
                      scale);
        return 0;
      default:
        return jmipose::fail("scale_add (cpp): dtype code %d is not supported on the CPU (float32, float64)", dtype);
    }
  });
}
