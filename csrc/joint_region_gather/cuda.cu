// joint_region_gather (modulated deformable convolution, torchvision's deform_conv2d semantics) on
// CUDA: a fused implicit-GEMM forward and a backward that never writes the [Cin*K, Hout*Wout]
// column buffer.  The per-sample math (coordinates, border rules, bilinear corners, coordinate
// gradients) is jmipose::jrg in math.h, shared with the C++ CPU backend.
//
//   forward        a block owns 64 output pixels x kTileO output channels of one image and conv
//                  group; per (offset group, tap, 16-channel chunk) it stages the modulated samples
//                  and the weight slice in shared memory and multiply-accumulates in float32.
//   backward data  a block owns 64 pixels of one image and offset group; per tap and channel chunk
//                  it forms grad_columns = weight^T grad_out (staged tiles), scatters them into the
//                  float32 grad_input with atomicAdd, and reduces grad offset / grad mask over the
//                  group's channels inside the block (each element written once).
//   backward weight  grad_weight = sum over (batch, pixels) of grad_out x columns^T: blocks own
//                  (conv group, offset group, tap, channel chunk, output tile, pixel split) and add
//                  their partial sums into the zeroed float32 grad_weight with atomicAdd.
//   backward bias  one block per output channel, a deterministic tree reduction.
// grad_input and grad_weight are therefore not bitwise deterministic (float atomics in a varying
// order); grad offset, grad mask and grad bias are.  All gradients are float32 buffers (the C ABI).
// Storage types: float32, float16, bfloat16, all with float32 arithmetic; float64 is not supported
// here (the cpp and reference backends compute it).
#include <climits>
#include <cstdint>
#include <initializer_list>

#include "common/cuda_utils.cuh"
#include "joint_region_gather/cuda_kernels.cuh"

// ---------------------------------------------------------------------------------------------
// Host side

