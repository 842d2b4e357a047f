// joint_motion_attention: the C ABI's arguments as structs, and their checks, shared by the CPU
// (cpu.cpp) and CUDA (cuda.cu) entry points.  The structs hold the arguments in the order of the
// exported functions' parameters; JMA_SIZES, JMA_FORWARD_TENSORS and JMA_BACKWARD_TENSORS build them
// inside an entry point from the parameters' names.  A side with no tokens (batch, heads or its N zero)
// may pass NULL pointers, as torch gives empty tensors no storage; res_*, mask_* may always be NULL.
#pragma once

#include <cstdint>

#include "common/abi_check.h"

namespace jmipose {
namespace attention {

struct Sizes {
  int64_t batch, heads, n_m, n_j, head_dim;
};

struct ForwardTensors {
  const void *q_m, *k_m, *v_m, *q_j, *k_j, *v_j, *res_m, *res_j;
  const uint8_t *mask_m, *mask_j;
  void *out_m, *out_j, *lse_m, *lse_j;
};

struct BackwardTensors {
  const void *grad_out_m, *grad_out_j, *q_m, *k_m, *v_m, *q_j, *k_j, *v_j, *out_m, *out_j, *res_m, *res_j;
  const uint8_t *mask_m, *mask_j;
  const void *lse_m, *lse_j;
  void *grad_q_m, *grad_k_m, *grad_v_m, *grad_q_j, *grad_k_j, *grad_v_j;
};

// Sizes >= 0, head_dim in 1..max_head_dim, and the rows of the larger side padded to 16 columns (what
// the CPU backend allocates) at most 2^58 elements, so no index overflows.
inline int check_sizes(const char* where, const Sizes& s, int64_t max_head_dim) {
  if (int status = abi::check_non_negative(where, {{"batch", s.batch}, {"heads", s.heads}, {"n_m", s.n_m},
                                                   {"n_j", s.n_j}})) {
    return status;
  }
  if (int status = abi::check_ranges(where, {{"head_dim", s.head_dim, 1, max_head_dim}})) return status;
  return abi::check_elements(where, "the padded rows of q, k and v",
                             {s.batch, s.heads, s.n_m > s.n_j ? s.n_m : s.n_j, ceil_div(s.head_dim, 16) * 16},
                             int64_t(1) << 58);
}

inline int check_pointers(const char* where, const Sizes& s, const ForwardTensors& t) {
  if (s.batch * s.heads * s.n_m > 0) {
    if (int status = abi::check_not_null(
            where, {{"q_m", t.q_m}, {"k_m", t.k_m}, {"v_m", t.v_m}, {"out_m", t.out_m}, {"lse_m", t.lse_m}})) {
      return status;
    }
  }
  if (s.batch * s.heads * s.n_j == 0) return 0;
  return abi::check_not_null(
      where, {{"q_j", t.q_j}, {"k_j", t.k_j}, {"v_j", t.v_j}, {"out_j", t.out_j}, {"lse_j", t.lse_j}});
}

inline int check_pointers(const char* where, const Sizes& s, const BackwardTensors& t) {
  if (s.batch * s.heads * s.n_m > 0) {
    if (int status = abi::check_not_null(
            where, {{"grad_out_m", t.grad_out_m}, {"q_m", t.q_m}, {"k_m", t.k_m}, {"v_m", t.v_m}, {"out_m", t.out_m},
                    {"lse_m", t.lse_m}, {"grad_q_m", t.grad_q_m}, {"grad_k_m", t.grad_k_m},
                    {"grad_v_m", t.grad_v_m}})) {
      return status;
    }
  }
  if (s.batch * s.heads * s.n_j == 0) return 0;
  return abi::check_not_null(
      where, {{"grad_out_j", t.grad_out_j}, {"q_j", t.q_j}, {"k_j", t.k_j}, {"v_j", t.v_j}, {"out_j", t.out_j},
              {"lse_j", t.lse_j}, {"grad_q_j", t.grad_q_j}, {"grad_k_j", t.grad_k_j}, {"grad_v_j", t.grad_v_j}});
}

}  // namespace attention
}  // namespace jmipose

#define JMA_SIZES \
  jmipose::attention::Sizes { batch, heads, n_m, n_j, head_dim }
#define JMA_FORWARD_TENSORS                                                                                   \
  jmipose::attention::ForwardTensors {                                                                        \
    q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, out_m, out_j, lse_m, lse_j                    \
  }
#define JMA_BACKWARD_TENSORS                                                                                  \
  jmipose::attention::BackwardTensors {                                                                       \
    grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j, mask_m, mask_j, lse_m,   \
        lse_j, grad_q_m, grad_k_m, grad_v_m, grad_q_j, grad_k_j, grad_v_j                                     \
  }
