"""PoseTrack17/18/21 as multi-frame samples: the key frame of a person plus its supporting frames.

A sample is one person box in one frame (a ground-truth person for training, a detector box for
evaluation), and its model input is the crop of that box cut identically from the key frame and
from the frames at the window offsets (clamped to the sequence, see :mod:`jmipose.data.window`).
The returned dict is the sample contract of the project (frames, heatmaps, target_weight, meta).

Determinism: training augmentation of sample ``index`` in epoch ``epoch`` is drawn from
``make_rng(seed, epoch, index)``, never from global random state, so a resumed run or another
worker produces the same crop. Set the epoch with :meth:`set_epoch` (before creating the DataLoader
iterator; persistent workers keep the epoch they were started with) or index the dataset with
``(epoch, index)`` pairs from the sampler; :meth:`load` also takes an explicit ``rng``.
"""

from __future__ import annotations

import logging
import operator
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from jmipose.data.frames import FRAME_NUMBERINGS, read_image_rgb
from jmipose.data.posetrack_index import (
    GT_BOX_SOURCES,
    PoseTrackIndex,
    Sample,
    resolve_annotation_files,
)
from jmipose.data.transforms import (
    FLIP_INDEX,
    JOINT_WEIGHTS,
    NO_AUGMENTATION,
    AugmentConfig,
    affine_points,
    crop_geometry,
    generate_heatmaps,
    make_rng,
    normalize_image,
    sample_augmentation,
    warp_frame,
)
from jmipose.data.window import DEFAULT_WINDOW, key_index, normalize_window
from jmipose.formats.errors import BadDataPolicy, DataError

logger = logging.getLogger("jmipose.data")

VERSIONS = ("17", "18", "21")


