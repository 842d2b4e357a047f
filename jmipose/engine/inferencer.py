"""``Inferencer``: poses of every frame of a video, an image folder or a stream of frames.

    from jmipose import Inferencer
    infer = Inferencer("runs/posetrack18/checkpoints/best")
    for result in infer("clip.mp4", boxes=[(120, 40, 80, 200)]):
        result.keypoints   # [P, 17, 2] image pixels; result.scores [P, 17]; result.track_ids [P]

Per person box (see :mod:`jmipose.engine.boxes` for where boxes come from) a window of frames
around the key frame is cut with the same crop (the dataset's rule: box clipped to the frame, aspect
fixed, enlarged 1.25x; borders clamped) and the model's final heatmaps are decoded with DARK and
mapped back to the image.  Results come in frame order.  On a stream of frames (an iterable) each
result comes two frames after its frame (the window needs frames t+1 and t+2); on a video file or a
folder, windows of several frames are batched into one model call (up to ``batch_size`` people), except
when people are tracked from their previous keypoints, which goes frame by frame.

Feature reuse: the backbone is the expensive, per-crop half of the model
(``model.backbone_features``); the temporal head (``model.forward_head``) combines the five crops of a
window.  A frame's crop appears in five windows when the crop box stays put, so its backbone output is
cached and computed once.  To keep the box put, a track holds its crop box while its new box overlaps
it by IoU >= ``crop_hold_iou`` (1.0: a new crop whenever the box moves; reuse then only helps boxes
that do not move, e.g. whole-frame boxes).  ``reuse_features=False`` runs the naive per-window model
on the same crops (five backbone passes per frame and person): the same keypoints, five times the
backbone work.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jmipose.data.video import Frame, FrameWindow, VideoReader, sliding_windows
from jmipose.decode import decode_heatmaps, heatmap_to_image, merge_flipped, oks_nms, rescore
from jmipose.engine.boxes import DetectionBoxes, PersonBox, TrackedBoxes, WholeFrameBoxes, box_iou, make_detector
from jmipose.formats.detections import check_threshold, load_detections
from jmipose.formats.posetrack import posetrack_sequence

log = logging.getLogger("jmipose.predict")

DEFAULT_INPUT_SIZE = (288, 384)   # (width, height), the W48 configs
MAX_INPUT_SIDE = 4096             # model input sides above this are refused as absurd (W48 uses 288x384)
JOINT_THRESHOLD = 0.2             # joints scored above this count for person scores and tracking boxes


@dataclass
class FrameResult:
    """The people of one frame (arrays in the same person order)."""

    index: int
    image: np.ndarray = field(repr=False)     # [H, W, 3] RGB uint8, read-only
    boxes: np.ndarray                         # [P, 4] person boxes x, y, w, h (what was cropped)
    keypoints: np.ndarray                     # [P, 17, 2] image pixels (smoothed when asked)
    scores: np.ndarray                        # [P, 17] per-joint scores (heatmap maxima)
    person_scores: np.ndarray                 # [P] box score x mean joint score above 0.2
    box_scores: np.ndarray                    # [P] detector scores (1 for given and tracked boxes)
    track_ids: np.ndarray                     # [P] int64
    detections: np.ndarray | None = None      # [D, 5] x, y, w, h, score when a detector ran on this frame
    raw_keypoints: np.ndarray | None = None   # [P, 17, 2] before smoothing (None without smoothing)
    # what ``jmipose predict --resume`` needs to compute the following frames exactly as an unbroken
    # run: the last frame of the model call that made this result, and the crops computed alone
    resume_info: dict | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.track_ids)


@dataclass
class _Person:
    person: PersonBox
    crop_box: np.ndarray      # the box the crop is cut from (held while the person stays inside)
    matrix: np.ndarray        # [2, 3] image -> crop
    scale: np.ndarray         # [2] crop size in image pixels (OKS area)


@dataclass
class _Job:
    window: FrameWindow
    people: list[_Person]
    detections: np.ndarray | None = None


def _frames_of(items: Iterable) -> Iterator[Frame]:
    """Frames of an iterable of [H, W, 3] uint8 RGB arrays (or ``Frame``s), checked and numbered."""
    size = None
    for index, item in enumerate(items):
        image = item.image if isinstance(item, Frame) else item
        is_rgb = isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
        if not is_rgb or image.dtype != np.uint8:
            what = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"frames: frame {index} must be an [H, W, 3] uint8 RGB array, got {what}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"frames: frame {index} is {image.shape[1]}x{image.shape[0]} (an empty image): "
                             f"there is nothing to estimate poses on")
        size = size or image.shape
        if image.shape != size:
            raise ValueError(f"frames: frame {index} is {image.shape[1]}x{image.shape[0]}, the stream "
                             f"started at {size[1]}x{size[0]}")
        if image.flags.writeable:
            image = image.copy()
            image.flags.writeable = False
        yield Frame(index, image)


class Inferencer:
    """Pose estimation on videos with a jmipose checkpoint (see the module docstring).

    Args:
        checkpoint: ``<name>`` of ``<name>.json`` + ``<name>.safetensors``, or a model instance; None
            with ``backbone_weights``: the single-frame pose HRNet of a public checkpoint alone.
        device: ``"cpu"``, ``"cuda"``...; None: CUDA when available.
        backend: None (the compiled ops: the fastest live backend) or ``"reference"`` (eager ops).
        batch_size: crops per backbone call and windows per head call.
        smoothing: None or ``"one_euro"`` (per-track One Euro filter of the keypoints).
        flip_test: average with the heatmaps of the mirrored crops (twice the work).
        input_size: model input (width, height); default: the checkpoint's data config, else 288x384.
        backbone_weights: a public pose-HRNet checkpoint (``.pth`` read with ``weights_only=True``,
            or ``.safetensors``; the pose-HRNet layout, mmpose 1.x/0.x or a whole-model checkpoint such as
            DCPose's, see ``jmipose.models.weights``) loaded strictly into the backbone after the
            checkpoint; without a checkpoint it is the whole model (width and joints from its tensor
            shapes, input size from its file name, else 256x192 for W32 and 384x288 for W48).
        reuse_features: compute each crop's backbone output once (default) or per window.
        crop_hold_iou: a track keeps its crop box while its new box has at least this IoU with it.
        track_threshold: person score under which a tracked person (``boxes=``) is dropped.
        joint_threshold: joints scored above it make a tracked person's next box (at least 3 needed)
            and count in person scores.
        oks_nms: OKS threshold of the duplicate-pose suppression (None: off).
        max_lost: frames a tracked person (``boxes=`` or a detector) may stay without a confident pose
            before its track ends (None: about one second of video, ``round(fps)``); meanwhile its
            pose is still estimated and returned with its real, low scores.
        lost_box: where a lost track is cropped: ``"velocity"`` (its last confident box moved on with
            its recent velocity, slowing down) or ``"hold"`` (its last confident box).
    """

    def __init__(self, checkpoint=None, device=None, backend=None, batch_size: int = 16, smoothing=None, *,
                 flip_test: bool = False, input_size=None, backbone_weights=None, reuse_features: bool = True,
                 crop_hold_iou: float = 0.85, track_threshold: float = 0.3,
                 joint_threshold: float = JOINT_THRESHOLD, oks_nms: float | None = 0.9,
                 fps: float = 25.0, max_lost: int | None = None, lost_box: str = "velocity"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if smoothing not in (None, "one_euro"):
            raise ValueError(f"smoothing must be None or 'one_euro', got {smoothing!r}")
        if backend not in (None, "reference"):
            raise ValueError(f"backend must be None (the compiled ops, the fastest live backend) or "
                             f"'reference' (eager PyTorch ops), got {backend!r}")
        if not 0.0 < float(crop_hold_iou) <= 1.0:
            raise ValueError(f"crop_hold_iou must be in (0, 1], got {crop_hold_iou!r}")
        from jmipose.engine.distributed import pick_device

        self.device = pick_device("auto" if device is None else device, what="device")
        self.backend = backend
        self.batch_size = batch_size
        self.smoothing = smoothing
        self.flip_test = bool(flip_test)
        self.reuse_features = bool(reuse_features)
        self.crop_hold_iou = float(crop_hold_iou)
        self.track_threshold = float(track_threshold)
        self.joint_threshold = float(joint_threshold)
        self.oks_nms = oks_nms
        self.default_fps = float(fps)
        if max_lost is not None and (isinstance(max_lost, bool) or not isinstance(max_lost, int) or max_lost < 0):
            raise ValueError(f"max_lost must be None (about one second of video) or an int >= 0, got {max_lost!r}")
        self.max_lost = max_lost
        if lost_box not in ("velocity", "hold"):
            raise ValueError(f"lost_box must be 'velocity' or 'hold', got {lost_box!r}")
        self.lost_box = lost_box
        self.weights = None        # the public checkpoint read for backbone_weights (scheme, unused keys)
        self.track_report = None   # after a run with tracked people: one summary dict per track
        self.detector_seconds, self.detector_runs = 0.0, 0
        self.model, record_size = self._load(checkpoint, backbone_weights)
        size = input_size if input_size is not None else record_size or DEFAULT_INPUT_SIZE
        if (not isinstance(size, (tuple, list)) or len(size) != 2
                or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and np.isfinite(s) for s in size)
                or any(int(s) != s or not 32 <= s <= MAX_INPUT_SIDE or s % 32 for s in size)):
            what = "input_size" if input_size is not None else f"checkpoint {checkpoint}: data.image_size"
            raise ValueError(f"{what} must be (width, height), multiples of 32 in [32, {MAX_INPUT_SIDE}], "
                             f"got {size!r}")
        self.input_size = (int(size[0]), int(size[1]))
        from jmipose.resources import check_bytes

        # a batch of crops as float32, before the first one is cut
        check_bytes(f"a batch of {batch_size} crops of {self.input_size[0]}x{self.input_size[1]} pixels",
                    batch_size * 3 * self.input_size[0] * self.input_size[1] * 4, self.device)
        config = self.model.config
        self.temporal = config.variant != "baseline"
        self.key_index = config.key_index if self.temporal else 0
        self.offsets = tuple(i - config.key_index for i in range(config.num_frames)
                             if i != config.key_index) if self.temporal else ()
        self.backbone_passes = 0   # crops through the backbone so far (benchmarks read it)

    # ----- model -----

    def _load(self, checkpoint, backbone_weights) -> tuple[nn.Module, tuple[int, int] | None]:
        from jmipose.checkpoint import read_checkpoint_record
        from jmipose.models import load_model

        use_kernels = self.backend is None
        record_size = None
        if checkpoint is None and backbone_weights is not None:
            return self._load_public(backbone_weights, use_kernels)
        if checkpoint is None:
            raise TypeError("Inferencer needs a checkpoint (<name> of <name>.json + .safetensors, or a model) or "
                            "backbone_weights (a public pose-HRNet checkpoint), or both")
        if isinstance(checkpoint, nn.Module):
            model = checkpoint
            if hasattr(model, "config") and model.config.use_kernels != use_kernels:
                raise ValueError(f"backend={self.backend!r} needs a model built with "
                                 f"use_kernels={use_kernels}; give a checkpoint path instead")
        elif isinstance(checkpoint, (str, os.PathLike)):
            record = read_checkpoint_record(checkpoint)   # clear error when missing or not ours
            data = record.get("config", {}).get("data") or {}
            if isinstance(data, dict) and data.get("image_size"):
                record_size = data["image_size"]   # checked by the caller
            model = load_model(checkpoint, use_kernels=use_kernels)
        else:
            raise TypeError(f"checkpoint must be a path (<name> of <name>.json + .safetensors), a model, or None "
                            f"with backbone_weights (a public pose-HRNet checkpoint), got {type(checkpoint).__name__}")
        if not (hasattr(model, "backbone_features") and hasattr(model, "forward_head")):
            raise TypeError(f"checkpoint model {type(model).__name__} lacks backbone_features/forward_head")
        if backbone_weights is not None:
            from jmipose.models.hrnet import load_public_hrnet

            self.weights = load_public_hrnet(model.backbone, backbone_weights)
        return model.to(self.device).eval(), record_size

    def _load_public(self, weights, use_kernels: bool):
        """The single-frame baseline around a public pose HRNet: its width and joint count from the
        tensors' shapes, its input size from the file name (else the public default for its width)."""
        from jmipose.joints import NUM_JOINTS
        from jmipose.models import ModelConfig, build_model
        from jmipose.models.hrnet import load_public_hrnet
        from jmipose.models.weights import (default_input_size, infer_hrnet_name, input_size_from_name,
                                            read_hrnet_checkpoint)

        public = read_hrnet_checkpoint(weights)
        if public.num_joints != NUM_JOINTS:
            raise ValueError(f"{public.source}: its heatmap layer predicts {public.num_joints} joints; jmipose "
                             f"predict writes the {NUM_JOINTS} COCO/PoseTrack joints (MPII's 16-joint models are "
                             f"not supported)")
        name = infer_hrnet_name(public)
        model = build_model(ModelConfig(variant="baseline", backbone=name, num_joints=public.num_joints,
                                        use_kernels=use_kernels))
        self.weights = load_public_hrnet(model.backbone, public)
        self.weights.model_name = name
        size = None
        if isinstance(weights, (str, os.PathLike)):
            size = input_size_from_name(weights)
        return model.to(self.device).eval(), size or default_input_size(public.width)

    # ----- boxes and crops -----

    def _box_source(self, frame_size, detections, boxes, detection_threshold, detector=None, detect_every=5,
                    fps=None):
        if detections is not None and boxes is not None:
            raise ValueError("give either detections or boxes (first-frame boxes to track), not both")
        if detections is not None and detector is not None:
            raise ValueError("give either detections (a file) or a detector, not both")
        if detector is not None or boxes is not None:
            if boxes is not None:
                boxes = np.asarray(boxes, dtype=np.float64)
                if boxes.ndim == 1:
                    boxes = boxes[None]
                if boxes.ndim != 2 or boxes.shape[1] != 4:
                    raise ValueError(f"boxes must be x, y, w, h rows, got shape {boxes.shape}")
            max_lost = self.max_lost if self.max_lost is not None else max(1, round(fps or self.default_fps))
            return TrackedBoxes(list(boxes) if boxes is not None else [], frame_size, self.joint_threshold,
                                self.track_threshold, max_lost=max_lost, lost_box=self.lost_box,
                                detector=make_detector(detector), detect_every=detect_every)
        if detections is not None:
            if not isinstance(detections, dict) or not all(isinstance(k, int) for k in detections):
                detections = load_detections(detections, detection_threshold)
            return DetectionBoxes(detections, frame_size)
        return WholeFrameBoxes(frame_size)

    def _crop(self, person: PersonBox, held: dict, frame_size) -> _Person:
        from jmipose.data.posetrack_index import clip_box
        from jmipose.data.transforms import box_to_center_scale, get_affine_transform

        width, height = frame_size
        clipped = clip_box(person.box, width, height)
        if clipped is None:
            raise ValueError(f"track {person.track_id}: box {person.box.tolist()} lies outside the frame")
        box = clipped.astype(np.float64)
        previous = held.get(person.track_id)
        if previous is not None and box_iou(previous[0], box)[0, 0] >= self.crop_hold_iou:
            crop_box = previous[1]
        else:
            center, scale = box_to_center_scale(box, self.input_size[0] / self.input_size[1])
            crop_box = (center, scale, get_affine_transform(center, scale, 0.0, self.input_size))
            held[person.track_id] = (box, crop_box)
        center, scale, matrix = crop_box
        return _Person(PersonBox(person.track_id, box, person.score),
                       crop_box=np.concatenate([center, scale]), matrix=matrix, scale=scale)

    def _crop_tensor(self, image: np.ndarray, matrix: np.ndarray) -> torch.Tensor:
        from jmipose.data.transforms import normalize_image, warp_frame

        return torch.from_numpy(normalize_image(warp_frame(image, matrix, self.input_size)))

    # ----- the model on jobs (key frames with their people) -----

    def _backbone(self, crops: torch.Tensor):
        self.backbone_passes += len(crops)
        heatmaps, features = self.model.backbone_features(crops.to(self.device))
        return heatmaps, features

    def _cached_windows(self, jobs: list[_Job], cache: dict, flip: bool):
        """Heatmaps [N, T, K, h, w] and stage features of every (job, person) window, from per-crop
        backbone outputs computed once (``cache``: (frame, crop box, flip) -> per-crop outputs)."""
        pending: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        for job in jobs:
            for person in job.people:
                for index, image in zip(job.window.indices, job.window.frames):
                    key = (index, person.crop_box.tobytes(), flip)
                    if key not in cache:
                        pending.setdefault(key, (image, person.matrix))
        keys = list(pending)
        # Resumed runs: crops the interrupted run computed before the resume point are computed again
        # the way it did: alone when it computed them alone, else in a batch of at least two (a
        # batch of one takes other kernels, which round differently); the rest as an unbroken run would.
        earlier = [k for k in keys if k in self._replayed_keys]
        if earlier:
            keys = [k for k in keys if k not in self._replayed_keys]
            together = [k for k in earlier if k not in self._solo_keys]
            for key in [k for k in earlier if k in self._solo_keys]:
                self._compute(cache, pending, [key], flip)
            for start in range(0, len(together), self.batch_size):
                self._compute(cache, pending, together[start:start + self.batch_size], flip, at_least=2)
        for start in range(0, len(keys), self.batch_size):
            chunk = keys[start:start + self.batch_size]
            self._compute(cache, pending, chunk, flip)
            if len(chunk) == 1:
                self._solo_owner.append(chunk[0])
        windows = [[cache[(index, person.crop_box.tobytes(), flip)] for index in job.window.indices]
                   for job in jobs for person in job.people]
        return windows

    def _compute(self, cache: dict, pending: dict, chunk: list, flip: bool, at_least: int = 1) -> None:
        crops = torch.stack([self._crop_tensor(*pending[k]) for k in chunk])
        if flip:
            crops = crops.flip(-1)
        padded = crops if len(chunk) >= at_least else torch.cat([crops] * at_least)[:at_least]
        heatmaps, features = self._backbone(padded)
        self.backbone_passes -= len(padded) - len(chunk)
        for i, key in enumerate(chunk):
            cache[key] = (heatmaps[i], [None if f is None else f[i] for f in features])

    def _heatmaps(self, jobs: list[_Job], cache: dict, flip: bool) -> torch.Tensor:
        """Final heatmaps [N, K, h, w] of every (job, person), in job then person order."""
        outputs = []
        if self.reuse_features or not self.temporal:
            windows = self._cached_windows(jobs, cache, flip)
            for start in range(0, len(windows), self.batch_size):
                chunk = windows[start:start + self.batch_size]
                heatmaps = torch.stack([torch.stack([crop[0] for crop in w]) for w in chunk])
                if not self.temporal:
                    outputs.append(heatmaps[:, 0])
                    continue
                features = [None if chunk[0][0][1][s] is None else
                            torch.stack([torch.stack([crop[1][s] for crop in w]) for w in chunk])
                            for s in range(4)]
                outputs.append(self.model.forward_head(heatmaps, features).heatmaps)
        else:  # naive: the whole model on each window's crops
            windows = [(job.window.frames, person.matrix) for job in jobs for person in job.people]
            for start in range(0, len(windows), self.batch_size):
                chunk = windows[start:start + self.batch_size]
                frames = torch.stack([torch.stack([self._crop_tensor(image, matrix) for image in images])
                                      for images, matrix in chunk])
                if flip:
                    frames = frames.flip(-1)
                self.backbone_passes += frames.shape[0] * frames.shape[1]
                outputs.append(self.model(frames.to(self.device)).heatmaps)
        return torch.cat(outputs).float()

    @torch.no_grad()
    def _estimate(self, jobs: list[_Job], cache: dict) -> list[tuple]:
        """Keypoints [P, 17, 2], joint scores [P, 17] of each job's people."""
        count = sum(len(job.people) for job in jobs)
        if count == 0:
            return [(np.zeros((0, 17, 2)), np.zeros((0, 17))) for _ in jobs]
        heatmaps = self._heatmaps(jobs, cache, flip=False)
        if self.flip_test:
            heatmaps = merge_flipped(heatmaps, self._heatmaps(jobs, cache, flip=True))
        coords, maxvals = decode_heatmaps(heatmaps.cpu())
        h, w = heatmaps.shape[-2:]
        from jmipose.data.transforms import invert_affine

        trans_inv = torch.from_numpy(np.stack([invert_affine(p.matrix) for job in jobs for p in job.people]))
        keypoints = heatmap_to_image(coords, trans_inv, (w, h), self.input_size).numpy()
        scores = maxvals.numpy().astype(np.float64)
        out, start = [], 0
        for job in jobs:
            stop = start + len(job.people)
            out.append((keypoints[start:stop], scores[start:stop]))
            start = stop
        return out

    def _result(self, job: _Job, keypoints: np.ndarray, scores: np.ndarray, smoother) -> FrameResult:
        people = job.people
        box_scores = np.array([p.person.score for p in people], dtype=np.float64)
        person_scores = rescore(box_scores, scores, self.joint_threshold) if people else np.zeros(0)
        keep = list(range(len(people)))
        if self.oks_nms is not None and len(people) > 1:
            areas = np.array([p.scale[0] * p.scale[1] for p in people])
            keep = sorted(oks_nms(np.concatenate([keypoints, scores[..., None]], -1), person_scores, areas,
                                  self.oks_nms))
        track_ids = np.array([people[i].person.track_id for i in keep], dtype=np.int64)
        keypoints = keypoints[keep]
        raw = None
        if smoother is not None:
            raw = keypoints.reshape(-1, 17, 2)
            if len(keep):
                keypoints = smoother(job.window.index, track_ids, keypoints)
        boxes = np.stack([people[i].person.box for i in keep]) if keep else np.zeros((0, 4))
        return FrameResult(job.window.index, job.window.key_frame, boxes, keypoints.reshape(-1, 17, 2),
                           scores[keep].reshape(-1, 17), person_scores[keep], box_scores[keep], track_ids,
                           job.detections, raw)

    # ----- the public call -----

    def __call__(self, source, *, detections=None, boxes=None, detection_threshold: float = 0.2,
                 fps: float | None = None, sequence: int | None = None, detector=None, detect_every: int = 5,
                 replay: dict | None = None) -> Iterator[FrameResult]:
        """A generator of ``FrameResult`` per frame of ``source`` (a video file, a folder of images, a
        ``VideoReader`` or an iterable of [H, W, 3] uint8 RGB arrays).  Person boxes: ``detections``
        (a COCO-style JSON path or its parsed list), ``boxes`` (x, y, w, h rows for the first frame,
        then tracked), ``detector`` (``"hog"`` or a callable ``RGB image -> [(box xywh, score)]``, run
        every ``detect_every`` frames, its boxes linked to tracks by IoU; may be combined with
        ``boxes``), or none of them (the whole frame).  PoseTrack image ids (``1SSSSSSFFFF``) in
        ``detections`` are matched to ``sequence``, by default the PoseTrack sequence the source's name
        gives (``003418_mpii_test``).  Bad inputs raise here, before the generator.

        ``replay``: frame index -> ``FrameResult`` already computed for frames 0..k-1 (``jmipose
        predict --resume``): those frames are not estimated again, but their results drive the
        tracking exactly as they did, and are yielded again (with this run's images)."""
        check_threshold(detection_threshold)
        if isinstance(source, (str, os.PathLike)):
            source = VideoReader(Path(source), background=True)
        if sequence is None and isinstance(source, VideoReader):
            sequence = posetrack_sequence(source.path.name if source.is_folder else source.path.stem)
        streaming = not isinstance(source, VideoReader)
        if streaming:
            frames, frame_size = _frames_of(source), None
        else:
            frames, fps = source.frames(), fps or source.fps
            frame_size = source.size
        if detections is not None and not isinstance(detections, dict):
            detections = load_detections(detections, detection_threshold, sequence=sequence)
        detector = make_detector(detector)
        if frame_size is not None and (boxes is not None or detector is not None):
            self._box_source(frame_size, detections, boxes, detection_threshold, detector, detect_every,
                             fps)   # check the boxes and settings now
        self.detector_seconds, self.detector_runs, self.track_report = 0.0, 0, None
        return self._run(frames, frame_size, detections, boxes, detection_threshold, fps or self.default_fps,
                         streaming, detector, detect_every, replay or {})

    def _run(self, frames, frame_size, detections, boxes, detection_threshold, fps,
             streaming: bool, detector=None, detect_every: int = 5, replay=None) -> Iterator[FrameResult]:
        from jmipose.engine.smoothing import TrackSmoother

        smoother = TrackSmoother(fps) if self.smoothing == "one_euro" else None
        behind = max([-o for o in self.offsets if o < 0], default=0)
        self._replayed_keys, self._solo_keys, self._solo_owner = set(), set(), []
        source, cache, held, jobs = None, {}, {}, []
        try:
            for window in sliding_windows(frames, self.offsets):
                if source is None:
                    height, width = window.key_frame.shape[:2]
                    frame_size = (width, height)
                    source = self._box_source(frame_size, detections, boxes, detection_threshold, detector,
                                              detect_every, fps)
                done = replay.get(window.index)
                given = None if done is None else done.detections
                found = source.people(window.index, window.key_frame, given)
                people = [self._crop(p, held, frame_size) for p in found]
                present = {p.person.track_id for p in people}
                for gone in [t for t in held if t not in present]:   # a returning track re-crops
                    del held[gone]
                detected = source.detected.get(window.index) if source.detected is not None else None
                if done is not None:   # resumed: this frame's result is known; replay it
                    self._note_replayed(window, people, done)
                    yield self._replayed(done, window, smoother, source)
                    continue
                jobs.append(_Job(window, people, detected))
                # A stream (or the tracking loop) is answered frame by frame; files batch several
                # frames' windows per model call.
                if streaming or source.needs_results or sum(len(j.people) for j in jobs) >= self.batch_size:
                    yield from self._flush(jobs, cache, source, smoother, behind)
                    jobs = []
            if jobs:
                yield from self._flush(jobs, cache, source, smoother, behind)
            if isinstance(detections, dict) and source is not None:
                frame_count = window.index + 1
                beyond = sorted(f for f in detections if f >= frame_count)
                if beyond:
                    log.warning("detections: %d boxes are on frames %s, which the %d-frame video does not "
                                "have (ignored; wrong video or frame numbering?)",
                                sum(len(detections[f]) for f in beyond),
                                beyond if len(beyond) <= 5 else f"{beyond[0]}..{beyond[-1]}", frame_count)
        finally:
            if hasattr(frames, "close"):
                frames.close()
            if source is not None:
                self.track_report = source.report()
                self.detector_seconds = getattr(source, "detector_seconds", 0.0)
                self.detector_runs = getattr(source, "detector_runs", 0)

    def _note_replayed(self, window: FrameWindow, people: list[_Person], done: FrameResult) -> None:
        """The crops the interrupted run computed for this frame, and which of them it computed alone."""
        boxes = {p.person.track_id: p.crop_box.tobytes() for p in people}
        flips = (False, True) if self.flip_test else (False,)
        for person in people:
            for index in window.indices:
                for flip in flips:
                    self._replayed_keys.add((index, boxes[person.person.track_id], flip))
        for index, track_id, flip in (done.resume_info or {}).get("solo", []):
            if int(track_id) in boxes:
                self._solo_keys.add((int(index), boxes[int(track_id)], bool(flip)))

    def _replayed(self, done: FrameResult, window: FrameWindow, smoother, source) -> FrameResult:
        """A recorded result, fed to the smoother and the tracker as if it had just been estimated."""
        result = FrameResult(window.index, window.key_frame, done.boxes, done.keypoints, done.scores,
                             done.person_scores, done.box_scores, done.track_ids, done.detections,
                             done.raw_keypoints, done.resume_info)
        if smoother is not None and len(result):
            if result.raw_keypoints is None:
                raise ValueError(f"resume: frame {window.index}'s record has no raw keypoints, which smoothing "
                                 f"needs (was the interrupted run made without --smoothing?)")
            smoother(window.index, result.track_ids, result.raw_keypoints)
        source.update(window.index, result)
        return result

    def _flush(self, jobs, cache, source, smoother, behind) -> Iterator[FrameResult]:
        self._solo_owner = []
        estimates = self._estimate(jobs, cache)
        next_key = jobs[-1].window.index + 1
        # which job's crops were computed alone (a resumed run computes them alone again)
        solo: dict[int, list] = {}
        solo_keys = set(self._solo_owner)
        for job in jobs:
            for person in job.people:
                for index in job.window.indices:
                    for flip in (False, True):
                        key = (index, person.crop_box.tobytes(), flip)
                        if key in solo_keys:
                            solo.setdefault(job.window.index, []).append([index, person.person.track_id, flip])
                            solo_keys.discard(key)
        for key in [k for k in cache if k[0] < next_key - behind]:
            del cache[key]
        for job, (keypoints, scores) in zip(jobs, estimates):
            result = self._result(job, keypoints, scores, smoother)
            result.resume_info = {"flush_end": jobs[-1].window.index, "solo": solo.get(job.window.index, [])}
            source.update(job.window.index, result)
            yield result
