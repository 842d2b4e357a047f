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

#include "common/abi_check.h"
#include "common/cuda_utils.cuh"
#include "joint_region_gather/abi.h"
#include "joint_region_gather/cuda_kernels.cuh"

// ---------------------------------------------------------------------------------------------
// Host side

namespace jmipose {
namespace jrg {
namespace {

// Tensors of up to 2^62 elements (every flat index fits int64 with room to spare); the batch is capped
// like the other sizes, so a grid's block count (checked by grid_size) is formed without overflow.
int check_cuda_sizes(const Sizes& s, const char* where) {
  if (int status = check_sizes(s, where, int64_t(1) << 62)) return status;
  return abi::check_ranges(where, {{"batch", s.batch, 0, kMaxSize}});
}

Geometry make_geometry(const Sizes& sizes) {
  Geometry s;
  static_cast<Sizes&>(s) = sizes;
  s.taps = sizes.kernel_h * sizes.kernel_w;
  s.n_pixels = sizes.out_h * sizes.out_w;
  s.plane = sizes.height * sizes.width;
  s.channels_per_group = sizes.groups > 0 ? sizes.in_channels / sizes.groups : 0;
  s.outs_per_group = sizes.groups > 0 ? sizes.out_channels / sizes.groups : 0;
  s.channels_per_offset_group = sizes.offset_groups > 0 ? sizes.in_channels / sizes.offset_groups : 0;
  return s;
}

// Zeroes `count` floats on the stream (a NULL buffer is not needed and left alone).
int zero(float* buffer, int64_t count, cudaStream_t stream, const char* where) {
  if (buffer == nullptr || count == 0) return 0;
  const cudaError_t err = cudaMemsetAsync(buffer, 0, static_cast<size_t>(count) * sizeof(float), stream);
  return err == cudaSuccess ? 0 : fail("%s: cudaMemsetAsync: %s", where, cudaGetErrorString(err));
}

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
  const int64_t n_pixel_tiles = ceil_div(s.n_pixels, kTileP);
  const int64_t n_out_tiles = ceil_div(s.outs_per_group, kTileO);
  unsigned int grid = 0;
  if (int status = grid_size({n_pixel_tiles, n_out_tiles, s.batch, s.groups}, where, "forward", &grid)) return status;
  return launch_kernel(forward_kernel<scalar_t, kTileO>, dim3(grid), kThreads, 0, stream, where,
                       static_cast<const scalar_t*>(input), static_cast<const scalar_t*>(offset),
                       static_cast<const scalar_t*>(mask), static_cast<const scalar_t*>(weight),
                       static_cast<const scalar_t*>(bias), static_cast<scalar_t*>(output), s, n_pixel_tiles,
                       n_out_tiles);
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
  const int64_t n_pixel_tiles = ceil_div(s.n_pixels, kTileP);
  unsigned int grid = 0;
  if (int status = zero(grad_input, s.batch * s.in_channels * s.plane, stream, where)) return status;
  if (grad_input != nullptr || grad_offset != nullptr || grad_mask != nullptr) {
    if (int status = grid_size({n_pixel_tiles, s.batch, s.offset_groups}, where, "backward data", &grid)) {
      return status;
    }
    if (int status = launch_kernel(backward_data_kernel<scalar_t>, dim3(grid), kThreads, 0, stream, where, go, x, off,
                                   m, static_cast<const scalar_t*>(weight), grad_input, grad_offset, grad_mask, s,
                                   n_pixel_tiles)) {
      return status;
    }
  }
  if (grad_weight != nullptr) {
    if (int status = zero(grad_weight, s.out_channels * s.channels_per_group * s.taps, stream, where)) return status;
    const int64_t segment = s.channels_per_group < s.channels_per_offset_group ? s.channels_per_group
                                                                                : s.channels_per_offset_group;
    const int64_t n_chunks = ceil_div(segment, kTileC);
    const int64_t n_out_tiles = ceil_div(s.outs_per_group, kTileOB);
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
    const int64_t want_splits = ceil_div(4 * static_cast<int64_t>(sms), per_split);
    const int64_t tiles_per_split = ceil_div(n_tiles, want_splits < n_tiles ? want_splits : n_tiles);
    const int64_t splits = ceil_div(n_tiles, tiles_per_split);
    if (int status = grid_size({splits, per_split}, where, "backward weight", &grid)) return status;
    if (int status = launch_kernel(backward_weight_kernel<scalar_t>, dim3(grid), kThreads, 0, stream, where, go, x,
                                   off, m, grad_weight, s, n_pixel_tiles, n_out_tiles, n_chunks, tiles_per_split)) {
      return status;
    }
  }
  if (grad_bias != nullptr) {
    if (int status = grid_size({s.out_channels}, where, "backward bias", &grid)) return status;
    if (int status = launch_kernel(backward_bias_kernel<scalar_t>, dim3(grid), kThreads, 0, stream, where, go,
                                   grad_bias, s)) {
      return status;
    }
  }
  return 0;
}

}  // namespace
}  // namespace jrg
}  // namespace jmipose

