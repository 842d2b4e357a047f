"""Op A: the heatmap-guided joint-region gather (modulated deformable convolution, DCNv2).

Semantics are exactly those of ``torchvision.ops.deform_conv2d`` (a drop-in replacement):

    out[b, o, y, x] = bias[o] + sum_{c in group(o)} sum_{i, j} weight[o, c, i, j]
                      * mask[b, g(c)*K + i*kw + j, y, x]
                      * bilinear(input[b, c], py, px)
    py = y*stride_h - pad_h + i*dil_h + offset[b, g(c)*2K + 2(i*kw + j),     y, x]
    px = x*stride_w - pad_w + j*dil_w + offset[b, g(c)*2K + 2(i*kw + j) + 1, y, x]

with K = kh*kw taps, g(c) the offset group of input channel c (Cin/G consecutive channels per
group), conv groups inferred from ``weight`` and bilinear sampling that reads zero outside the
image: a sample is non-zero only for -1 < py < H and -1 < px < W, and each of its four corners is
read only when it lies inside the image.  Gradients are torchvision's too, including the border:
the offset gradient on the line py = -1 (or px = -1) is the derivative from inside the image.

Non-finite offsets (NaN, +-inf, or so large that the coordinate leaves the image) are defined: the
sample reads zero and every gradient through it (offset, mask, input) is zero; no backend ever
converts such a coordinate to an integer or reads memory for it.  (torchvision leaves this case
undefined.)  An image with zero height or width (padding still gives output pixels) is defined the
same way: every sample reads zero, the output is the bias.

Backends (``backend=``; None picks the fastest live one for the device):

=========  ===============================================  ==============================
backend    implementation                                    dtypes
=========  ===============================================  ==============================
reference  eager PyTorch below (the definition of truth)     float32, float64
cpp        fused C++ CPU kernel (csrc/joint_region_gather)   float32, float64
cuda       fused CUDA kernel (csrc/joint_region_gather)      float32, float16, bfloat16
triton     Triton kernels (jmipose/kernels)                  float32, float16, bfloat16
=========  ===============================================  ==============================

float16/bfloat16 accumulate in float32; where the chosen backend has no half kernels (the CPU) they
are computed in float32 and handed back in their dtype.  Under ``torch.autocast`` (CPU and CUDA)
tensors of different floating dtypes are computed in the widest of them (``_backends.autocast_dtype``:
a bfloat16 activation with float32 weights computes in float32) and the output keeps the input's
dtype, as torchvision's op does.  Bad arguments raise ``jmipose.ops.ArgumentError``, which is a
``ValueError``/``TypeError`` and a ``RuntimeError`` (torchvision's and torch's error type) at once.

The op is ``torch.ops.jmipose.joint_region_gather`` (``torch.library.custom_op`` with a fake kernel)
and its backward is the separate op ``torch.ops.jmipose.joint_region_gather_backward``, so forward
and backward both trace under ``torch.compile(fullgraph=True)``; the public function and
``jmipose.nn.JointRegionGather`` also compile under ``torch.jit.script``.  The op is differentiable
once: ``create_graph=True`` through it (double backward) raises at the first backward (the
eager reference, ``joint_region_gather_reference``, is differentiable to any order).
Reference: Zhu et al., "Deformable ConvNets v2" (CVPR 2019).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from jmipose import resources
from jmipose.ops import _abi, _backends
from jmipose.ops._checks import ArgumentError, check_float_tensor, check_same_device_dtype, require

_OP = "joint_region_gather"


# ---------------------------------------------------------------------------------------------
# The reference


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return (value[0], value[1])
    raise ArgumentError(f"{_OP}: {name} must be an int or a pair of ints, got {value!r}")


def _script_pair(value: int | tuple[int, int]) -> tuple[int, int]:
    """``_pair`` for TorchScript (its argument types are checked by the compiler)."""
    if isinstance(value, int):
        return (value, value)
    return value


def _bilinear_gather(image: Tensor, py: Tensor, px: Tensor) -> Tensor:
    """Bilinear samples of ``image`` [N, C, H, W] at ``py``/``px`` [N, P] (pixel units), zero outside
    the image; returns [N, C, P]."""
    n, c, h, w = image.shape
    if h == 0 or w == 0:  # a 0-pixel image (padding still gives outputs): every sample reads zero
        return image.new_zeros(n, c, py.shape[1])
    finite = torch.isfinite(py) & torch.isfinite(px)
    py = torch.where(finite, py, torch.full_like(py, -2.0))
    px = torch.where(finite, px, torch.full_like(px, -2.0))
    # Samples with py <= -1, py >= H (likewise x) read zero.  The closed bound at -1 keeps the
    # offset gradient there (torchvision's one-sided derivative); the value is still zero because
    # the only corner inside the image has weight 0.  Points outside move to a constant, which keeps
    # the index math finite (not clamp: whether clamp passes a gradient at its bound changed across
    # torch releases, and the point y = -1 needs it).
    inside = finite & (py >= -1) & (py < h) & (px >= -1) & (px < w)
    py = torch.where(inside, py, torch.full_like(py, -2.0))
    px = torch.where(inside, px, torch.full_like(px, -2.0))
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


def _sampling_points(input: Tensor, offset: Tensor, weight: Tensor, stride: tuple[int, int],
                     padding: tuple[int, int], dilation: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Where every tap of every output pixel reads: (py, px), each [B, G, K, Hout, Wout]."""
    batch = input.shape[0]
    kh, kw = weight.shape[2], weight.shape[3]
    taps = kh * kw
    offset_groups = offset.shape[1] // (2 * taps)
    out_h, out_w = offset.shape[2], offset.shape[3]
    options = {"device": input.device, "dtype": input.dtype}
    oy = torch.arange(out_h, **options) * stride[0] - padding[0]
    ox = torch.arange(out_w, **options) * stride[1] - padding[1]
    ky = torch.arange(kh, **options).repeat_interleave(kw) * dilation[0]
    kx = torch.arange(kw, **options).repeat(kh) * dilation[1]
    # base sampling positions [K, Hout, Wout]
    base_y = ky[:, None, None] + oy[None, :, None]
    base_x = kx[:, None, None] + ox[None, None, :]
    off = offset.reshape(batch, offset_groups, taps, 2, out_h, out_w)
    return base_y + off[:, :, :, 0], base_x + off[:, :, :, 1]


