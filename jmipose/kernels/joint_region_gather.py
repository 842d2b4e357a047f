"""Triton kernels of op A, the joint-region gather (modulated deformable convolution, DCNv2).

Semantics are exactly ``torchvision.ops.deform_conv2d`` (Zhu et al., "Deformable ConvNets v2",
CVPR 2019); ``jmipose.ops.joint_region_gather`` documents them and holds the eager reference:

    out[b, o, p] = bias[o] + sum_{c in group(o)} sum_k weight[o, c, k] * mask[b, g(c), k, p]
                   * bilinear(input[b, c], y(p) + i(k)*dil_h + dy[b, g(c), k, p],
                                           x(p) + j(k)*dil_w + dx[b, g(c), k, p])

with y(p) = out_y*stride_h - pad_h, x(p) = out_x*stride_w - pad_w, tap k = (i, j), g(c) the offset
group of input channel c, and bilinear sampling that reads zero at and beyond one pixel outside the
image; the offset gradient on the lines y = -1 and x = -1 is the one-sided derivative from inside
(torchvision's).  A non-finite coordinate (NaN or inf offset) reads zero and gets zero gradients;
indices are clamped into the image before any pointer is formed, so no coordinate can address
memory outside.

Everything is an implicit GEMM: no [Cin*K, Hout*Wout] column buffer is ever written.

* forward: a program owns a tile of output pixels x a block of output channels of one image and
  conv group; it loops over (offset group, tap, channel block), samples and modulates the columns in
  registers and accumulates ``tl.dot`` with the weight tile.
* backward, input/offset/mask: a program owns a tile of pixels of one image and offset group; per
  tap and channel block it forms grad_columns = grad_out x weight, scatters them into a float32
  grad-input buffer with atomics (so grad input is not bitwise deterministic on a GPU: the order of
  the additions varies from run to run), and reduces them against the samples (grad mask) and
  their coordinate derivatives (grad offset) over the group's channels.
* backward, weight: grad_weight = grad_out x columns^T reduced over batch and pixels, split over
  programs into float32 partial sums that are added by torch (deterministic).
* backward, bias: a float32 sum of grad_out.

All arithmetic is float32 (float16/bfloat16 tensors are read and written in their dtype; on a GPU
their dot products use tensor cores on operands of the input dtype with float32 accumulation).
float32 dot products on a GPU use three TF32 products per term (``tf32x3``), which keeps float32
accuracy (plain TF32 would not); the interpreter multiplies in float32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from jmipose.ops._backends import triton_interpret

# Tiles are [channels, pixels] with pixels on the fastest axis: a thread then holds one or two
# pixels, so per-pixel coordinates, corner indices and weights are not replicated across its
# registers, and the gathers of neighbouring pixels sit in neighbouring lanes.  Offsets inside one
# image use INDEX_DTYPE (int32 unless one image holds >= 2**31 elements); the batch offset goes into
# the base pointer in int64.  Helpers are few and called outside the innermost loops where possible:
# the Triton interpreter pays milliseconds for every call of a jit function.


@triton.jit
def _tap_corners(offset_image_ptr, mask_image_ptr, g, k, pixels, pixel_in, base_y, base_x, n_pixels, taps,
                 kernel_w, dil_h, dil_w, height, width, HAS_MASK: tl.constexpr, GRADIENT_DOMAIN: tl.constexpr,
                 INDEX_DTYPE: tl.constexpr):
    """For tap k of offset group g and a tile of pixels: the bilinear fractions, the modulation, the
    clamped in-plane indices of the four corners (top-left, top-right, bottom-left, bottom-right) and
    whether each corner is inside the image.

    A sample is non-zero only for -1 < y < H and -1 < x < W.  With GRADIENT_DOMAIN the lines y = -1
    and x = -1 are included: the value there is still zero (the corners inside the image have
    weight 0) but the offset gradient is torchvision's one-sided derivative from inside.  The range
    test runs on the float coordinate first (NaN and inf fail it), and a coordinate outside is
    replaced by 0 before floor and the int conversion, so no index is formed from it."""
    offset_row = (g * 2 * taps + 2 * k).to(INDEX_DTYPE) * n_pixels
    dy = tl.load(offset_image_ptr + offset_row + pixels, mask=pixel_in, other=0.0).to(tl.float32)
    dx = tl.load(offset_image_ptr + offset_row + n_pixels + pixels, mask=pixel_in, other=0.0).to(tl.float32)
    y = base_y + ((k // kernel_w) * dil_h).to(tl.float32) + dy
    x = base_x + ((k % kernel_w) * dil_w).to(tl.float32) + dx
    if HAS_MASK:
        modulation = tl.load(mask_image_ptr + (g * taps + k).to(INDEX_DTYPE) * n_pixels + pixels,
                             mask=pixel_in, other=0.0).to(tl.float32)
    else:
        modulation = tl.where(pixel_in, 1.0, 0.0)
    if GRADIENT_DOMAIN:
        inside = pixel_in & (y >= -1.0) & (y < height) & (x >= -1.0) & (x < width)
    else:
        inside = pixel_in & (y > -1.0) & (y < height) & (x > -1.0) & (x < width)
    y = tl.where(inside, y, 0.0)
    x = tl.where(inside, x, 0.0)
    y_floor = tl.floor(y)
    x_floor = tl.floor(x)
    y_low = y_floor.to(tl.int32)
    x_low = x_floor.to(tl.int32)
    top_ok = inside & (y_low >= 0)
    bottom_ok = inside & (y_low + 1 < height)
    left_ok = x_low >= 0
    right_ok = x_low + 1 < width
    row_top = tl.maximum(y_low, 0).to(INDEX_DTYPE) * width
    row_bottom = tl.minimum(y_low + 1, height - 1).to(INDEX_DTYPE) * width
    col_left = tl.maximum(x_low, 0)
    col_right = tl.minimum(x_low + 1, width - 1)
    return (y - y_floor, x - x_floor, modulation,
            row_top + col_left, row_top + col_right, row_bottom + col_left, row_bottom + col_right,
            top_ok & left_ok, top_ok & right_ok, bottom_ok & left_ok, bottom_ok & right_ok)


@triton.jit
def _gather_corners(image_ptr, channel_offset, channel_in, i_tl, i_tr, i_bl, i_br,
                    ok_tl, ok_tr, ok_bl, ok_br):
    """The four corner values, [channels, pixels] float32 each; zero where a corner is outside."""
    rows = image_ptr + channel_offset[:, None]
    channel_in = channel_in[:, None]
    v_tl = tl.load(rows + i_tl[None, :], mask=channel_in & ok_tl[None, :], other=0.0).to(tl.float32)
    v_tr = tl.load(rows + i_tr[None, :], mask=channel_in & ok_tr[None, :], other=0.0).to(tl.float32)
    v_bl = tl.load(rows + i_bl[None, :], mask=channel_in & ok_bl[None, :], other=0.0).to(tl.float32)
    v_br = tl.load(rows + i_br[None, :], mask=channel_in & ok_br[None, :], other=0.0).to(tl.float32)
    return v_tl, v_tr, v_bl, v_br


@triton.jit
def _group_sizes(in_channels, height, width, out_channels, groups, offset_groups):
    """Channels per conv group, outputs per conv group, channels per offset group, and the input plane."""
    return in_channels // groups, out_channels // groups, in_channels // offset_groups, height * width


@triton.jit
def _pixel_tile(pixel_block, n_pixels, out_w, stride_h, stride_w, pad_h, pad_w, BLOCK_P: tl.constexpr):
    """Pixel tile pixel_block: its output pixels, which of them exist, and where their sampling grid
    starts in the input (y, x before the tap and offset shifts) as float32."""
    pixels = (pixel_block * BLOCK_P).to(tl.int32) + tl.arange(0, BLOCK_P)
    pixel_in = pixels < n_pixels
    base_y = ((pixels // out_w) * stride_h - pad_h).to(tl.float32)
    base_x = ((pixels % out_w) * stride_w - pad_w).to(tl.float32)
    return pixels, pixel_in, base_y, base_x


@triton.jit
def _joint_region_gather_forward_kernel(
        x_ptr, offset_ptr, mask_ptr, weight_ptr, bias_ptr, out_ptr,
        in_channels, height, width, out_channels, out_w, n_pixels, stride_h, stride_w, pad_h, pad_w,
        dil_h, dil_w, kernel_w, taps, groups, offset_groups, n_pixel_blocks, n_out_blocks,
        HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, DOT_FP32: tl.constexpr, FP32_PRECISION: tl.constexpr,
        INDEX_DTYPE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    out_block = pid % n_out_blocks
    pixel_block = (pid // n_out_blocks) % n_pixel_blocks
    image_group = pid // (n_out_blocks * n_pixel_blocks)
    b = image_group // groups
    conv_group = (image_group % groups).to(tl.int32)
    channels_per_group, outs_per_group, channels_per_offset_group, plane = _group_sizes(
        in_channels, height, width, out_channels, groups, offset_groups)
    x_image_ptr = x_ptr + b * in_channels * plane
    offset_image_ptr = offset_ptr + b * (2 * offset_groups * taps) * n_pixels
    mask_image_ptr = mask_ptr + b * (offset_groups * taps) * n_pixels

    pixels, pixel_in, base_y, base_x = _pixel_tile(pixel_block, n_pixels, out_w, stride_h, stride_w, pad_h, pad_w,
                                                   BLOCK_P)
    out_local = (out_block * BLOCK_O).to(tl.int32) + tl.arange(0, BLOCK_O)
    out_in = out_local < outs_per_group
    out_channel = conv_group * outs_per_group + out_local

    acc = tl.zeros((BLOCK_O, BLOCK_P), dtype=tl.float32)
    group_begin = conv_group * channels_per_group
    group_end = group_begin + channels_per_group
    # The channels of one conv group that share one offset group form a contiguous segment.
    first_g = group_begin // channels_per_offset_group
    last_g = (group_end - 1) // channels_per_offset_group
    for g in range(first_g, last_g + 1):
        segment_begin = tl.maximum(group_begin, g * channels_per_offset_group)
        segment_end = tl.minimum(group_end, (g + 1) * channels_per_offset_group)
        for k in range(taps):
            (frac_y, frac_x, modulation, i_tl, i_tr, i_bl, i_br, ok_tl, ok_tr, ok_bl, ok_br) = _tap_corners(
                offset_image_ptr, mask_image_ptr, g, k, pixels, pixel_in, base_y, base_x, n_pixels, taps,
                kernel_w, dil_h, dil_w, height, width, HAS_MASK, False, INDEX_DTYPE)
            # Modulation folded into the four corner weights: one multiply per corner and channel.
            w_tl = ((1.0 - frac_y) * (1.0 - frac_x) * modulation)[None, :]
            w_tr = ((1.0 - frac_y) * frac_x * modulation)[None, :]
            w_bl = (frac_y * (1.0 - frac_x) * modulation)[None, :]
            w_br = (frac_y * frac_x * modulation)[None, :]
            for c0 in range(segment_begin, segment_end, BLOCK_C):
                channels = c0 + tl.arange(0, BLOCK_C)
                channel_in = channels < segment_end
                v_tl, v_tr, v_bl, v_br = _gather_corners(x_image_ptr, channels.to(INDEX_DTYPE) * plane,
                                                         channel_in, i_tl, i_tr, i_bl, i_br,
                                                         ok_tl, ok_tr, ok_bl, ok_br)
                column = w_tl * v_tl + w_tr * v_tr + w_bl * v_bl + w_br * v_br
                weight = tl.load(weight_ptr + (out_channel[:, None] * channels_per_group
                                               + (channels - group_begin)[None, :]) * taps + k,
                                 mask=out_in[:, None] & channel_in[None, :], other=0.0)
                if DOT_FP32:
                    acc = tl.dot(weight.to(tl.float32), column, acc, input_precision=FP32_PRECISION)
                else:
                    acc = tl.dot(weight, column.to(weight.dtype), acc)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + out_channel, mask=out_in, other=0.0).to(tl.float32)[:, None]
    out_image_ptr = out_ptr + b * out_channels * n_pixels
    tl.store(out_image_ptr + out_channel.to(INDEX_DTYPE)[:, None] * n_pixels + pixels[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=out_in[:, None] & pixel_in[None, :])


@triton.jit
def _grad_columns(grad_out_image_ptr, weight_ptr, conv_group, k, channels, channel_in, pixels, pixel_in,
                  n_pixels, outs_per_group, channels_per_group, taps, DOT_FP32: tl.constexpr,
                  FP32_PRECISION: tl.constexpr, INDEX_DTYPE: tl.constexpr, BLOCK_P: tl.constexpr,
                  BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr):
    """d loss / d column, [channels, pixels], for tap k: sum over the conv group's outputs o of
    weight[o, c, k] * grad_out[o, p]."""
    grad_column = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    out_begin = conv_group * outs_per_group
    out_end = out_begin + outs_per_group
    for o0 in range(out_begin, out_end, BLOCK_O):
        outs = o0 + tl.arange(0, BLOCK_O)
        out_in = outs < out_end
        weight_t = tl.load(weight_ptr + (outs[None, :] * channels_per_group
                                         + (channels - conv_group * channels_per_group)[:, None]) * taps + k,
                           mask=channel_in[:, None] & out_in[None, :], other=0.0)
        grad_out = tl.load(grad_out_image_ptr + outs.to(INDEX_DTYPE)[:, None] * n_pixels + pixels[None, :],
                           mask=out_in[:, None] & pixel_in[None, :], other=0.0)
        if DOT_FP32:
            grad_column = tl.dot(weight_t.to(tl.float32), grad_out.to(tl.float32), grad_column,
                                 input_precision=FP32_PRECISION)
        else:
            grad_column = tl.dot(weight_t, grad_out, grad_column)
    return grad_column


@triton.jit
def _scatter_corners(grad_image_ptr, channel_offset, channel_in, grad_sample, frac_y, frac_x,
                     i_tl, i_tr, i_bl, i_br, ok_tl, ok_tr, ok_bl, ok_br):
    """Adds grad_sample [channels, pixels] times each corner's bilinear weight into the float32 grad image."""
    rows = grad_image_ptr + channel_offset[:, None]
    channel_in = channel_in[:, None]
    fy = frac_y[None, :]
    fx = frac_x[None, :]
    tl.atomic_add(rows + i_tl[None, :], grad_sample * ((1.0 - fy) * (1.0 - fx)),
                  mask=channel_in & ok_tl[None, :], sem="relaxed")
    tl.atomic_add(rows + i_tr[None, :], grad_sample * ((1.0 - fy) * fx),
                  mask=channel_in & ok_tr[None, :], sem="relaxed")
    tl.atomic_add(rows + i_bl[None, :], grad_sample * (fy * (1.0 - fx)),
                  mask=channel_in & ok_bl[None, :], sem="relaxed")
    tl.atomic_add(rows + i_br[None, :], grad_sample * (fy * fx),
                  mask=channel_in & ok_br[None, :], sem="relaxed")