namespace jmipose {
namespace jrg {
namespace {

#if !defined(JMIPOSE_CUDA_EMULATION)
// Every launch goes through here, so tests/cuda_emulation can run this file on the CPU with its own
// version of this function (and of the few runtime calls below).
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), unsigned int grid, int threads, cudaStream_t stream, Args... args) {
  kernel<<<grid, threads, 0, stream>>>(static_cast<Params>(args)...);
}
#endif

// Defensive checks (Python checks first, with friendlier messages).  Sizes are capped so every
// index below fits int64 with room to spare, and a block count must fit gridDim.x.
int check_geometry(const Geometry& s, const char* where) {
  if (s.batch < 0) return fail("%s: batch must be >= 0, got %lld", where, (long long)s.batch);
  const struct { const char* name; int64_t value, least; } sizes[] = {
      {"in_channels", s.in_channels, 1}, {"height", s.height, 1},       {"width", s.width, 1},
      {"out_channels", s.out_channels, 1}, {"kernel_h", s.kernel_h, 1}, {"kernel_w", s.kernel_w, 1},
      {"out_h", s.out_h, 1},             {"out_w", s.out_w, 1},         {"stride_h", s.stride_h, 1},
      {"stride_w", s.stride_w, 1},       {"pad_h", s.pad_h, 0},         {"pad_w", s.pad_w, 0},
      {"dil_h", s.dil_h, 1},             {"dil_w", s.dil_w, 1},         {"groups", s.groups, 1},
      {"offset_groups", s.offset_groups, 1}, {"batch", s.batch, 0}};
  for (const auto& size : sizes) {
    if (size.value < size.least || size.value > (int64_t(1) << 30)) {
      return fail("%s: %s must be in [%lld, 2^30], got %lld", where, size.name, (long long)size.least,
                  (long long)size.value);
    }
  }
  if (s.in_channels % s.groups != 0 || s.out_channels % s.groups != 0 || s.in_channels % s.offset_groups != 0) {
    return fail("%s: in_channels %lld and out_channels %lld must be divisible by groups %lld, and in_channels by "
                "offset_groups %lld", where, (long long)s.in_channels, (long long)s.out_channels,
                (long long)s.groups, (long long)s.offset_groups);
  }
  const int64_t span_h = s.dil_h * (s.kernel_h - 1) + 1, span_w = s.dil_w * (s.kernel_w - 1) + 1;
  if (s.height + 2 * s.pad_h < span_h || s.width + 2 * s.pad_w < span_w ||
      s.out_h != (s.height + 2 * s.pad_h - span_h) / s.stride_h + 1 ||
      s.out_w != (s.width + 2 * s.pad_w - span_w) / s.stride_w + 1) {
    return fail("%s: output size (%lld, %lld) is not the convolution of (%lld, %lld)", where, (long long)s.out_h,
                (long long)s.out_w, (long long)s.height, (long long)s.width);
  }
  // Every tensor's element count (and so every flat index) stays below 2^62.
  const int64_t limit = int64_t(1) << 62;
  const int64_t counts[][4] = {{s.batch, s.in_channels, s.height, s.width},
                               {s.batch, 2 * s.offset_groups * s.kernel_h, s.kernel_w, s.out_h * s.out_w},
                               {s.batch, s.out_channels, s.out_h, s.out_w},
                               {s.out_channels, s.in_channels / s.groups, s.kernel_h, s.kernel_w}};
  for (const auto& factors : counts) {
    int64_t total = 1;
    for (int64_t f : factors) {
      if (__builtin_mul_overflow(total, f, &total) || total >= limit) {
        return fail("%s: a tensor of these sizes has 2^62 or more elements", where);
      }
    }
  }
  return 0;
}

Geometry make_geometry(int64_t batch, int64_t in_channels, int64_t height, int64_t width, int64_t out_channels,
                       int64_t kernel_h, int64_t kernel_w, int64_t out_h, int64_t out_w, int64_t stride_h,
                       int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups,
                       int64_t offset_groups) {
  Geometry s{batch, in_channels, height, width, out_channels, kernel_h, kernel_w, out_h, out_w, stride_h, stride_w,
             pad_h, pad_w, dil_h, dil_w, groups, offset_groups, 0, 0, 0, 0, 0, 0};
  s.taps = kernel_h * kernel_w;
  s.n_pixels = out_h * out_w;
  s.plane = height * width;
  s.channels_per_group = groups > 0 ? in_channels / groups : 0;
  s.outs_per_group = groups > 0 ? out_channels / groups : 0;
  s.channels_per_offset_group = offset_groups > 0 ? in_channels / offset_groups : 0;
  return s;
}

int check_dtype(int32_t dtype, const char* where) {
  if (dtype == kFloat32 || dtype == kFloat16 || dtype == kBFloat16) return 0;
  return fail("%s: dtype code %d is not supported (float32, float16, bfloat16; float64 runs on cpp or reference)",
              where, (int)dtype);
}

// Zeroes `count` floats on the stream (a NULL buffer is not needed and left alone).
int zero(float* buffer, int64_t count, cudaStream_t stream, const char* where) {
  if (buffer == nullptr || count == 0) return 0;
  const cudaError_t err = cudaMemsetAsync(buffer, 0, static_cast<size_t>(count) * sizeof(float), stream);
  return err == cudaSuccess ? 0 : fail("%s: cudaMemsetAsync: %s", where, cudaGetErrorString(err));
}

int64_t ceil_div64(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The number of blocks of a launch, the product of `factors`, checked against gridDim.x's limit
// (the product itself is formed with overflow checks).
int grid_size(std::initializer_list<int64_t> factors, const char* where, const char* kernel, unsigned int* grid) {
  int64_t blocks = 1;
  for (int64_t f : factors) {
    if (__builtin_mul_overflow(blocks, f, &blocks) || blocks > INT_MAX) {
      return fail("%s: the %s kernel would need more than %d blocks", where, kernel, INT_MAX);
    }
  }
  if (blocks <= 0) return fail("%s: the %s kernel has no blocks", where, kernel);
  *grid = static_cast<unsigned int>(blocks);
  return 0;
}

template <typename scalar_t, int kTileO>
int launch_forward(const void* input, const void* offset, const void* mask, const void* weight, const void* bias,
                   void* output, const Geometry& s, cudaStream_t stream, const char* where) {
  const int64_t n_pixel_tiles = ceil_div64(s.n_pixels, kTileP);
  const int64_t n_out_tiles = ceil_div64(s.outs_per_group, kTileO);
  unsigned int grid = 0;
  if (int status = grid_size({n_pixel_tiles, n_out_tiles, s.batch, s.groups}, where, "forward", &grid)) return status;
  launch(forward_kernel<scalar_t, kTileO>, grid, kThreads, stream,
      static_cast<const scalar_t*>(input), static_cast<const scalar_t*>(offset), static_cast<const scalar_t*>(mask),
      static_cast<const scalar_t*>(weight), static_cast<const scalar_t*>(bias), static_cast<scalar_t*>(output), s,
      n_pixel_tiles, n_out_tiles);
  return check_launch(where);
}

template <typename scalar_t>
int forward(const void* input, const void* offset, const void* mask, const void* weight, const void* bias,
            void* output, const Geometry& s, cudaStream_t stream, const char* where) {
  // The output tile follows the conv group's output channels (16, 32 or 64; more take several tiles).
  if (s.outs_per_group <= 16) {
    return launch_forward<scalar_t, 16>(input, offset, mask, weight, bias, output, s, stream, where);
  }
  if (s.outs_per_group <= 32) {
    return launch_forward<scalar_t, 32>(input, offset, mask, weight, bias, output, s, stream, where);
  }
  return launch_forward<scalar_t, 64>(input, offset, mask, weight, bias, output, s, stream, where);
}

template <typename scalar_t>
int backward(const void* grad_output, const void* input, const void* offset, const void* mask, const void* weight,
             float* grad_input, float* grad_offset, float* grad_mask, float* grad_weight, float* grad_bias,
             const Geometry& s, int device, cudaStream_t stream, const char* where) {
  const auto* go = static_cast<const scalar_t*>(grad_output);
  const auto* x = static_cast<const scalar_t*>(input);
  const auto* off = static_cast<const scalar_t*>(offset);
  const auto* m = static_cast<const scalar_t*>(mask);
  const int64_t n_pixel_tiles = ceil_div64(s.n_pixels, kTileP);
  unsigned int grid = 0;
  if (int status = zero(grad_input, s.batch * s.in_channels * s.plane, stream, where)) return status;
  if (grad_input != nullptr || grad_offset != nullptr || grad_mask != nullptr) {
    if (int status = grid_size({n_pixel_tiles, s.batch, s.offset_groups}, where, "backward data", &grid)) {
      return status;
    }
    launch(backward_data_kernel<scalar_t>, grid, kThreads, stream, go, x, off, m, static_cast<const scalar_t*>(weight),
           grad_input, grad_offset, grad_mask, s, n_pixel_tiles);
    if (int status = check_launch(where)) return status;
  }
  if (grad_weight != nullptr) {
    if (int status = zero(grad_weight, s.out_channels * s.channels_per_group * s.taps, stream, where)) return status;
    const int64_t segment = s.channels_per_group < s.channels_per_offset_group ? s.channels_per_group
                                                                                : s.channels_per_offset_group;
    const int64_t n_chunks = ceil_div64(segment, kTileC);
    const int64_t n_out_tiles = ceil_div64(s.outs_per_group, kTileOB);
    int64_t per_split = 1;  // blocks per split (their count is checked by grid_size below first)
    if (int status = grid_size({s.groups, s.offset_groups, s.taps, n_chunks, n_out_tiles}, where, "backward weight",
                               &grid)) {
      return status;
    }
    per_split = grid;
    const int64_t n_tiles = s.batch * n_pixel_tiles;
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0) sms = 1;
    // Enough blocks to fill the device about four times; each split reduces a run of pixel tiles.
    const int64_t want_splits = ceil_div64(4 * static_cast<int64_t>(sms), per_split);
    const int64_t tiles_per_split = ceil_div64(n_tiles, want_splits < n_tiles ? want_splits : n_tiles);
    const int64_t splits = ceil_div64(n_tiles, tiles_per_split);
    if (int status = grid_size({splits, per_split}, where, "backward weight", &grid)) return status;
    launch(backward_weight_kernel<scalar_t>, grid, kThreads, stream, go, x, off, m, grad_weight, s, n_pixel_tiles,
           n_out_tiles, n_chunks, tiles_per_split);
    if (int status = check_launch(where)) return status;
  }
  if (grad_bias != nullptr) {
    if (int status = grid_size({s.out_channels}, where, "backward bias", &grid)) return status;
    launch(backward_bias_kernel<scalar_t>, grid, kThreads, stream, go, grad_bias, s);
    if (int status = check_launch(where)) return status;
  }
  return 0;
}

}  // namespace
}  // namespace jrg
}  // namespace jmipose

