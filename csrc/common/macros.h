// Shared by every C++ and CUDA source: export macro, host/device qualifiers, the dtype codes of the C ABI.
#pragma once

#include <cstdint>

#define JMIPOSE_API extern "C" __attribute__((visibility("default")))

#if defined(__CUDACC__)
#define JMIPOSE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define JMIPOSE_HOST_DEVICE inline
#endif

// Hot CPU loops (micro-kernels without OpenMP regions inside) can be compiled twice, for AVX2+FMA
// (x86-64-v3) and for the portable baseline, with the best one picked at load time.  The default
// build stays portable (no -march), so a wheel built on one machine runs on any x86-64.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__) && \
    !defined(__SANITIZE_ADDRESS__)
#define JMIPOSE_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define JMIPOSE_CPU_CLONES
#endif

namespace jmipose {

// dtype codes shared with jmipose/ops/_backends.py (DTYPE_CODES); keep the two in sync.
enum DType : int32_t { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

}  // namespace jmipose
