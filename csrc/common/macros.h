// Shared by every C++ and CUDA source: export macro, host/device qualifiers, the C ABI's version and dtype codes.
#pragma once

#include <cstdint>

#define JMIPOSE_API extern "C" __attribute__((visibility("default")))

#if defined(__CUDACC__)
#define JMIPOSE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define JMIPOSE_HOST_DEVICE inline
#endif

// Version of the C ABI of both libraries (jmipose_{cpu,cuda}_abi_version() return it); the ABI_VERSION
// of jmipose/ops/_backends.py must equal it, or Python refuses the library.
#define JMIPOSE_ABI_VERSION 1

namespace jmipose {

JMIPOSE_HOST_DEVICE constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// dtype codes shared with jmipose/ops/_backends.py (DTYPE_CODES); keep the two in sync.
enum DType : int32_t { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

}  // namespace jmipose
