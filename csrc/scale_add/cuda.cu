#include <cstdint>

#include "common/cuda_utils.cuh"
#include "scale_add/math.h"

namespace {

template <typename T>
__global__ void scale_add_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, int64_t n,
                                 float scale) {
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (; i < n; i += step) {
    float value = jmipose::scale_add_value(jmipose::to_float(a[i]), jmipose::to_float(b[i]), scale);
    out[i] = jmipose::from_float<T>(value);
  }
}

template <>
__global__ void scale_add_kernel<double>(const double* __restrict__ a, const double* __restrict__ b,
                                         double* __restrict__ out, int64_t n, float scale) {
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (; i < n; i += step) out[i] = jmipose::scale_add_value(a[i], b[i], static_cast<double>(scale));
}

}  // namespace

JMIPOSE_API int jmipose_scale_add_cuda(const void* a, const void* b, void* out, int64_t n, double scale,
                                       int32_t dtype, int32_t device, void* stream) {
  jmipose::DeviceGuard guard(device);
  if (!guard.ok()) return jmipose::fail("scale_add (cuda): cannot select device %d", device);
  if (n == 0) return 0;
  const int threads = 256;
  const unsigned int blocks = jmipose::ceil_div(n, threads) < 65535u ? jmipose::ceil_div(n, threads) : 65535u;
  auto cuda_stream = static_cast<cudaStream_t>(stream);
  JMIPOSE_CUDA_DISPATCH(dtype, "scale_add (cuda)", {
    scale_add_kernel<scalar_t><<<blocks, threads, 0, cuda_stream>>>(
        static_cast<const scalar_t*>(a), static_cast<const scalar_t*>(b), static_cast<scalar_t*>(out), n,
        static_cast<float>(scale));
  });
  return jmipose::check_launch("scale_add (cuda)");
}
