"""jmipose: fast video human pose estimation (JM-Pose) on fused joint-region gather and
joint-motion attention kernels."""

__version__ = "0.1.0"

from jmipose import ops  # noqa: E402  (ops has no heavy imports beyond torch)
from jmipose import nn  # noqa: E402

__all__ = ["Inferencer", "nn", "ops", "__version__"]


def __getattr__(name: str):
    # Lazy: the inferencer pulls in OpenCV and the models, which ``import jmipose`` should not.
    if name == "Inferencer":
        from jmipose.engine.inferencer import Inferencer

        return Inferencer
    raise AttributeError(f"module 'jmipose' has no attribute {name!r}")