def joint_region_gather_reference(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None,
                                  stride: int | tuple[int, int] = (1, 1), padding: int | tuple[int, int] = (0, 0),
                                  dilation: int | tuple[int, int] = (1, 1), mask: Tensor | None = None) -> Tensor:
    """Eager PyTorch definition of the op (readable, differentiable by autograd)."""
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    batch, in_channels, height, width = input.shape
    out_channels, channels_per_group, kh, kw = weight.shape
    groups = in_channels // channels_per_group
    taps = kh * kw
    offset_groups = offset.shape[1] // (2 * taps)
    out_h, out_w = offset.shape[2], offset.shape[3]
    py, px = _sampling_points(input, offset, weight, stride, padding, dilation)  # [B, G, K, Hout, Wout]
    modulation = (mask.reshape(batch, offset_groups, taps, out_h, out_w) if mask is not None
                  else torch.ones_like(py))

    group_channels = in_channels // offset_groups
    images = input.reshape(batch * offset_groups, group_channels, height, width)
    points = taps * out_h * out_w  # explicit, not -1: a batch of 0 leaves -1 ambiguous
    samples = _bilinear_gather(images, py.reshape(batch * offset_groups, points),
                               px.reshape(batch * offset_groups, points))
    samples = samples * modulation.reshape(batch * offset_groups, 1, points)
    # columns [B, Cin, K, Hout*Wout] -> per conv group matmul with the weights
    columns = samples.reshape(batch, in_channels, taps, out_h * out_w)
    columns = columns.reshape(batch, groups, channels_per_group * taps, out_h * out_w)
    w = weight.reshape(groups, out_channels // groups, channels_per_group * taps)
    out = torch.einsum("gok,bgkp->bgop", w, columns).reshape(batch, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


def _bilinear_corners(py: Tensor, px: Tensor, height: int, width: int) -> list[tuple[Tensor, ...]]:
    """The four corners of each sampling point [N, P]: (flat index clamped into the image, bilinear
    weight, d weight/dy, d weight/dx), the last three zero for a corner outside the image and for a
    point outside the gradient domain -1 <= py < H, -1 <= px < W (non-finite points included)."""
    inside = (py >= -1) & (py < height) & (px >= -1) & (px < width)  # False for NaN/inf
    py = torch.where(inside, py, torch.zeros_like(py))
    px = torch.where(inside, px, torch.zeros_like(px))
    y0, x0 = torch.floor(py), torch.floor(px)
    ly, lx = py - y0, px - x0
    y0, x0 = y0.long(), x0.long()
    corners = []
    for dy, wy, dwy in ((0, 1 - ly, -1.0), (1, ly, 1.0)):
        for dx, wx, dwx in ((0, 1 - lx, -1.0), (1, lx, 1.0)):
            yy, xx = y0 + dy, x0 + dx
            valid = (inside & (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)).to(py.dtype)
            index = yy.clamp(0, height - 1) * width + xx.clamp(0, width - 1)
            corners.append((index, wy * wx * valid, dwy * wx * valid, wy * dwx * valid))
    return corners


def joint_region_gather_reference_backward(
        grad_output: Tensor, input: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor,
        stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
        needs_input_grad: tuple[bool, ...] = (True,) * 5) -> list[Tensor | None]:
    """The gradients of ``joint_region_gather_reference`` w.r.t. (input, offset, mask, weight,
    bias), written out in eager PyTorch (the reference backend's backward; None where not needed):

        columns       = mask * bilinear(input)                          [B, Cin*K, P]
        grad_columns  = W^T grad_output                                 (per conv group)
        grad_weight   = grad_output columns^T,   grad_bias = sum grad_output
        grad_mask     = sum_c grad_columns * bilinear(input)
        grad_input    = scatter of mask * grad_columns * corner weight to the four corners
        grad_offset   = mask * sum_c grad_columns * sum_corners d(corner weight)/d(y, x) * input[corner]
    """
    batch, in_channels, height, width = input.shape
    out_channels, channels_per_group, kh, kw = weight.shape
    groups, taps = in_channels // channels_per_group, kh * kw
    offset_groups = offset.shape[1] // (2 * taps)
    out_h, out_w = offset.shape[2], offset.shape[3]
    pixels, group_channels, n = out_h * out_w, in_channels // offset_groups, batch * offset_groups
    need_input, need_offset, need_mask, need_weight, need_bias = needs_input_grad
    py, px = _sampling_points(input, offset, weight, stride, padding, dilation)
    corners = _bilinear_corners(py.reshape(n, -1), px.reshape(n, -1), height, width)
    images = input.reshape(n, group_channels, height * width)
    values = [torch.gather(images, 2, index.unsqueeze(1).expand(-1, group_channels, -1))
              for index, *_ in corners]  # [N, Cg, K*P] each
    samples = sum(w.unsqueeze(1) * v for (_, w, _, _), v in zip(corners, values))
    modulation = mask.reshape(n, 1, taps * pixels) if mask is not None else torch.ones_like(samples[:, :1])
    grad_out = grad_output.reshape(batch, groups, out_channels // groups, pixels)
    w = weight.reshape(groups, out_channels // groups, channels_per_group * taps)
    grads: list[Tensor | None] = [None] * 5
    if need_weight:
        columns = (samples * modulation).reshape(batch, groups, channels_per_group * taps, pixels)
        grads[3] = torch.einsum("bgop,bgkp->gok", grad_out, columns).reshape(weight.shape)
    if need_bias:
        grads[4] = grad_output.sum(dim=(0, 2, 3))
    if not (need_input or need_offset or need_mask):
        return grads
    grad_columns = torch.einsum("gok,bgop->bgkp", w, grad_out).reshape(n, group_channels, taps * pixels)
    if need_mask and mask is not None:
        grads[2] = (grad_columns * samples).sum(1).reshape(mask.shape)
    grad_samples = grad_columns * modulation
    if need_input:
        grad_images = torch.zeros_like(images)
        for (index, corner_weight, _, _) in corners:
            grad_images.scatter_add_(2, index.unsqueeze(1).expand(-1, group_channels, -1),
                                     grad_samples * corner_weight.unsqueeze(1))
        grads[0] = grad_images.reshape(input.shape)
    if need_offset:
        dots = [(grad_samples * v).sum(1) for v in values]  # [N, K*P] per corner
        grad_y = sum(dy * d for (_, _, dy, _), d in zip(corners, dots))
        grad_x = sum(dx * d for (_, _, _, dx), d in zip(corners, dots))
        grads[1] = torch.stack([grad_y.reshape(batch, offset_groups, taps, out_h, out_w),
                                grad_x.reshape(batch, offset_groups, taps, out_h, out_w)], dim=3
                               ).reshape(offset.shape)
    return grads



# ---------------------------------------------------------------------------------------------
# Argument checks


def _output_size(size: int, kernel: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - dil * (kernel - 1) - 1) // stride + 1


def _check_shapes(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor | None,
                  stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], check) -> None:
    """Ranks and how the shapes fit together; ``check(condition, message)`` raises (``require`` in
    eager code, ``torch._check_with(ArgumentError, ...)`` in the fake kernels)."""
    for name, tensor, rank in (("input", input, 4), ("offset", offset, 4), ("weight", weight, 4), ("bias", bias, 1),
                               ("mask", mask, 4)):
        if tensor is not None:
            check(tensor.dim() == rank, lambda name=name, tensor=tensor, rank=rank: (
                f"{_OP}: {name} must be a {rank}-D tensor, got {tensor.dim()}-D with shape {tuple(tensor.shape)}"))
    batch, in_channels, height, width = input.shape
    out_channels, channels_per_group, kh, kw = weight.shape
    check(out_channels != 0 and channels_per_group != 0 and kh != 0 and kw != 0, lambda: (
        f"{_OP}: weight must be [out_channels, in_channels/groups, kh, kw] with no zero size, "
        f"got {tuple(weight.shape)}"))
    check(in_channels % channels_per_group == 0, lambda: (
        f"{_OP}: input channels ({in_channels}) must be a multiple of weight.shape[1] "
        f"(in_channels/groups = {channels_per_group}), got input {tuple(input.shape)}"))
    groups = in_channels // channels_per_group
    check(out_channels % groups == 0, lambda: (
        f"{_OP}: weight.shape[0] (out_channels = {out_channels}) must be divisible by the "
        f"groups ({groups} = input channels {in_channels} / weight.shape[1] {channels_per_group})"))
    taps = kh * kw
    out_h = _output_size(height, kh, stride[0], padding[0], dilation[0])
    out_w = _output_size(width, kw, stride[1], padding[1], dilation[1])
    check(out_h > 0 and out_w > 0, lambda: (
        f"{_OP}: output size must be positive, got ({out_h}, {out_w}) for input {height}x{width}, "
        f"kernel {kh}x{kw}, stride {stride}, padding {padding}, dilation {dilation}"))
    check(offset.shape[1] != 0 and offset.shape[1] % (2 * taps) == 0, lambda: (
        f"{_OP}: offset.shape[1] must be a positive multiple of 2*kh*kw = {2 * taps} "
        f"(2 * offset_groups * kh * kw), got {offset.shape[1]}"))
    offset_groups = offset.shape[1] // (2 * taps)
    check(in_channels % offset_groups == 0, lambda: (
        f"{_OP}: input channels ({in_channels}) must be divisible by the offset groups "
        f"({offset_groups} = offset.shape[1] {offset.shape[1]} / (2*{kh}*{kw}))"))
    expected = (batch, 2 * offset_groups * taps, out_h, out_w)
    check(tuple(offset.shape) == expected, lambda: (
        f"{_OP}: offset must have shape {expected} [B, 2*G*kh*kw, Hout, Wout], got {tuple(offset.shape)}"))
    if mask is not None:
        check(tuple(mask.shape) == (batch, offset_groups * taps, out_h, out_w), lambda: (
            f"{_OP}: mask must have shape {(batch, offset_groups * taps, out_h, out_w)} "
            f"[B, G*kh*kw, Hout, Wout], got {tuple(mask.shape)}"))
    if bias is not None:
        check(tuple(bias.shape) == (out_channels,), lambda: (
            f"{_OP}: bias must have shape ({out_channels},), got {tuple(bias.shape)}"))


def _check_arguments(input: object, offset: object, weight: object, bias: object, mask: object,
                     stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int]) -> None:
    """Raises ``ArgumentError`` naming the argument, what was expected and what came: types and
    dtypes, then values, then shapes, then one device and one dtype (a float32 layer fed float64
    input with a wrong offset hears about the offset first, as from torchvision)."""
    named = {"input": input, "offset": offset, "weight": weight, "bias": bias, "mask": mask}
    for name, value in named.items():
        if value is not None or name in ("input", "offset", "weight"):
            check_float_tensor(_OP, name, value)
    for name, (a, b), least in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        if a < least or b < least:
            raise ArgumentError(f"{_OP}: {name} must be >= {least}, got ({a}, {b})")
    _check_shapes(input, offset, weight, bias, mask, stride, padding, dilation, require)
    check_same_device_dtype(_OP, named)


def _check_memory(input: Tensor, offset: Tensor, weight: Tensor, backend: str) -> None:
    """Refuses (ResourceLimitError) a call whose own allocations would exceed the memory limit of
    :mod:`jmipose.resources`: the output, the gradients when autograd will want them, and the
    backend's workspace (the reference materialises the bilinear samples of every tap, several
    [B, Cin*kh*kw, Hout*Wout] tensors plus int64 corner indices; the C++ kernel keeps per-thread
    copies of one image and its gradient)."""
    if torch.compiler.is_compiling():  # a Python-side guard; traced graphs are checked when run eagerly
        return
    batch, in_channels, height, width = input.shape
    out_channels, _, kh, kw = weight.shape
    pixels = offset.shape[2] * offset.shape[3]
    taps, element = kh * kw, input.element_size()
    offset_groups = offset.shape[1] // (2 * taps)
    needed = batch * out_channels * pixels * element
    if torch.is_grad_enabled() and any(t.requires_grad for t in (input, offset, weight)):
        needed += (input.numel() + 2 * offset.numel() + weight.numel()) * element
    if backend == "reference":
        needed += 4 * batch * taps * pixels * (in_channels * element + offset_groups * 8)
    elif backend == "cpp":
        threads = max(1, torch.get_num_threads())
        needed += threads * (3 * in_channels * height * width + out_channels * in_channels * taps) * element
    resources.check_bytes(f"{_OP} ({backend}) on input {list(input.shape)}, offset {list(offset.shape)}, "
                          f"weight {list(weight.shape)}", needed, input.device)


# ---------------------------------------------------------------------------------------------
# The dtype table

SPEC = _backends.OpSpec(_OP, first_argument="input", dtypes={
    "reference": (torch.float32, torch.float64),
    "cpp": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float16, torch.bfloat16),
    "triton": (torch.float32, torch.float16, torch.bfloat16),
})
_DTYPES = SPEC.dtypes


# ---------------------------------------------------------------------------------------------
# Dispatch: one call, checked, to a backend


def _prepare(input, offset, weight, bias, mask, stride, padding, dilation, backend):
    """What every call does before a backend runs: the checks, the autocast rule, the backend and
    compute dtype (``_backends.dispatch``), the memory limit.  Returns the choice and the tensors
    (input, offset, mask, weight, bias) in the compute dtype."""
    if torch.is_autocast_enabled(input.device.type if isinstance(input, Tensor) else "cpu"):
        for name, value in (("input", input), ("offset", offset), ("weight", weight), ("bias", bias), ("mask", mask)):
            if value is not None or name in ("input", "offset", "weight"):
                check_float_tensor(_OP, name, value)
        input, offset, weight, bias, mask = _backends.autocast_cast((input, offset, weight, bias, mask))
    _check_arguments(input, offset, weight, bias, mask, stride, padding, dilation)
    choice = _backends.dispatch(SPEC, backend, input.device, input.dtype)
    tensors = (input, offset, mask, weight, bias)
    if choice.dtype != input.dtype:
        tensors = _backends.widen(tensors, choice.dtype)
    _check_memory(tensors[0], offset, weight, choice.backend)
    return choice, tensors


def _geometry(input: Tensor, offset: Tensor, weight: Tensor) -> tuple[int, int]:
    """(groups, offset_groups) of a call."""
    groups = input.shape[1] // weight.shape[1]
    offset_groups = offset.shape[1] // (2 * weight.shape[2] * weight.shape[3])
    return groups, offset_groups


_size_order = _abi.size_getter(_abi.JOINT_REGION_GATHER_SIZES)


def _size_args(input: Tensor, offset: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int],
               dilation: tuple[int, int]) -> tuple[int, ...]:
    """The int64 sizes of the C ABI, in its order (``_abi.JOINT_REGION_GATHER_SIZES``)."""
    batch, in_channels, height, width = input.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    groups, offset_groups = _geometry(input, offset, weight)
    return _size_order({
        "batch": batch, "in_channels": in_channels, "height": height, "width": width, "out_channels": out_channels,
        "kernel_h": kernel_h, "kernel_w": kernel_w, "out_h": offset.shape[2], "out_w": offset.shape[3],
        "stride_h": stride[0], "stride_w": stride[1], "pad_h": padding[0], "pad_w": padding[1],
        "dil_h": dilation[0], "dil_w": dilation[1], "groups": groups, "offset_groups": offset_groups})


