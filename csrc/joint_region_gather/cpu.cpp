// joint_region_gather (modulated deformable convolution, torchvision's deform_conv2d semantics) on
// the CPU: a fused implicit GEMM.  For each tile of output pixels the kernel samples, modulates and
// stores a [tile x taps*Cin] column tile (per thread, in L2), multiplies it with the packed weights
// straight into the output, and moves on: no [Cin*K, H*W] im2col buffer of the image ever exists.
// The backward does the same per tile: column gradient = grad_out x W, then one sampling pass that
// yields the offset and mask gradients, scatters the input gradient and rebuilds the column tile
// for the weight gradient.
//
// Parallelism: OpenMP over work items (image, chunk of tiles).  An image is split into chunks only
// when there are fewer images than threads.  Each work item keeps its image channels-last in a
// per-thread buffer.
//
// Determinism of the backward: grad_offset and grad_mask elements are written by the one item that
// owns their pixel; grad_bias by the one thread that owns its channel.  grad_input: when an image is
// one work item (batch >= threads) that item owns the image's gradient; otherwise each chunk
// accumulates into its own buffer and the chunks are summed in a fixed order.  grad_weight: one
// partial per thread (static schedule), summed in thread order.  So a given input and thread count
// always gives bitwise the same gradients; with batch >= threads grad_input/offset/mask/bias do not
// depend on the thread count at all.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/abi_check.h"
#include "common/cpu_isa.h"
#include "common/error.h"
#include "common/macros.h"
#include "joint_region_gather/abi.h"
#include "joint_region_gather/math.h"

namespace jmipose {
namespace jrg {
namespace {

constexpr int64_t kForwardTile = 60;   // output pixels per tile (a multiple of cpu::kGemmRows)
constexpr int64_t kBackwardTile = 60;
using cpu::kGemmCols;

// Everything a tile kernel needs to know about the problem: the sizes of the call and what follows.
struct Geometry : Sizes {
  int64_t taps, out_pixels, in_per_group, out_per_group, in_per_offset_group;
  int64_t col_stride;  // elements per column-tile row: taps * in_channels
};

// A contiguous run of input channels [begin, end) inside one offset group and one conv group; its
// samples of tap k land at column (conv_group*taps + k)*in_per_group + (begin - conv_group*in_per_group).
struct ChannelRun {
  int64_t offset_group, conv_group, begin, end;
};

// Where a tap of an output pixel samples, and its modulation (1 without a mask).
template <typename T>
struct TapSample {
  T y, x, modulation;
};

}  // namespace
}  // namespace jrg
}  // namespace jmipose

// The tile kernels, compiled for AVX2+FMA and for the portable baseline (common/cpu_isa.h).
#define JMIPOSE_CPU_KERNELS_NAMESPACE jmipose::jrg
#define JMIPOSE_CPU_KERNELS_HEADER "joint_region_gather/cpu_kernels.h"
#include "common/cpu_isa_kernels.h"

