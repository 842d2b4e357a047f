// joint_motion_attention (CUDA): the kernels (device code only; launched by cuda.cu).  See cuda.cu for
// the algorithm and cuda_tiles.cuh for the register layout.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_utils.cuh"
#include "joint_motion_attention/cuda_tiles.cuh"
#include "joint_motion_attention/math.h"

namespace jmipose {
namespace attention_cuda {

// One direction as the kernels see it: queries attend to keys/values of the other token set.
template <typename T>
struct ForwardDirection {
  const T* q;
  const T* k;
  const T* v;
  const T* res;               // or nullptr
  const uint8_t* key_mask;    // [B, n_k], 1 = not a key; or nullptr
  T* out;
  float* lse;
  int64_t n_q, n_k;
};

template <typename T>
struct ForwardParams {
  ForwardDirection<T> direction[2];
  int64_t heads, blocks_per_head;
  int head_dim;
  float scale;
  bool vectorized;  // q, k, v 16-byte aligned with 16-byte rows
};

template <typename T>
struct BackwardDirection {
  const T* grad_out;
  const T* q;
  const T* k;
  const T* v;
  const T* out;
  const T* res;             // or nullptr
  const uint8_t* key_mask;  // mask of this direction's keys, or nullptr
  const float* lse;
  float* grad_q;
  float* grad_k;  // gradients of this direction's keys and values
  float* grad_v;
  float* delta;   // [B*h, n_q] scratch that aliases grad_q (see cuda.cu)
  int64_t n_q, n_k;
};

template <typename T>
struct BackwardParams {
  BackwardDirection<T> direction[2];
  int64_t batch_heads, heads, blocks_per_head;
  int head_dim;
  float scale;
  bool vectorized;  // grad_out, q, k, v 16-byte aligned with 16-byte rows
};

// The direction of this block; a select instead of direction[blockIdx.y] keeps the parameters out of
// local memory.
template <typename Params>
__device__ __forceinline__ auto this_direction(const Params& params) {
  return blockIdx.y == 0 ? params.direction[0] : params.direction[1];
}

__device__ __forceinline__ bool is_key(const uint8_t* key_mask, int64_t key, int64_t n_keys) {
  return key < n_keys && (key_mask == nullptr || key_mask[key] == 0);
}

// Where a block works: blockIdx.x flattens (batch * head, block of kRows rows), blockIdx.y is the
// direction.  warp_row is the first of the 16 rows this thread's warp owns inside the block.
struct BlockRows {
  int64_t bh, row0;
  int warp_row;
};

template <int kRows>
__device__ __forceinline__ BlockRows block_rows(int64_t blocks_per_head) {
  return {blockIdx.x / blocks_per_head, (blockIdx.x % blocks_per_head) * kRows,
          static_cast<int>(threadIdx.x / 32) * 16};
}

// The [n, head_dim] rows of head bh in a [B, h, n, head_dim] tensor.
template <typename T>
__device__ __forceinline__ T* head_rows(T* tensor, int64_t bh, int64_t n, int head_dim) {
  return tensor + bh * n * head_dim;
}

// The key mask row of head bh's batch ([B, n_k] mask), or nullptr without a mask.
__device__ __forceinline__ const uint8_t* head_key_mask(const uint8_t* key_mask, int64_t bh, int64_t heads,
                                                        int64_t n_k) {
  return key_mask != nullptr ? key_mask + (bh / heads) * n_k : nullptr;
}

// The block's dynamic shared memory: `kOwn` tiles of kRows rows (the rows the block owns), then two
// tiles of kCols rows (the rows it streams), then `tail`, where a kernel keeps its per-row and
// per-column values; the launch reserves Tile::kTilesBytes(kOwn, 2) plus the tail.
template <typename T, int D, int kOwn>
struct SharedTiles {
  T* own[kOwn];
  T* streamed[2];
  unsigned char* tail;
};

template <typename T, int D, int kOwn>
__device__ __forceinline__ SharedTiles<T, D, kOwn> shared_tiles() {
  using C = Tile<T, D>;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  SharedTiles<T, D, kOwn> tiles;
  T* next = reinterpret_cast<T*>(shared_raw);
  for (int i = 0; i < kOwn; ++i, next += C::kRows * C::kStride) tiles.own[i] = next;
  for (int i = 0; i < 2; ++i, next += C::kCols * C::kStride) tiles.streamed[i] = next;
  tiles.tail = reinterpret_cast<unsigned char*>(next);
  return tiles;
}

// Loads the next kCols streamed rows of two slabs (K and V, or Q and dO) into the streamed tiles,
// after every warp is done with the previous ones; stage(c) fills the tail's values of column c
// (c < kCols).  Ends with a barrier, so the tiles and the tail are ready for every warp.
template <typename T, int D, int kOwn, typename StageColumn>
__device__ __forceinline__ void stream_rows(const SharedTiles<T, D, kOwn>& tiles, const T* slab0, const T* slab1,
                                            int64_t first, int64_t n_rows, int head_dim, bool vectorized,
                                            StageColumn stage) {
  using C = Tile<T, D>;
  __syncthreads();  // every warp is done with the previous tiles
  load_tile<T, D, C::kCols>(tiles.streamed[0], slab0, first, n_rows, head_dim, vectorized);
  load_tile<T, D, C::kCols>(tiles.streamed[1], slab1, first, n_rows, head_dim, vectorized);
  for (int c = threadIdx.x; c < C::kCols; c += C::kThreads) stage(c);
  __syncthreads();
}

// dO_row . (out_row - res_row) by one warp.
template <typename T>
__device__ __forceinline__ float row_delta(const T* grad_out, const T* out, const T* res, int head_dim) {
  float partial = 0.0f;
  for (int c = threadIdx.x & 31; c < head_dim; c += 32) {
    const float attention_out = to_float(out[c]) - (res != nullptr ? to_float(res[c]) : 0.0f);
    partial = fmaf(to_float(grad_out[c]), attention_out, partial);
  }
  return warp_sum(partial);
}

// ------------------------------------------------------------------------------------------------
// forward

template <typename T, int D>
__global__ void __launch_bounds__(Tile<T, D>::kThreads) forward_kernel(const ForwardParams<T> params) {
  using C = Tile<T, D>;
  const SharedTiles<T, D, 1> tiles = shared_tiles<T, D, 1>();
  T* q_tile = tiles.own[0];                            // the block's queries
  T* k_tile = tiles.streamed[0];                       // the current block of keys
  T* v_tile = tiles.streamed[1];                       // and their values
  bool* key_ok = reinterpret_cast<bool*>(tiles.tail);  // [kCols]: the column is an unmasked key

  const ForwardDirection<T> dir = this_direction(params);
  const BlockRows at = block_rows<C::kRows>(params.blocks_per_head);
  if (at.row0 >= dir.n_q) return;  // the other direction has more blocks; uniform across the block
  const int hd = params.head_dim;
  const T* k = head_rows(dir.k, at.bh, dir.n_k, hd);
  const T* v = head_rows(dir.v, at.bh, dir.n_k, hd);
  const uint8_t* key_mask = head_key_mask(dir.key_mask, at.bh, params.heads, dir.n_k);
  const int64_t row0 = at.row0;
  const int warp_row = at.warp_row;

  load_tile<T, D, C::kRows>(q_tile, head_rows(dir.q, at.bh, dir.n_q, hd), row0, dir.n_q, hd, params.vectorized);
  float acc[C::kDimTiles][4] = {};
  float row_max[2] = {attention::negative_infinity<float>(), attention::negative_infinity<float>()};
  float row_sum[2] = {0.0f, 0.0f};
  for (int64_t key0 = 0; key0 < dir.n_k; key0 += C::kCols) {
    stream_rows(tiles, k, v, key0, dir.n_k, hd, params.vectorized,
                [&](int c) { key_ok[c] = is_key(key_mask, key0 + c, dir.n_k); });

    float s[C::kColTiles][4] = {};
    gemm_abt<T, D>(s, q_tile, warp_row, k_tile);
    float block_max[2] = {attention::negative_infinity<float>(), attention::negative_infinity<float>()};
    for_each_element<C::kColTiles>([&](int nt, int i) {
      s[nt][i] = attention::masked_score(s[nt][i] * params.scale, !key_ok[nt * 8 + fragment_col(i)]);
      block_max[i >> 1] = fmaxf(block_max[i >> 1], s[nt][i]);
    });
    float alpha[2], block_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; ++r) alpha[r] = attention::online_softmax_rescale(row_max[r], row_group_max(block_max[r]));
    for_each_element<C::kColTiles>([&](int nt, int i) {
      s[nt][i] = attention::shifted_exp(s[nt][i], row_max[i >> 1]);
      block_sum[i >> 1] += s[nt][i];
    });
#pragma unroll
    for (int r = 0; r < 2; ++r) row_sum[r] = row_sum[r] * alpha[r] + row_group_sum(block_sum[r]);
    for_each_element<C::kDimTiles>([&](int dt, int i) { acc[dt][i] *= alpha[i >> 1]; });
    gemm_pb<T, D>(acc, s, v_tile);
  }

