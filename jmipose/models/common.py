"""Pieces shared by the temporal model and the baseline: the output type, the conv block, input checks."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn


class PoseOutput(NamedTuple):
    """What every model returns (a NamedTuple: works with DDP, torch.compile and tuple unpacking)."""

    heatmaps: Tensor            # [B, K, h, w] final heatmaps
    backbone_heatmaps: Tensor   # [B, K, h, w] the key frame's initial (backbone) heatmaps
    aux_loss: Tensor            # 0-d auxiliary objective; 0 when the variant has none


class ConvBlock(nn.Sequential):
    """conv (no bias) -> BatchNorm -> ReLU: the "Theta" blocks of the papers' figures."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        super().__init__(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def check_frames(frames: object, num_frames: int, who: str) -> Tensor:
    """frames must be a float [B, T, 3, H, W] tensor with T = num_frames."""
    if not isinstance(frames, Tensor):
        raise TypeError(f"{who}: frames must be a torch.Tensor [B, T, 3, H, W], got {type(frames).__name__}")
    if not frames.is_floating_point():
        raise TypeError(f"{who}: frames must be a floating tensor (normalised RGB), got {frames.dtype}")
    if frames.dim() != 5 or frames.shape[2] != 3 or frames.shape[1] != num_frames:
        raise ValueError(f"{who}: frames must be [B, T={num_frames}, 3, H, W] (frames in time order), "
                         f"got shape {tuple(frames.shape)}")
    if frames.shape[3] % 32 or frames.shape[4] % 32:
        # HRNet's 1/32 branch is upsampled by 8 onto the 1/4 branch; other sizes do not line up
        raise ValueError(f"{who}: frame height and width must be multiples of 32, "
                         f"got {tuple(frames.shape[3:])}")
    return frames