namespace jmipose {
namespace jrg {
namespace {

// Tensor sizes are bounded so that every flat index (and the scratch of a work item) fits int64 with
// room to spare.
constexpr int64_t kMaxElements = int64_t(1) << 52;

int check_cpu_sizes(const Sizes& s, const char* where) {
  if (int status = jrg::check_sizes(s, where, kMaxElements)) return status;
  return abi::check_elements(where, "the packed weights of a backward tile",
                             {s.out_channels, s.in_channels, s.kernel_h, s.kernel_w, kBackwardTile}, kMaxElements);
}

Geometry geometry_of(const Sizes& s) {
  Geometry g;
  static_cast<Sizes&>(g) = s;
  g.taps = s.kernel_h * s.kernel_w;
  g.out_pixels = s.out_h * s.out_w;
  g.in_per_group = s.in_channels / s.groups;
  g.out_per_group = s.out_channels / s.groups;
  g.in_per_offset_group = s.in_channels / s.offset_groups;
  g.col_stride = g.taps * s.in_channels;
  return g;
}

// Channel runs: offset-group ranges cut at conv-group boundaries.
std::vector<ChannelRun> channel_runs(const Geometry& g) {
  std::vector<ChannelRun> runs;
  for (int64_t og = 0; og < g.offset_groups; ++og) {
    int64_t begin = og * g.in_per_offset_group;
    const int64_t end = begin + g.in_per_offset_group;
    while (begin < end) {
      const int64_t conv_group = begin / g.in_per_group;
      const int64_t stop = std::min(end, (conv_group + 1) * g.in_per_group);
      runs.push_back({og, conv_group, begin, stop});
      begin = stop;
    }
  }
  return runs;
}

// The weights of each conv group as the B operand of a GEMM, in panels of kGemmCols columns
// ([group][panel][row][kGemmCols], zero-padded): transposed (rows k*cpg + c, columns o) for the
// forward's columns x W^T, or as they are (rows o, columns k*cpg + c) for the backward's grad_out x W.
template <typename T>
std::vector<T> pack_weights(const Geometry& g, const T* weight, bool transposed) {
  constexpr int64_t NR = kGemmCols<T>;
  const int64_t depth = g.taps * g.in_per_group;
  const int64_t rows = transposed ? depth : g.out_per_group;
  const int64_t panels = ceil_div(transposed ? g.out_per_group : depth, NR);
  std::vector<T> packed(g.groups * panels * rows * NR + NR, T(0));
  for (int64_t gr = 0; gr < g.groups; ++gr)
    for (int64_t o = 0; o < g.out_per_group; ++o)
      for (int64_t c = 0; c < g.in_per_group; ++c)
        for (int64_t k = 0; k < g.taps; ++k) {
          const int64_t column = k * g.in_per_group + c;
          const int64_t row = transposed ? column : o, col = transposed ? o : column;
          packed[((gr * panels + col / NR) * rows + row) * NR + col % NR] =
              weight[((gr * g.out_per_group + o) * g.in_per_group + c) * g.taps + k];
        }
  return packed;
}

// One image between channels-first [C][P] and channels-last [P][C], in blocks of pixels so both sides
// stay in cache.
template <bool kToChannelsLast, typename T>
void change_layout(const T* src, int64_t channels, int64_t pixels, T* dst) {
  constexpr int64_t kBlock = 64;
  for (int64_t p0 = 0; p0 < pixels; p0 += kBlock) {
    const int64_t p1 = std::min(pixels, p0 + kBlock);
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t p = p0; p < p1; ++p) {
        if constexpr (kToChannelsLast) {
          dst[p * channels + c] = src[c * pixels + p];
        } else {
          dst[c * pixels + p] = src[p * channels + c];
        }
      }
  }
}

// How the batch is cut into work items: chunks of tiles per image, only when images < threads.
struct WorkSplit {
  int64_t tiles, chunks, items;
  int threads;
  int64_t first_tile(int64_t chunk) const { return chunk * tiles / chunks; }
};

WorkSplit split_work(int64_t batch, int64_t out_pixels, int64_t tile) {
  WorkSplit w;
  w.tiles = ceil_div(out_pixels, tile);
  const int max_threads = std::max(1, omp_get_max_threads());
  w.chunks = batch >= max_threads ? 1 : std::min(w.tiles, ceil_div(max_threads, std::max<int64_t>(batch, 1)));
  w.items = batch * w.chunks;
  w.threads = static_cast<int>(std::min<int64_t>(max_threads, std::max<int64_t>(w.items, 1)));
  return w;
}

template <typename T, typename Kernels>
int forward(const Sizes& s, const T* input, const T* offset, const T* mask, const T* weight, const T* bias,
            T* output) {
  const Geometry g = geometry_of(s);
  const std::vector<ChannelRun> runs = channel_runs(g);
  const std::vector<T> packed = pack_weights(g, weight, true);
  const int64_t image_size = s.in_channels * s.height * s.width;
  const int64_t col_size = kForwardTile * g.col_stride + kGemmCols<T>;
  const int64_t out_size = kForwardTile * s.out_channels;
  const int64_t per_thread = image_size + col_size + out_size;
  const WorkSplit work = split_work(s.batch, g.out_pixels, kForwardTile);
  std::vector<T> scratch(per_thread * work.threads, T(0));  // allocated here: no throw inside OpenMP
  const int64_t depth = g.taps * g.in_per_group, panels = ceil_div(g.out_per_group, kGemmCols<T>);

#pragma omp parallel num_threads(work.threads)
  {
    T* image = scratch.data() + per_thread * omp_get_thread_num();
    T* col = image + image_size;
    T* out_tile = col + col_size;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < work.items; ++item) {
      const int64_t b = item / work.chunks, chunk = item % work.chunks;
      change_layout<true>(input + b * image_size, s.in_channels, s.height * s.width, image);
      const T* offset_b = offset + b * 2 * s.offset_groups * g.taps * g.out_pixels;
      const T* mask_b = mask != nullptr ? mask + b * s.offset_groups * g.taps * g.out_pixels : nullptr;
      T* output_b = output + b * s.out_channels * g.out_pixels;
      for (int64_t t = work.first_tile(chunk); t < work.first_tile(chunk + 1); ++t) {
        const int64_t first = t * kForwardTile, count = std::min(kForwardTile, g.out_pixels - first);
        Kernels::sample_columns(g, runs.data(), static_cast<int64_t>(runs.size()), image, offset_b, mask_b, first,
                                count, col);
        for (int64_t gr = 0; gr < g.groups; ++gr) {
          Kernels::template gemm<T, false>(count, g.out_per_group, depth, col + gr * depth, g.col_stride,
                                           packed.data() + gr * panels * depth * kGemmCols<T>, kGemmCols<T>,
                                           depth * kGemmCols<T>, out_tile + gr * g.out_per_group, s.out_channels,
                                           false);
        }
        for (int64_t o = 0; o < s.out_channels; ++o) {
          const T b_o = bias != nullptr ? bias[o] : T(0);
          T* dst = output_b + o * g.out_pixels + first;
          for (int64_t p = 0; p < count; ++p) dst[p] = out_tile[p * s.out_channels + o] + b_o;
        }
      }
    }
  }
  return 0;
}

template <typename T>
void bias_gradient(const Sizes& s, const T* grad_output, T* grad_bias) {
  const int64_t pixels = s.out_h * s.out_w;
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < s.out_channels; ++o) {
    T lanes[8] = {};
    for (int64_t b = 0; b < s.batch; ++b) {
      const T* g = grad_output + (b * s.out_channels + o) * pixels;
      int64_t p = 0;
      for (; p + 8 <= pixels; p += 8)
        for (int i = 0; i < 8; ++i) lanes[i] += g[p + i];
      for (; p < pixels; ++p) lanes[0] += g[p];
    }
    T sum = T(0);
    for (int i = 0; i < 8; ++i) sum += lanes[i];
    grad_bias[o] = sum;
  }
}