  const float inverse_sum[2] = {attention::online_softmax_inverse_sum(row_sum[0]),
                                attention::online_softmax_inverse_sum(row_sum[1])};
  T* out = head_rows(dir.out, at.bh, dir.n_q, hd);
  const T* res = dir.res != nullptr ? head_rows(dir.res, at.bh, dir.n_q, hd) : nullptr;
  for_each_output<C::kDimTiles>(row0 + warp_row, dir.n_q, hd, [&](int64_t row, int col, int dt, int i) {
    float value = acc[dt][i] * inverse_sum[i >> 1];
    if (res != nullptr) value += to_float(res[row * hd + col]);
    out[row * hd + col] = from_float<T>(value);
  });
  if ((threadIdx.x & 3) == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t row = row0 + warp_row + fragment_row(2 * r);
      if (row < dir.n_q) dir.lse[at.bh * dir.n_q + row] = attention::online_softmax_lse(row_max[r], row_sum[r]);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// backward

constexpr int kDeltaWarps = 8;

template <typename T>
__global__ void __launch_bounds__(32 * kDeltaWarps) delta_kernel(const BackwardParams<T> params) {
  const BackwardDirection<T> dir = this_direction(params);
  const int64_t rows = params.batch_heads * dir.n_q;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kDeltaWarps + threadIdx.x / 32;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kDeltaWarps;
  const int hd = params.head_dim;
  for (int64_t row = first; row < rows; row += step) {
    const float delta = row_delta(dir.grad_out + row * hd, dir.out + row * hd,
                                  dir.res != nullptr ? dir.res + row * hd : nullptr, hd);
    if ((threadIdx.x & 31) == 0) dir.delta[row] = delta;
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(Tile<T, D>::kThreads) dkdv_kernel(const BackwardParams<T> params) {
  using C = Tile<T, D>;
  const SharedTiles<T, D, 2> tiles = shared_tiles<T, D, 2>();
  const auto [k_tile, v_tile] = tiles.own;                 // the block's keys and their values
  const auto [q_tile, grad_out_tile] = tiles.streamed;     // the current queries and their dO
  float* lse_tile = reinterpret_cast<float*>(tiles.tail);  // [kCols]: the queries' lse and D
  float* delta_tile = lse_tile + C::kCols;

  const BackwardDirection<T> dir = this_direction(params);
  const BlockRows at = block_rows<C::kRows>(params.blocks_per_head);
  const int64_t key0 = at.row0;  // this block owns keys, not queries
  if (key0 >= dir.n_k) return;
  const int hd = params.head_dim;
  const T* q = head_rows(dir.q, at.bh, dir.n_q, hd);
  const T* grad_out = head_rows(dir.grad_out, at.bh, dir.n_q, hd);
  const float* lse = dir.lse + at.bh * dir.n_q;
  const float* delta = dir.delta + at.bh * dir.n_q;
  const uint8_t* key_mask = head_key_mask(dir.key_mask, at.bh, params.heads, dir.n_k);
  const int warp_row = at.warp_row;

  load_tile<T, D, C::kRows>(k_tile, head_rows(dir.k, at.bh, dir.n_k, hd), key0, dir.n_k, hd, params.vectorized);
  load_tile<T, D, C::kRows>(v_tile, head_rows(dir.v, at.bh, dir.n_k, hd), key0, dir.n_k, hd, params.vectorized);
  const bool own_key_ok[2] = {is_key(key_mask, key0 + warp_row + fragment_row(0), dir.n_k),
                              is_key(key_mask, key0 + warp_row + fragment_row(2), dir.n_k)};
  float grad_k[C::kDimTiles][4] = {};
  float grad_v[C::kDimTiles][4] = {};
  for (int64_t query0 = 0; query0 < dir.n_q; query0 += C::kCols) {
    stream_rows(tiles, q, grad_out, query0, dir.n_q, hd, params.vectorized, [&](int c) {
      const bool valid = query0 + c < dir.n_q;
      lse_tile[c] = valid ? lse[query0 + c] : attention::negative_infinity<float>();
      delta_tile[c] = valid ? delta[query0 + c] : 0.0f;
    });

    // Transposed scores S^T (keys x queries) -> P^T; padding queries and masked keys give 0.
    float p[C::kColTiles][4] = {};
    gemm_abt<T, D>(p, k_tile, warp_row, q_tile);
    for_each_element<C::kColTiles>([&](int nt, int i) {
      const int c = nt * 8 + fragment_col(i);
      const bool masked = !own_key_ok[i >> 1] || query0 + c >= dir.n_q;
      p[nt][i] = attention::shifted_exp(attention::masked_score(p[nt][i] * params.scale, masked),
                                                 lse_tile[c]);
    });
    gemm_pb<T, D>(grad_v, p, grad_out_tile);
    float grad_p[C::kColTiles][4] = {};
    gemm_abt<T, D>(grad_p, v_tile, warp_row, grad_out_tile);
    for_each_element<C::kColTiles>([&](int nt, int i) {
      p[nt][i] = attention::score_gradient(p[nt][i], grad_p[nt][i], delta_tile[nt * 8 + fragment_col(i)]);
    });
    gemm_pb<T, D>(grad_k, p, q_tile);
  }

  float* grad_k_out = head_rows(dir.grad_k, at.bh, dir.n_k, hd);
  float* grad_v_out = head_rows(dir.grad_v, at.bh, dir.n_k, hd);
  for_each_output<C::kDimTiles>(key0 + warp_row, dir.n_k, hd, [&](int64_t key, int col, int dt, int i) {
    grad_k_out[key * hd + col] = grad_k[dt][i] * params.scale;
    grad_v_out[key * hd + col] = grad_v[dt][i];
  });
}

template <typename T, int D>
__global__ void __launch_bounds__(Tile<T, D>::kThreads) dq_kernel(const BackwardParams<T> params) {
  using C = Tile<T, D>;
  const SharedTiles<T, D, 2> tiles = shared_tiles<T, D, 2>();
  const auto [q_tile, grad_out_tile] = tiles.own;            // the block's queries and their dO
  const auto [k_tile, v_tile] = tiles.streamed;              // the current block of keys and their values
  float* delta_rows = reinterpret_cast<float*>(tiles.tail);  // [kRows]: D of the block's queries
  bool* key_ok = reinterpret_cast<bool*>(delta_rows + C::kRows);  // [kCols]: the column is an unmasked key

  const BackwardDirection<T> dir = this_direction(params);
  const BlockRows at = block_rows<C::kRows>(params.blocks_per_head);
  if (at.row0 >= dir.n_q) return;
  const int hd = params.head_dim;
  const int64_t slab = at.bh * dir.n_q * hd;
  const T* k = head_rows(dir.k, at.bh, dir.n_k, hd);
  const T* v = head_rows(dir.v, at.bh, dir.n_k, hd);
  const uint8_t* key_mask = head_key_mask(dir.key_mask, at.bh, params.heads, dir.n_k);
  const int64_t row0 = at.row0;
  const int warp_row = at.warp_row;

  load_tile<T, D, C::kRows>(q_tile, dir.q + slab, row0, dir.n_q, hd, params.vectorized);
  load_tile<T, D, C::kRows>(grad_out_tile, dir.grad_out + slab, row0, dir.n_q, hd, params.vectorized);
  // D for this warp's 16 rows (the scratch copy in grad_q is overwritten by this kernel, so recompute).
  for (int r = 0; r < 16; ++r) {
    const int64_t row = row0 + warp_row + r;
    float delta = 0.0f;
    if (row < dir.n_q) {
      delta = row_delta(dir.grad_out + slab + row * hd, dir.out + slab + row * hd,
                        dir.res != nullptr ? dir.res + slab + row * hd : nullptr, hd);
    }
    if ((threadIdx.x & 31) == 0) delta_rows[warp_row + r] = delta;
  }
  __syncwarp();
  float own_delta[2], own_lse[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int local = warp_row + fragment_row(2 * r);
    own_delta[r] = delta_rows[local];
    own_lse[r] =
        row0 + local < dir.n_q ? dir.lse[at.bh * dir.n_q + row0 + local] : attention::negative_infinity<float>();
  }

  float grad_q[C::kDimTiles][4] = {};
  for (int64_t key0 = 0; key0 < dir.n_k; key0 += C::kCols) {
    stream_rows(tiles, k, v, key0, dir.n_k, hd, params.vectorized,
                [&](int c) { key_ok[c] = is_key(key_mask, key0 + c, dir.n_k); });

    float grad_s[C::kColTiles][4] = {};
    gemm_abt<T, D>(grad_s, q_tile, warp_row, k_tile);
    float grad_p[C::kColTiles][4] = {};
    gemm_abt<T, D>(grad_p, grad_out_tile, warp_row, v_tile);
    for_each_element<C::kColTiles>([&](int nt, int i) {
      const bool masked = !key_ok[nt * 8 + fragment_col(i)];
      const float p = attention::shifted_exp(attention::masked_score(grad_s[nt][i] * params.scale, masked),
                                                      own_lse[i >> 1]);
      grad_s[nt][i] = attention::score_gradient(p, grad_p[nt][i], own_delta[i >> 1]);
    });
    gemm_pb<T, D>(grad_q, grad_s, k_tile);
  }

  float* grad_q_out = dir.grad_q + slab;
  for_each_output<C::kDimTiles>(row0 + warp_row, dir.n_q, hd, [&](int64_t row, int col, int dt, int i) {
    grad_q_out[row * hd + col] = grad_q[dt][i] * params.scale;
  });
}

}  // namespace attention_cuda
}  // namespace jmipose
