// joint_motion_attention (C++ CPU): the block-level micro-kernels that cpu.cpp composes: a small
// register-blocked GEMM, a vectorised exponential, and the softmax passes over one score block.
//
// Vectors are GCC vector extensions of 32 bytes (8 floats or 4 doubles).  cpu.cpp includes this file
// twice, into two namespaces: once under `#pragma GCC target("avx2,fma")` (one ymm register per
// vector, fused multiply-adds) and once for the portable baseline (two xmm registers per vector), and
// picks one at run time; the default build stays portable (no -march).  A whole-file target region is
// used rather than target_clones on the outer functions because GCC lowers the vector code of
// always-inline helpers for the baseline before they are inlined into an AVX2 clone (it then builds
// each broadcast from four vinsertps).  No include guard on purpose; requires <cstring>, <cstdint>,
// <cmath> and joint_motion_attention/math.h.

#define JMIPOSE_ALWAYS_INLINE inline __attribute__((always_inline))

template <typename T>
struct Simd {
  static constexpr int kLanes = 32 / static_cast<int>(sizeof(T));
  typedef T Vec __attribute__((vector_size(32)));
};
template <typename T>
using Vec = typename Simd<T>::Vec;

// GEMM tile: kTileRows rows x tile_cols() columns (two vectors per row: 12 accumulators in registers
// plus two B vectors and one broadcast, which fits AVX2's 16 ymm registers).
constexpr int kTileRows = 6;
constexpr double kLog2e = 1.44269504088896340736;  // scores are scaled by it for base-2 exponentials
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
JMIPOSE_ALWAYS_INLINE void store(T* p, const Vec<T>& v) {
  std::memcpy(p, &v, sizeof(v));
}