template <typename T, typename Kernels>
int backward(const Sizes& s, const T* grad_output, const T* input, const T* offset, const T* mask, const T* weight,
             T* grad_input, T* grad_offset, T* grad_mask, T* grad_weight, T* grad_bias) {
  if (grad_bias != nullptr) bias_gradient(s, grad_output, grad_bias);
  const bool need_cg = grad_input != nullptr || grad_offset != nullptr || grad_mask != nullptr;
  const bool need_col = grad_weight != nullptr;
  if (!need_cg && !need_col) return 0;
  const Geometry g = geometry_of(s);
  const std::vector<ChannelRun> runs = channel_runs(g);
  const std::vector<T> packed = need_cg ? pack_weights(g, weight, false) : std::vector<T>();
  const int64_t pixels = s.height * s.width, image_size = s.in_channels * pixels;
  const int64_t depth = g.taps * g.in_per_group, panels = ceil_div(depth, kGemmCols<T>);
  const int64_t tile_size = kBackwardTile * g.col_stride + kGemmCols<T>;
  const int64_t weight_size = s.out_channels * depth;
  const WorkSplit work = split_work(s.batch, g.out_pixels, kBackwardTile);
  const bool private_grad_image = grad_input != nullptr && work.chunks == 1;
  // Per thread: image, grad_out tile, column-gradient tile, column tile, grad_weight partial, grad image.
  const int64_t sizes[6] = {image_size, kBackwardTile * s.out_channels, need_cg ? tile_size : 0,
                            need_col ? tile_size : 0, need_col ? weight_size : 0, private_grad_image ? image_size : 0};
  int64_t per_thread = 0;
  for (int64_t size : sizes) per_thread += size;
  std::vector<T> scratch(per_thread * work.threads, T(0));
  std::vector<T> chunk_grads(grad_input != nullptr && work.chunks > 1 ? work.items * image_size : 0);

#pragma omp parallel num_threads(work.threads)
  {
    T* buffers[6];
    buffers[0] = scratch.data() + per_thread * omp_get_thread_num();
    for (int i = 1; i < 6; ++i) buffers[i] = buffers[i - 1] + sizes[i - 1];
    T *image = buffers[0], *grad_out_tile = buffers[1];
    T* cg_tile = need_cg ? buffers[2] : nullptr;
    T* col_tile = need_col ? buffers[3] : nullptr;
    T* weight_partial = need_col ? buffers[4] : nullptr;
#pragma omp for schedule(static)
    for (int64_t item = 0; item < work.items; ++item) {
      const int64_t b = item / work.chunks, chunk = item % work.chunks;
      change_layout<true>(input + b * image_size, s.in_channels, pixels, image);
      T* grad_image = private_grad_image ? buffers[5] : (grad_input != nullptr ? chunk_grads.data() + item * image_size : nullptr);
      if (grad_image != nullptr) std::fill(grad_image, grad_image + image_size, T(0));
      const int64_t offset_stride = 2 * s.offset_groups * g.taps * g.out_pixels;
      const int64_t mask_stride = s.offset_groups * g.taps * g.out_pixels;
      const T* mask_b = mask != nullptr ? mask + b * mask_stride : nullptr;
      T* grad_offset_b = grad_offset != nullptr ? grad_offset + b * offset_stride : nullptr;
      T* grad_mask_b = grad_mask != nullptr ? grad_mask + b * mask_stride : nullptr;
      const T* grad_out_b = grad_output + b * s.out_channels * g.out_pixels;
      for (int64_t t = work.first_tile(chunk); t < work.first_tile(chunk + 1); ++t) {
        const int64_t first = t * kBackwardTile, count = std::min(kBackwardTile, g.out_pixels - first);
        for (int64_t o = 0; o < s.out_channels; ++o)
          for (int64_t p = 0; p < count; ++p)
            grad_out_tile[p * s.out_channels + o] = grad_out_b[o * g.out_pixels + first + p];
        for (int64_t gr = 0; need_cg && gr < g.groups; ++gr) {
          Kernels::template gemm<T, false>(count, depth, g.out_per_group, grad_out_tile + gr * g.out_per_group,
                                           s.out_channels, packed.data() + gr * panels * g.out_per_group * kGemmCols<T>,
                                           kGemmCols<T>, g.out_per_group * kGemmCols<T>, cg_tile + gr * depth,
                                           g.col_stride, false);
        }
        Kernels::backward_columns(g, runs.data(), static_cast<int64_t>(runs.size()), image, offset + b * offset_stride,
                                  mask_b, first, count, cg_tile, col_tile, grad_image, grad_offset_b, grad_mask_b);
        for (int64_t gr = 0; need_col && gr < g.groups; ++gr) {  // grad_out^T (read in place) x columns
          Kernels::template gemm<T, true>(g.out_per_group, depth, count, grad_out_tile + gr * g.out_per_group,
                                          s.out_channels, col_tile + gr * depth, g.col_stride, kGemmCols<T>,
                                          weight_partial + gr * g.out_per_group * depth, depth, true);
        }
      }
      if (private_grad_image) change_layout<false>(grad_image, s.in_channels, pixels, grad_input + b * image_size);
    }
    if (grad_input != nullptr && work.chunks > 1) {
      // Sum the chunks of each image in chunk order (deterministic), then back to channels-first.
#pragma omp for schedule(static)
      for (int64_t bp = 0; bp < s.batch * pixels; ++bp) {
        const int64_t b = bp / pixels, p = bp % pixels;
        for (int64_t c = 0; c < s.in_channels; ++c) {
          T sum = T(0);
          for (int64_t chunk = 0; chunk < work.chunks; ++chunk)
            sum += chunk_grads[(b * work.chunks + chunk) * image_size + p * s.in_channels + c];
          grad_input[b * image_size + c * pixels + p] = sum;
        }
      }
    }
  }
  if (need_col) {
    // grad_weight[o][c][k] = sum over threads, in thread order, of partial[o][k*cpg + c].
#pragma omp parallel for schedule(static) num_threads(work.threads)
    for (int64_t o = 0; o < s.out_channels; ++o)
      for (int64_t c = 0; c < g.in_per_group; ++c)
        for (int64_t k = 0; k < g.taps; ++k) {
          T sum = T(0);
          for (int t = 0; t < work.threads; ++t) {
            const T* partial = scratch.data() + per_thread * t + sizes[0] + sizes[1] + sizes[2] + sizes[3];
            sum += partial[o * depth + k * g.in_per_group + c];
          }
          grad_weight[(o * g.in_per_group + c) * g.taps + k] = sum;
        }
  }
  return 0;
}

}  // namespace
}  // namespace jrg
}  // namespace jmipose