#define JRG_GEOMETRY                                                                                            \
  jmipose::jrg::make_geometry(batch, in_channels, height, width, out_channels, kernel_h, kernel_w, out_h, out_w, \
                              stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, offset_groups)

JMIPOSE_API int jmipose_joint_region_gather_forward_cuda(const void* input, const void* offset, const void* mask,
                                                         const void* weight, const void* bias, void* output,
                                                         JRG_SIZE_PARAMS, int32_t dtype, int32_t device,
                                                         void* stream) {
  const char* where = "joint_region_gather forward (cuda)";
  return jmipose::guarded(where, [&]() -> int {
    const jmipose::jrg::Geometry s = JRG_GEOMETRY;
    if (int status = jmipose::jrg::check_geometry(s, where)) return status;
    if (int status = jmipose::jrg::check_dtype(dtype, where)) return status;
    if (batch == 0) return 0;
    if (input == nullptr || offset == nullptr || weight == nullptr || output == nullptr) {
      return jmipose::fail("%s: input, offset, weight and output must not be NULL", where);
    }
    jmipose::DeviceGuard guard(device);
    if (!guard.ok()) return jmipose::fail("%s: cannot select device %d", where, device);
    auto cuda_stream = static_cast<cudaStream_t>(stream);
    switch (dtype) {
      case jmipose::kFloat32:
        return jmipose::jrg::forward<float>(input, offset, mask, weight, bias, output, s, cuda_stream, where);
      case jmipose::kFloat16:
        return jmipose::jrg::forward<__half>(input, offset, mask, weight, bias, output, s, cuda_stream, where);
      case jmipose::kBFloat16:
        return jmipose::jrg::forward<__nv_bfloat16>(input, offset, mask, weight, bias, output, s, cuda_stream, where);
      default:  // check_dtype above
        return jmipose::fail("%s: dtype code %d is not supported", where, (int)dtype);
    }
  });
}

