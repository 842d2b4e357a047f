"""The index of a PoseTrack dataset: what the annotation files say, checked against the frame files
on disk, turned into samples (one person box of one frame with the paths of its window).

Every check happens here, when the dataset is built, so that a bad file is reported once with its
name and field (or skipped under ``skip_bad``) instead of failing later inside a DataLoader worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jmipose.data.frames import SequenceFiles, read_image_rgb
from jmipose.data.window import window_indices
from jmipose.formats.detections import Detection, read_detections
from jmipose.formats.errors import BadDataPolicy, DataError
from jmipose.formats.fields import load_json
from jmipose.formats.posetrack import FrameInfo, PersonAnnotation, read_annotation_file
from jmipose.joints import IGNORED_JOINTS, KEYPOINT_NAMES, NUM_JOINTS

logger = logging.getLogger("jmipose.data")

GT_BOX_SOURCES = ("bbox", "keypoints")
# poseval's PoseTrack17 -> 18 conversion makes a person box of 1.3x the labelled joints' extent.
KEYPOINT_BOX_EXTENT = 1.3


@dataclass(frozen=True)
class Sample:
    image_id: int
    box: np.ndarray            # [4] float32 (x, y, w, h) in image pixels
    score: float               # 1 for ground-truth boxes
    joints: np.ndarray         # [17, 3] float32 image (x, y, v); zeros when unknown (detector boxes)
    track_id: int
    frame_paths: tuple[str, ...]   # the window in time order, key frame at ``key_index``


def keypoint_box(joints: np.ndarray, extent: float = KEYPOINT_BOX_EXTENT) -> np.ndarray | None:
    """Box around the labelled joints, ``extent`` times their spread; ``None`` if it has no area."""
    points = joints[(joints[:, 2] > 0), :2].astype(np.float64)
    if len(points) < 2:
        return None
    low, high = points.min(axis=0), points.max(axis=0)
    size = (high - low) * extent
    if size[0] <= 0 or size[1] <= 0:
        return None
    center = (low + high) * 0.5
    return np.array([*(center - size * 0.5), *size], dtype=np.float32)


def clip_box(box: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """Intersection of an (x, y, w, h) box with the image; ``None`` if empty."""
    x1, y1 = max(float(box[0]), 0.0), max(float(box[1]), 0.0)
    x2, y2 = min(float(box[0] + box[2]), float(width)), min(float(box[1] + box[3]), float(height))
    if x2 <= x1 or y2 <= y1:
        return None
    clipped = np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float32)
    # Rounding to float32 may push x + w (y + h) one ulp past the image edge: pull the size back in
    # (boxes that end inside the image keep the plain rounding).
    for start, size, edge in ((0, 2, float(width)), (1, 3, float(height))):
        while float(clipped[start]) + float(clipped[size]) > edge and clipped[size] > 0:
            clipped[size] = np.nextafter(clipped[size], np.float32(0))
    return clipped


def resolve_annotation_files(root: Path, annotations, split: str) -> list[Path]:
    """JSON files of ``annotations``: a file, a folder of per-sequence files, or a list of either;
    relative paths are taken from ``root``. ``None`` looks for ``annotations/<split>`` (PoseTrack18)
    and ``posetrack_data/<split>`` (PoseTrack21) under ``root``."""
    if annotations is None:
        candidates = [root / "annotations" / split, root / "posetrack_data" / split]
        found = [c for c in candidates if c.exists()]
        if not root.is_dir():
            raise FileNotFoundError(f"data.root {root} is not a folder (the dataset's folder; set data.root, "
                                    f"or data.{split}_annotations)")
        if not found:
            raise FileNotFoundError(f"data.{split}_annotations is not set and data.root holds no annotations "
                                    f"for split {split!r}: tried " + ", ".join(str(c) for c in candidates))
        annotations = found[0]
    items = annotations if isinstance(annotations, (list, tuple)) else [annotations]
    files: list[Path] = []
    for item in items:
        path = Path(item)
        path = path if path.is_absolute() else root / path
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".json" and p.is_file())
            if not found:
                raise FileNotFoundError(f"annotations folder {path} holds no .json files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"annotations path {path} does not exist")
    return files


class PoseTrackIndex:
    """Frames, people, sequences and samples of a set of PoseTrack annotation files.

    ``frames``: image id -> :class:`FrameInfo` (ignore regions included, for the evaluator);
    ``people``: image id -> ground-truth :class:`PersonAnnotation` list; ``sequences``: frame folder
    -> :class:`SequenceFiles`; ``samples``: the :class:`Sample` list in (sequence, frame) order.
    The arguments are those of :class:`~jmipose.data.posetrack.PoseTrackVideoDataset`.
    """

    def __init__(
        self,
        image_root: Path,
        annotation_files: list[Path],
        window: tuple[int, ...],
        *,
        version: str,
        boxes_file: Path | None,
        box_score_threshold: float,
        gt_box_source: str,
        labeled_only: bool,
        clip_boxes: bool,
        keypoint_margin: float,
        frame_numbering,
        check_files: bool,
        policy: BadDataPolicy,
    ):
        self.image_root = image_root
        self.annotation_files = annotation_files
        self.window = window
        self.version = version
        self.boxes_file = boxes_file
        self.box_score_threshold = box_score_threshold
        self.gt_box_source = gt_box_source
        self.labeled_only = labeled_only
        self.clip_boxes = clip_boxes
        self.keypoint_margin = keypoint_margin
        self.numbering = frame_numbering
        self.check_files = check_files
        self._policy = policy
        self.frames: dict[int, FrameInfo] = {}
        self.people: dict[int, list[PersonAnnotation]] = {}
        self.sequences: dict[str, SequenceFiles] = {}
        self._fallback_ids = 0
        self._load_annotations()
        self._scan_sequences()
        self._validate_people()
        self.samples: list[Sample] = self._build_samples()

    def _load_annotations(self) -> None:
        for file in self.annotation_files:
            try:
                # Ids for PoseTrack17 frames whose folder name carries no video number: past any real id.
                found = read_annotation_file(file, self._policy, first_fallback_id=10**11 + self._fallback_ids)
            except DataError as error:
                self._policy.handle(error, "annotation file")
                continue
            if found.layout == "annolist":
                if self.version != "17":
                    logger.warning("%s is a PoseTrack17 annolist file but version=%r", file, self.version)
                self._fallback_ids += found.entries
            frames, people = found.frames, found.people
            rejected = set()
            for frame in frames:
                if frame.image_id in self.frames:
                    other = self.frames[frame.image_id]
                    self._policy.handle(
                        DataError(
                            file,
                            f"{frame.where}.id",
                            f"image id {frame.image_id} is already "
                            f"used by {other.file_name} in {other.source}",
                        ),
                        "frame",
                    )
                    rejected.add(frame.image_id)
                    continue
                self.frames[frame.image_id] = frame
            for person in people:
                if person.image_id not in rejected:  # the people of a rejected frame go with it
                    self.people.setdefault(person.image_id, []).append(person)
        for image_id in [i for i in self.people if i not in self.frames]:
            for person in self.people.pop(image_id):
                self._policy.handle(
                    DataError(
                        person.source,
                        f"{person.where}.image_id",
                        f"no image with id {image_id} in the annotations",
                    ),
                    "person",
                )

    def _scan_sequences(self) -> None:
        by_dir: dict[str, list[FrameInfo]] = {}
        for frame in self.frames.values():
            by_dir.setdefault(frame.sequence_dir, []).append(frame)
        for sequence_dir, frames in sorted(by_dir.items()):
            frames.sort(key=lambda f: f.frame_number)
            counts = {f.nframes for f in frames if f.nframes is not None}
            if len(counts) > 1:
                bad = next(f for f in frames if f.nframes != frames[0].nframes)
                self._drop_frames(
                    frames,
                    DataError(
                        bad.source,
                        f"{bad.where}.nframes",
                        f"sequence {sequence_dir} has inconsistent nframes {sorted(counts)}",
                    ),
                )
                continue
            files = SequenceFiles.scan(
                self.image_root / sequence_dir,
                [f.frame_number for f in frames],
                frames[0].number_width,
                frames[0].extension,
                counts.pop() if counts else None,
                self.numbering,
                list_disk=self.check_files,
            )
            self.sequences[sequence_dir] = files
            for frame in frames:
                if not files.first <= frame.frame_number <= files.last:
                    self._drop_frames(
                        [frame],
                        DataError(
                            frame.source,
                            f"{frame.where}.file_name",
                            f"frame {frame.frame_number} is outside the sequence "
                            f"[{files.first}, {files.last}] given by nframes",
                        ),
                    )
            self._fill_sizes([f for f in frames if f.image_id in self.frames], files)

    def _fill_sizes(self, frames: list[FrameInfo], files: SequenceFiles) -> None:
        """Frames without width/height (PoseTrack17) take the size of one frame of their sequence."""
        missing = [f for f in frames if f.width is None or f.height is None]
        probe = next((f for f in frames if files.exists(f.frame_number)), None)
        if not missing or probe is None:
            return  # a sequence without frames on disk is reported when its windows are built
        try:
            height, width = read_image_rgb(files.path(probe.frame_number)).shape[:2]
        except DataError as error:
            self._drop_frames(missing, error)
            return
        for frame in missing:
            frame.width, frame.height = width, height

    def _drop_frames(self, frames: list[FrameInfo], error: DataError) -> None:
        self._policy.handle(error, "frame")
        for frame in frames:
            self.frames.pop(frame.image_id, None)
            self.people.pop(frame.image_id, None)

    def _validate_people(self) -> None:
        """Labelled joints far outside the image are bad data (a wrong resolution, swapped x/y, ...)."""
        for image_id, people in list(self.people.items()):
            frame = self.frames[image_id]
            if frame.width is None or frame.height is None:
                continue
            kept = []
            for person in people:
                labelled = person.joints[:, 2] > 0
                x, y = person.joints[:, 0], person.joints[:, 1]
                mx, my = self.keypoint_margin * frame.width, self.keypoint_margin * frame.height
                outside = labelled & (
                    (x < -mx) | (x > frame.width + mx) | (y < -my) | (y > frame.height + my)
                )
                if outside.any():
                    j = int(np.flatnonzero(outside)[0])
                    self._policy.handle(
                        DataError(
                            person.source,
                            f"{person.where}.keypoints",
                            f"joint {KEYPOINT_NAMES[j]} at ({x[j]:g}, {y[j]:g}) is outside the "
                            f"{frame.width}x{frame.height} image by more than "
                            f"{self.keypoint_margin:g} of its size",
                        ),
                        "person",
                    )
                    continue
                kept.append(person)
            self.people[image_id] = kept

    def _gt_boxes(self, frame: FrameInfo) -> list[tuple[np.ndarray, float, np.ndarray, int]]:
        entries = []
        for person in self.people.get(frame.image_id, []):
            trainable = person.joints[:, 2] > 0
            trainable[list(IGNORED_JOINTS)] = False
            if not trainable.any():
                continue  # nothing to learn from (a box-only PoseTrack21 person, or ears only)
            box = (
                person.bbox
                if (self.gt_box_source == "bbox" and person.bbox is not None)
                else keypoint_box(person.joints)
            )
            if box is None:
                logger.debug(
                    "%s %s: no box and fewer than two labelled joints; not a sample",
                    person.source,
                    person.where,
                )
                continue
            if self.clip_boxes and frame.width is not None and frame.height is not None:
                clipped = clip_box(box, frame.width, frame.height)
                if clipped is None:
                    self._policy.handle(
                        DataError(
                            person.source,
                            f"{person.where}.bbox",
                            f"box {box.tolist()} lies outside the {frame.width}x{frame.height} image",
                        ),
                        "person",
                    )
                    continue
                box = clipped
            track = person.track_id if person.track_id >= 0 else person.person_id
            entries.append((box, 1.0, person.joints, track))
        return entries

    def _detections_by_image(self) -> dict[int, list[Detection]]:
        data = load_json(
            self.boxes_file
        )  # an unusable detections file leaves nothing to evaluate: always raise
        detections = read_detections(data, self.boxes_file, self._policy)
        by_image: dict[int, list[Detection]] = {}
        unknown = 0
        for det in detections:
            if det.image_id not in self.frames:
                unknown += 1
            elif det.score >= self.box_score_threshold:
                by_image.setdefault(det.image_id, []).append(det)
        if unknown:
            logger.info(
                "%s: %d detections for images outside the annotations were ignored", self.boxes_file, unknown
            )
        return by_image

    def _window_paths(self, frame: FrameInfo) -> tuple[str, ...]:
        files = self.sequences[frame.sequence_dir]
        numbers = window_indices(frame.frame_number, self.window, files.first, files.last)
        for number in numbers:
            if not files.exists(number):
                role = (
                    "key frame"
                    if number == frame.frame_number
                    else f"frame {number} of the window of {frame.file_name}"
                )
                raise DataError(
                    files.path(number), None, f"missing frame file ({role}, annotated in {frame.source})"
                )
        return tuple(str(files.path(number)) for number in numbers)

    def _build_samples(self) -> list[Sample]:
        detections = self._detections_by_image() if self.boxes_file is not None else None
        samples = []
        for frame in sorted(self.frames.values(), key=lambda f: (f.sequence_dir, f.frame_number)):
            if (self.labeled_only or detections is None) and not frame.is_labeled:
                continue
            if detections is None:
                entries = self._gt_boxes(frame)
            else:
                entries = [
                    (d.bbox, d.score, np.zeros((NUM_JOINTS, 3), np.float32), -1)
                    for d in detections.get(frame.image_id, [])
                ]
            if not entries:
                continue
            try:
                paths = self._window_paths(frame)
            except DataError as error:
                self._policy.handle(error, "frame")
                continue
            samples.extend(
                Sample(frame.image_id, box.astype(np.float32), float(score), joints, int(track), paths)
                for box, score, joints, track in entries
            )
        return samples

    # ------------------------------------------------------------------------------------------
    # loading
