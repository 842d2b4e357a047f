// csrc/joint_motion_attention/cuda.cu for the CPU emulation (build.py compiles this file in place of the
// .cu when it exists): the two things the runtime headers cannot give it.  Its kernels declare their
// dynamic shared memory as `extern __shared__ unsigned char shared_raw[]` in jmipose::attention_cuda,
// defined here; and under JMIPOSE_CUDA_EMULATION its tensor-core step calls emulated_mma_16x8x16<T>,
// declared in csrc/joint_motion_attention/cuda_tiles.cuh, which forwards to the PTX-layout mma.
#define JMIPOSE_EMULATION_EXTERN_SHARED
#include "joint_motion_attention/cuda.cu"
#include "mma_emulation.h"

namespace jmipose {
namespace attention_cuda {

alignas(16) unsigned char shared_raw[256 * 1024];
const bool shared_raw_registered = emu_register_dynamic_shared(shared_raw, sizeof(shared_raw));

template <typename T>
void emulated_mma_16x8x16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  emu_mma_m16n8k16<T>(c, a, b);
}

}  // namespace attention_cuda
}  // namespace jmipose
