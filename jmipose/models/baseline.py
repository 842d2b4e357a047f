"""The single-frame baseline: the same HRNet backbone and heatmap head, on the key frame only.

It takes the temporal model's input ([B, T, 3, H, W], frames in time order) and ignores every frame
but the key frame, so baseline and temporal model run on identical batches and every gain of the
temporal model is measured against the very same backbone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jmipose.models.common import PoseOutput, check_frames
from jmipose.models.config import ModelConfig
from jmipose.models.hrnet import PoseHighResolutionNet


class SingleFramePose(nn.Module):
    """HRNet on frames[:, key_index]; ``backbone_heatmaps`` is ``heatmaps`` and ``aux_loss`` is 0."""

    def __init__(self, config: ModelConfig, backbone: PoseHighResolutionNet) -> None:
        super().__init__()
        self.config = config.resolved()
        self.backbone = backbone
        if self.config.freeze_backbone:
            backbone.freeze()

    def forward(self, frames: Tensor) -> PoseOutput:
        check_frames(frames, self.config.num_frames, "SingleFramePose")
        heatmaps = self.backbone(frames[:, self.config.key_index])
        return PoseOutput(heatmaps, heatmaps, heatmaps.new_zeros((), dtype=torch.float32))
