"""Data: PoseTrack17/18/21 multi-frame datasets, the shared crop/augmentation/targets, the synthetic
video benchmark (``jmipose.data.synthetic``) and streaming video input. See ``PoseTrackVideoDataset``
for the sample contract and ``VideoReader`` for inference."""

from jmipose.data.config import DataConfig, build_dataset
from jmipose.data.posetrack import PoseTrackVideoDataset, Sample
from jmipose.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    JOINT_NAMES,
    JOINT_WEIGHTS,
    AugmentConfig,
    get_affine_transform,
)
from jmipose.data.video import Frame, FrameWindow, VideoReader, sliding_windows
from jmipose.data.window import DEFAULT_WINDOW, key_index, window_indices
from jmipose.formats.errors import BadDataPolicy, DataError
from jmipose.joints import FLIP_INDEX, FLIP_PAIRS, IGNORED_JOINTS, NUM_JOINTS

__all__ = [
    "DEFAULT_WINDOW",
    "FLIP_INDEX",
    "FLIP_PAIRS",
    "IGNORED_JOINTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "JOINT_NAMES",
    "JOINT_WEIGHTS",
    "NUM_JOINTS",
    "AugmentConfig",
    "BadDataPolicy",
    "DataConfig",
    "DataError",
    "Frame",
    "FrameWindow",
    "PoseTrackVideoDataset",
    "Sample",
    "VideoReader",
    "build_dataset",
    "get_affine_transform",
    "key_index",
    "sliding_windows",
    "window_indices",
]
