"""jmipose: fast video human pose estimation (JM-Pose) on fused joint-region gather and
joint-motion attention kernels."""

__version__ = "0.1.0"

from jmipose import ops  # noqa: E402  (ops has no heavy imports beyond torch)
from jmipose import nn  # noqa: E402

__all__ = ["nn", "ops", "__version__"]
