"""Argument checks shared by every op: each error names the op, the argument, what was expected and
what came, so a user never has to read a kernel to learn what went wrong."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_float_tensor(op: str, name: str, value: object, ndim: int | None = None,
                       dtypes: Sequence[torch.dtype] = FLOAT_DTYPES) -> torch.Tensor:
    """A tensor of a floating dtype (and rank ``ndim`` if given), else TypeError/ValueError."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{op}: {name} must have a floating dtype ({allowed}), got {value.dtype}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{op}: {name} must be a {ndim}-D tensor, got {value.dim()}-D with shape {tuple(value.shape)}")
    return value


def check_same_device_dtype(op: str, tensors: Mapping[str, torch.Tensor | None]) -> None:
    """All given tensors (None skipped) on one device and of one dtype."""
    present = [(n, t) for n, t in tensors.items() if t is not None]
    if not present:
        return
    first_name, first = present[0]
    for name, tensor in present[1:]:
        if tensor.device != first.device:
            raise ValueError(f"{op}: all tensors must be on one device; {first_name} is on {first.device}, "
                             f"{name} is on {tensor.device}")
        if tensor.dtype != first.dtype:
            raise TypeError(f"{op}: all tensors must have one dtype; {first_name} is {first.dtype}, "
                            f"{name} is {tensor.dtype}")
