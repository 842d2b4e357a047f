"""Op A: the heatmap-guided joint-region gather (modulated deformable convolution, DCNv2).

Semantics are exactly those of ``torchvision.ops.deform_conv2d``:

    out[b, o, y, x] = bias[o] + sum_{c in group(o)} sum_{i, j} weight[o, c, i, j]
                      * mask[b, g(c)*K + i*kw + j, y, x]
                      * bilinear(input[b, c], py, px)
    py = y*stride_h - pad_h + i*dil_h + offset[b, g(c)*2K + 2(i*kw + j),     y, x]
    px = x*stride_w - pad_w + j*dil_w + offset[b, g(c)*2K + 2(i*kw + j) + 1, y, x]

with K = kh*kw taps, g(c) the offset group of input channel c (Cin/G consecutive channels per
group), conv groups inferred from ``weight`` and bilinear sampling that reads zero outside the
image.  A non-finite sampling coordinate (NaN or inf offset) reads zero.

This module currently holds the eager reference and the public function; the fused backends (C++
CPU, CUDA, Triton), ``torch.library.custom_op`` registration and full argument checks are added
by the op's own issue, behind this same function name.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    pair = tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"joint_region_gather: {name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _bilinear_gather(image: Tensor, py: Tensor, px: Tensor) -> Tensor:
    """Bilinear samples of ``image`` [N, C, H, W] at ``py``/``px`` [N, P] (pixel units), zero outside
    the image; returns [N, C, P]."""
    n, c, h, w = image.shape
    finite = torch.isfinite(py) & torch.isfinite(px)
    py = torch.where(finite, py, torch.full_like(py, -2.0))
    px = torch.where(finite, px, torch.full_like(px, -2.0))
    # Anything at or beyond one pixel outside reads zero; clamping keeps the index math finite.
    inside = finite & (py > -1) & (py < h) & (px > -1) & (px < w)
    py = py.clamp(-1, h)
    px = px.clamp(-1, w)
    y0 = torch.floor(py)
    x0 = torch.floor(px)
    ly, lx = py - y0, px - x0
    y0, x0 = y0.long(), x0.long()
    flat = image.reshape(n, c, h * w)
    result = image.new_zeros(n, c, py.shape[1])
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            yy, xx = y0 + dy, x0 + dx
            valid = inside & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            index = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).unsqueeze(1).expand(n, c, -1)
            corner = torch.gather(flat, 2, index)
            result = result + corner * (wy * wx * valid).unsqueeze(1).to(image.dtype)
    return result


def joint_region_gather_reference(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None,
                                  stride: int | tuple[int, int] = (1, 1), padding: int | tuple[int, int] = (0, 0),
                                  dilation: int | tuple[int, int] = (1, 1), mask: Tensor | None = None) -> Tensor:
    """Eager PyTorch definition of the op (readable, differentiable by autograd)."""
    stride_h, stride_w = _pair(stride, "stride")
    pad_h, pad_w = _pair(padding, "padding")
    dil_h, dil_w = _pair(dilation, "dilation")
    batch, in_channels, height, width = input.shape
    out_channels, channels_per_group, kh, kw = weight.shape
    groups = in_channels // channels_per_group
    taps = kh * kw
    offset_groups = offset.shape[1] // (2 * taps)
    out_h, out_w = offset.shape[2], offset.shape[3]

    oy = torch.arange(out_h, device=input.device, dtype=input.dtype) * stride_h - pad_h
    ox = torch.arange(out_w, device=input.device, dtype=input.dtype) * stride_w - pad_w
    ky = torch.arange(kh, device=input.device, dtype=input.dtype).repeat_interleave(kw) * dil_h
    kx = torch.arange(kw, device=input.device, dtype=input.dtype).repeat(kh) * dil_w
    # base sampling positions [K, Hout, Wout]
    base_y = ky[:, None, None] + oy[None, :, None]
    base_x = kx[:, None, None] + ox[None, None, :]
    off = offset.reshape(batch, offset_groups, taps, 2, out_h, out_w)
    py = base_y + off[:, :, :, 0]  # [B, G, K, Hout, Wout]
    px = base_x + off[:, :, :, 1]
    modulation = (mask.reshape(batch, offset_groups, taps, out_h, out_w) if mask is not None
                  else torch.ones_like(py))

    group_channels = in_channels // offset_groups
    images = input.reshape(batch * offset_groups, group_channels, height, width)
    samples = _bilinear_gather(images, py.reshape(batch * offset_groups, -1), px.reshape(batch * offset_groups, -1))
    samples = samples * modulation.reshape(batch * offset_groups, 1, -1)
    # columns [B, Cin, K, Hout*Wout] -> per conv group matmul with the weights
    columns = samples.reshape(batch, in_channels, taps, out_h * out_w)
    columns = columns.reshape(batch, groups, channels_per_group * taps, out_h * out_w)
    w = weight.reshape(groups, out_channels // groups, channels_per_group * taps)
    out = torch.einsum("gok,bgkp->bgop", w, columns).reshape(batch, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


def joint_region_gather(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None,
                        stride: int | tuple[int, int] = (1, 1), padding: int | tuple[int, int] = (0, 0),
                        dilation: int | tuple[int, int] = (1, 1), mask: Tensor | None = None, *,
                        backend: str | None = None) -> Tensor:
    """Modulated deformable convolution, a drop-in for ``torchvision.ops.deform_conv2d``.

    input [B, Cin, H, W]; offset [B, 2*G*kh*kw, Hout, Wout] ((dy, dx) pairs per offset group and
    tap); mask [B, G*kh*kw, Hout, Wout] or None (all ones); weight [Cout, Cin/groups, kh, kw];
    bias [Cout] or None.  Returns [B, Cout, Hout, Wout].
    """
    if backend not in (None, "reference"):
        raise NotImplementedError(f"joint_region_gather: backend {backend!r} is not implemented yet")
    return joint_region_gather_reference(input, offset, weight, bias, stride, padding, dilation, mask)
