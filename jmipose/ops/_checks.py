"""Argument checks shared by every op: each error names the op, the argument, what was expected and
what came, so a user never has to read a kernel to learn what went wrong.

Every check raises ``ArgumentError``, which is a ``TypeError``, a ``ValueError`` and a
``RuntimeError`` at once: code written for Python's conventions (``except ValueError``) and code
written for torch's (torch and torchvision ops raise ``RuntimeError`` for bad sizes) both catch it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class ArgumentError(TypeError, ValueError, RuntimeError):
    """A bad argument of a jmipose op (wrong type, dtype, rank, shape, device or value); the message
    names the op, the argument, what was expected and what came."""


def require(condition: bool, message: Callable[[], str]) -> None:
    """Raises ``ArgumentError(message())`` unless ``condition`` holds (the eager twin of
    ``torch._check_with(ArgumentError, ...)``, which the fake kernels use)."""
    if not condition:
        raise ArgumentError(message())


def check_float_tensor(op: str, name: str, value: object, ndim: int | None = None,
                       dtypes: Sequence[torch.dtype] = FLOAT_DTYPES) -> torch.Tensor:
    """A tensor of a floating dtype (and rank ``ndim`` if given), else ArgumentError."""
    if not isinstance(value, torch.Tensor):
        raise ArgumentError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ArgumentError(f"{op}: {name} must have a floating dtype ({allowed}), got {value.dtype}")
    if ndim is not None and value.dim() != ndim:
        raise ArgumentError(f"{op}: {name} must be a {ndim}-D tensor, got {value.dim()}-D with shape "
                            f"{tuple(value.shape)}")
    return value


def check_same_device_dtype(op: str, tensors: Mapping[str, torch.Tensor | None]) -> None:
    """All given tensors (None skipped) on one device and of one dtype."""
    present = [(n, t) for n, t in tensors.items() if t is not None]
    if not present:
        return
    first_name, first = present[0]
    for name, tensor in present[1:]:
        if tensor.device != first.device:
            raise ArgumentError(f"{op}: all tensors must be on one device; {first_name} is on {first.device}, "
                                f"{name} is on {tensor.device}")
        if tensor.dtype != first.dtype:
            raise ArgumentError(f"{op}: all tensors must have one dtype; {first_name} is {first.dtype}, "
                                f"{name} is {tensor.dtype}")