@triton.jit
def _joint_region_gather_backward_data_kernel(
        grad_out_ptr, x_ptr, offset_ptr, mask_ptr, weight_ptr, grad_x_ptr, grad_offset_ptr, grad_mask_ptr,
        in_channels, height, width, out_channels, out_w, n_pixels, stride_h, stride_w, pad_h, pad_w,
        dil_h, dil_w, kernel_w, taps, groups, offset_groups, n_pixel_blocks,
        HAS_MASK: tl.constexpr, NEEDS_INPUT_GRAD: tl.constexpr, NEEDS_OFFSET_GRAD: tl.constexpr,
        NEEDS_MASK_GRAD: tl.constexpr, NEEDS_CORNERS: tl.constexpr, DOT_FP32: tl.constexpr,
        FP32_PRECISION: tl.constexpr, INDEX_DTYPE: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr):
    """Grad input (atomics into float32), grad offset and grad mask for a tile of pixels of one image
    and offset group; the offset and mask sums over the group's channels stay inside the program."""
    pid = tl.program_id(0).to(tl.int64)
    pixel_block = pid % n_pixel_blocks
    image_group = pid // n_pixel_blocks
    b = image_group // offset_groups
    g = (image_group % offset_groups).to(tl.int32)
    channels_per_group, outs_per_group, channels_per_offset_group, plane = _group_sizes(
        in_channels, height, width, out_channels, groups, offset_groups)
    x_image_ptr = x_ptr + b * in_channels * plane
    grad_x_image_ptr = grad_x_ptr + b * in_channels * plane
    grad_out_image_ptr = grad_out_ptr + b * out_channels * n_pixels
    offset_image_ptr = offset_ptr + b * (2 * offset_groups * taps) * n_pixels
    grad_offset_image_ptr = grad_offset_ptr + b * (2 * offset_groups * taps) * n_pixels
    mask_image_ptr = mask_ptr + b * (offset_groups * taps) * n_pixels
    grad_mask_image_ptr = grad_mask_ptr + b * (offset_groups * taps) * n_pixels

    pixels, pixel_in, base_y, base_x = _pixel_tile(pixel_block, n_pixels, out_w, stride_h, stride_w, pad_h, pad_w,
                                                   BLOCK_P)
    offset_group_begin = g * channels_per_offset_group
    offset_group_end = offset_group_begin + channels_per_offset_group
    for k in range(taps):
        (frac_y, frac_x, modulation, i_tl, i_tr, i_bl, i_br, ok_tl, ok_tr, ok_bl, ok_br) = _tap_corners(
            offset_image_ptr, mask_image_ptr, g, k, pixels, pixel_in, base_y, base_x, n_pixels, taps,
            kernel_w, dil_h, dil_w, height, width, HAS_MASK, True, INDEX_DTYPE)
        grad_modulation = tl.zeros((BLOCK_P,), dtype=tl.float32)
        grad_y = tl.zeros((BLOCK_P,), dtype=tl.float32)
        grad_x = tl.zeros((BLOCK_P,), dtype=tl.float32)
        fy = frac_y[None, :]
        fx = frac_x[None, :]
        for conv_group in range(offset_group_begin // channels_per_group,
                                (offset_group_end - 1) // channels_per_group + 1):
            segment_begin = tl.maximum(offset_group_begin, conv_group * channels_per_group)
            segment_end = tl.minimum(offset_group_end, (conv_group + 1) * channels_per_group)
            for c0 in range(segment_begin, segment_end, BLOCK_C):
                channels = c0 + tl.arange(0, BLOCK_C)
                channel_in = channels < segment_end
                channel_offset = channels.to(INDEX_DTYPE) * plane
                grad_column = _grad_columns(grad_out_image_ptr, weight_ptr, conv_group, k, channels,
                                            channel_in, pixels, pixel_in, n_pixels, outs_per_group,
                                            channels_per_group, taps, DOT_FP32, FP32_PRECISION, INDEX_DTYPE,
                                            BLOCK_P, BLOCK_O, BLOCK_C)
                if NEEDS_CORNERS:
                    v_tl, v_tr, v_bl, v_br = _gather_corners(x_image_ptr, channel_offset, channel_in, i_tl,
                                                             i_tr, i_bl, i_br, ok_tl, ok_tr, ok_bl, ok_br)
                    if NEEDS_MASK_GRAD:
                        sample = ((1.0 - fy) * ((1.0 - fx) * v_tl + fx * v_tr)
                                  + fy * ((1.0 - fx) * v_bl + fx * v_br))
                        grad_modulation += tl.sum(grad_column * sample, axis=0)
                    if NEEDS_OFFSET_GRAD:
                        d_sample_dy = (1.0 - fx) * (v_bl - v_tl) + fx * (v_br - v_tr)
                        d_sample_dx = (1.0 - fy) * (v_tr - v_tl) + fy * (v_br - v_bl)
                        grad_y += tl.sum(grad_column * d_sample_dy, axis=0)
                        grad_x += tl.sum(grad_column * d_sample_dx, axis=0)
                if NEEDS_INPUT_GRAD:
                    _scatter_corners(grad_x_image_ptr, channel_offset, channel_in,
                                     grad_column * modulation[None, :], frac_y, frac_x,
                                     i_tl, i_tr, i_bl, i_br, ok_tl, ok_tr, ok_bl, ok_br)
        if NEEDS_OFFSET_GRAD:
            offset_row = (g * 2 * taps + 2 * k).to(INDEX_DTYPE) * n_pixels
            offset_ty = grad_offset_ptr.dtype.element_ty
            tl.store(grad_offset_image_ptr + offset_row + pixels, (grad_y * modulation).to(offset_ty),
                     mask=pixel_in)
            tl.store(grad_offset_image_ptr + offset_row + n_pixels + pixels,
                     (grad_x * modulation).to(offset_ty), mask=pixel_in)
        if NEEDS_MASK_GRAD:
            tl.store(grad_mask_image_ptr + (g * taps + k).to(INDEX_DTYPE) * n_pixels + pixels,
                     grad_modulation.to(grad_mask_ptr.dtype.element_ty), mask=pixel_in)


@triton.jit
def _joint_region_gather_backward_weight_kernel(
        grad_out_ptr, x_ptr, offset_ptr, mask_ptr, partial_ptr,
        batch, in_channels, height, width, out_channels, out_w, n_pixels, stride_h, stride_w, pad_h, pad_w,
        dil_h, dil_w, kernel_w, taps, groups, offset_groups, n_pixel_blocks, n_out_blocks, n_channel_blocks,
        tiles_per_split,
        HAS_MASK: tl.constexpr, DOT_FP32: tl.constexpr, FP32_PRECISION: tl.constexpr,
        INDEX_DTYPE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr):
    """partial[s, o, c, k] = sum over the pixel tiles of split s of column[b, c, k, p] * grad_out[b, o, p]."""
    pid = tl.program_id(0).to(tl.int64)
    out_block = pid % n_out_blocks
    rest = pid // n_out_blocks
    channel_block = rest % n_channel_blocks
    rest = rest // n_channel_blocks
    k = (rest % taps).to(tl.int32)
    rest = rest // taps
    g = (rest % offset_groups).to(tl.int32)
    rest = rest // offset_groups
    conv_group = (rest % groups).to(tl.int32)
    split = rest // groups
    channels_per_group, outs_per_group, channels_per_offset_group, plane = _group_sizes(
        in_channels, height, width, out_channels, groups, offset_groups)

    # This program's channels: one block of the (possibly empty) overlap of conv group and offset group.
    segment_begin = tl.maximum(conv_group * channels_per_group, g * channels_per_offset_group)
    segment_end = tl.minimum((conv_group + 1) * channels_per_group, (g + 1) * channels_per_offset_group)
    channels = segment_begin + (channel_block * BLOCK_C).to(tl.int32) + tl.arange(0, BLOCK_C)
    channel_in = channels < segment_end
    channel_offset = channels.to(INDEX_DTYPE) * plane
    out_local = (out_block * BLOCK_O).to(tl.int32) + tl.arange(0, BLOCK_O)
    out_in = out_local < outs_per_group
    out_channel = conv_group * outs_per_group + out_local

    n_tiles = batch * n_pixel_blocks
    tile_begin = split * tiles_per_split
    tile_end = tl.minimum(tile_begin + tiles_per_split, n_tiles)
    # An empty overlap or block reduces nothing and stores nothing (its channel mask is all false).
    tile_end = tl.where(segment_begin + channel_block * BLOCK_C < segment_end, tile_end, tile_begin)
    acc = tl.zeros((BLOCK_C, BLOCK_O), dtype=tl.float32)
    for tile in range(tile_begin, tile_end):
        b = tile // n_pixel_blocks
        pixels = ((tile % n_pixel_blocks) * BLOCK_P).to(tl.int32) + tl.arange(0, BLOCK_P)
        pixel_in = pixels < n_pixels
        base_y = ((pixels // out_w) * stride_h - pad_h).to(tl.float32)
        base_x = ((pixels % out_w) * stride_w - pad_w).to(tl.float32)
        (frac_y, frac_x, modulation, i_tl, i_tr, i_bl, i_br, ok_tl, ok_tr, ok_bl, ok_br) = _tap_corners(
            offset_ptr + b * (2 * offset_groups * taps) * n_pixels,
            mask_ptr + b * (offset_groups * taps) * n_pixels, g, k, pixels, pixel_in, base_y, base_x,
            n_pixels, taps, kernel_w, dil_h, dil_w, height, width, HAS_MASK, False, INDEX_DTYPE)
        v_tl, v_tr, v_bl, v_br = _gather_corners(x_ptr + b * in_channels * plane, channel_offset, channel_in,
                                                 i_tl, i_tr, i_bl, i_br, ok_tl, ok_tr, ok_bl, ok_br)
        fy = frac_y[None, :]
        fx = frac_x[None, :]
        column = ((1.0 - fy) * ((1.0 - fx) * v_tl + fx * v_tr) + fy * ((1.0 - fx) * v_bl + fx * v_br)) \
            * modulation[None, :]
        # grad_out read transposed, [pixels, outputs]: the dot reduces over pixels.
        grad_out_t = tl.load(grad_out_ptr + b * out_channels * n_pixels + pixels[:, None]
                             + out_channel.to(INDEX_DTYPE)[None, :] * n_pixels,
                             mask=pixel_in[:, None] & out_in[None, :], other=0.0)
        if DOT_FP32:
            acc = tl.dot(column, grad_out_t.to(tl.float32), acc, input_precision=FP32_PRECISION)
        else:
            acc = tl.dot(column.to(grad_out_t.dtype), grad_out_t, acc)
    partial_index = (((split * out_channels + out_channel)[None, :] * channels_per_group
                      + (channels - conv_group * channels_per_group)[:, None]) * taps + k)
    tl.store(partial_ptr + partial_index, acc, mask=channel_in[:, None] & out_in[None, :])


# ---------------------------------------------------------------------------------------------------
# Host functions
# ---------------------------------------------------------------------------------------------------

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Blocks:
    """Tile of one kernel: pixels per program, output channels and input channels per dot, warps.
    Block sizes are powers of two >= 16 (the smallest ``tl.dot``); masks cover the rest."""

    p: int
    o: int
    c: int
    num_warps: int


@dataclass(frozen=True)
class LaunchConfig:
    """Tiles of the three kernels, and how many programs split grad weight's batch x pixel
    reduction (None: enough to fill the device a few times over)."""

    forward: Blocks
    data: Blocks
    weight: Blocks
    weight_splits: int | None = None


def _pow2_between(n: int, low: int, high: int) -> int:
    return max(low, min(high, triton.next_power_of_2(max(n, 1))))


def launch_config(in_channels: int, out_channels: int, groups: int, offset_groups: int, n_pixels: int,
                  dtype: torch.dtype, interpret: bool = False) -> LaunchConfig:
    """The launch configuration of a call: tiles per kernel and dtype.

    On a GPU: 16 input channels per dot keep the four corner tiles, their addresses and a [64, 64]
    float32 accumulator in registers (compiled for sm_80 and sm_90 with triton 3.6 and 3.9: at most
    255 registers per thread and no spills at the model's shapes; ``jmipose bench --compile-only``
    reports every configuration); one output block covers the model's 48 channels.  These
    are chosen from compile statistics, not yet from timings on a device.  The interpreter pays per
    program and per loop iteration, not per element, so it gets blocks that cover small test images
    and all channels at once."""
    block_o = _pow2_between(out_channels // groups, 16, 64)
    if interpret:
        block_p = _pow2_between(n_pixels, 16, 256)
        block_c = _pow2_between(min(in_channels // groups, in_channels // offset_groups), 16, 64)
        blocks = Blocks(block_p, block_o, block_c, 4)
        return LaunchConfig(blocks, blocks, blocks)
    if dtype == torch.float32:
        # The float32 data kernel streams at most 32 output channels per dot: with 64, triton 3.6 spilled
        # it on sm_90 at the model's 48 channels (255 registers; jmipose bench --compile-only).
        return LaunchConfig(forward=Blocks(64, block_o, 16, 8), data=Blocks(32, min(block_o, 32), 16, 8),
                            weight=Blocks(64, block_o, 16, 8))
    return LaunchConfig(forward=Blocks(64, block_o, 16, 4), data=Blocks(64, block_o, 16, 8),
                        weight=Blocks(64, block_o, 16, 8))


# The model's shapes (JM-Pose on HRNet-W48): 48 input and output channels, no groups, one offset group,
# 96x72 output pixels; launch_variants marks the variants the dispatch picks there.
_MODEL_SHAPE = {"in_channels": 48, "out_channels": 48, "groups": 1, "offset_groups": 1, "n_pixels": 96 * 72}


def launch_variants() -> list[dict]:
    """Every kernel specialisation the GPU dispatch of this module can launch, for ahead-of-time
    compilation (``jmipose bench --compile-only``): each kernel x launch configuration ``launch_config``
    can return (output-channel blocks 16/32/64 x dtype) x data-dependent flags (mask, bias, which
    gradients, 32/64-bit indices).  One dict per variant:

    ``kernel`` (the ``triton.jit`` function), ``name``, ``dtype``, ``config`` (the tiles, as text),
    ``constexprs`` (every compile-time argument), ``flags`` (those of them that depend on the call's
    data rather than on the configuration), ``signature`` (the type of every other argument, as
    ``triton.compile`` takes it), ``num_warps``, ``num_stages`` (None: triton's default, as launched) and
    ``model`` (whether the dispatch picks it at the model's shapes, 32-bit indices)."""
    pointer = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}
    variants = []
    for dtype in _SUPPORTED_DTYPES:
        model_config = launch_config(**_MODEL_SHAPE, dtype=dtype)
        configs = [launch_config(outs, outs, 1, 1, _MODEL_SHAPE["n_pixels"], dtype) for outs in (16, 32, 64)]
        dot = {"DOT_FP32": dtype == torch.float32, "FP32_PRECISION": "tf32x3"}  # _dot_args on a GPU
        kernels = [
            ("forward", "forward", _joint_region_gather_forward_kernel, {}, [
                {"HAS_MASK": mask, "HAS_BIAS": bias} for mask in (True, False) for bias in (True, False)]),
            ("backward_data", "data", _joint_region_gather_backward_data_kernel, {}, [
                {"HAS_MASK": mask, "NEEDS_INPUT_GRAD": needs_input, "NEEDS_OFFSET_GRAD": needs_offset,
                 "NEEDS_MASK_GRAD": needs_mask}
                for mask in (True, False) for needs_input in (True, False) for needs_offset in (True, False)
                for needs_mask in ((True, False) if mask else (False,))
                if needs_input or needs_offset or needs_mask]),
            ("backward_weight", "weight", _joint_region_gather_backward_weight_kernel, {"partial_ptr": "*fp32"},
             [{"HAS_MASK": mask} for mask in (True, False)]),
        ]
        for name, field, kernel, pointers, flag_sets in kernels:
            # the distinct tiles of this kernel over every output-channel block (several may coincide)
            for blocks in sorted({getattr(config, field) for config in configs}, key=lambda b: (b.o, b.p)):
                for flag_set in flag_sets:
                    for index_dtype in (tl.int32, tl.int64):
                        flags = {**flag_set, "INDEX_DTYPE": index_dtype}
                        constexprs = {**flags, **dot, "BLOCK_P": blocks.p, "BLOCK_O": blocks.o, "BLOCK_C": blocks.c}
                        if name == "backward_data":
                            constexprs["NEEDS_CORNERS"] = flags["NEEDS_OFFSET_GRAD"] or flags["NEEDS_MASK_GRAD"]
                        types = dict(pointers)
                        if flags.get("NEEDS_INPUT_GRAD"):  # float32 buffer, else a placeholder (grad_output)
                            types["grad_x_ptr"] = "*fp32"
                        signature = {arg: types.get(arg, pointer[dtype]) if arg.endswith("_ptr") else "i32"
                                     for arg in kernel.arg_names if arg not in constexprs}
                        variants.append({
                            "kernel": kernel, "name": name, "dtype": dtype,
                            "config": f"BLOCK_P={blocks.p} BLOCK_O={blocks.o} BLOCK_C={blocks.c}",
                            "constexprs": constexprs, "flags": flags, "signature": signature,
                            "num_warps": blocks.num_warps, "num_stages": None,
                            "model": blocks == getattr(model_config, field) and index_dtype == tl.int32})
    return variants


@dataclass(frozen=True)
class _Geometry:
    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel_w: int
    taps: int
    out_w: int
    n_pixels: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    offset_groups: int

    @property
    def index_dtype(self):
        """int64 offsets inside an image only where one image's input, offset or output reaches 2**31
        elements."""
        per_image = max(self.in_channels * self.height * self.width, self.out_channels * self.n_pixels,
                        2 * self.offset_groups * self.taps * self.n_pixels)
        return tl.int64 if per_image >= 2**31 else tl.int32

    def scalars(self) -> tuple[int, ...]:
        """The size arguments shared by every kernel, in their order after the pointers."""
        return (self.in_channels, self.height, self.width, self.out_channels, self.out_w, self.n_pixels,
                self.stride[0], self.stride[1], self.padding[0], self.padding[1], self.dilation[0],
                self.dilation[1], self.kernel_w, self.taps, self.groups, self.offset_groups)


def _geometry(input: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor, stride, padding, dilation,
              groups: int, offset_groups: int) -> _Geometry:
    if input.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"joint_region_gather (triton): input must be float32, float16 or bfloat16, "
                        f"got {input.dtype}")
    batch, in_channels, height, width = input.shape
    out_channels, channels_per_group, kernel_h, kernel_w = weight.shape
    taps = kernel_h * kernel_w
    out_h, out_w = offset.shape[2], offset.shape[3]
    if groups < 1 or offset_groups < 1 or in_channels % groups or in_channels % offset_groups \
            or out_channels % groups or channels_per_group * groups != in_channels:
        raise ValueError(f"joint_region_gather (triton): groups={groups} and offset_groups={offset_groups} "
                         f"do not fit input channels {in_channels}, output channels {out_channels} and "
                         f"weight {tuple(weight.shape)}")
    if tuple(offset.shape) != (batch, 2 * offset_groups * taps, out_h, out_w):
        raise ValueError(f"joint_region_gather (triton): offset must have shape "
                         f"{(batch, 2 * offset_groups * taps, out_h, out_w)}, got {tuple(offset.shape)}")
    if mask is not None and tuple(mask.shape) != (batch, offset_groups * taps, out_h, out_w):
        raise ValueError(f"joint_region_gather (triton): mask must have shape "
                         f"{(batch, offset_groups * taps, out_h, out_w)}, got {tuple(mask.shape)}")
    if out_h * out_w >= 2**31 or height * width >= 2**31:
        raise ValueError(f"joint_region_gather (triton): images of {height}x{width} -> {out_h}x{out_w} "
                         "pixels are too large (at most 2**31 - 1 pixels per plane)")
    return _Geometry(batch, in_channels, height, width, out_channels, kernel_w, taps, out_w, out_h * out_w,
                     tuple(stride), tuple(padding), tuple(dilation), groups, offset_groups)


def _dot_args(dtype: torch.dtype) -> dict:
    # The interpreter multiplies bfloat16 blocks as raw 16-bit integers, so it always gets float32
    # operands.  float32 on a GPU: three TF32 products with float32 error (tf32x3), not plain TF32.
    interpret = triton_interpret()
    return {"DOT_FP32": dtype == torch.float32 or interpret,
            "FP32_PRECISION": "ieee" if interpret else "tf32x3"}


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _config(geo: _Geometry, dtype: torch.dtype, config: LaunchConfig | None) -> LaunchConfig:
    if config is not None:
        return config
    return launch_config(geo.in_channels, geo.out_channels, geo.groups, geo.offset_groups, geo.n_pixels,
                         dtype, triton_interpret())


def forward(input: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor, bias: Tensor | None,
            stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], groups: int,
            offset_groups: int, *, config: LaunchConfig | None = None) -> Tensor:
    """Output [B, Cout, Hout, Wout] in the input dtype (see the module docstring for the formula)."""
    input, offset, weight = input.contiguous(), offset.contiguous(), weight.contiguous()
    mask = mask.contiguous() if mask is not None else None
    bias = bias.contiguous() if bias is not None else None
    geo = _geometry(input, offset, mask, weight, stride, padding, dilation, groups, offset_groups)
    out = input.new_empty(geo.batch, geo.out_channels, offset.shape[2], offset.shape[3])
    if out.numel() == 0:
        return out
    if geo.in_channels == 0 or geo.taps == 0:  # nothing to gather: the output is the bias
        out.zero_()
        return out.add_(bias.view(1, -1, 1, 1)) if bias is not None else out
    blocks = _config(geo, input.dtype, config).forward
    n_pixel_blocks = triton.cdiv(geo.n_pixels, blocks.p)
    n_out_blocks = triton.cdiv(geo.out_channels // groups, blocks.o)
    grid = (n_pixel_blocks * n_out_blocks * geo.batch * groups,)
    _joint_region_gather_forward_kernel[grid](
        input, offset, mask if mask is not None else input, weight,
        bias if bias is not None else input, out, *geo.scalars(), n_pixel_blocks, n_out_blocks,
        HAS_MASK=mask is not None, HAS_BIAS=bias is not None, INDEX_DTYPE=geo.index_dtype,
        BLOCK_P=blocks.p, BLOCK_O=blocks.o, BLOCK_C=blocks.c, num_warps=blocks.num_warps,
        **_dot_args(input.dtype))
    return out


def backward(grad_output: Tensor, input: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor,
             stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], groups: int,
             offset_groups: int, needs_input_grad: tuple[bool, bool, bool, bool, bool], *,
             config: LaunchConfig | None = None
             ) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """Gradients w.r.t. (input, offset, mask, weight, bias), each in the input dtype or None where
    not asked for (grad mask is None when mask is None).  Grad input is accumulated with float32
    atomics: on a GPU it is not bitwise deterministic (the other four are)."""
    grad_output, input, offset, weight = (t.contiguous() for t in (grad_output, input, offset, weight))
    mask = mask.contiguous() if mask is not None else None
    geo = _geometry(input, offset, mask, weight, stride, padding, dilation, groups, offset_groups)
    needs_input, needs_offset, needs_mask, needs_weight, needs_bias = needs_input_grad
    needs_mask = needs_mask and mask is not None
    empty = grad_output.numel() == 0 or geo.in_channels == 0 or geo.taps == 0
    config = None if empty else _config(geo, input.dtype, config)

    grad_input = grad_offset = grad_mask = grad_weight = grad_bias = None
    if needs_input or needs_offset or needs_mask:
        grad_input_f32 = (torch.zeros(input.shape, dtype=torch.float32, device=input.device)
                          if needs_input else None)
        fully_written = torch.zeros_like if empty else torch.empty_like  # the kernel writes every element
        grad_offset = fully_written(offset) if needs_offset else None
        grad_mask = fully_written(mask) if needs_mask else None
        if not empty:
            _launch_backward_data(grad_output, input, offset, mask, weight, grad_input_f32, grad_offset,
                                  grad_mask, geo, config.data)
        if needs_input:
            grad_input = grad_input_f32 if input.dtype == torch.float32 else grad_input_f32.to(input.dtype)
    if needs_weight:
        if empty:
            grad_weight = torch.zeros_like(weight)
        else:
            grad_weight = _launch_backward_weight(grad_output, input, offset, mask, geo, config)
            grad_weight = grad_weight.view(weight.shape).to(weight.dtype)
    if needs_bias:
        grad_bias = grad_output.sum(dim=(0, 2, 3), dtype=torch.float32).to(grad_output.dtype)
    return grad_input, grad_offset, grad_mask, grad_weight, grad_bias


def _launch_backward_data(grad_output, input, offset, mask, weight, grad_input_f32, grad_offset, grad_mask,
                          geo: _Geometry, blocks: Blocks) -> None:
    n_pixel_blocks = triton.cdiv(geo.n_pixels, blocks.p)
    grid = (n_pixel_blocks * geo.batch * geo.offset_groups,)
    _joint_region_gather_backward_data_kernel[grid](
        grad_output, input, offset, mask if mask is not None else input, weight,
        grad_input_f32 if grad_input_f32 is not None else grad_output,
        grad_offset if grad_offset is not None else grad_output,
        grad_mask if grad_mask is not None else grad_output,
        *geo.scalars(), n_pixel_blocks,
        HAS_MASK=mask is not None, NEEDS_INPUT_GRAD=grad_input_f32 is not None,
        NEEDS_OFFSET_GRAD=grad_offset is not None, NEEDS_MASK_GRAD=grad_mask is not None,
        NEEDS_CORNERS=grad_offset is not None or grad_mask is not None, INDEX_DTYPE=geo.index_dtype,
        BLOCK_P=blocks.p, BLOCK_O=blocks.o, BLOCK_C=blocks.c, num_warps=blocks.num_warps,
        **_dot_args(input.dtype))


def _launch_backward_weight(grad_output, input, offset, mask, geo: _Geometry, config: LaunchConfig) -> Tensor:
    """float32 grad weight [Cout, Cin/groups, K]: per-split partial sums, then one torch sum."""
    blocks = config.weight
    channels_per_group = geo.in_channels // geo.groups
    n_pixel_blocks = triton.cdiv(geo.n_pixels, blocks.p)
    n_out_blocks = triton.cdiv(geo.out_channels // geo.groups, blocks.o)
    n_channel_blocks = triton.cdiv(min(channels_per_group, geo.in_channels // geo.offset_groups), blocks.c)
    programs_per_split = geo.groups * geo.offset_groups * geo.taps * n_channel_blocks * n_out_blocks
    n_tiles = geo.batch * n_pixel_blocks
    if config.weight_splits is not None:
        splits = config.weight_splits
    elif input.is_cuda:
        splits = triton.cdiv(4 * _sm_count(input.device.index or 0), programs_per_split)
    else:
        splits = 1
    tiles_per_split = triton.cdiv(n_tiles, max(1, min(splits, n_tiles)))
    splits = triton.cdiv(n_tiles, tiles_per_split)
    partial = torch.empty(splits, geo.out_channels, channels_per_group, geo.taps, dtype=torch.float32,
                          device=input.device)
    grid = (splits * programs_per_split,)
    _joint_region_gather_backward_weight_kernel[grid](
        grad_output, input, offset, mask if mask is not None else input, partial,
        geo.batch, *geo.scalars(), n_pixel_blocks, n_out_blocks, n_channel_blocks, tiles_per_split,
        HAS_MASK=mask is not None, INDEX_DTYPE=geo.index_dtype,
        BLOCK_P=blocks.p, BLOCK_O=blocks.o, BLOCK_C=blocks.c, num_warps=blocks.num_warps,
        **_dot_args(input.dtype))
    return partial.sum(dim=0) if splits > 1 else partial[0]
