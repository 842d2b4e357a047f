"""jmipose's public torch ops.  Model code calls these functions, never a backend directly."""

from jmipose.ops._backends import BackendStatus, BackendUnavailableError, KernelError, backends
from jmipose.ops.scale_add import scale_add

__all__ = ["BackendStatus", "BackendUnavailableError", "KernelError", "backends", "scale_add"]
