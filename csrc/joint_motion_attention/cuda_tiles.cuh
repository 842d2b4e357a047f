// joint_motion_attention (CUDA): the tile-level building blocks of the kernels in cuda.cu.
//
// Every warp owns 16 rows of the block it works on and holds its matrices in the register layout of
// the tensor-core instruction mma.sync.m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"): with
// g = lane / 4 and t = lane % 4, an accumulator "n-tile" of 16 rows x 8 columns is four floats per
// thread,
//     c[0] = (row g, col 2t)        c[1] = (row g, col 2t + 1)
//     c[2] = (row g + 8, col 2t)    c[3] = (row g + 8, col 2t + 1)
// Two primitives cover all products of the forward and backward passes:
//     gemm_abt: acc (16 x NT*8) += A[16 rows of a shared tile] . B[NT*8 rows of a shared tile]^T
//               (S = Q K^T, dP = dO V^T, S^T = K Q^T, dP^T = V dO^T; the reduction runs over the head dim)
//     gemm_pb:  acc (16 x D)    += P (16 x K, in registers, accumulator layout) . B[K rows of a shared tile]
//               (O += P V, dQ += dS K, dV += P^T dO, dK += dS^T Q)
// For float16/bfloat16 on sm_80+ they issue mma.sync (float32 accumulation; P is rounded to the input
// type first, as in FlashAttention-2).  For float32 (and for older GPUs) the same layouts are computed
// with float32 FMAs (no TF32); gemm_pb then broadcasts P across the 4 threads of a row with shuffles.
//
// Shared tiles are row-major [rows][kStride] with kStride = D + 16 bytes of padding: the 8 rows a warp
// reads at once then fall into distinct banks, and every row stays 16-byte aligned for vector copies.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/cuda_utils.cuh"

