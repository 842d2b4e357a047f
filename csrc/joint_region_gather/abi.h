// joint_region_gather: the size arguments of the C ABI as one struct, and their checks, shared by the
// CPU (cpu.cpp) and CUDA (cuda.cu) entry points.  The arguments themselves, in the order the Python
// binding passes them, are JRG_SIZE_PARAMS in math.h; Sizes has the same fields in the same order.
#pragma once

#include <cstdint>

#include "common/abi_check.h"
#include "common/error.h"

namespace jmipose {
namespace jrg {

struct Sizes {
  int64_t batch, in_channels, height, width, out_channels, kernel_h, kernel_w, out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, offset_groups;
};

// Every size but the batch is at most this (so every product of a few sizes fits int64 with room).
constexpr int64_t kMaxSize = int64_t(1) << 30;

// The rules of a deformable convolution on the sizes: ranges, divisibility by the groups, the output
// size of the convolution, and no tensor with more than max_elements elements (each backend's own
// bound, below what its index arithmetic can hold).
inline int check_sizes(const Sizes& s, const char* where, int64_t max_elements) {
  if (int status = abi::check_non_negative(where, {{"batch", s.batch}})) return status;
  if (int status = abi::check_ranges(
          where, {{"in_channels", s.in_channels, 1, kMaxSize},   {"height", s.height, 1, kMaxSize},
                  {"width", s.width, 1, kMaxSize},               {"out_channels", s.out_channels, 1, kMaxSize},
                  {"kernel_h", s.kernel_h, 1, kMaxSize},         {"kernel_w", s.kernel_w, 1, kMaxSize},
                  {"out_h", s.out_h, 1, kMaxSize},               {"out_w", s.out_w, 1, kMaxSize},
                  {"stride_h", s.stride_h, 1, kMaxSize},         {"stride_w", s.stride_w, 1, kMaxSize},
                  {"pad_h", s.pad_h, 0, kMaxSize},               {"pad_w", s.pad_w, 0, kMaxSize},
                  {"dil_h", s.dil_h, 1, kMaxSize},               {"dil_w", s.dil_w, 1, kMaxSize},
                  {"groups", s.groups, 1, kMaxSize},             {"offset_groups", s.offset_groups, 1, kMaxSize}})) {
    return status;
  }
  if (s.in_channels % s.groups != 0 || s.out_channels % s.groups != 0) {
    return fail("%s: in_channels (%lld) and out_channels (%lld) must be divisible by groups (%lld)", where,
                (long long)s.in_channels, (long long)s.out_channels, (long long)s.groups);
  }
  if (s.in_channels % s.offset_groups != 0) {
    return fail("%s: in_channels (%lld) must be divisible by offset_groups (%lld)", where, (long long)s.in_channels,
                (long long)s.offset_groups);
  }
  const int64_t span_h = s.dil_h * (s.kernel_h - 1) + 1, span_w = s.dil_w * (s.kernel_w - 1) + 1;
  const int64_t expect_h = (s.height + 2 * s.pad_h - span_h) / s.stride_h + 1;
  const int64_t expect_w = (s.width + 2 * s.pad_w - span_w) / s.stride_w + 1;
  if (s.height + 2 * s.pad_h < span_h || s.width + 2 * s.pad_w < span_w || s.out_h != expect_h ||
      s.out_w != expect_w) {
    return fail("%s: output size (%lld, %lld) does not match the convolution of (%lld, %lld) (expected %lld, %lld)",
                where, (long long)s.out_h, (long long)s.out_w, (long long)s.height, (long long)s.width,
                (long long)expect_h, (long long)expect_w);
  }
  if (int status = abi::check_elements(where, "input", {s.batch, s.in_channels, s.height, s.width}, max_elements)) {
    return status;
  }
  if (int status = abi::check_elements(where, "offset",
                                       {s.batch, 2 * s.offset_groups, s.kernel_h, s.kernel_w, s.out_h, s.out_w},
                                       max_elements)) {
    return status;
  }
  if (int status = abi::check_elements(where, "output", {s.batch, s.out_channels, s.out_h, s.out_w}, max_elements)) {
    return status;
  }
  return abi::check_elements(where, "weight", {s.out_channels, s.in_channels / s.groups, s.kernel_h, s.kernel_w},
                             max_elements);
}

// The pointers a forward or backward call must have (bias, mask and the gradients not asked for may
// be NULL).
inline int check_forward_pointers(const char* where, const void* input, const void* offset, const void* weight,
                                  const void* output) {
  return abi::check_not_null(where, {{"input", input}, {"offset", offset}, {"weight", weight}, {"output", output}});
}

inline int check_backward_pointers(const char* where, const void* grad_output, const void* input, const void* offset,
                                   const void* weight) {
  return abi::check_not_null(
      where, {{"grad_output", grad_output}, {"input", input}, {"offset", offset}, {"weight", weight}});
}

}  // namespace jrg
}  // namespace jmipose

// Sizes from the arguments JRG_SIZE_PARAMS (math.h) names.
#define JRG_SIZES                                                                                         \
  jmipose::jrg::Sizes {                                                                                   \
    batch, in_channels, height, width, out_channels, kernel_h, kernel_w, out_h, out_w, stride_h, stride_w, \
        pad_h, pad_w, dil_h, dil_w, groups, offset_groups                                                 \
  }
