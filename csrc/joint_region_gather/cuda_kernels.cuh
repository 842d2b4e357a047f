// The device code of joint_region_gather's CUDA backend (see cuda.cu for the overview and the C ABI).
// Included by cuda.cu only; tests/cuda_emulation compiles the same code for the CPU.
#pragma once

#include <cstdint>

#include "common/cuda_utils.cuh"
#include "joint_region_gather/abi.h"
#include "joint_region_gather/math.h"

namespace jmipose {
namespace jrg {
namespace {

constexpr int kThreads = 256;  // every kernel below assumes exactly this block size
constexpr int kTileP = 64;     // output pixels per block
constexpr int kTileC = 16;     // input channels staged per step
constexpr int kTileOB = 64;    // output channels staged per step in the backward kernels
constexpr int kRows = kThreads / kTileP;  // threads sharing one pixel when staging (4)

// The C ABI's sizes and what the kernels derive from them.
struct Geometry : Sizes {
  int64_t taps, n_pixels, plane, channels_per_group, outs_per_group, channels_per_offset_group;
};

// ---------------------------------------------------------------------------------------------
// Which part of the problem a block owns (the index prologue of every kernel)

// The indices a launch flattens onto blockIdx.x, fastest first: index[i] in [0, count[i]); the last
// index takes what is left (its count is not used).
template <int N>
struct BlockIndex {
  int64_t index[N];