JMIPOSE_API int jmipose_joint_region_gather_forward_cuda(const void* input, const void* offset, const void* mask,
                                                         const void* weight, const void* bias, void* output,
                                                         JRG_SIZE_PARAMS, int32_t dtype, int32_t device,
                                                         void* stream) {
  const char* where = "joint_region_gather forward (cuda)";
  return jmipose::guarded(where, [&]() -> int {
    namespace jrg = jmipose::jrg;
    if (int status = jrg::check_cuda_sizes(JRG_SIZES, where)) return status;
    if (int status = jmipose::check_cuda_dtype(dtype, where)) return status;
    if (batch == 0) return 0;
    if (int status = jrg::check_forward_pointers(where, input, offset, weight, output)) return status;
    jmipose::DeviceGuard guard(device);
    if (!guard.ok()) return jmipose::fail("%s: cannot select device %d", where, device);
    const jrg::Geometry s = jrg::make_geometry(JRG_SIZES);
    return jmipose::dispatch_cuda_dtype(dtype, where, [&](auto zero) {
      return jrg::forward<decltype(zero)>(input, offset, mask, weight, bias, output, s,
                                          static_cast<cudaStream_t>(stream), where);
    });
  });
}

JMIPOSE_API int jmipose_joint_region_gather_backward_cuda(const void* grad_output, const void* input,
                                                          const void* offset, const void* mask, const void* weight,
                                                          void* grad_input, void* grad_offset, void* grad_mask,
                                                          void* grad_weight, void* grad_bias, JRG_SIZE_PARAMS,
                                                          int32_t dtype, int32_t device, void* stream) {
  const char* where = "joint_region_gather backward (cuda)";
  return jmipose::guarded(where, [&]() -> int {
    namespace jrg = jmipose::jrg;
    if (int status = jrg::check_cuda_sizes(JRG_SIZES, where)) return status;
    if (int status = jmipose::check_cuda_dtype(dtype, where)) return status;
    if (grad_mask != nullptr && mask == nullptr) return jmipose::fail("%s: grad_mask needs a mask", where);
    jmipose::DeviceGuard guard(device);
    if (!guard.ok()) return jmipose::fail("%s: cannot select device %d", where, device);
    const jrg::Geometry s = jrg::make_geometry(JRG_SIZES);
    auto cuda_stream = static_cast<cudaStream_t>(stream);
    auto* gi = static_cast<float*>(grad_input);
    auto* goff = static_cast<float*>(grad_offset);
    auto* gm = static_cast<float*>(grad_mask);
    auto* gw = static_cast<float*>(grad_weight);
    auto* gb = static_cast<float*>(grad_bias);
    if (batch == 0) {  // nothing flows back: the weight and bias gradients are zero, the others empty
      if (int status = jrg::zero(gw, out_channels * s.channels_per_group * s.taps, cuda_stream, where)) return status;
      return jrg::zero(gb, out_channels, cuda_stream, where);
    }
    if (int status = jrg::check_backward_pointers(where, grad_output, input, offset, weight)) return status;
    return jmipose::dispatch_cuda_dtype(dtype, where, [&](auto zero) {
      return jrg::backward<decltype(zero)>(grad_output, input, offset, mask, weight, gi, goff, gm, gw, gb, s, device,
                                           cuda_stream, where);
    });
  });
}
