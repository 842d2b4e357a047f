"""scale_add: out = a * scale + b.

A toy op that exercises the whole path of jmipose's ops (C ABI library loaded lazily, C++ CPU, CUDA
and Triton backends, ``torch.library.custom_op`` with ``register_fake`` and ``register_autograd``,
``torch.compile``) before the real ops exist.  It is used by tests only and will be removed once
``joint_region_gather`` and ``joint_motion_attention`` cover the same ground.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from jmipose.ops import _backends
from jmipose.ops._checks import check_float_tensor, check_same_device_dtype

_SUPPORTED = ("reference", "cpp", "cuda", "triton")


def scale_add_reference(a: Tensor, b: Tensor, scale: float) -> Tensor:
    return a * scale + b


def _run(a: Tensor, b: Tensor, scale: float, backend: str) -> Tensor:
    if backend == "reference":
        return scale_add_reference(a, b, scale).contiguous()
    a, b = a.contiguous(), b.contiguous()
    if backend == "triton":
        from jmipose.kernels.scale_add import scale_add_forward

        return scale_add_forward(a, b, scale)
    out = torch.empty_like(a)
    args = (_backends.ptr(a), _backends.ptr(b), _backends.ptr(out), ctypes.c_int64(a.numel()),
            ctypes.c_double(scale), _backends.dtype_code(a))
    if backend == "cpp":
        _backends.call_cpu("jmipose_scale_add_cpu", *args)
    elif backend == "cuda":
        _backends.call_cuda("jmipose_scale_add_cuda", *args, *_backends.cuda_stream_args(a))
    else:
        raise ValueError(f"scale_add: unknown backend {backend!r}")
    return out


@torch.library.custom_op("jmipose::scale_add", mutates_args=())
def _scale_add_op(a: Tensor, b: Tensor, scale: float, backend: str) -> Tensor:
    return _run(a, b, scale, backend)


@_scale_add_op.register_fake
def _(a: Tensor, b: Tensor, scale: float, backend: str) -> Tensor:
    return torch.empty_like(a, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output) -> None:
    ctx.scale = inputs[2]
    ctx.backend = inputs[3]


def _backward(ctx, grad: Tensor):
    # d/da = scale, d/db = 1; the backward runs through the same op so it is traceable and uses the
    # same backend as the forward.
    grad_a = torch.ops.jmipose.scale_add(grad, torch.zeros_like(grad), ctx.scale, ctx.backend)
    return grad_a, grad, None, None


_scale_add_op.register_autograd(_backward, setup_context=_setup_context)


def scale_add(a: Tensor, b: Tensor, scale: float = 1.0, *, backend: str | None = None) -> Tensor:
    """``a * scale + b`` through the chosen backend (None: the fastest live one for the device)."""
    check_float_tensor("scale_add", "a", a)
    check_float_tensor("scale_add", "b", b)
    check_same_device_dtype("scale_add", {"a": a, "b": b})
    if a.shape != b.shape:
        raise ValueError(f"scale_add: b must have the shape of a {tuple(a.shape)}, got {tuple(b.shape)}")
    if not isinstance(scale, (int, float)):
        raise TypeError(f"scale_add: scale must be a number, got {type(scale).__name__}")
    name = _backends.resolve_backend_cached(backend, a.device.type, "scale_add", _SUPPORTED)
    return torch.ops.jmipose.scale_add(a, b, float(scale), name)