  __device__ __forceinline__ explicit BlockIndex(const int64_t (&count)[N]) {
    int64_t flat = blockIdx.x;
#pragma unroll
    for (int i = 0; i + 1 < N; ++i) {
      index[i] = flat % count[i];
      flat /= count[i];
    }
    index[N - 1] = flat;
  }
};

// A range [begin, end) of channels.
struct ChannelRange {
  int64_t begin, end;
};

// The channels of both ranges (empty, begin >= end, when they do not overlap).
__device__ __forceinline__ ChannelRange intersect(const ChannelRange& a, const ChannelRange& b) {
  return {max(a.begin, b.begin), min(a.end, b.end)};
}

// The input channels of conv group `conv_group`, and those of offset group `g`.
__device__ __forceinline__ ChannelRange group_channels(const Geometry& s, int64_t conv_group) {
  return {conv_group * s.channels_per_group, (conv_group + 1) * s.channels_per_group};
}
__device__ __forceinline__ ChannelRange offset_group_channels(const Geometry& s, int64_t g) {
  return {g * s.channels_per_offset_group, (g + 1) * s.channels_per_offset_group};
}

// The output channels of tile `out_tile` (`tile` channels wide) of conv group `conv_group`: [begin, end)
// runs from the tile's first channel to the group's end (a tile may reach past it; callers test end).
__device__ __forceinline__ ChannelRange output_tile(const Geometry& s, int64_t conv_group, int64_t out_tile,
                                                    int tile) {
  return {conv_group * s.outs_per_group + out_tile * tile, (conv_group + 1) * s.outs_per_group};
}

// The four corners of one pixel's sample for the current tap, in shared memory.  An invalid corner
// has index -1 and is never read.
struct TapCorners {
  int64_t index[4][kTileP];
  float weight[4][kTileP];  // bilinear weight (times the modulation in the forward kernels)
};

// Coordinates and corners of tap k of offset group g for output pixel p of image b.  forward: only
// samples with -1 < y < H and -1 < x < W read anything; gradient: -1 <= y, x as well (torchvision's
// one-sided offset gradient on the border).  Returns false when the sample reads nothing.  The
// range test runs on the float coordinates (false for NaN/inf) before any float->int conversion.
template <typename scalar_t>
__device__ __forceinline__ bool tap_corners(const scalar_t* __restrict__ offset, const scalar_t* __restrict__ mask,
                                            const Geometry& s, int64_t b, int64_t g, int64_t k, int64_t p,
                                            bool gradient_domain, BilinearCorners<float>* corners,
                                            float* modulation) {
  const int64_t out_y = p / s.out_w, out_x = p % s.out_w;
  const int64_t offset_row = ((b * s.offset_groups + g) * s.taps + k) * 2 * s.n_pixels;
  const float y = sampling_coordinate<float>(out_y, k / s.kernel_w, s.stride_h, s.pad_h, s.dil_h,
                                             to_float(offset[offset_row + p]));
  const float x = sampling_coordinate<float>(out_x, k % s.kernel_w, s.stride_w, s.pad_w, s.dil_w,
                                             to_float(offset[offset_row + s.n_pixels + p]));
  *modulation = mask != nullptr ? to_float(mask[((b * s.offset_groups + g) * s.taps + k) * s.n_pixels + p]) : 1.f;
  const bool reads = gradient_domain ? gradient_inside(y, x, s.height, s.width)
                                     : sample_inside(y, x, s.height, s.width);
  if (reads) bilinear_corners(y, x, s.height, s.width, corners);
  return reads;
}

// What the backward data kernel stages per corner besides TapCorners.
struct CornerGradients {
  float dy[4][kTileP], dx[4][kTileP];  // coordinate-gradient coefficients of the corners
  float modulation[kTileP];
};

// The index prologue of every kernel: stages the corners of pixel `slot` of the tile for tap k of offset
// group g.  Forward (kGradient false: the forward and grad-weight kernels): the bilinear weights times
// the modulation, for samples inside the image.  Backward (kGradient: the grad-input/offset/mask
// kernel): samples in the gradient domain, the unmodulated weights, and into `gradients` the
// coordinate-gradient coefficients and the modulation.
template <bool kGradient, typename scalar_t>
__device__ __forceinline__ void stage_corners(const scalar_t* __restrict__ offset, const scalar_t* __restrict__ mask,
                                              const Geometry& s, int64_t b, int64_t g, int64_t k, int64_t pixel_tile,
                                              int slot, TapCorners* corners, CornerGradients* gradients) {
  const int64_t p = pixel_tile * kTileP + slot;
  BilinearCorners<float> c;
  float modulation = 0.f, dy[4] = {}, dx[4] = {};
  const bool reads = p < s.n_pixels && tap_corners(offset, mask, s, b, g, k, p, kGradient, &c, &modulation);
  if (kGradient && reads) coordinate_gradient_coefficients(c, dy, dx);
  for (int q = 0; q < 4; ++q) {
    const bool valid = reads && c.valid[q];
    corners->index[q][slot] = valid ? c.index[q] : -1;
    corners->weight[q][slot] = valid ? (kGradient ? c.weight[q] : c.weight[q] * modulation) : 0.f;
    if constexpr (kGradient) {
      gradients->dy[q][slot] = valid ? dy[q] : 0.f;
      gradients->dx[q][slot] = valid ? dx[q] : 0.f;
    }
  }
  if constexpr (kGradient) gradients->modulation[slot] = reads ? modulation : 0.f;
}

template <typename scalar_t>
__device__ __forceinline__ float gather_sample(const scalar_t* __restrict__ plane, const TapCorners& corners,
                                               int slot) {
  float value = 0.f;
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const int64_t index = corners.index[q][slot];
    if (index >= 0) value += corners.weight[q][slot] * to_float(plane[index]);
  }
  return value;
}

// The column tile of the implicit GEMM: the samples of this thread's channels c0 + row + kRows*r
// (r < kTileC / kRows) at pixel `slot` into columns[row + kRows*r][slot], 0 from segment_end on.
template <typename scalar_t, int kStride>
__device__ __forceinline__ void gather_columns(float (*columns)[kStride], const scalar_t* __restrict__ image,
                                               const Geometry& s, const TapCorners& corners, int64_t c0,
                                               int64_t segment_end, int row, int slot) {
#pragma unroll
  for (int r = 0; r < kTileC / kRows; ++r) {
    const int local = row + kRows * r;
    const int64_t c = c0 + local;
    columns[local][slot] = c < segment_end ? gather_sample(image + c * s.plane, corners, slot) : 0.f;
  }
}

// weight[o, c - group_begin, k] as float (group_begin: the conv group's first input channel).
template <typename scalar_t>
__device__ __forceinline__ float weight_at(const scalar_t* __restrict__ weight, const Geometry& s, int64_t o,
                                          int64_t c, int64_t group_begin, int64_t k) {
  return to_float(weight[(o * s.channels_per_group + (c - group_begin)) * s.taps + k]);
}

// tile[i][j] = grad_output[b, o0 + i, pixel_tile*kTileP + j] as float for i < kTileOB, j < kTileP (0 from
// out_end or the last pixel on), staged by the whole block.
template <typename scalar_t, int kStride>
__device__ __forceinline__ void stage_grad_out(float (*tile)[kStride], const scalar_t* __restrict__ grad_output,
                                               const Geometry& s, int64_t b, int64_t o0, int64_t out_end,
                                               int64_t pixel_tile) {
  for (int e = static_cast<int>(threadIdx.x); e < kTileOB * kTileP; e += kThreads) {
    const int local_out = e / kTileP, local_p = e % kTileP;
    const int64_t o = o0 + local_out, p = pixel_tile * kTileP + local_p;
    tile[local_out][local_p] =
        (o < out_end && p < s.n_pixels) ? to_float(grad_output[(b * s.out_channels + o) * s.n_pixels + p]) : 0.f;
  }
}

// ---------------------------------------------------------------------------------------------
// Forward

template <typename scalar_t, int kTileO>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ input, const scalar_t* __restrict__ offset,
                   const scalar_t* __restrict__ mask, const scalar_t* __restrict__ weight,
                   const scalar_t* __restrict__ bias, scalar_t* __restrict__ output, Geometry s,
                   int64_t n_pixel_tiles, int64_t n_out_tiles) {
  constexpr int kOutsPerThread = kTileO / 16;
  __shared__ TapCorners corners;
  __shared__ float columns[kTileC][kTileP];
  __shared__ float filters[kTileO][kTileC + 1];

  const int tid = static_cast<int>(threadIdx.x);
  const BlockIndex<4> block({n_out_tiles, n_pixel_tiles, s.groups, s.batch});
  const int64_t out_tile = block.index[0], pixel_tile = block.index[1], conv_group = block.index[2];
  const int64_t b = block.index[3];

  const int64_t group_begin = conv_group * s.channels_per_group;
  const int64_t group_end = group_begin + s.channels_per_group;
  const ChannelRange outs = output_tile(s, conv_group, out_tile, kTileO);
  const scalar_t* image = input + b * s.in_channels * s.plane;
  const int row = tid / kTileP, slot = tid % kTileP;  // staging: channel row and pixel
  const int acc_out = tid / 16, acc_pixel = tid % 16;  // accumulation: outputs acc_out + 16i, pixels + 16j
  float acc[kOutsPerThread][4] = {};

  const int64_t first_g = group_begin / s.channels_per_offset_group;
  const int64_t last_g = (group_end - 1) / s.channels_per_offset_group;
  for (int64_t g = first_g; g <= last_g; ++g) {
    const ChannelRange segment = intersect({group_begin, group_end}, offset_group_channels(s, g));
    for (int64_t k = 0; k < s.taps; ++k) {
      __syncthreads();  // the previous tap's corners are no longer read
      if (tid < kTileP) stage_corners<false>(offset, mask, s, b, g, k, pixel_tile, tid, &corners, nullptr);
      __syncthreads();
      for (int64_t c0 = segment.begin; c0 < segment.end; c0 += kTileC) {
        gather_columns(columns, image, s, corners, c0, segment.end, row, slot);
        for (int e = tid; e < kTileO * kTileC; e += kThreads) {
          const int local_out = e / kTileC, local_c = e % kTileC;
          const int64_t o = outs.begin + local_out, c = c0 + local_c;
          filters[local_out][local_c] =
              (o < outs.end && c < segment.end) ? weight_at(weight, s, o, c, group_begin, k) : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int local_c = 0; local_c < kTileC; ++local_c) {
          float w[kOutsPerThread], v[4];
#pragma unroll
          for (int i = 0; i < kOutsPerThread; ++i) w[i] = filters[acc_out + 16 * i][local_c];
#pragma unroll
          for (int j = 0; j < 4; ++j) v[j] = columns[local_c][acc_pixel + 16 * j];
#pragma unroll
          for (int i = 0; i < kOutsPerThread; ++i) {
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(w[i], v[j], acc[i][j]);
          }
        }
        __syncthreads();
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kOutsPerThread; ++i) {
    const int64_t o = outs.begin + acc_out + 16 * i;
    if (o >= outs.end) continue;
    const float bias_value = bias != nullptr ? to_float(bias[o]) : 0.f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t p = pixel_tile * kTileP + acc_pixel + 16 * j;
      if (p < s.n_pixels) {
        output[(b * s.out_channels + o) * s.n_pixels + p] = from_float<scalar_t>(acc[i][j] + bias_value);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward: grad input (atomics), grad offset, grad mask

struct DataShared {
  TapCorners corners;                   // unmodulated bilinear weights
  CornerGradients gradients;            // their coordinate-gradient coefficients, the modulation
  float grad_out[kTileOB][kTileP];      // grad_output tile of the current output chunk
  float filters_t[kTileC][kTileOB + 1]; // weight^T slice for (tap, channel chunk, output chunk)
  float partial[3][kRows][kTileP];      // per-row sums of grad y, grad x, grad mask
};

// grad_column[r] = sum over the conv group's outputs o of weight[o, c, k] * grad_out[b, o, p] for this
// thread's channels c = c0 + row + 4r and pixel `slot`, in 64-output chunks staged in shared memory
// (a grad_out chunk already staged, as when the group has at most 64 outputs, is kept).
template <typename scalar_t>
__device__ __forceinline__ void column_gradients(const scalar_t* __restrict__ grad_output,
                                                 const scalar_t* __restrict__ weight, const Geometry& s, int64_t b,
                                                 int64_t k, int64_t pixel_tile, int64_t conv_group, int64_t c0,
                                                 int64_t segment_end, DataShared* sh, int64_t* staged_out,
                                                 float grad_column[kTileC / kRows]) {
  const int tid = static_cast<int>(threadIdx.x);
  const int row = tid / kTileP, slot = tid % kTileP;
  const int64_t group_begin = conv_group * s.channels_per_group;
  const int64_t out_group_begin = conv_group * s.outs_per_group;
  const int64_t out_group_end = out_group_begin + s.outs_per_group;
  for (int r = 0; r < kTileC / kRows; ++r) grad_column[r] = 0.f;
  for (int64_t o0 = out_group_begin; o0 < out_group_end; o0 += kTileOB) {
    __syncthreads();  // nobody still reads the tiles about to be replaced
    if (o0 != *staged_out) {
      stage_grad_out(sh->grad_out, grad_output, s, b, o0, out_group_end, pixel_tile);
      *staged_out = o0;
    }
    for (int e = tid; e < kTileC * kTileOB; e += kThreads) {
      const int local_c = e / kTileOB, local_out = e % kTileOB;
      const int64_t o = o0 + local_out, c = c0 + local_c;
      sh->filters_t[local_c][local_out] =
          (o < out_group_end && c < segment_end) ? weight_at(weight, s, o, c, group_begin, k) : 0.f;
    }
    __syncthreads();
    const int outs = out_group_end - o0 < kTileOB ? static_cast<int>(out_group_end - o0) : kTileOB;
    for (int local_out = 0; local_out < outs; ++local_out) {
      const float go = sh->grad_out[local_out][slot];
#pragma unroll
      for (int r = 0; r < kTileC / kRows; ++r) {
        grad_column[r] = fmaf(sh->filters_t[row + kRows * r][local_out], go, grad_column[r]);
      }
    }
  }
}

// One channel's share at one pixel: the reductions towards grad mask (grad_column * sample) and
// grad offset (grad_column * d sample / d y, x), and the scatter of grad_column * modulation *
// corner weight into grad_input.
template <typename scalar_t>
__device__ __forceinline__ void channel_gradients(const scalar_t* __restrict__ plane, float* __restrict__ grad_plane,
                                                  const DataShared& sh, int slot, float grad_column, bool needs_values,
                                                  float* grad_y, float* grad_x, float* grad_m) {
  if (needs_values) {
    float sample = 0.f, dsy = 0.f, dsx = 0.f;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t index = sh.corners.index[q][slot];
      if (index < 0) continue;
      const float v = to_float(plane[index]);
      sample = fmaf(sh.corners.weight[q][slot], v, sample);
      dsy = fmaf(sh.gradients.dy[q][slot], v, dsy);
      dsx = fmaf(sh.gradients.dx[q][slot], v, dsx);
    }
    *grad_m = fmaf(grad_column, sample, *grad_m);
    *grad_y = fmaf(grad_column, dsy, *grad_y);
    *grad_x = fmaf(grad_column, dsx, *grad_x);
  }
  if (grad_plane != nullptr) {
    const float grad_sample = grad_column * sh.gradients.modulation[slot];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t index = sh.corners.index[q][slot];
      if (index >= 0) atomicAdd(grad_plane + index, grad_sample * sh.corners.weight[q][slot]);
    }
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    backward_data_kernel(const scalar_t* __restrict__ grad_output, const scalar_t* __restrict__ input,
                         const scalar_t* __restrict__ offset, const scalar_t* __restrict__ mask,
                         const scalar_t* __restrict__ weight, float* __restrict__ grad_input,
                         float* __restrict__ grad_offset, float* __restrict__ grad_mask, Geometry s,
                         int64_t n_pixel_tiles) {
  __shared__ DataShared sh;
  const int tid = static_cast<int>(threadIdx.x);
  const BlockIndex<3> block({n_pixel_tiles, s.offset_groups, s.batch});
  const int64_t pixel_tile = block.index[0], g = block.index[1], b = block.index[2];
  const int row = tid / kTileP, slot = tid % kTileP;
  const int64_t p = pixel_tile * kTileP + slot;
  const bool pixel_ok = p < s.n_pixels;
  const bool needs_values = grad_offset != nullptr || grad_mask != nullptr;
  const scalar_t* image = input + b * s.in_channels * s.plane;
  float* grad_image = grad_input != nullptr ? grad_input + b * s.in_channels * s.plane : nullptr;
  const int64_t g_begin = g * s.channels_per_offset_group, g_end = g_begin + s.channels_per_offset_group;
  int64_t staged_out = -1;  // first output channel of the grad_out chunk in shared memory

  for (int64_t k = 0; k < s.taps; ++k) {
    __syncthreads();  // the previous tap's corners and partial sums are no longer read
    if (tid < kTileP) stage_corners<true>(offset, mask, s, b, g, k, pixel_tile, tid, &sh.corners, &sh.gradients);
    __syncthreads();
    float grad_y = 0.f, grad_x = 0.f, grad_m = 0.f;  // this thread's channels, pixel `slot`
    // The offset group's channels, one conv group's share (a contiguous segment) at a time.
    for (int64_t conv_group = g_begin / s.channels_per_group; conv_group <= (g_end - 1) / s.channels_per_group;
         ++conv_group) {
      const ChannelRange segment = intersect({g_begin, g_end}, group_channels(s, conv_group));
      for (int64_t c0 = segment.begin; c0 < segment.end; c0 += kTileC) {
        float grad_column[kTileC / kRows];
        column_gradients(grad_output, weight, s, b, k, pixel_tile, conv_group, c0, segment.end, &sh, &staged_out,
                         grad_column);
        if (!pixel_ok) continue;
#pragma unroll
        for (int r = 0; r < kTileC / kRows; ++r) {
          const int64_t c = c0 + row + kRows * r;
          if (c >= segment.end) continue;
          channel_gradients(image + c * s.plane, grad_image != nullptr ? grad_image + c * s.plane : nullptr, sh, slot,
                            grad_column[r], needs_values, &grad_y, &grad_x, &grad_m);
        }
      }
    }
    if (!needs_values) continue;
    sh.partial[0][row][slot] = grad_y;
    sh.partial[1][row][slot] = grad_x;
    sh.partial[2][row][slot] = grad_m;
    __syncthreads();
    if (tid < kTileP && pixel_ok) {
      float sums[3] = {};
      for (int part = 0; part < 3; ++part) {
        for (int r = 0; r < kRows; ++r) sums[part] += sh.partial[part][r][tid];
      }
      const float modulation = sh.gradients.modulation[tid];
      if (grad_offset != nullptr) {
        const int64_t offset_row = ((b * s.offset_groups + g) * s.taps + k) * 2 * s.n_pixels;
        grad_offset[offset_row + p] = sums[0] * modulation;
        grad_offset[offset_row + s.n_pixels + p] = sums[1] * modulation;
      }
      if (grad_mask != nullptr) grad_mask[((b * s.offset_groups + g) * s.taps + k) * s.n_pixels + p] = sums[2];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward: grad weight (split reduction with atomics), grad bias

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    backward_weight_kernel(const scalar_t* __restrict__ grad_output, const scalar_t* __restrict__ input,
                           const scalar_t* __restrict__ offset, const scalar_t* __restrict__ mask,
                           float* __restrict__ grad_weight, Geometry s, int64_t n_pixel_tiles, int64_t n_out_tiles,
                           int64_t n_channel_chunks, int64_t tiles_per_split) {
  __shared__ TapCorners corners;
  __shared__ float columns[kTileC][kTileP + 1];
  __shared__ float grad_out[kTileOB][kTileP + 1];
  const int tid = static_cast<int>(threadIdx.x);
  const BlockIndex<6> block({n_out_tiles, n_channel_chunks, s.taps, s.offset_groups, s.groups, 0});
  const int64_t out_tile = block.index[0], chunk = block.index[1], k = block.index[2], g = block.index[3];
  const int64_t conv_group = block.index[4], split = block.index[5];  // split: a run of tiles_per_split pixel tiles

  const int64_t group_begin = conv_group * s.channels_per_group;
  const ChannelRange segment =
      intersect({group_begin, group_begin + s.channels_per_group}, offset_group_channels(s, g));
  const int64_t c0 = segment.begin + chunk * kTileC, segment_end = segment.end;
  if (c0 >= segment_end) return;  // this conv group and offset group share no channels here (uniform)
  const ChannelRange outs = output_tile(s, conv_group, out_tile, kTileOB);
  const int row = tid / kTileP, slot = tid % kTileP;
  const int acc_out = tid / kRows, acc_c = tid % kRows;  // outputs acc_out, channels acc_c + 4r
  float acc[kTileC / kRows] = {};

  const int64_t tile_begin = split * tiles_per_split;
  const int64_t tile_end = min(tile_begin + tiles_per_split, s.batch * n_pixel_tiles);
  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    const int64_t b = tile / n_pixel_tiles, pixel_tile = tile % n_pixel_tiles;
    __syncthreads();  // the previous tile's shared data is no longer read
    if (tid < kTileP) stage_corners<false>(offset, mask, s, b, g, k, pixel_tile, tid, &corners, nullptr);
    stage_grad_out(grad_out, grad_output, s, b, outs.begin, outs.end, pixel_tile);
    __syncthreads();
    gather_columns(columns, input + b * s.in_channels * s.plane, s, corners, c0, segment_end, row, slot);
    __syncthreads();
    for (int local_p = 0; local_p < kTileP; ++local_p) {
      const float go = grad_out[acc_out][local_p];
#pragma unroll
      for (int r = 0; r < kTileC / kRows; ++r) acc[r] = fmaf(go, columns[acc_c + kRows * r][local_p], acc[r]);
    }
  }
  const int64_t o = outs.begin + acc_out;
  if (o >= outs.end) return;
#pragma unroll
  for (int r = 0; r < kTileC / kRows; ++r) {
    const int64_t c = c0 + acc_c + kRows * r;
    if (c < segment_end) atomicAdd(grad_weight + (o * s.channels_per_group + (c - group_begin)) * s.taps + k, acc[r]);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    backward_bias_kernel(const scalar_t* __restrict__ grad_output, float* __restrict__ grad_bias, Geometry s) {
  __shared__ float partial[kThreads];
  const int64_t o = blockIdx.x;
  float sum = 0.f;
  for (int64_t b = 0; b < s.batch; ++b) {
    const scalar_t* row = grad_output + (b * s.out_channels + o) * s.n_pixels;
    for (int64_t p = threadIdx.x; p < s.n_pixels; p += kThreads) sum += to_float(row[p]);
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) grad_bias[o] = partial[0];
}

}  // namespace
}  // namespace jrg
}  // namespace jmipose
