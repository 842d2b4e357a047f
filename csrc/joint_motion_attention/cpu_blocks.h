// joint_motion_attention (C++ CPU): the block-level micro-kernels that cpu.cpp composes: a small
// register-blocked GEMM, a vectorised exponential, and the softmax passes over one score block.
//
// They contain no OpenMP region, so each is compiled twice (JMIPOSE_CPU_CLONES): for AVX2+FMA and for
// the portable x86-64 baseline, picked at load time.  Vectors are GCC vector extensions of 32 bytes
// (8 floats or 4 doubles): one ymm register under AVX2, two xmm registers on the baseline.
// Included by cpu.cpp only.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "common/macros.h"
#include "joint_motion_attention/math.h"

#define JMIPOSE_ALWAYS_INLINE inline __attribute__((always_inline))

// 32-byte vectors passed between always-inline helpers: GCC warns that their ABI differs without AVX,
// which never matters here because no such function is ever called out of line.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace jmipose {
namespace attention_cpu {

template <typename T>
struct Simd {
  static constexpr int kLanes = 32 / static_cast<int>(sizeof(T));
  typedef T Vec __attribute__((vector_size(32)));
};
template <typename T>
using Vec = typename Simd<T>::Vec;

// GEMM tile: kTileRows rows x kTileCols columns (two vectors per row: 12 accumulators in registers
// plus two B vectors and one broadcast, which fits AVX2's 16 ymm registers).
constexpr int kTileRows = 6;
template <typename T>
constexpr int tile_cols() {
  return 2 * Simd<T>::kLanes;
}

template <typename T>
JMIPOSE_ALWAYS_INLINE Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
JMIPOSE_ALWAYS_INLINE void store(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename T>
JMIPOSE_ALWAYS_INLINE Vec<T> splat(T x) {
  return Vec<T>{} + x;
}

// C[R x 2 vectors] (+)= A[R x depth] B[depth x 2 vectors].  A is row-major (A(r,k) = a[r*lda + k]) or,
// with kAColMajor, column-major (A(r,k) = a[k*lda + r]): the transposed operands of backward are read
// in place instead of being copied.  B and C are row-major.
template <typename T, int R, bool kAColMajor>
JMIPOSE_ALWAYS_INLINE void gemm_tile(const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc,
                                     int64_t depth, bool accumulate) {
  constexpr int kLanes = Simd<T>::kLanes;
  Vec<T> acc[R][2];
  for (int r = 0; r < R; ++r) {
    acc[r][0] = accumulate ? load(c + r * ldc) : Vec<T>{};
    acc[r][1] = accumulate ? load(c + r * ldc + kLanes) : Vec<T>{};
  }
  for (int64_t k = 0; k < depth; ++k) {
    const Vec<T> b0 = load(b + k * ldb);
    const Vec<T> b1 = load(b + k * ldb + kLanes);
    for (int r = 0; r < R; ++r) {
      const Vec<T> ar = splat(kAColMajor ? a[k * lda + r] : a[r * lda + k]);
      acc[r][0] += ar * b0;
      acc[r][1] += ar * b1;
    }
  }
  for (int r = 0; r < R; ++r) {
    store(c + r * ldc, acc[r][0]);
    store(c + r * ldc + kLanes, acc[r][1]);
  }
}

template <typename T, bool kAColMajor>
JMIPOSE_ALWAYS_INLINE void gemm_row_tail(int64_t rows, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
                                         int64_t ldc, int64_t depth, bool accumulate) {
  switch (rows) {
    case 1: gemm_tile<T, 1, kAColMajor>(a, lda, b, ldb, c, ldc, depth, accumulate); break;
    case 2: gemm_tile<T, 2, kAColMajor>(a, lda, b, ldb, c, ldc, depth, accumulate); break;
    case 3: gemm_tile<T, 3, kAColMajor>(a, lda, b, ldb, c, ldc, depth, accumulate); break;
    case 4: gemm_tile<T, 4, kAColMajor>(a, lda, b, ldb, c, ldc, depth, accumulate); break;
    case 5: gemm_tile<T, 5, kAColMajor>(a, lda, b, ldb, c, ldc, depth, accumulate); break;
    default: break;
  }
}

// C[m x n] (+)= A[m x depth] B[depth x n], n a multiple of tile_cols<T>() (callers pad it).  Every
// element of C is one fused multiply-add chain over k = 0..depth-1 in order, whatever m and n are,
// so a result never depends on how the caller blocked the work.
template <typename T, bool kAColMajor>
JMIPOSE_CPU_CLONES void gemm(int64_t m, int64_t n, int64_t depth, const T* a, int64_t lda, const T* b,
                             int64_t ldb, T* c, int64_t ldc, bool accumulate) {
  constexpr int kCols = tile_cols<T>();
  const int64_t a_row_step = kAColMajor ? 1 : lda;
  for (int64_t col = 0; col < n; col += kCols) {
    int64_t row = 0;
    for (; row + kTileRows <= m; row += kTileRows)
      gemm_tile<T, kTileRows, kAColMajor>(a + row * a_row_step, lda, b + col, ldb, c + row * ldc + col, ldc, depth,
                                          accumulate);
    if (row < m)
      gemm_row_tail<T, kAColMajor>(m - row, a + row * a_row_step, lda, b + col, ldb, c + row * ldc + col, ldc,
                                   depth, accumulate);
  }
}

// exp of every lane.  float: 2^n * p(r) with n = round(x log2 e), r = x - n ln 2 (two-part ln 2) and
// the degree-7 Taylor polynomial on |r| <= ln2 / 2 (truncation error < 1e-8 relative, a few ulp in
// all); x below -87.33 (results under float's smallest normal) gives exactly 0, so -inf gives 0.
// double (used for gradcheck, not for speed): libm's exp per lane.
JMIPOSE_ALWAYS_INLINE Vec<float> exp_lanes(Vec<float> x) {
  typedef int32_t IntVec __attribute__((vector_size(32)));
  const Vec<float> lowest = splat(-87.33654f);
  const Vec<float> highest = splat(88.0f);
  const Vec<float> round_magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const Vec<float> clamped = x < highest ? x : highest;
  const Vec<float> shifted = clamped * 1.44269504088896341f + round_magic;
  const Vec<float> n = shifted - round_magic;
  Vec<float> r = clamped - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  Vec<float> p = splat(1.0f / 5040.0f);
  p = p * r + (1.0f / 720.0f);
  p = p * r + (1.0f / 120.0f);
  p = p * r + (1.0f / 24.0f);
  p = p * r + (1.0f / 6.0f);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // The integer n sits in the low mantissa bits of `shifted`; build 2^n from it.
  const IntVec n_int = (IntVec)shifted - (IntVec)round_magic;
  const IntVec two_to_n = (n_int + 127) << 23;
  const Vec<float> result = p * (Vec<float>)two_to_n;
  return x < lowest ? Vec<float>{} : result;
}

JMIPOSE_ALWAYS_INLINE Vec<double> exp_lanes(Vec<double> x) {
  Vec<double> result;
  for (int lane = 0; lane < Simd<double>::kLanes; ++lane) result[lane] = std::exp(x[lane]);
  return result;
}

// Forward, one key block in the transposed layout: scores[key][query] for `keys` rows and `width`
// query columns (a multiple of the vector width).  column_max gets the largest unmasked score of
// each query column (-inf when every key of the block is masked).
template <typename T>
JMIPOSE_CPU_CLONES void column_max(const T* scores, int64_t keys, int64_t width, const uint8_t* key_masked,
                                   T* block_max) {
  constexpr int kLanes = Simd<T>::kLanes;
  for (int64_t col = 0; col < width; col += kLanes) {
    Vec<T> best = splat(attention::negative_infinity<T>());
    for (int64_t key = 0; key < keys; ++key) {
      if (key_masked != nullptr && key_masked[key]) continue;
      const Vec<T> s = load(scores + key * width + col);
      best = s > best ? s : best;
    }
    store(block_max + col, best);
  }
}

// Overwrites the scores with exp(s - shift[query]) (0 on masked key rows) and adds each column's
// weights into column_sum (which the caller zeroes).
template <typename T>
JMIPOSE_CPU_CLONES void column_softmax_weights(T* scores, int64_t keys, int64_t width, const uint8_t* key_masked,
                                               const T* shift, T* column_sum) {
  constexpr int kLanes = Simd<T>::kLanes;
  for (int64_t key = 0; key < keys; ++key) {
    T* row = scores + key * width;
    if (key_masked != nullptr && key_masked[key]) {
      std::memset(row, 0, sizeof(T) * width);
      continue;
    }
    for (int64_t col = 0; col < width; col += kLanes) {
      const Vec<T> w = exp_lanes(load(row + col) - load(shift + col));
      store(row + col, w);
      store(column_sum + col, load(column_sum + col) + w);
    }
  }
}

// Backward, one (query block, key block) pair in the natural layout [query][key], `width` key columns
// (a multiple of the vector width).  scores -> probabilities exp(s + key_bias - lse_shift) with
// key_bias 0 or -inf (masked or padding keys); grad_probs -> score gradients times `scale`:
// scale * p * (dp - delta), the gradient of the unscaled product q.k.
template <typename T>
JMIPOSE_CPU_CLONES void probabilities_and_score_grads(T* scores, T* grad_probs, int64_t queries, int64_t width,
                                                      const T* key_bias, const T* lse, const T* delta, T scale) {
  constexpr int kLanes = Simd<T>::kLanes;
  for (int64_t query = 0; query < queries; ++query) {
    T* s_row = scores + query * width;
    T* dp_row = grad_probs + query * width;
    const Vec<T> shift = splat(attention::lse_shift(lse[query]));
    const Vec<T> row_delta = splat(delta[query]);
    for (int64_t col = 0; col < width; col += kLanes) {
      const Vec<T> p = exp_lanes(load(s_row + col) + load(key_bias + col) - shift);
      store(s_row + col, p);
      store(dp_row + col, scale * p * (load(dp_row + col) - row_delta));
    }
  }
}

}  // namespace attention_cpu
}  // namespace jmipose