def _forward(input: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor, bias: Tensor | None,
             stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], backend: str) -> Tensor:
    """The output on ``backend`` (arguments checked, dtype one the backend computes)."""
    out_shape = (input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3])
    if input.shape[0] == 0:
        return input.new_zeros(out_shape)
    if input.shape[2] == 0 or input.shape[3] == 0:  # a 0-pixel image (padding gives outputs): samples read 0
        output = input.new_zeros(out_shape)
        return output + bias.view(1, -1, 1, 1) if bias is not None else output
    if backend == "reference":
        return joint_region_gather_reference(input, offset, weight, bias, stride, padding, dilation,
                                             mask).contiguous()
    input, offset, weight = input.contiguous(), offset.contiguous(), weight.contiguous()
    mask = mask.contiguous() if mask is not None else None
    bias = bias.contiguous() if bias is not None else None
    with _backends.device_scope(input):
        if backend == "triton":
            from jmipose.kernels.joint_region_gather import forward as triton_forward

            return triton_forward(input, offset, mask, weight, bias, stride, padding, dilation,
                                  *_geometry(input, offset, weight))
        output = input.new_empty(out_shape)
        ptr = _backends.ptr
        args = (ptr(input), ptr(offset), ptr(mask), ptr(weight), ptr(bias), ptr(output),
                *_size_args(input, offset, weight, stride, padding, dilation), _backends.DTYPE_CODES[input.dtype])
        if backend == "cpp":
            _backends.call_cpu("jmipose_joint_region_gather_forward_cpu", *args)
        elif backend == "cuda":
            _backends.call_cuda("jmipose_joint_region_gather_forward_cuda", *args,
                                *_backends.cuda_stream_args(input))
        else:
            raise ArgumentError(f"{_OP}: unknown backend {backend!r}")
    return output


