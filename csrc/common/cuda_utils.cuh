// CUDA helpers shared by both ops: device guard, launch and error checks, dtype dispatch, float conversions
// for the half types.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>

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

// kernel<<<grid, threads, shared, stream>>>(args...) through cudaLaunchKernel: the same launch, and the
// source stays plain C++ (tests/cuda_emulation compiles it on the CPU against an emulation of the
// runtime).  Returns 0, or fail("<what>: ...") for a launch the runtime refuses.
template <typename... Params, typename... Args>
int launch_kernel(void (*kernel)(Params...), dim3 grid, int threads, size_t shared, cudaStream_t stream,
                  const char* what, Args... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "launch: one argument per kernel parameter");
  std::tuple<Params...> params(static_cast<Params>(args)...);
  const cudaError_t err = std::apply(
      [&](auto&... param) {
        void* pointers[] = {static_cast<void*>(&param)...};
        return cudaLaunchKernel(kernel, grid, dim3(static_cast<unsigned>(threads)), pointers, shared, stream);
      },
      params);
  if (err != cudaSuccess) {
    cudaGetLastError();  // consumed here, so the next launch's check_launch does not report it again
    return fail("%s: launch failed: %s", what, cudaGetErrorString(err));
  }
  return check_launch(what);
}

// The dtypes the CUDA backends compute in: float32, float16 and bfloat16 (float32 arithmetic).
inline int check_cuda_dtype(int32_t dtype, const char* where) {
  if (dtype == kFloat32 || dtype == kFloat16 || dtype == kBFloat16) return 0;
  return fail("%s: unsupported dtype code %d: not supported on CUDA (float32, float16, bfloat16; float64 runs on cpp "
              "or reference)", where, (int)dtype);
}

// body(T{}) with T the storage type of a CUDA dtype code (float, __half or __nv_bfloat16); fails for any
// other code.
template <typename Body>
int dispatch_cuda_dtype(int32_t dtype, const char* where, Body&& body) {
  if (dtype == kFloat32) return body(float{});
  if (dtype == kFloat16) return body(__half{});
  if (dtype == kBFloat16) return body(__nv_bfloat16{});
  return check_cuda_dtype(dtype, where);
}

// float <-> the storage types (float, __half, __nv_bfloat16), rounding to nearest even.
template <typename T>
__device__ __forceinline__ float to_float(T v) {
  if constexpr (std::is_same<T, __half>::value) return __half2float(v);
  else if constexpr (std::is_same<T, __nv_bfloat16>::value) return __bfloat162float(v);
  else return static_cast<float>(v);
}

template <typename T>
__device__ __forceinline__ T from_float(float v) {
  if constexpr (std::is_same<T, __half>::value) return __float2half_rn(v);
  else if constexpr (std::is_same<T, __nv_bfloat16>::value) return __float2bfloat16_rn(v);
  else return static_cast<T>(v);
}

}  // namespace jmipose
