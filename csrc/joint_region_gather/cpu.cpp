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

#include "common/error.h"
#include "common/macros.h"
#include "joint_region_gather/cpu_kernels.h"
#include "joint_region_gather/math.h"

namespace jmipose {
namespace jrg {
namespace {

constexpr int64_t kForwardTile = 60;   // output pixels per tile (a multiple of kMR)
constexpr int64_t kBackwardTile = 60;

struct Sizes {
  int64_t batch, in_channels, height, width, out_channels, kernel_h, kernel_w, out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, offset_groups;
};

bool product_fits(std::initializer_list<int64_t> factors) {
  int64_t total = 1;
  for (int64_t f : factors) {
    if (__builtin_mul_overflow(total, f, &total) || total > (int64_t(1) << 52)) return false;
  }
  return true;
}

// Defensive size checks (Python checks first with friendlier messages); returns 0 or fail(...).
int validate(const Sizes& s, const char* where) {
  if (s.batch < 0) return fail("%s: batch must be >= 0, got %lld", where, (long long)s.batch);
  const struct { const char* name; int64_t value; int64_t min; } limits[] = {
      {"in_channels", s.in_channels, 1}, {"height", s.height, 1},     {"width", s.width, 1},
      {"out_channels", s.out_channels, 1}, {"kernel_h", s.kernel_h, 1}, {"kernel_w", s.kernel_w, 1},
      {"out_h", s.out_h, 1},             {"out_w", s.out_w, 1},       {"stride_h", s.stride_h, 1},
      {"stride_w", s.stride_w, 1},       {"pad_h", s.pad_h, 0},       {"pad_w", s.pad_w, 0},
      {"dil_h", s.dil_h, 1},             {"dil_w", s.dil_w, 1},       {"groups", s.groups, 1},
      {"offset_groups", s.offset_groups, 1}};
  for (const auto& l : limits) {
    if (l.value < l.min || l.value > (int64_t(1) << 30)) {
      return fail("%s: %s must be in [%lld, 2^30], got %lld", where, l.name, (long long)l.min, (long long)l.value);
    }
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
  if (!product_fits({s.batch, s.in_channels, s.height, s.width}) ||
      !product_fits({s.batch, s.out_channels, s.out_h, s.out_w}) ||
      !product_fits({s.batch, 2 * s.offset_groups, s.kernel_h, s.kernel_w, s.out_h, s.out_w}) ||
      !product_fits({s.out_channels, s.in_channels, s.kernel_h, s.kernel_w, kBackwardTile})) {
    return fail("%s: tensor sizes too large", where);
  }
  return 0;
}

Geometry geometry_of(const Sizes& s) {
  Geometry g;
  g.in_channels = s.in_channels;
  g.height = s.height;
  g.width = s.width;
  g.out_channels = s.out_channels;
  g.kernel_h = s.kernel_h;
  g.kernel_w = s.kernel_w;
  g.taps = s.kernel_h * s.kernel_w;
  g.out_w = s.out_w;
  g.out_pixels = s.out_h * s.out_w;
  g.stride_h = s.stride_h;
  g.stride_w = s.stride_w;
  g.pad_h = s.pad_h;
  g.pad_w = s.pad_w;
  g.dil_h = s.dil_h;
  g.dil_w = s.dil_w;
  g.groups = s.groups;
  g.offset_groups = s.offset_groups;
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

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Forward weights: per conv group, panels of kNR output channels, [panel][k*cpg + c][kNR] (zero pad).
template <typename T>
std::vector<T> pack_forward_weights(const Geometry& g, const T* weight) {
  constexpr int64_t NR = kNR<T>;
  const int64_t depth = g.taps * g.in_per_group, panels = ceil_div(g.out_per_group, NR);
  std::vector<T> packed(g.groups * panels * depth * NR + NR, T(0));
  for (int64_t gr = 0; gr < g.groups; ++gr)
    for (int64_t o = 0; o < g.out_per_group; ++o)
      for (int64_t c = 0; c < g.in_per_group; ++c)
        for (int64_t k = 0; k < g.taps; ++k) {
          const T w = weight[((gr * g.out_per_group + o) * g.in_per_group + c) * g.taps + k];
          packed[((gr * panels + o / NR) * depth + k * g.in_per_group + c) * NR + o % NR] = w;
        }
  return packed;
}

// Backward weights (for grad_out x W): per conv group, panels of kNR columns k*cpg + c, [panel][o][kNR].
template <typename T>
std::vector<T> pack_backward_weights(const Geometry& g, const T* weight) {
  constexpr int64_t NR = kNR<T>;
  const int64_t depth = g.taps * g.in_per_group, panels = ceil_div(depth, NR);
  std::vector<T> packed(g.groups * panels * g.out_per_group * NR + NR, T(0));
  for (int64_t gr = 0; gr < g.groups; ++gr)
    for (int64_t o = 0; o < g.out_per_group; ++o)
      for (int64_t c = 0; c < g.in_per_group; ++c)
        for (int64_t k = 0; k < g.taps; ++k) {
          const T w = weight[((gr * g.out_per_group + o) * g.in_per_group + c) * g.taps + k];
          const int64_t column = k * g.in_per_group + c;
          packed[((gr * panels + column / NR) * g.out_per_group + o) * NR + column % NR] = w;
        }
  return packed;
}

// [C][P] -> [P][C] (and back), in blocks so both sides stay in cache.
template <typename T>
void to_channels_last(const T* src, int64_t channels, int64_t pixels, T* dst) {
  constexpr int64_t kBlock = 64;
  for (int64_t p0 = 0; p0 < pixels; p0 += kBlock) {
    const int64_t p1 = std::min(pixels, p0 + kBlock);
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t p = p0; p < p1; ++p) dst[p * channels + c] = src[c * pixels + p];
  }
}

template <typename T>
void to_channels_first(const T* src, int64_t channels, int64_t pixels, T* dst) {
  constexpr int64_t kBlock = 64;
  for (int64_t p0 = 0; p0 < pixels; p0 += kBlock) {
    const int64_t p1 = std::min(pixels, p0 + kBlock);
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t p = p0; p < p1; ++p) dst[c * pixels + p] = src[p * channels + c];
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

template <typename T>
int forward(const Sizes& s, const T* input, const T* offset, const T* mask, const T* weight, const T* bias,
            T* output) {
  const Geometry g = geometry_of(s);
  const std::vector<ChannelRun> runs = channel_runs(g);
  const std::vector<T> packed = pack_forward_weights(g, weight);
  const int64_t image_size = s.in_channels * s.height * s.width;
  const int64_t col_size = kForwardTile * g.col_stride + kNR<T>;
  const int64_t out_size = kForwardTile * s.out_channels;
  const int64_t per_thread = image_size + col_size + out_size;
  const WorkSplit work = split_work(s.batch, g.out_pixels, kForwardTile);
  std::vector<T> scratch(per_thread * work.threads, T(0));  // allocated here: no throw inside OpenMP
  const int64_t depth = g.taps * g.in_per_group, panels = ceil_div(g.out_per_group, kNR<T>);

#pragma omp parallel num_threads(work.threads)
  {
    T* image = scratch.data() + per_thread * omp_get_thread_num();
    T* col = image + image_size;
    T* out_tile = col + col_size;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < work.items; ++item) {
      const int64_t b = item / work.chunks, chunk = item % work.chunks;
      to_channels_last(input + b * image_size, s.in_channels, s.height * s.width, image);
      const T* offset_b = offset + b * 2 * s.offset_groups * g.taps * g.out_pixels;
      const T* mask_b = mask != nullptr ? mask + b * s.offset_groups * g.taps * g.out_pixels : nullptr;
      T* output_b = output + b * s.out_channels * g.out_pixels;
      for (int64_t t = work.first_tile(chunk); t < work.first_tile(chunk + 1); ++t) {
        const int64_t first = t * kForwardTile, count = std::min(kForwardTile, g.out_pixels - first);
        sample_columns(g, runs.data(), static_cast<int64_t>(runs.size()), image, offset_b, mask_b, first, count, col);
        for (int64_t gr = 0; gr < g.groups; ++gr) {
          gemm(count, g.out_per_group, depth, col + gr * depth, g.col_stride, int64_t(1),
               packed.data() + gr * panels * depth * kNR<T>, int64_t(kNR<T>), depth * kNR<T>,
               out_tile + gr * g.out_per_group, s.out_channels, false);
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

template <typename T>
int backward(const Sizes& s, const T* grad_output, const T* input, const T* offset, const T* mask, const T* weight,
             T* grad_input, T* grad_offset, T* grad_mask, T* grad_weight, T* grad_bias) {
  if (grad_bias != nullptr) bias_gradient(s, grad_output, grad_bias);
  const bool need_cg = grad_input != nullptr || grad_offset != nullptr || grad_mask != nullptr;
  const bool need_col = grad_weight != nullptr;
  if (!need_cg && !need_col) return 0;
  const Geometry g = geometry_of(s);
  const std::vector<ChannelRun> runs = channel_runs(g);
  const std::vector<T> packed = need_cg ? pack_backward_weights(g, weight) : std::vector<T>();
  const int64_t pixels = s.height * s.width, image_size = s.in_channels * pixels;
  const int64_t depth = g.taps * g.in_per_group, panels = ceil_div(depth, kNR<T>);
  const int64_t tile_size = kBackwardTile * g.col_stride + kNR<T>;
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
      to_channels_last(input + b * image_size, s.in_channels, pixels, image);
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
          gemm(count, depth, g.out_per_group, grad_out_tile + gr * g.out_per_group, s.out_channels, int64_t(1),
               packed.data() + gr * panels * g.out_per_group * kNR<T>, int64_t(kNR<T>), g.out_per_group * kNR<T>,
               cg_tile + gr * depth, g.col_stride, false);
        }
        backward_columns(g, runs.data(), static_cast<int64_t>(runs.size()), image, offset + b * offset_stride, mask_b,
                         first, count, cg_tile, col_tile, grad_image, grad_offset_b, grad_mask_b);
        for (int64_t gr = 0; need_col && gr < g.groups; ++gr) {
          gemm(g.out_per_group, depth, count, grad_out_tile + gr * g.out_per_group, int64_t(1), s.out_channels,
               col_tile + gr * depth, g.col_stride, int64_t(kNR<T>), weight_partial + gr * g.out_per_group * depth,
               depth, true);
        }
      }
      if (private_grad_image) to_channels_first(grad_image, s.in_channels, pixels, grad_input + b * image_size);
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

#define JRG_SIZES                                                                                         \
  jmipose::jrg::Sizes {                                                                                   \
    batch, in_channels, height, width, out_channels, kernel_h, kernel_w, out_h, out_w, stride_h, stride_w, \
        pad_h, pad_w, dil_h, dil_w, groups, offset_groups                                                 \
  }

JMIPOSE_API int jmipose_joint_region_gather_forward_cpu(const void* input, const void* offset, const void* mask,
                                                        const void* weight, const void* bias, void* output,
                                                        JRG_SIZE_PARAMS, int32_t dtype) {
  const char* where = "joint_region_gather forward (cpp)";
  return jmipose::guarded(where, [&]() -> int {
    const jmipose::jrg::Sizes sizes = JRG_SIZES;
    if (int status = jmipose::jrg::validate(sizes, where)) return status;
    if (batch == 0) return 0;
    if (input == nullptr || offset == nullptr || weight == nullptr || output == nullptr) {
      return jmipose::fail("%s: input, offset, weight and output must not be NULL", where);
    }
    switch (dtype) {
      case jmipose::kFloat32:
        return jmipose::jrg::forward(sizes, static_cast<const float*>(input), static_cast<const float*>(offset),
                                     static_cast<const float*>(mask), static_cast<const float*>(weight),
                                     static_cast<const float*>(bias), static_cast<float*>(output));
      case jmipose::kFloat64:
        return jmipose::jrg::forward(sizes, static_cast<const double*>(input), static_cast<const double*>(offset),
                                     static_cast<const double*>(mask), static_cast<const double*>(weight),
                                     static_cast<const double*>(bias), static_cast<double*>(output));
      default:
        return jmipose::fail("%s: dtype code %d is not supported on the CPU (float32, float64)", where, dtype);
    }
  });
}

JMIPOSE_API int jmipose_joint_region_gather_backward_cpu(const void* grad_output, const void* input,
                                                         const void* offset, const void* mask, const void* weight,
                                                         void* grad_input, void* grad_offset, void* grad_mask,
                                                         void* grad_weight, void* grad_bias, JRG_SIZE_PARAMS,
                                                         int32_t dtype) {
  const char* where = "joint_region_gather backward (cpp)";
  return jmipose::guarded(where, [&]() -> int {
    const jmipose::jrg::Sizes sizes = JRG_SIZES;
    if (int status = jmipose::jrg::validate(sizes, where)) return status;
    if (grad_mask != nullptr && mask == nullptr) return jmipose::fail("%s: grad_mask needs a mask", where);
    if (grad_output == nullptr || input == nullptr || offset == nullptr || weight == nullptr) {
      return jmipose::fail("%s: grad_output, input, offset and weight must not be NULL", where);
    }
    switch (dtype) {
      case jmipose::kFloat32:
        return jmipose::jrg::backward(
            sizes, static_cast<const float*>(grad_output), static_cast<const float*>(input),
            static_cast<const float*>(offset), static_cast<const float*>(mask), static_cast<const float*>(weight),
            static_cast<float*>(grad_input), static_cast<float*>(grad_offset), static_cast<float*>(grad_mask),
            static_cast<float*>(grad_weight), static_cast<float*>(grad_bias));
      case jmipose::kFloat64:
        return jmipose::jrg::backward(
            sizes, static_cast<const double*>(grad_output), static_cast<const double*>(input),
            static_cast<const double*>(offset), static_cast<const double*>(mask), static_cast<const double*>(weight),
            static_cast<double*>(grad_input), static_cast<double*>(grad_offset), static_cast<double*>(grad_mask),
            static_cast<double*>(grad_weight), static_cast<double*>(grad_bias));
      default:
        return jmipose::fail("%s: dtype code %d is not supported on the CPU (float32, float64)", where, dtype);
    }
  });
}