JMIPOSE_API int jmipose_joint_region_gather_backward_cuda(const void* grad_output, const void* input,
                                                          const void* offset, const void* mask, const void* weight,
                                                          void* grad_input, void* grad_offset, void* grad_mask,
                                                          void* grad_weight, void* grad_bias, JRG_SIZE_PARAMS,
                                                          int32_t dtype, int32_t device, void* stream) {
  const char* where = "joint_region_gather backward (cuda)";
  return jmipose::guarded(where, [&]() -> int {
    const jmipose::jrg::Geometry s = JRG_GEOMETRY;
    if (int status = jmipose::jrg::check_geometry(s, where)) return status;
    if (int status = jmipose::jrg::check_dtype(dtype, where)) return status;
    if (grad_mask != nullptr && mask == nullptr) return jmipose::fail("%s: grad_mask needs a mask", where);
    jmipose::DeviceGuard guard(device);
    if (!guard.ok()) return jmipose::fail("%s: cannot select device %d", where, device);
    auto cuda_stream = static_cast<cudaStream_t>(stream);
    auto* gi = static_cast<float*>(grad_input);
    auto* goff = static_cast<float*>(grad_offset);
    auto* gm = static_cast<float*>(grad_mask);
    auto* gw = static_cast<float*>(grad_weight);
    auto* gb = static_cast<float*>(grad_bias);
    if (batch == 0) {  // nothing flows back: the weight and bias gradients are zero, the others empty
      if (int status = jmipose::jrg::zero(gw, out_channels * s.channels_per_group * s.taps, cuda_stream, where)) {
        return status;
      }
      return jmipose::jrg::zero(gb, out_channels, cuda_stream, where);
    }
    if (grad_output == nullptr || input == nullptr || offset == nullptr || weight == nullptr) {
      return jmipose::fail("%s: grad_output, input, offset and weight must not be NULL", where);
    }
    switch (dtype) {
      case jmipose::kFloat32:
        return jmipose::jrg::backward<float>(grad_output, input, offset, mask, weight, gi, goff, gm, gw, gb, s, device,
                                             cuda_stream, where);
      case jmipose::kFloat16:
        return jmipose::jrg::backward<__half>(grad_output, input, offset, mask, weight, gi, goff, gm, gw, gb, s,
                                              device, cuda_stream, where);
      case jmipose::kBFloat16:
        return jmipose::jrg::backward<__nv_bfloat16>(grad_output, input, offset, mask, weight, gi, goff, gm, gw, gb,
                                                     s, device, cuda_stream, where);
      default:  // check_dtype above
        return jmipose::fail("%s: dtype code %d is not supported", where, (int)dtype);
    }
  });
}
