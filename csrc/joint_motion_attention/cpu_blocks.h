// joint_motion_attention (C++ CPU): the block-level kernels that cpu.cpp composes, as static members
// of `Kernels`: a vectorised exponential, the softmax passes over one score block, and the GEMM of
// common/cpu_gemm.h.  Compiled once per instruction set by common/cpu_isa_kernels.h, inside
// jmipose::attention (no include guard, includes nothing: cpu.cpp includes math.h before it).

// 2^x of every lane.  The kernels run the online softmax in base 2 (scores pre-multiplied by log2 e),
// which makes the range reduction exact: n = round(x), r = x - n in [-1/2, 1/2], 2^x = 2^n p(r).
// float: p is a degree-5 polynomial fitted for relative error on [-1/2, 1/2] (2e-7 with float
// rounding, under 2 ulp); x is clamped to [-127, 128], where 2^-127 comes out exactly 0 (so -inf
// gives 0; results below float's smallest normal, 1.2e-38, are flushed to 0) and 2^128 is inf; NaN
// stays NaN (the clamps keep their second operand on NaN).  double (gradcheck, not speed): libm.
JMIPOSE_CPU_INLINE Vec<float> exp2_lanes(const Vec<float>& exponent) {
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

JMIPOSE_CPU_INLINE Vec<double> exp2_lanes(const Vec<double>& exponent) {
  Vec<double> result;
  for (int lane = 0; lane < kLanes<double>; ++lane) result[lane] = std::exp2(exponent[lane]);
  return result;
}

struct Kernels : GemmKernels {
  // Forward, one key block in the transposed layout: scores[key][query] (base-2 units), `keys` rows,
  // `width` query columns (a multiple of the vector width).  For each query column this is math.h's
  // online softmax step in vector form, base 2: the block's max over unmasked keys updates row_max
  // (online_softmax_rescale), alpha receives the factor for the accumulator, the scores become the
  // weights 2^(s - shift) with shift = score_shift(row_max) (0 on masked key rows), and
  // row_sum = row_sum * alpha + their sum.
  template <typename T>
  static void online_softmax_columns(T* scores, int64_t keys, int64_t width, const uint8_t* key_masked,
                                     T* row_max, T* row_sum, T* alpha) {
    constexpr int L = kLanes<T>;
    const Vec<T> negative_infinity = splat(jmipose::attention::negative_infinity<T>());
    for (int64_t col = 0; col < width; col += L) {
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
  // 2^(s + key_bias - score_shift(lse) log2 e) (math.h's shifted_exp in base 2) with key_bias 0
  // or -inf (masked or padding keys); grad_probs -> score gradients times `scale`:
  // scale * p * (dp - delta) (math.h's score_gradient), the gradient of the unscaled product q.k.
  template <typename T>
  static void probabilities_and_score_grads(T* scores, T* grad_probs, int64_t queries, int64_t width,
                                            const T* key_bias, const T* lse, const T* delta, T scale) {
    constexpr int L = kLanes<T>;
    for (int64_t query = 0; query < queries; ++query) {
      T* s_row = scores + query * width;
      T* dp_row = grad_probs + query * width;
      const Vec<T> shift = splat(jmipose::attention::score_shift(lse[query]) * T(kLog2e));
      const Vec<T> row_delta = splat(delta[query]);
      for (int64_t col = 0; col < width; col += L) {
        const Vec<T> p = exp2_lanes(load(s_row + col) + load(key_bias + col) - shift);
        store(s_row + col, p);
        store(dp_row + col, scale * p * (load(dp_row + col) - row_delta));
      }
    }
  }

};