JMIPOSE_API int jmipose_joint_region_gather_forward_cpu(const void* input, const void* offset, const void* mask,
                                                        const void* weight, const void* bias, void* output,
                                                        JRG_SIZE_PARAMS, int32_t dtype) {
  const char* where = "joint_region_gather forward (cpp)";
  return jmipose::guarded(where, [&]() -> int {
    namespace jrg = jmipose::jrg;
    const jrg::Sizes sizes = JRG_SIZES;
    if (int status = jrg::check_cpu_sizes(sizes, where)) return status;
    if (batch == 0) return 0;
    if (int status = jrg::check_forward_pointers(where, input, offset, weight, output)) return status;
    return jrg::dispatch_cpu(dtype, where, [&](auto zero, auto kernels) {
      using T = decltype(zero);
      return jrg::forward<T, decltype(kernels)>(sizes, static_cast<const T*>(input), static_cast<const T*>(offset),
                                                static_cast<const T*>(mask), static_cast<const T*>(weight),
                                                static_cast<const T*>(bias), static_cast<T*>(output));
    });
  });
}

JMIPOSE_API int jmipose_joint_region_gather_backward_cpu(const void* grad_output, const void* input,
                                                         const void* offset, const void* mask, const void* weight,
                                                         void* grad_input, void* grad_offset, void* grad_mask,
                                                         void* grad_weight, void* grad_bias, JRG_SIZE_PARAMS,
                                                         int32_t dtype) {
  const char* where = "joint_region_gather backward (cpp)";
  return jmipose::guarded(where, [&]() -> int {
    namespace jrg = jmipose::jrg;
    const jrg::Sizes sizes = JRG_SIZES;
    if (int status = jrg::check_cpu_sizes(sizes, where)) return status;
    if (grad_mask != nullptr && mask == nullptr) return jmipose::fail("%s: grad_mask needs a mask", where);
    if (int status = jrg::check_backward_pointers(where, grad_output, input, offset, weight)) return status;
    return jrg::dispatch_cpu(dtype, where, [&](auto zero, auto kernels) {
      using T = decltype(zero);
      return jrg::backward<T, decltype(kernels)>(
          sizes, static_cast<const T*>(grad_output), static_cast<const T*>(input), static_cast<const T*>(offset),
          static_cast<const T*>(mask), static_cast<const T*>(weight), static_cast<T*>(grad_input),
          static_cast<T*>(grad_offset), static_cast<T*>(grad_mask), static_cast<T*>(grad_weight),
          static_cast<T*>(grad_bias));
    });
  });
}
