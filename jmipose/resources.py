"""A memory budget checked before large allocations, so an input that would need more memory than
allowed is refused with a message instead of being allocated (and killing the process, or the
machine, halfway through).

The limit, in bytes, comes from (first match wins):

1. :func:`memory_limit` used as a context manager, or :func:`set_max_bytes` (process-wide);
2. the environment variable ``JMIPOSE_MAX_BYTES`` (an integer with an optional ``K``/``M``/``G``/``T``
   binary suffix, e.g. ``16G``; ``0``, ``none`` or ``off`` mean no limit);
3. otherwise the size of the device's memory: the machine's physical memory for CPU tensors, the GPU's
   total memory for CUDA tensors (no allocation larger than that can succeed anyway, and on Linux a
   CPU one would be granted lazily and end in the OOM killer).

Checked today: every call of the two public ops (outputs, gradients and the reference backend's
materialised N_m x N_j attention scores / sampling columns), and the frames a :class:`VideoReader`
decodes.  The estimate counts what the call itself allocates, not what already exists.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterator

ENV = "JMIPOSE_MAX_BYTES"
_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_UNSET = object()
_override: object = _UNSET  # set by set_max_bytes / memory_limit: an int, or None for no limit


class ResourceLimitError(MemoryError):
    """A call refused because it would need more memory than the configured limit.

    ``what`` names the request, ``needed`` and ``limit`` are bytes."""

    def __init__(self, what: str, needed: int, limit: int, source: str):
        self.what, self.needed, self.limit = what, int(needed), int(limit)
        super().__init__(f"{what} would need {format_bytes(needed)} ({needed} bytes), more than the memory "
                         f"limit of {format_bytes(limit)} ({source}); use smaller inputs or raise the limit "
                         f"({ENV}=<bytes>, or jmipose.resources.memory_limit(...))")


def format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def parse_bytes(text: str) -> int | None:
    """``"16G"`` -> 17179869184; ``"0"``, ``"none"``, ``"off"`` -> None (no limit)."""
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    if cleaned in ("0", "NONE", "OFF", ""):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)", cleaned)
    if match is None:
        raise ValueError(f"{ENV} must be a byte count such as 2000000000 or 16G (or 0/none for no limit), "
                         f"got {text!r}")
    return int(float(match.group(1)) * _SUFFIXES[match.group(2)])


def set_max_bytes(limit: int | None) -> None:
    """Sets the process-wide limit (None: no limit); overrides ``JMIPOSE_MAX_BYTES``."""
    global _override
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"memory limit must be a positive int of bytes or None, got {limit!r}")
    _override = limit


@contextlib.contextmanager
def memory_limit(limit: int | None) -> Iterator[None]:
    """``with memory_limit(2 << 30): ...`` applies a limit (None: none) inside the block."""
    global _override
    saved = _override
    set_max_bytes(limit)
    try:
        yield
    finally:
        _override = saved


@functools.cache  # asked on every op call; a machine's memory does not change
def _device_memory(device_type: str, index: int | None) -> int | None:
    if device_type == "cuda":
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(index or 0).total_memory)
        return None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that reports it
        return None


def max_bytes(device: object = "cpu") -> tuple[int | None, str]:
    """(limit in bytes or None, where it came from) for allocations on ``device``."""
    if _override is not _UNSET:
        return _override, "set by jmipose.resources"  # type: ignore[return-value]
    text = os.environ.get(ENV)
    if text is not None:
        return parse_bytes(text), f"{ENV}={text}"
    device_type = getattr(device, "type", str(device).split(":")[0])
    index = getattr(device, "index", None)
    memory = _device_memory(device_type, index)
    return memory, f"the {device_type} device's memory"


def check_bytes(what: str, needed: int, device: object = "cpu") -> None:
    """Raises :class:`ResourceLimitError` when ``needed`` bytes exceed the limit for ``device``."""
    limit, source = max_bytes(device)
    if limit is not None and needed > limit:
        raise ResourceLimitError(what, needed, limit, source)


__all__ = ["ENV", "ResourceLimitError", "check_bytes", "format_bytes", "max_bytes", "memory_limit",
           "parse_bytes", "set_max_bytes"]