def _backward_compiled(grad_output: Tensor, input: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor,
                       stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                       needs: list[bool], backend: str) -> list[Tensor | None]:
    """cpp and cuda: float32 gradient buffers for float16/bfloat16 inputs (the C ABI's contract)."""
    tensors = [t.contiguous() if t is not None else None for t in (grad_output, input, offset, mask, weight)]
    grad_output, input, offset, mask, weight = tensors
    buffer_dtype = torch.float32 if input.dtype in _backends.HALF else input.dtype
    like = (input, offset, mask, weight, weight.new_empty(weight.shape[0]))
    grads = [torch.empty(t.shape, dtype=buffer_dtype, device=t.device) if need and t is not None else None
             for t, need in zip(like, needs)]
    ptr = _backends.ptr
    args = (*(ptr(t) for t in (grad_output, input, offset, mask, weight, *grads)),
            *_size_args(input, offset, weight, stride, padding, dilation), _backends.DTYPE_CODES[input.dtype])
    if backend == "cpp":
        _backends.call_cpu("jmipose_joint_region_gather_backward_cpu", *args)
    else:
        _backends.call_cuda("jmipose_joint_region_gather_backward_cuda", *args, *_backends.cuda_stream_args(input))
    return [g.to(input.dtype) if g is not None else None for g in grads]


