"""The data part of the run configuration, as a plain dataclass (YAML-friendly via to_dict/from_dict)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from jmipose._configbase import ConfigSection, from_dict
from jmipose.data.transforms import AugmentConfig
from jmipose.data.window import DEFAULT_WINDOW, normalize_window

SPLITS = ("train", "val", "test")
# DataConfig fields whose dataset argument has another name.
_DATASET_ARGUMENT = {"image_size": "input_size"}


def _pair(name: str, value) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value)
    except (TypeError, ValueError, OverflowError):   # OverflowError: int(inf)
        raise ValueError(f"DataConfig.{name} must be two ints (width, height), got {value!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"DataConfig.{name} must be positive, got {value!r}")
    return width, height


@dataclass
class DataConfig(ConfigSection):
    """Where the data is and how samples are made (defaults: the JMI PoseTrack setup, docs/FIDELITY.md;
    one default differs from the authors' code: joint weights are on here and off in their configs,
    which the shipped PoseTrack configs follow).

    Annotation and box paths are relative to ``root`` unless absolute. ``<split>_annotations`` left
    at ``None`` means ``annotations/<split>`` (PoseTrack18) or ``posetrack_data/<split>``
    (PoseTrack21) under ``root``. ``<split>_boxes`` are detector boxes for that split (a COCO
    detections JSON), or ``"gt"`` for ground-truth boxes; ``None`` also gives ground-truth boxes
    to the dataset, but evaluating from a config (``jmipose train``'s validation, ``jmipose eval``)
    refuses it for ``val`` and ``test``: the papers evaluate with detector boxes, and numbers with
    ground-truth boxes are not comparable, so that choice must be written as ``"gt"``.
    ``heatmap_size`` ``None`` means a quarter of ``image_size``.
    """

    root: str = "data/posetrack18"
    version: str = "18"
    image_root: str | None = None
    train_annotations: str | list[str] | None = None
    val_annotations: str | list[str] | None = None
    test_annotations: str | list[str] | None = None
    train_boxes: str | None = None
    val_boxes: str | None = None
    test_boxes: str | None = None
    box_score_threshold: float = 0.2
    window: tuple[int, ...] = DEFAULT_WINDOW
    image_size: tuple[int, int] = (288, 384)
    heatmap_size: tuple[int, int] | None = None
    sigma: float = 3.0
    unbiased_targets: bool = False
    box_enlarge: float = 1.25
    use_joint_weights: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    gt_box_source: str = "bbox"
    labeled_only: bool = True
    clip_boxes: bool = True
    keypoint_margin: float = 0.5
    frame_numbering: str | int = "auto"
    check_files: bool = True
    skip_bad: bool = False
    seed: int = 0
    frame_cache_size: int | None = None

    error_label = "DataConfig."

    def __post_init__(self) -> None:
        self.window = normalize_window(self.window)
        self.image_size = _pair("image_size", self.image_size)
        self.heatmap_size = (self.image_size[0] // 4, self.image_size[1] // 4) if self.heatmap_size is None \
            else _pair("heatmap_size", self.heatmap_size)
        if isinstance(self.augment, Mapping):
            self.augment = from_dict(AugmentConfig, self.augment, "augment")
        elif not isinstance(self.augment, AugmentConfig):
            raise TypeError(
                f"DataConfig.augment must be an AugmentConfig or a dict, got {type(self.augment).__name__}"
            )
        self.version = str(self.version)

    def annotations_for(self, split: str):
        _check_split(split)
        return getattr(self, f"{split}_annotations")

    def boxes_for(self, split: str) -> str | None:
        """The split's box source as configured: a detections path, ``"gt"`` or None."""
        _check_split(split)
        return getattr(self, f"{split}_boxes")

    def require_boxes(self, split: str) -> str:
        """The split's box source for an evaluation from a config: a detections path or ``"gt"``; None
        raises ``ValueError`` naming ``data.<split>_boxes`` (see the class docstring)."""
        boxes = self.boxes_for(split)
        if boxes is None:
            raise ValueError(
                f"config: data.{split}_boxes is not set: give the person boxes to evaluate with, a COCO "
                f"detections JSON (the papers use a detector's boxes, e.g. DCPose's precomputed "
                f"val_boxes.json), or data.{split}_boxes=gt to evaluate with ground-truth boxes on purpose "
                f"(the report then says so: such numbers are not comparable with published ones)")
        return boxes


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def build_dataset(config: DataConfig, split: str, **overrides):
    """The :class:`~jmipose.data.posetrack.PoseTrackVideoDataset` of ``split`` described by ``config``.

    ``overrides`` are passed to the dataset as they are (e.g. ``train=False`` to evaluate the
    training split without augmentation).
    """
    from jmipose.data.posetrack import PoseTrackVideoDataset

    _check_split(split)
    per_split = {f"{name}_{kind}" for name in SPLITS for kind in ("annotations", "boxes")}
    kwargs = {_DATASET_ARGUMENT.get(f.name, f.name): getattr(config, f.name)
              for f in dataclasses.fields(config) if f.name not in per_split}
    boxes = config.boxes_for(split)
    kwargs.update(annotations=config.annotations_for(split), boxes=None if boxes == "gt" else boxes, split=split)
    kwargs.update(overrides)
    return PoseTrackVideoDataset(**kwargs)
