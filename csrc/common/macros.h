// Shared by every C++ and CUDA source: export macro, host/device qualifiers, the dtype codes of the C ABI.
#pragma once

#include <cstdint>

#define JMIPOSE_API extern "C" __attribute__((visibility("default")))

#if defined(__CUDACC__)
#define JMIPOSE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define JMIPOSE_HOST_DEVICE inline
#endif

namespace jmipose {

// dtype codes shared with jmipose/ops/_backends.py (DTYPE_CODES); keep the two in sync.
enum DType : int32_t { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

}  // namespace jmipose
