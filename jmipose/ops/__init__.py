"""jmipose's public torch ops.  Model code calls these functions, never a backend directly."""

from jmipose.ops._backends import BackendStatus, BackendUnavailableError, KernelError, backends
from jmipose.ops._checks import ArgumentError
from jmipose.ops.joint_motion_attention import joint_motion_attention
from jmipose.ops.joint_region_gather import joint_region_gather

__all__ = ["ArgumentError", "BackendStatus", "BackendUnavailableError", "KernelError", "backends",
           "joint_motion_attention", "joint_region_gather"]