class PoseTrackVideoDataset(torch.utils.data.Dataset):
    """Multi-frame person samples of PoseTrack17 (annolist), PoseTrack18 and PoseTrack21 (COCO-style).

    Args:
        root: dataset folder; frame files are ``image_root / file_name`` (``image_root``: root by default).
        annotations: annotation file(s) or folder(s), relative to ``root``
            (see :func:`~jmipose.data.posetrack_index.resolve_annotation_files`).
        split: ``"train"``, ``"val"`` or ``"test"``; training augmentation is on for ``"train"``
            unless ``train`` says otherwise.
        version: ``"17"``, ``"18"`` or ``"21"``. The format of each file is detected from its content
            (annolist or COCO-style, so DCPose's COCO-style PoseTrack17 files work too); PoseTrack21's
            ``person_id`` is the track id where ``track_id`` is missing.
        frame_numbering: number of a sequence's first frame file, ``0``, ``1`` or ``"auto"`` (see
            :meth:`jmipose.data.frames.SequenceFiles.scan`: eight-digit PoseTrack17 names count from 1).
        boxes: detector boxes (COCO-style detections JSON) used instead of ground-truth boxes, keeping
            those with ``score >= box_score_threshold``; ``None`` uses ground-truth boxes.
        window: supporting-frame offsets (``()`` for a single-frame model).
        labeled_only: samples only from ``is_labeled`` frames (always true for ground-truth boxes).
        gt_box_source: ``"bbox"`` (the annotation's box; from the keypoints where it has none) or
            ``"keypoints"`` (1.3x the labelled joints' extent, as poseval's PoseTrack17 conversion).
        clip_boxes: cut ground-truth boxes to the image (as HRNet/DCPose).
        keypoint_margin: labelled joints further outside the image than this fraction of its size
            are bad data (PoseTrack annotators do click a little outside the frame).
        check_files: list every sequence folder when building, so missing frames are found up front.
        skip_bad: log and skip bad entries (a person, a frame, a file) instead of raising ``DataError``.
        seed: base seed of the per-sample augmentation generators.
        frame_cache_size: decoded frames kept per dataset copy (each DataLoader worker has its own),
            so that the people of one frame, which come one after the other in evaluation, decode
            their window once; ``None`` keeps one window (``len(window) + 1`` frames), 0 disables.
    """

    def __init__(
        self,
        root,
        annotations=None,
        split: str = "train",
        version: str = "18",
        boxes=None,
        window=DEFAULT_WINDOW,
        *,
        image_root=None,
        train: bool | None = None,
        input_size=(288, 384),
        heatmap_size=(72, 96),
        sigma: float = 3.0,
        unbiased_targets: bool = False,
        box_enlarge: float = 1.25,
        use_joint_weights: bool = True,
        augment: AugmentConfig | None = None,
        box_score_threshold: float = 0.2,
        gt_box_source: str = "bbox",
        labeled_only: bool = True,
        clip_boxes: bool = True,
        keypoint_margin: float = 0.5,
        frame_numbering="auto",
        check_files: bool = True,
        skip_bad: bool = False,
        seed: int = 0,
        frame_cache_size: int | None = None,
    ):
        version = str(version)
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        if gt_box_source not in GT_BOX_SOURCES:
            raise ValueError(f"gt_box_source must be one of {GT_BOX_SOURCES}, got {gt_box_source!r}")
        if frame_numbering not in FRAME_NUMBERINGS:
            raise ValueError(f"frame_numbering must be one of {FRAME_NUMBERINGS}, got {frame_numbering!r}")
        for name, size in (("input_size", input_size), ("heatmap_size", heatmap_size)):
            if len(tuple(size)) != 2 or any(int(v) <= 0 for v in size):
                raise ValueError(f"{name} must be two positive ints (width, height), got {size!r}")
        if not sigma > 0 or not box_enlarge > 0 or keypoint_margin < 0:
            raise ValueError(
                f"sigma and box_enlarge must be > 0 and keypoint_margin >= 0, got "
                f"sigma={sigma!r}, box_enlarge={box_enlarge!r}, keypoint_margin={keypoint_margin!r}"
            )
        self.root = Path(root)
        self.image_root = Path(image_root) if image_root is not None else self.root
        self.split = split
        self.version = version
        self.window = normalize_window(window)
        self.key_index = key_index(self.window)
        self.train = (split == "train") if train is None else bool(train)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma = float(sigma)
        self.unbiased_targets = bool(unbiased_targets)
        self.box_enlarge = float(box_enlarge)
        self.use_joint_weights = bool(use_joint_weights)
        self.augment = augment if augment is not None else AugmentConfig()
        self.skip_bad = bool(skip_bad)
        self.seed = int(seed)
        self.epoch = 0
        self._policy = BadDataPolicy(skip_bad)
        self.frame_cache_size = len(self.window) + 1 if frame_cache_size is None else int(frame_cache_size)
        if self.frame_cache_size < 0:
            raise ValueError(f"frame_cache_size must be >= 0 or None, got {frame_cache_size!r}")
        self._frame_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.annotation_files = resolve_annotation_files(self.root, annotations, split)
        boxes_file = None
        if boxes is not None:
            boxes_file = Path(boxes) if Path(boxes).is_absolute() else self.root / boxes
        self.index = PoseTrackIndex(
            self.image_root,
            self.annotation_files,
            self.window,
            version=version,
            boxes_file=boxes_file,
            box_score_threshold=float(box_score_threshold),
            gt_box_source=gt_box_source,
            labeled_only=bool(labeled_only),
            clip_boxes=bool(clip_boxes),
            keypoint_margin=float(keypoint_margin),
            frame_numbering=frame_numbering,
            check_files=bool(check_files),
            policy=self._policy,
        )
        # The index, flattened for the trainer and the evaluator.
        self.frames, self.people, self.sequences = self.index.frames, self.index.people, self.index.sequences
        self.samples = self.index.samples
        if not self.samples:
            raise ValueError(
                f"PoseTrackVideoDataset({self.split!r}) has no usable samples "
                f"(annotations {[str(f) for f in self.annotation_files]}; "
                f"{len(self.skipped)} bad entries skipped"
                + (f", first: {self.skipped[0]}" if self.skipped else "")
                + ")"
            )

    @property
    def skipped(self) -> list[str]:
        """Messages of the bad entries skipped under ``skip_bad``."""
        return self._policy.skipped

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def frame_paths(self, index: int) -> list[Path]:
        return [Path(p) for p in self.samples[index].frame_paths]

    def __getitem__(self, item):
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        index = operator.index(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample index {index} out of range for {len(self)} samples")
        index %= len(self)
        for attempt in range(len(self)):
            try:
                return self.load((index + attempt) % len(self), epoch=epoch)
            except DataError as error:
                if not self.skip_bad:
                    raise
                self._policy.handle(error, f"sample {(index + attempt) % len(self)} (loading the next one)")
        raise ValueError(
            f"every one of the {len(self)} samples failed to load; first error: {self.skipped[0]}"
        )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_frame_cache"] = OrderedDict()  # decoded frames stay in the process that decoded them
        return state

    def _read_frame(self, path: str) -> np.ndarray:
        cache = self._frame_cache
        if path in cache:
            cache.move_to_end(path)
            return cache[path]
        image = read_image_rgb(path)
        image.flags.writeable = False  # shared by every sample that uses the frame
        if self.frame_cache_size:
            cache[path] = image
            while len(cache) > self.frame_cache_size:
                cache.popitem(last=False)
        return image

    def _read_window(self, sample: Sample) -> list[np.ndarray]:
        decoded: dict[str, np.ndarray] = {}
        images = []
        for path in sample.frame_paths:
            if path not in decoded:  # a clamped window names a frame more than once
                decoded[path] = self._read_frame(path)
            images.append(decoded[path])
        key = images[self.key_index]
        frame = self.frames[sample.image_id]
        if frame.width is not None and (key.shape[1], key.shape[0]) != (frame.width, frame.height):
            raise DataError(
                sample.frame_paths[self.key_index],
                None,
                f"image is {key.shape[1]}x{key.shape[0]} but {frame.source} ({frame.where}) "
                f"says {frame.width}x{frame.height}",
            )
        for path, image in zip(sample.frame_paths, images):
            if image.shape != key.shape:
                raise DataError(
                    path,
                    None,
                    f"frame is {image.shape[1]}x{image.shape[0]} but the key frame "
                    f"{sample.frame_paths[self.key_index]} is {key.shape[1]}x{key.shape[0]}",
                )
        return images

    def load(self, index: int, epoch: int | None = None, rng: np.random.Generator | None = None) -> dict:
        """Sample ``index``; training augmentation from ``rng`` or ``make_rng(seed, epoch, index)``."""
        sample = self.samples[index]
        frame = self.frames[sample.image_id]
        if self.train:
            rng = (
                rng if rng is not None else make_rng(self.seed, self.epoch if epoch is None else epoch, index)
            )
            aug = sample_augmentation(rng, self.augment)
        else:
            aug = NO_AUGMENTATION
        images = self._read_window(sample)
        labelled = sample.joints[:, 2] > 0
        geometry = crop_geometry(
            sample.box,
            sample.joints,
            labelled,
            images[self.key_index].shape[1],
            self.input_size,
            aug,
            self.augment,
            self.box_enlarge,
        )
        crops: dict[int, np.ndarray] = {}
        stacked = []
        for image in images:  # clamped windows repeat frames: warp each distinct frame once
            if id(image) not in crops:
                crops[id(image)] = normalize_image(warp_frame(image, geometry.matrix, self.input_size))
            stacked.append(crops[id(image)])
        crop_joints = affine_points(sample.joints[:, :2], geometry.matrix)
        if geometry.flipped:
            crop_joints, labelled = crop_joints[list(FLIP_INDEX)], labelled[list(FLIP_INDEX)]
        heatmaps, weights = generate_heatmaps(
            crop_joints,
            labelled,
            self.input_size,
            self.heatmap_size,
            self.sigma,
            JOINT_WEIGHTS if self.use_joint_weights else None,
            self.unbiased_targets,
        )
        files = self.sequences[frame.sequence_dir]
        meta = {
            "image_id": int(sample.image_id),
            "sequence": frame.sequence,
            "frame_index": int(frame.frame_number - files.first),
            "file_name": frame.file_name,
            "center": torch.tensor(geometry.center, dtype=torch.float32),
            "scale": torch.tensor(geometry.scale, dtype=torch.float32),
            "rotation": float(geometry.rotation),
            "score": float(sample.score),
            "joints": torch.from_numpy(sample.joints.copy()),
            "trans_inv": torch.tensor(geometry.inverse, dtype=torch.float32),
            "track_id": int(sample.track_id),
        }
        return {
            "frames": torch.from_numpy(np.stack(stacked)),
            "heatmaps": torch.from_numpy(heatmaps),
            "target_weight": torch.from_numpy(weights),
            "meta": meta,
        }