namespace jmipose {
namespace attention_cuda {

constexpr unsigned kFullWarp = 0xffffffffu;

// This thread's place in the fragment layout: its lane, g = lane / 4 (the row group) and t = lane % 4.
struct FragmentLane {
  int lane, g, t;
};

__device__ __forceinline__ FragmentLane fragment_lane() {
  const int lane = threadIdx.x & 31;
  return {lane, lane >> 2, lane & 3};
}

// Tile shapes of one (dtype, padded head dim) instantiation.  kRows: rows a block owns (queries in the
// forward and dQ passes, keys in the dK/dV pass), 16 per warp.  kCols: rows streamed per step (keys,
// or queries in dK/dV).  float32 at D = 128 uses 2 warps so four tiles stay under 99 KB of shared
// memory (the opt-in limit of sm_86/sm_89); D = 128 streams 32 rows to bound registers.
template <typename T, int D>
struct Tile {
  static_assert(D == 16 || D == 32 || D == 64 || D == 128, "padded head dim must be 16, 32, 64 or 128");
  static constexpr bool kFloat = std::is_same<T, float>::value;
  static constexpr int kWarps = (kFloat && D == 128) ? 2 : 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kRows = 16 * kWarps;
  static constexpr int kCols = D == 128 ? 32 : 64;
  static constexpr int kStride = D + 16 / static_cast<int>(sizeof(T));
  static constexpr int kColTiles = kCols / 8;  // accumulator n-tiles across the streamed rows
  static constexpr int kDimTiles = D / 8;      // accumulator n-tiles across the head dim
  static constexpr size_t kTileBytes(int rows) { return static_cast<size_t>(rows) * kStride * sizeof(T); }
  // Bytes of `own` tiles of kRows rows and `streamed` tiles of kCols rows (see shared_tiles).
  static constexpr size_t kTilesBytes(int own, int streamed) {
    return own * kTileBytes(kRows) + streamed * kTileBytes(kCols);
  }
};

#if defined(JMIPOSE_CUDA_EMULATION)
// Defined by the CPU emulation of the CUDA runtime in tests/cuda_emulation, which compiles these kernels with a C++
// compiler and runs them thread by thread: mma.sync reassembled from the 32 lanes' fragments following
// the PTX ISA layout, so the tests check the fragment bookkeeping of the tensor-core path too.
template <typename T>
void emulated_mma_16x8x16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
#endif

// Tensor cores for 16-bit types on sm_80+; the FMA path everywhere else (and in the host pass).
template <typename T>
__device__ constexpr bool use_tensor_cores() {
#if defined(JMIPOSE_CUDA_EMULATION) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
  return !std::is_same<T, float>::value;
#else
  return false;
#endif
}

// Copies rows [row0, row0 + ROWS) of a row-major [n_rows, head_dim] slab into a shared tile, with zeros
// for rows >= n_rows and columns >= head_dim (the padding up to D).  `vectorized`: the slab is 16-byte
// aligned and head_dim is a multiple of 16 bytes, so whole 16-byte chunks are either in or out.
template <typename T, int D, int ROWS>
__device__ __forceinline__ void load_tile(T* tile, const T* slab, int64_t row0, int64_t n_rows, int head_dim,
                                          bool vectorized) {
  using C = Tile<T, D>;
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  if (vectorized) {
    constexpr int kChunks = D / kVec;
    for (int idx = threadIdx.x; idx < ROWS * kChunks; idx += C::kThreads) {
      const int r = idx / kChunks;
      const int c = (idx % kChunks) * kVec;
      const int64_t row = row0 + r;
      uint4 value = make_uint4(0u, 0u, 0u, 0u);
      if (row < n_rows && c < head_dim) value = *reinterpret_cast<const uint4*>(slab + row * head_dim + c);
      *reinterpret_cast<uint4*>(tile + r * C::kStride + c) = value;
    }
  } else {
    for (int idx = threadIdx.x; idx < ROWS * D; idx += C::kThreads) {
      const int r = idx / D;
      const int c = idx % D;
      const int64_t row = row0 + r;
      tile[r * C::kStride + c] = (row < n_rows && c < head_dim) ? slab[row * head_dim + c] : from_float<T>(0.0f);
    }
  }
}

// Sum / max over the 4 threads that share a row of the accumulator layout.
__device__ __forceinline__ float row_group_sum(float value) {
  value += __shfl_xor_sync(kFullWarp, value, 1);
  value += __shfl_xor_sync(kFullWarp, value, 2);
  return value;
}

__device__ __forceinline__ float row_group_max(float value) {
  value = fmaxf(value, __shfl_xor_sync(kFullWarp, value, 1));
  value = fmaxf(value, __shfl_xor_sync(kFullWarp, value, 2));
  return value;
}

__device__ __forceinline__ float warp_sum(float value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(kFullWarp, value, offset);
  return value;
}

// ---- 16-bit register pairs: the lower-indexed element sits in the low half of the 32-bit register.

template <typename T>
__device__ __forceinline__ uint32_t load_pair(const T* adjacent) {
  return *reinterpret_cast<const uint32_t*>(adjacent);
}

template <typename T>
__device__ __forceinline__ uint32_t make_pair(T lo, T hi) {
  uint16_t lo_bits, hi_bits;
  memcpy(&lo_bits, &lo, sizeof(lo_bits));
  memcpy(&hi_bits, &hi, sizeof(hi_bits));
  return static_cast<uint32_t>(lo_bits) | (static_cast<uint32_t>(hi_bits) << 16);
}

template <typename T>
__device__ __forceinline__ uint32_t pack_floats(float lo, float hi) {
  return make_pair<T>(from_float<T>(lo), from_float<T>(hi));
}

// c += a . b for one 16x8x16 step (a: 16x16 row-major fragment, b: 16x8 column fragment).
template <typename T>
__device__ __forceinline__ void mma_16x8x16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(JMIPOSE_CUDA_EMULATION)
  emulated_mma_16x8x16<T>(c, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same<T, __half>::value) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    static_assert(std::is_same<T, __nv_bfloat16>::value, "mma_16x8x16: float16 or bfloat16 only");
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
  __trap();  // unreachable: use_tensor_cores<T>() is false below sm_80
#endif
}

// acc[nt] += A[a_row0 .. a_row0 + 16) . B[nt*8 .. nt*8 + 8)^T over the padded head dim D.
template <typename T, int D, int NT>
__device__ __forceinline__ void gemm_abt(float (&acc)[NT][4], const T* a_tile, int a_row0, const T* b_tile) {
  constexpr int S = Tile<T, D>::kStride;
  const auto [lane, g, t] = fragment_lane();
  if constexpr (use_tensor_cores<T>()) {
#pragma unroll
    for (int k0 = 0; k0 < D; k0 += 16) {
      const T* a_lo = a_tile + (a_row0 + g) * S + k0 + 2 * t;
      const T* a_hi = a_lo + 8 * S;
      const uint32_t a[4] = {load_pair(a_lo), load_pair(a_hi), load_pair(a_lo + 8), load_pair(a_hi + 8)};
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const T* b_row = b_tile + (nt * 8 + g) * S + k0 + 2 * t;
        const uint32_t b[2] = {load_pair(b_row), load_pair(b_row + 8)};
        mma_16x8x16<T>(acc[nt], a, b);
      }
    }
  } else {
    const T* a_lo = a_tile + (a_row0 + g) * S;
    const T* a_hi = a_lo + 8 * S;
    const T* b_rows = b_tile + 2 * t * S;
#pragma unroll 4
    for (int d = 0; d < D; ++d) {
      const float a0 = to_float(a_lo[d]);
      const float a1 = to_float(a_hi[d]);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const float b0 = to_float(b_rows[nt * 8 * S + d]);
        const float b1 = to_float(b_rows[(nt * 8 + 1) * S + d]);
        acc[nt][0] = fmaf(a0, b0, acc[nt][0]);
        acc[nt][1] = fmaf(a0, b1, acc[nt][1]);
        acc[nt][2] = fmaf(a1, b0, acc[nt][2]);
        acc[nt][3] = fmaf(a1, b1, acc[nt][3]);
      }
    }
  }
}

