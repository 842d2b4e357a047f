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
            backbone.freeze(batchnorm=self.config.freeze_batchnorm)

    @property
    def feature_stages(self) -> list[int]:
        """No stage features: the head reads the key frame's heatmaps only."""
        return []

    def backbone_features(self, frames: Tensor) -> tuple[Tensor, list[Tensor | None]]:
        """frames [N, 3, H, W] -> heatmaps [N, K, h, w] and no stage features (four Nones), the same
        split as ``JointMotionPose.backbone_features``."""
        return self.backbone(frames), [None] * 4

    def forward_head(self, heatmaps: Tensor, stage_features: list[Tensor | None]) -> PoseOutput:
        """heatmaps [B, T, K, h, w] of windows -> the key frame's heatmaps as ``PoseOutput``."""
        if heatmaps.dim() != 5 or heatmaps.shape[1] != self.config.num_frames:
            raise ValueError(f"SingleFramePose.forward_head: heatmaps must be "
                             f"[B, T={self.config.num_frames}, K, h, w], got shape {tuple(heatmaps.shape)}")
        key = heatmaps[:, self.config.key_index]
        return PoseOutput(key, key, key.new_zeros((), dtype=torch.float32))

    def forward(self, frames: Tensor) -> PoseOutput:
        check_frames(frames, self.config.num_frames, "SingleFramePose")
        heatmaps = self.backbone(frames[:, self.config.key_index])
        return PoseOutput(heatmaps, heatmaps, heatmaps.new_zeros((), dtype=torch.float32))