def _backward(grad_output: Tensor, input: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor,
              stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], needs: list[bool],
              backend: str) -> list[Tensor | None]:
    """Gradients w.r.t. (input, offset, mask, weight, bias) on ``backend``; None where ``needs`` is
    False (arguments checked, dtype one the backend computes)."""
    needs = [bool(n) for n in needs]
    needs[2] = needs[2] and mask is not None
    if input.numel() == 0:  # no batch, or a 0-pixel image: every sample read zero
        like = (input, offset, mask, weight, weight.new_empty(weight.shape[0]))
        grads = [torch.zeros_like(t) if need else None for t, need in zip(like, needs)]
        if needs[4]:
            grads[4] = grad_output.sum(dim=(0, 2, 3)).to(weight.dtype)
        return grads
    if backend == "reference":
        return joint_region_gather_reference_backward(grad_output, input, offset, mask, weight, stride, padding,
                                                      dilation, tuple(needs))
    with _backends.device_scope(input):
        if backend in ("cpp", "cuda"):
            return _backward_compiled(grad_output, input, offset, mask, weight, stride, padding, dilation, needs,
                                      backend)
        if backend == "triton":
            from jmipose.kernels.joint_region_gather import backward as triton_backward

            tensors = [t.contiguous() if t is not None else None for t in (grad_output, input, offset, mask, weight)]
            return list(triton_backward(*tensors, stride, padding, dilation, *_geometry(input, offset, weight),
                                        needs_input_grad=tuple(needs)))
    raise ArgumentError(f"{_OP}: unknown backend {backend!r}")