// acc[dt] += P . B[0 .. 8*KT)[dt*8 .. dt*8 + 8), with P (16 x 8*KT) in the accumulator layout.
template <typename T, int D, int KT>
__device__ __forceinline__ void gemm_pb(float (&acc)[D / 8][4], const float (&p)[KT][4], const T* b_tile) {
  static_assert(KT % 2 == 0, "gemm_pb: P must span whole 16-column chunks");
  constexpr int S = Tile<T, D>::kStride;
  const auto [lane, g, t] = fragment_lane();
  if constexpr (use_tensor_cores<T>()) {
#pragma unroll
    for (int kk = 0; kk < KT / 2; ++kk) {
      // The accumulator layout of two 8-column n-tiles is exactly the A fragment of one 16-wide chunk.
      const uint32_t a[4] = {pack_floats<T>(p[2 * kk][0], p[2 * kk][1]), pack_floats<T>(p[2 * kk][2], p[2 * kk][3]),
                             pack_floats<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                             pack_floats<T>(p[2 * kk + 1][2], p[2 * kk + 1][3])};
      const T* b_rows = b_tile + (kk * 16 + 2 * t) * S + g;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        const T* b_col = b_rows + dt * 8;
        const uint32_t b[2] = {make_pair(b_col[0], b_col[S]), make_pair(b_col[8 * S], b_col[9 * S])};
        mma_16x8x16<T>(acc[dt], a, b);
      }
    }
  } else {
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
#pragma unroll
      for (int owner = 0; owner < 4; ++owner) {
        const int source_lane = (lane & ~3) | owner;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          // column kt*8 + 2*owner + e of P, held by thread `owner` of this row group
          const float p_lo = __shfl_sync(kFullWarp, p[kt][e], source_lane);
          const float p_hi = __shfl_sync(kFullWarp, p[kt][2 + e], source_lane);
          const T* b_row = b_tile + (kt * 8 + 2 * owner + e) * S + 2 * t;
#pragma unroll
          for (int dt = 0; dt < D / 8; ++dt) {
            const float b0 = to_float(b_row[dt * 8]);
            const float b1 = to_float(b_row[dt * 8 + 1]);
            acc[dt][0] = fmaf(p_lo, b0, acc[dt][0]);
            acc[dt][1] = fmaf(p_lo, b1, acc[dt][1]);
            acc[dt][2] = fmaf(p_hi, b0, acc[dt][2]);
            acc[dt][3] = fmaf(p_hi, b1, acc[dt][3]);
          }
        }
      }
    }
  }
}

// Row (g or g + 8) and column (2t or 2t + 1) inside the 16 x 8 n-tile of accumulator element i.
__device__ __forceinline__ int fragment_row(int i) { return fragment_lane().g + (i >> 1) * 8; }
__device__ __forceinline__ int fragment_col(int i) { return 2 * fragment_lane().t + (i & 1); }

// f(nt, i) for each element [nt][i] of this thread's part of an accumulator of NT n-tiles.
template <int NT, typename F>
__device__ __forceinline__ void for_each_element(F&& f) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) f(nt, i);
  }
}

// f(row, col, dt, i) for each element [dt][i] of this thread's part of a 16-row accumulator over the
// head dim (DT n-tiles) whose row = first_row + fragment_row(i) < n_rows and col < head_dim.
template <int DT, typename F>
__device__ __forceinline__ void for_each_output(int64_t first_row, int64_t n_rows, int head_dim, F&& f) {
  for_each_element<DT>([&](int dt, int i) {
    const int64_t row = first_row + fragment_row(i);
    const int col = dt * 8 + fragment_col(i);
    if (row < n_rows && col < head_dim) f(row, col, dt, i);
  });
}

}  // namespace attention_cuda
}  // namespace jmipose
