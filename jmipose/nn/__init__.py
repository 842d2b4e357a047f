"""jmipose's layers (modules over the public ops in ``jmipose.ops``)."""

from jmipose.nn.joint_motion_attention import JointMotionAttention
from jmipose.nn.joint_region_gather import JointRegionGather

__all__ = ["JointMotionAttention", "JointRegionGather"]
