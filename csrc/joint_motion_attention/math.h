// joint_motion_attention: the per-row and per-element math of the online (flash-style) softmax,
// shared by the C++ CPU code (cpu.cpp) and the CUDA kernels (cuda.cu), so both backends follow one
// set of conventions and the CPU tests exercise them.
//
// One query row i of one direction, keys j = 0..N_k-1, scores s_ij = scale * q_i . k_j (natural-log
// units), masked keys get s_ij = -inf.  Keys arrive in blocks; the row keeps a running max m and a
// running sum l = sum_j exp(s_ij - m) over the keys seen so far, and an output accumulator
// acc = sum_j exp(s_ij - m) v_j.  When a block raises the max to m', the old sum and accumulator
// are multiplied by alpha = exp(m - m') (online_softmax_rescale).  At the end
//     out_i = acc / l  (0 when l == 0)          lse_i = m + log(l)  (-inf when l == 0)
// Backward recomputes p_ij = exp(s_ij - lse_i) (0 for masked keys and for rows with lse = -inf) and
// ds_ij = p_ij (dp_ij - delta_i) with dp_ij = dO_i . v_j and delta_i = dO_i . (out_i - res_i).
//
// Masked-row convention (a query whose keys are all masked): m stays -inf and l stays 0; every
// exponential below is written so that -inf - (-inf) never happens, hence no NaN: the row's
// attention output is 0 (the op's output is the residual), its lse is -inf, its probabilities and
// gradients are 0.
//
// T is the statistics type: float for float32/float16/bfloat16 inputs, double for float64.
#pragma once

#include <cmath>
#include <limits>

#include "common/macros.h"

namespace jmipose {
namespace attention {

template <typename T>
JMIPOSE_HOST_DEVICE T negative_infinity() {
  return -std::numeric_limits<T>::infinity();
}

JMIPOSE_HOST_DEVICE float exp_of(float x) { return expf(x); }
JMIPOSE_HOST_DEVICE double exp_of(double x) { return exp(x); }
JMIPOSE_HOST_DEVICE float log_of(float x) { return logf(x); }
JMIPOSE_HOST_DEVICE double log_of(double x) { return log(x); }

// The score of key j as seen by the softmax: -inf when the key is masked out.
template <typename T>
JMIPOSE_HOST_DEVICE T masked_score(T score, bool key_is_masked) {
  return key_is_masked ? negative_infinity<T>() : score;
}

// The value subtracted from scores before exponentiation: the forward's running max m or the
// backward's lse, or 0 when that is -inf (no unmasked key seen yet, or a fully masked row, whose
// scores are all -inf), so exp(-inf - 0) = 0 instead of exp(-inf - (-inf)) = NaN.
template <typename T>
JMIPOSE_HOST_DEVICE T score_shift(T max_or_lse) {
  return max_or_lse == negative_infinity<T>() ? T(0) : max_or_lse;
}

// exp(s - shift): the forward's un-normalised weight exp(s - m) under the running max m, and the
// backward's recomputed probability p_ij = exp(s_ij - lse_i); 0 for masked keys (s = -inf) and
// fully masked rows.
template <typename T>
JMIPOSE_HOST_DEVICE T shifted_exp(T score, T max_or_lse) {
  return exp_of(score - score_shift(max_or_lse));
}

// Folds a block whose largest score is block_max into the running max; returns alpha, the factor
// by which the running sum and the output accumulator must be multiplied (1 when the max did not
// change, including the all-masked-so-far case m = m' = -inf; 0 when m was -inf and m' is finite).
template <typename T>
JMIPOSE_HOST_DEVICE T online_softmax_rescale(T& running_max, T block_max) {
  const T new_max = block_max > running_max ? block_max : running_max;
  const T alpha = new_max == running_max ? T(1) : exp_of(running_max - new_max);
  running_max = new_max;
  return alpha;
}

// 1 / l, or 0 for a row with no unmasked key (its output is then 0 + residual).
template <typename T>
JMIPOSE_HOST_DEVICE T online_softmax_inverse_sum(T running_sum) {
  return running_sum > T(0) ? T(1) / running_sum : T(0);
}

// Log-sum-exp of the row's scores, saved for backward; -inf for a row with no unmasked key.
template <typename T>
JMIPOSE_HOST_DEVICE T online_softmax_lse(T running_max, T running_sum) {
  return running_sum > T(0) ? running_max + log_of(running_sum) : negative_infinity<T>();
}

// Gradient of the score s_ij (before the scale): p_ij (dp_ij - delta_i).
template <typename T>
JMIPOSE_HOST_DEVICE T score_gradient(T probability, T grad_probability, T delta) {
  return probability * (grad_probability - delta);
}

}  // namespace attention
}  // namespace jmipose
