// CUDA helpers shared by the kernels: device guard, error checks, float conversions for half types.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/error.h"
#include "common/macros.h"

namespace jmipose {

// Makes `device` current for the lifetime of the guard.  The static cudart inside this library keeps
// its own current device per thread, independent of torch's, so every entry point sets it.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    cudaGetDevice(&previous_);
    ok_ = cudaSetDevice(device) == cudaSuccess;
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  bool ok() const { return ok_; }

 private:
  int previous_ = 0;
  bool ok_ = false;
};

inline int check_launch(const char* what) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return fail("%s: %s", what, cudaGetErrorString(err));
  return 0;
}

template <typename T>
__device__ __forceinline__ float to_float(T v) { return static_cast<float>(v); }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v) { return static_cast<T>(v); }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

}  // namespace jmipose

// Dispatches the body (which uses `scalar_t`) over the ABI dtype code; unsupported dtypes fail.
#define JMIPOSE_CUDA_DISPATCH(DTYPE, NAME, ...)                                         \
  switch (DTYPE) {                                                                      \
    case jmipose::kFloat32: { using scalar_t = float; __VA_ARGS__; break; }             \
    case jmipose::kFloat64: { using scalar_t = double; __VA_ARGS__; break; }            \
    case jmipose::kFloat16: { using scalar_t = __half; __VA_ARGS__; break; }            \
    case jmipose::kBFloat16: { using scalar_t = __nv_bfloat16; __VA_ARGS__; break; }    \
    default: return jmipose::fail("%s: unsupported dtype code %d", NAME, (int)(DTYPE)); \
  }
