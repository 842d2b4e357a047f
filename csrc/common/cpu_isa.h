// The one CPU multi-versioning scheme of the C++ backends: every op's hot kernels are compiled twice,
// for AVX2+FMA (x86-64-v3) and for the portable baseline, and the driver picks one at run time.  The
// default build stays portable (no -march), so a wheel built on one machine runs on any x86-64.
//
// How: an op's cpu.cpp names its kernel header and includes common/cpu_isa_kernels.h, which includes
// that header (with common/cpu_simd.h and common/cpu_gemm.h before it) into two namespaces, once
// inside `#pragma GCC target("avx2,fma")`:
//
//     #define JMIPOSE_CPU_KERNELS_NAMESPACE jmipose::jrg
//     #define JMIPOSE_CPU_KERNELS_HEADER "joint_region_gather/cpu_kernels.h"
//     #include "common/cpu_isa_kernels.h"
//     ...
//     return with_cpu_kernels([&](auto kernels) { return forward<T, decltype(kernels)>(...); });
//
// The header defines a struct `Kernels` (static member templates, GemmKernels' gemm among them);
// with_cpu_kernels calls the body with avx2::Kernels when the CPU has AVX2 and FMA, else with
// portable::Kernels, and the OpenMP drivers are templates over that type.
//
// Why this scheme and not `target_clones` on the kernel functions (op A's former scheme):
// (1) GCC lowers the generic vector code of the always-inline helpers a clone calls for the baseline
//     before it inlines them, so a clone can get baseline shuffles inside AVX2 code (the attention
//     kernels got broadcasts built from four vinsertps); a target region compiles every helper,
//     lambda and template in it for AVX2 from the start.
// (2) The same code under the sanitizers: the clones were left out of the sanitized build, whose job
//     therefore tested only the baseline kernels of op A; a target region needs no ifunc, and the
//     sanitizer job runs the AVX2 kernels that users run.
// (3) Nothing to hide: GCC exported the ifunc symbols of cloned templates despite -fvisibility=hidden
//     unless they sat in an anonymous namespace.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define JMIPOSE_CPU_AVX2 1
#endif

// Helpers of the kernels that must be inlined into them (vector arguments pass only between these),
// and the same for a lambda.
#define JMIPOSE_CPU_INLINE inline __attribute__((always_inline))
#define JMIPOSE_CPU_LAMBDA_INLINE __attribute__((always_inline))

namespace jmipose {
namespace cpu {

// Vectors are 32 bytes in both builds (one ymm register with AVX2, two xmm registers without), so the
// drivers can size and pad buffers without knowing which build runs.
constexpr int kVectorBytes = 32;
template <typename T>
constexpr int kLanes = kVectorBytes / static_cast<int>(sizeof(T));

// GEMM register tile (cpu_gemm.h): kGemmRows rows x kGemmCols<T> columns (two vectors) = 12
// accumulators, plus two B vectors and one broadcast: AVX2's 16 ymm registers.
constexpr int kGemmRows = 6;
template <typename T>
constexpr int kGemmCols = 2 * kLanes<T>;

inline bool has_avx2_fma() {
#if defined(JMIPOSE_CPU_AVX2)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace cpu
}  // namespace jmipose