# ---------------------------------------------------------------------------------------------
# torch.library registration
#
# ``backend`` is the backend to run (None: the fastest live one); ``checked`` says the caller (the
# public function, the autograd formula) has checked the arguments, chosen the backend and widened
# half precision where needed.  Any other caller (TorchScript, ``torch.ops.jmipose...`` directly)
# leaves it False and the op does all of that itself.


@torch.library.custom_op("jmipose::joint_region_gather", mutates_args=())
def _joint_region_gather_op(input: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor,
                            bias: Tensor | None, stride_h: int, stride_w: int, pad_h: int, pad_w: int, dil_h: int,
                            dil_w: int, backend: str | None = None, checked: bool = False) -> Tensor:
    stride, padding, dilation = (stride_h, stride_w), (pad_h, pad_w), (dil_h, dil_w)
    if checked:
        return _forward(input, offset, mask, weight, bias, stride, padding, dilation, backend)
    choice, tensors = _prepare(input, offset, weight, bias, mask, stride, padding, dilation, backend)
    return _forward(*tensors, stride, padding, dilation, choice.backend).to(input.dtype)


@torch.library.custom_op("jmipose::joint_region_gather_backward", mutates_args=())
def _joint_region_gather_backward_op(grad_output: Tensor, input: Tensor, offset: Tensor, mask: Tensor | None,
                                     weight: Tensor, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                                     dil_h: int, dil_w: int, needs_input_grad: list[bool], backend: str | None = None,
                                     checked: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns (grad_input, grad_offset, grad_mask, grad_weight, grad_bias); a gradient that is not
    needed comes back as an empty tensor (custom ops return tensors, never None)."""
    stride, padding, dilation = (stride_h, stride_w), (pad_h, pad_w), (dil_h, dil_w)
    if checked:
        grads = _backward(grad_output, input, offset, mask, weight, stride, padding, dilation, needs_input_grad,
                          backend)
        return tuple(g if g is not None else input.new_empty(0) for g in grads)
    dtype = input.dtype
    choice, (input, offset, mask, weight, _) = _prepare(input, offset, weight, None, mask, stride, padding, dilation,
                                                        backend)
    expected = (input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3])
    check_float_tensor(_OP, "grad_output", grad_output)
    require(tuple(grad_output.shape) == expected, lambda: (
        f"{_OP}: grad_output must have the output's shape {expected}, got {tuple(grad_output.shape)}"))
    grads = _backward(grad_output.to(choice.dtype), input, offset, mask, weight, stride, padding, dilation,
                      needs_input_grad, choice.backend)
    return tuple(g.to(dtype) if g is not None else input.new_empty(0, dtype=dtype) for g in grads)


# ---------------------------------------------------------------------------------------------
# Fake kernels (torch.compile): shapes only, checked with torch._check

_fake_check = functools.partial(torch._check_with, ArgumentError)


@_joint_region_gather_op.register_fake
def _(input, offset, mask, weight, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, backend=None,
      checked=False):
    _check_shapes(input, offset, weight, bias, mask, (stride_h, stride_w), (pad_h, pad_w), (dil_h, dil_w),
                  _fake_check)
    return input.new_empty((input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3]))


@_joint_region_gather_backward_op.register_fake
def _(grad_output, input, offset, mask, weight, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, needs_input_grad,
      backend=None, checked=False):
    _check_shapes(input, offset, weight, None, mask, (stride_h, stride_w), (pad_h, pad_w), (dil_h, dil_w),
                  _fake_check)
    expected = (input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3])
    _fake_check(tuple(grad_output.shape) == expected, lambda: (
        f"{_OP}: grad_output must have the output's shape {expected}, got {tuple(grad_output.shape)}"))
    shapes = (input.shape, offset.shape, mask.shape if mask is not None else None, weight.shape,
              (weight.shape[0],))
    needs = list(needs_input_grad)
    needs[2] = needs[2] and mask is not None
    return tuple(input.new_empty(shape) if need else input.new_empty(0) for shape, need in zip(shapes, needs))


# ---------------------------------------------------------------------------------------------
# Autograd


def _setup_context(ctx, inputs, output) -> None:
    input, offset, mask, weight, _bias, *geometry, backend, checked = inputs
    ctx.save_for_backward(input, offset, mask, weight)
    ctx.geometry = geometry
    ctx.backend, ctx.checked = backend, checked


def _autograd_backward(ctx, grad_output: Tensor):
    if torch.is_grad_enabled():
        raise RuntimeError(f"{_OP} is differentiable once: its backward is a kernel without a derivative of its "
                           "own, so a graph of the gradient (create_graph=True, double backward) cannot be built "
                           "through it; take this gradient without create_graph, or use "
                           f"{_OP}_reference, which autograd differentiates to any order")
    input, offset, mask, weight = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:5])
    grads = torch.ops.jmipose.joint_region_gather_backward(grad_output.contiguous(), input, offset, mask, weight,
                                                           *ctx.geometry, needs, ctx.backend, ctx.checked)
    needs[2] = needs[2] and mask is not None
    result = [g if need else None for g, need in zip(grads, needs)]
    return (*result, None, None, None, None, None, None, None, None)


_joint_region_gather_op.register_autograd(_autograd_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Autocast (CPU and CUDA): the one rule of _backends.autocast_dtype, the output in the input's dtype


def _restore(args: tuple, output: Tensor) -> Tensor:
    return output.to(args[0].dtype)


_backends.register_autocast("joint_region_gather", _restore)


# ---------------------------------------------------------------------------------------------
# Public function


def joint_region_gather(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None,
                        stride: int | tuple[int, int] = (1, 1), padding: int | tuple[int, int] = (0, 0),
                        dilation: int | tuple[int, int] = (1, 1), mask: Tensor | None = None,
                        backend: str | None = None) -> Tensor:
    """Modulated deformable convolution, a drop-in for ``torchvision.ops.deform_conv2d``.

    Args:
        input: [B, Cin, H, W].
        offset: [B, 2*G*kh*kw, Hout, Wout], (dy, dx) pairs per offset group G and tap (row-major
            taps), in torchvision's channel order.  NaN/inf offsets read zero with zero gradient.
        weight: [Cout, Cin/groups, kh, kw]; the conv groups are inferred from it.
        bias: [Cout] or None.
        stride, padding, dilation: ints or (h, w) pairs.
        mask: [B, G*kh*kw, Hout, Wout] modulation, or None (all ones).
        backend: None (fastest live one for the device), "reference", "cpp", "cuda" or "triton";
            a backend that cannot run raises ``BackendUnavailableError`` saying why.

    Returns:
        [B, Cout, Hout, Wout], differentiable (once) w.r.t. input, offset, mask, weight and bias.

    Raises ``jmipose.ops.ArgumentError`` (a ValueError, TypeError and RuntimeError) for bad
    arguments.  Compiles under ``torch.jit.script`` (there it calls the registered op, which checks
    its arguments and picks the backend itself).
    """
    if torch.jit.is_scripting():
        sh, sw = _script_pair(stride)
        ph, pw = _script_pair(padding)
        dh, dw = _script_pair(dilation)
        return torch.ops.jmipose.joint_region_gather(input, offset, mask, weight, bias, sh, sw, ph, pw, dh, dw,
                                                     backend, False)
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    choice, (input_, offset, mask, weight, bias) = _prepare(input, offset, weight, bias, mask, stride, padding,
                                                            dilation, backend)
    output = torch.ops.jmipose.joint_region_gather(input_, offset, mask, weight, bias, *stride, *padding, *dilation,
                                                   choice.backend, True)
    return output if output.dtype == input.dtype else output.to(input.dtype)


__all__ = ["joint_region_gather", "joint_region_gather_reference", "joint_region_gather_reference_backward"]
