// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.f32 for the CPU emulation: every lane deposits its
// fragments, each lane rebuilds A (16x16), B (16x8) and C (16x8) with the layouts of the PTX ISA
// ("Matrix Fragments for mma.m16n8k16 with floating point type": groupID = lane >> 2,
// threadID_in_group = lane % 4; A: row groupID (+8 for a2, a3, a6, a7), col 2 threadID_in_group + (i & 1)
// (+8 for a4..a7); B: row 2 threadID_in_group + (i & 1) (+8 for b2, b3), col groupID; C: row groupID
// (+8 for c2, c3), col 2 threadID_in_group + (i & 1); two 16-bit elements per register, the lower index
// in the low half) and returns its part of D = A B + C.
// An op whose source calls mma.sync under JMIPOSE_CUDA_EMULATION forwards to emu_mma_m16n8k16<T>.
#pragma once

#include <cstdint>
#include <cstring>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"

inline float emu_to_float(__half value) { return __half2float(value); }
inline float emu_to_float(__nv_bfloat16 value) { return __bfloat162float(value); }

template <typename T>
float emu_half_to_float(uint16_t bits) {
  T value;
  std::memcpy(&value, &bits, 2);
  return emu_to_float(value);
}

template <typename T>
void emu_mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  uint32_t* all_a = emu_block->mma_a.data() + warp * 32 * 4;
  uint32_t* all_b = emu_block->mma_b.data() + warp * 32 * 2;
  float* all_c = emu_block->mma_c.data() + warp * 32 * 4;
  for (int i = 0; i < 4; ++i) { all_a[lane * 4 + i] = a[i]; all_c[lane * 4 + i] = c[i]; }
  for (int i = 0; i < 2; ++i) all_b[lane * 2 + i] = b[i];
  __syncwarp();
  float A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const int group = l >> 2, tig = l % 4;
    for (int i = 0; i < 8; ++i) {  // a_i: register i / 2, half i % 2
      const uint32_t reg = all_a[l * 4 + i / 2];
      const uint16_t bits = (i % 2) ? (reg >> 16) : (reg & 0xffff);
      const int row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
      const int col = tig * 2 + (i & 1) + (i >= 4 ? 8 : 0);
      A[row][col] = emu_half_to_float<T>(bits);
    }
    for (int i = 0; i < 4; ++i) {  // b_i
      const uint32_t reg = all_b[l * 2 + i / 2];
      const uint16_t bits = (i % 2) ? (reg >> 16) : (reg & 0xffff);
      const int row = tig * 2 + (i & 1) + (i >= 2 ? 8 : 0);
      B[row][group] = emu_half_to_float<T>(bits);
    }
    for (int i = 0; i < 4; ++i) {  // c_i
      const int row = i < 2 ? group : group + 8;
      C[row][tig * 2 + (i & 1)] = all_c[l * 4 + i];
    }
  }
  __syncwarp();
  const int group = lane >> 2, tig = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = i < 2 ? group : group + 8, col = tig * 2 + (i & 1);
    double sum = C[row][col];
    for (int k = 0; k < 16; ++k) sum += static_cast<double>(A[row][k]) * B[k][col];
    c[i] = static_cast<float>(sum);
  }
}