// Broadcast.  (Not `Vec{} + x`: adding +0.0 is no identity for -0.0, so that add would stay; x - 0.0 is.)
template <typename T>
JMIPOSE_ALWAYS_INLINE Vec<T> splat(T x) {
  return x - Vec<T>{};
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

// 2^x of every lane.  The kernels run the online softmax in base 2 (scores pre-multiplied by log2 e),
// which makes the range reduction exact: n = round(x), r = x - n in [-1/2, 1/2], 2^x = 2^n p(r).
// float: p is a degree-5 polynomial fitted for relative error on [-1/2, 1/2] (2e-7 with float
// rounding, under 2 ulp); x is clamped to [-127, 128], where 2^-127 comes out exactly 0 (so -inf
// gives 0; results below float's smallest normal, 1.2e-38, are flushed to 0) and 2^128 is inf; NaN
// stays NaN (the clamps keep their second operand on NaN).  double (gradcheck, not speed): libm.
JMIPOSE_ALWAYS_INLINE Vec<float> exp2_lanes(const Vec<float>& exponent) {
  typedef int32_t IntVec __attribute__((vector_size(32)));
  const Vec<float> lowest = splat(-127.0f), highest = splat(128.0f);
  const Vec<float> round_magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  Vec<float> x = highest < exponent ? highest : exponent;
  x = lowest > x ? lowest : x;
  const Vec<float> shifted = x + round_magic;  // n in the low mantissa bits
  const Vec<float> r = x - (shifted - round_magic);
  Vec<float> p = splat(0.001326472731307149f);
  p = p * r + 0.009671512991189957f;
  p = p * r + 0.05550733581185341f;
  p = p * r + 0.24022242426872253f;
  p = p * r + 0.6931470036506653f;
  p = p * r + 1.0f;
  // 2^n as float bits: (n + 127) << 23, with n = bits(shifted) - bits(round_magic) = bits(shifted) - 0x4B400000.
  const IntVec two_to_n = ((IntVec)shifted + (127 - 0x4B400000)) << 23;
  return p * (Vec<float>)two_to_n;
}

JMIPOSE_ALWAYS_INLINE Vec<double> exp2_lanes(const Vec<double>& exponent) {
  Vec<double> result;
  for (int lane = 0; lane < Simd<double>::kLanes; ++lane) result[lane] = std::exp2(exponent[lane]);
  return result;
}

// The block-level kernels, as static members so that cpu.cpp can pick one ISA's set as a type.
struct Blocks {
  // C[m x n] (+)= A[m x depth] B[depth x n], n a multiple of tile_cols<T>() (callers pad it).  Every
  // element of C is one chain of multiply-adds over k = 0..depth-1 in order, whatever m and n are, so
  // a result never depends on how the caller blocked the work.
  template <typename T, bool kAColMajor>
  static void gemm(int64_t m, int64_t n, int64_t depth, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
                   int64_t ldc, bool accumulate) {
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

  // Forward, one key block in the transposed layout: scores[key][query] (base-2 units), `keys` rows,
  // `width` query columns (a multiple of the vector width).  For each query column this is math.h's
  // online softmax step in vector form, base 2: the block's max over unmasked keys updates row_max
  // (online_softmax_rescale), alpha receives the factor for the accumulator, the scores become the
  // weights 2^(s - shift) with shift = softmax_shift(row_max) (0 on masked key rows), and
  // row_sum = row_sum * alpha + their sum.
  template <typename T>
  static void online_softmax_columns(T* scores, int64_t keys, int64_t width, const uint8_t* key_masked,
                                     T* row_max, T* row_sum, T* alpha) {
    constexpr int kLanes = Simd<T>::kLanes;
    const Vec<T> negative_infinity = splat(jmipose::attention::negative_infinity<T>());
    for (int64_t col = 0; col < width; col += kLanes) {
      Vec<T> block_max = negative_infinity;
      for (int64_t key = 0; key < keys; ++key) {
        if (key_masked != nullptr && key_masked[key]) continue;
        const Vec<T> s = load(scores + key * width + col);
        block_max = s > block_max ? s : block_max;
      }
      const Vec<T> old_max = load(row_max + col);
      const Vec<T> new_max = block_max > old_max ? block_max : old_max;
      // exp2_lanes(-inf) is 0: a first finite max after -inf gives alpha 0, as in math.h.
      const Vec<T> rescale = new_max == old_max ? splat(T(1)) : exp2_lanes(old_max - new_max);
      const Vec<T> shift = new_max == negative_infinity ? Vec<T>{} : new_max;
      Vec<T> block_sum{};
      for (int64_t key = 0; key < keys; ++key) {
        T* s = scores + key * width + col;
        if (key_masked != nullptr && key_masked[key]) {
          store(s, Vec<T>{});
          continue;
        }
        const Vec<T> w = exp2_lanes(load(s) - shift);
        store(s, w);
        block_sum += w;
      }
      store(row_max + col, new_max);
      store(row_sum + col, load(row_sum + col) * rescale + block_sum);
      store(alpha + col, rescale);
    }
  }

  // Backward, one (query block, key block) pair in the natural layout [query][key], `width` key columns
  // (a multiple of the vector width), scores in base-2 units.  scores -> probabilities
  // 2^(s + key_bias - lse_shift(lse) log2 e) (math.h's probability_from_lse in base 2) with key_bias 0
  // or -inf (masked or padding keys); grad_probs -> score gradients times `scale`:
  // scale * p * (dp - delta) (math.h's score_gradient), the gradient of the unscaled product q.k.
  template <typename T>
  static void probabilities_and_score_grads(T* scores, T* grad_probs, int64_t queries, int64_t width,
                                            const T* key_bias, const T* lse, const T* delta, T scale) {
    constexpr int kLanes = Simd<T>::kLanes;
    for (int64_t query = 0; query < queries; ++query) {
      T* s_row = scores + query * width;
      T* dp_row = grad_probs + query * width;
      const Vec<T> shift = splat(jmipose::attention::lse_shift(lse[query]) * T(kLog2e));
      const Vec<T> row_delta = splat(delta[query]);
      for (int64_t col = 0; col < width; col += kLanes) {
        const Vec<T> p = exp2_lanes(load(s_row + col) + load(key_bias + col) - shift);
        store(s_row + col, p);
        store(dp_row + col, scale * p * (load(dp_row + col) - row_delta));
      }
    }
  }

};  // struct Blocks

#undef JMIPOSE_ALWAYS_INLINE
