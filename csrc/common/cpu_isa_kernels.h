// Compiles an op's CPU kernel header twice (see common/cpu_isa.h): into
// JMIPOSE_CPU_KERNELS_NAMESPACE::(anonymous)::avx2 under `#pragma GCC target("avx2,fma")` (x86-64 GCC
// only) and into ...::portable for the baseline, each preceded by the SIMD wrapper and the GEMM, and
// defines with_cpu_kernels(body) and dispatch_cpu(dtype, where, body) in
// JMIPOSE_CPU_KERNELS_NAMESPACE::(anonymous).
//
// Include it once per translation unit, at namespace scope, after defining
//   JMIPOSE_CPU_KERNELS_NAMESPACE  the op's namespace, e.g. jmipose::jrg (its names are visible to the kernels)
//   JMIPOSE_CPU_KERNELS_HEADER     the op's kernel header, e.g. "joint_region_gather/cpu_kernels.h"
// and after every header the kernels use: the included files have no include guards and include
// nothing themselves (an #include inside a namespace would put the standard library into it).
#if !defined(JMIPOSE_CPU_KERNELS_NAMESPACE) || !defined(JMIPOSE_CPU_KERNELS_HEADER)
#error "define JMIPOSE_CPU_KERNELS_NAMESPACE and JMIPOSE_CPU_KERNELS_HEADER before including common/cpu_isa_kernels.h"
#endif

#include "common/abi_check.h"
#include "common/cpu_isa.h"

// 32-byte vectors are passed and returned only between always-inline helpers, so GCC's note that such
// arguments have another ABI without AVX does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

#if defined(JMIPOSE_CPU_AVX2)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace JMIPOSE_CPU_KERNELS_NAMESPACE {
namespace {
namespace avx2 {
#include "common/cpu_simd.h"
#include "common/cpu_gemm.h"
#include JMIPOSE_CPU_KERNELS_HEADER
}  // namespace avx2
}  // namespace
}  // namespace JMIPOSE_CPU_KERNELS_NAMESPACE
#pragma GCC pop_options
#endif

namespace JMIPOSE_CPU_KERNELS_NAMESPACE {
namespace {
namespace portable {
#include "common/cpu_simd.h"
#include "common/cpu_gemm.h"
#include JMIPOSE_CPU_KERNELS_HEADER
}  // namespace portable

// body(avx2::Kernels{}) on a CPU with AVX2 and FMA, else body(portable::Kernels{}).
template <typename Body>
decltype(auto) with_cpu_kernels(Body&& body) {
#if defined(JMIPOSE_CPU_AVX2)
  if (::jmipose::cpu::has_avx2_fma()) return body(avx2::Kernels{});
#endif
  return body(portable::Kernels{});
}

// body(T{}, kernels): T the C++ type of a CPU dtype code (float or double; any other code fails, see
// common/abi_check.h), kernels as for with_cpu_kernels.
template <typename Body>
int dispatch_cpu(int32_t dtype, const char* where, Body&& body) {
  return ::jmipose::abi::dispatch_cpu_dtype(dtype, where, [&](auto zero) {
    return with_cpu_kernels([&](auto kernels) { return body(zero, kernels); });
  });
}

}  // namespace
}  // namespace JMIPOSE_CPU_KERNELS_NAMESPACE

#undef JMIPOSE_CPU_KERNELS_NAMESPACE
#undef JMIPOSE_CPU_KERNELS_HEADER
