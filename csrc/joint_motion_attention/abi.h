// joint_motion_attention: the checks of the C ABI's arguments, shared by the CPU (cpu.cpp) and CUDA
// (cuda.cu) entry points.  A side with no tokens (batch, heads or its N zero) may pass NULL pointers:
// torch gives empty tensors no storage.  res_m, res_j, mask_m and mask_j may always be NULL.
#pragma once

#include <cstdint>

#include "common/abi_check.h"

namespace jmipose {
namespace attention {

// Sizes >= 0, head_dim in 1..max_head_dim, and the rows of the larger side padded to 16 columns (what
// the CPU backend allocates) at most 2^58 elements, so no index overflows.
inline int check_sizes(const char* where, int64_t batch, int64_t heads, int64_t n_m, int64_t n_j, int64_t head_dim,
                       int64_t max_head_dim) {
  if (int status = abi::check_non_negative(where, {{"batch", batch}, {"heads", heads}, {"n_m", n_m}, {"n_j", n_j}})) {
    return status;
  }
  if (int status = abi::check_ranges(where, {{"head_dim", head_dim, 1, max_head_dim}})) return status;
  const int64_t padded_dim = (head_dim + 15) / 16 * 16;
  return abi::check_elements(where, "the padded rows of q, k and v",
                             {batch, heads, n_m > n_j ? n_m : n_j, padded_dim}, int64_t(1) << 58);
}

inline int check_forward_pointers(const char* where, int64_t batch, int64_t heads, int64_t n_m, int64_t n_j,
                                  const void* q_m, const void* k_m, const void* v_m, const void* q_j, const void* k_j,
                                  const void* v_j, const void* out_m, const void* out_j, const void* lse_m,
                                  const void* lse_j) {
  if (batch * heads * n_m > 0) {
    if (int status = abi::check_not_null(
            where, {{"q_m", q_m}, {"k_m", k_m}, {"v_m", v_m}, {"out_m", out_m}, {"lse_m", lse_m}})) {
      return status;
    }
  }
  if (batch * heads * n_j == 0) return 0;
  return abi::check_not_null(where, {{"q_j", q_j}, {"k_j", k_j}, {"v_j", v_j}, {"out_j", out_j}, {"lse_j", lse_j}});
}

inline int check_backward_pointers(const char* where, int64_t batch, int64_t heads, int64_t n_m, int64_t n_j,
                                   const void* grad_out_m, const void* grad_out_j, const void* q_m, const void* k_m,
                                   const void* v_m, const void* q_j, const void* k_j, const void* v_j,
                                   const void* out_m, const void* out_j, const void* lse_m, const void* lse_j,
                                   const void* grad_q_m, const void* grad_k_m, const void* grad_v_m,
                                   const void* grad_q_j, const void* grad_k_j, const void* grad_v_j) {
  if (batch * heads * n_m > 0) {
    if (int status = abi::check_not_null(
            where, {{"grad_out_m", grad_out_m}, {"q_m", q_m}, {"k_m", k_m}, {"v_m", v_m}, {"out_m", out_m},
                    {"lse_m", lse_m}, {"grad_q_m", grad_q_m}, {"grad_k_m", grad_k_m}, {"grad_v_m", grad_v_m}})) {
      return status;
    }
  }
  if (batch * heads * n_j == 0) return 0;
  return abi::check_not_null(
      where, {{"grad_out_j", grad_out_j}, {"q_j", q_j}, {"k_j", k_j}, {"v_j", v_j}, {"out_j", out_j},
              {"lse_j", lse_j}, {"grad_q_j", grad_q_j}, {"grad_k_j", grad_k_j}, {"grad_v_j", grad_v_j}});
}

}  // namespace attention
}  // namespace jmipose
