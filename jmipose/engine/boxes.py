"""Where the people are in each frame of a video, for top-down pose estimation without a detector.

Three sources, all giving ``(x, y, w, h)`` boxes in image pixels and stable track ids:

- ``DetectionBoxes``: a COCO-style detections JSON (a list of ``{"image_id" or "frame_index",
  "bbox", "score"}``, or a dict whose ``"annotations"`` holds that list).  Track ids come from a
  greedy IoU match of each frame's boxes with the previous frame's.
- ``TrackedBoxes``: boxes given for the first frame only; afterwards each person's box is the
  extent of the previous frame's confident keypoints enlarged 1.3x (PoseTrack's rule for the ground
  truth boxes), the standard top-down tracking loop.  A person whose pose is no longer confident
  (too few joints above ``joint_threshold``, or a person score below ``track_threshold``) is lost
  and dropped.
- ``WholeFrameBoxes``: the whole frame as one person box.

Frame numbers of a detections file: ``frame_index`` (or ``frame``) when an entry has it, else its
``image_id``; ids of the PoseTrack18 form ``1SSSSSSFFFF`` (10**10 + sequence x 10**4 + frame) name
a sequence and a frame, as the PoseTrack detection files are written (one file per split, every
sequence in it).  Such ids are matched to the video's sequence (``sequence=``: from a PoseTrack name
like ``003418_mpii_test``, or given): boxes of other sequences are left out and counted, and a file
with several sequences for a video whose sequence is unknown is an error, never a guess.  Every
number must be a JSON number (a string is refused, in ``bbox`` as in ``score``); scores lie in [0, 1].
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POSETRACK_IMAGE_ID_BASE = 10_000_000_000   # PoseTrack18 ids: 1, six sequence digits, four frame digits
POSETRACK_FRAMES = 10_000                   # frames a PoseTrack image id can number per sequence
KEYPOINT_BOX_ENLARGE = 1.3                  # PoseTrack's GT boxes: keypoint extent x 1.3


@dataclass
class PersonBox:
    """One person to estimate in one frame."""

    track_id: int
    box: np.ndarray        # [4] float64 x, y, w, h in image pixels
    score: float           # detector score (1 for given and tracked boxes)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xywh boxes a [N, 4] and b [M, 4] -> [N, M]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    width = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def check_box(box, frame_size: tuple[int, int], name: str = "box") -> np.ndarray:
    """A finite xywh box with positive size that overlaps the ``(width, height)`` frame."""
    try:
        values = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 4 numbers x, y, w, h, got {box!r}") from None
    if values.shape != (4,) or not np.isfinite(values).all():
        raise ValueError(f"{name} must be 4 finite numbers x, y, w, h, got {box!r}")
    x, y, w, h = values
    if w <= 0 or h <= 0:
        raise ValueError(f"{name} must have a positive width and height, got w={w:g}, h={h:g}")
    width, height = frame_size
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise ValueError(f"{name} ({x:g}, {y:g}, {w:g}, {h:g}) lies outside the {width}x{height} frame")
    return values


def parse_box(text: str) -> np.ndarray:
    """``"x,y,w,h"`` (the CLI's ``--box``) -> [4] float64."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"--box must be x,y,w,h (four numbers), got {text!r}") from None
    if len(values) != 4:
        raise ValueError(f"--box must be x,y,w,h (four numbers), got {text!r}")
    return np.asarray(values, dtype=np.float64)


def keypoint_box(keypoints: np.ndarray, scores: np.ndarray, joint_threshold: float,
                 enlarge: float = KEYPOINT_BOX_ENLARGE, min_joints: int = 3) -> np.ndarray | None:
    """The xywh box of the joints scored above ``joint_threshold``, enlarged about its centre;
    None when fewer than ``min_joints`` are."""
    confident = np.asarray(scores) > joint_threshold
    if int(confident.sum()) < min_joints:
        return None
    points = np.asarray(keypoints, dtype=np.float64)[confident]
    low, high = points.min(0), points.max(0)
    centre = (low + high) / 2
    extent = np.maximum(high - low, 4.0) * enlarge
    return np.concatenate([centre - extent / 2, extent])


def posetrack_sequence(name: str) -> int | None:
    """The sequence number of a PoseTrack sequence name (six digits and ``_``: ``003418_mpii_test``
    -> 3418), None for any other name."""
    match = re.fullmatch(r"(\d{6})_.*", str(name), flags=re.DOTALL)
    return int(match.group(1)) if match else None


def _is_number(value) -> bool:
    """A JSON number (not a bool, not a string); finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _frame_of(entry: dict, where: str) -> tuple[int | None, int]:
    """(PoseTrack sequence or None, frame number) of a detection entry."""
    for key in ("frame_index", "frame"):
        if key in entry:
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{where}: '{key}' must be a frame number >= 0, got {value!r}")
            return None, value
    image_id = entry.get("image_id")
    if isinstance(image_id, bool) or not isinstance(image_id, int) or image_id < 0:
        raise ValueError(f"{where}: needs 'frame_index' or an integer 'image_id', got {image_id!r}")
    if image_id < POSETRACK_IMAGE_ID_BASE:
        return None, image_id
    if image_id >= 2 * POSETRACK_IMAGE_ID_BASE:
        raise ValueError(f"{where}: 'image_id' {image_id} is neither a frame number nor a PoseTrack id "
                         f"(1, six sequence digits, four frame digits)")
    sequence, frame = divmod(image_id - POSETRACK_IMAGE_ID_BASE, POSETRACK_FRAMES)
    return sequence, frame


def _sequence_list(counts: Counter) -> str:
    shown = ", ".join(f"{s:06d} ({n})" for s, n in sorted(counts.items())[:6])
    return shown + (f" and {len(counts) - 6} more" if len(counts) > 6 else "")


class Detections(dict):
    """frame index -> [(box xywh, score)] of a detections file, plus what was left out and why.

    ``source``: the file (or ``"detections"``); ``sequence``: the PoseTrack sequence matched (None when
    the ids are plain frame numbers); ``total``: person entries in the file; ``other_sequences``:
    sequence -> boxes left out because they belong to another sequence; ``below_threshold``: boxes
    scored below the threshold."""

    def __init__(self, frames: dict, *, source: str = "detections", sequence: int | None = None,
                 total: int = 0, other_sequences: Counter | None = None, below_threshold: int = 0,
                 threshold: float = 0.0):
        super().__init__(frames)
        self.source, self.sequence, self.total = source, sequence, total
        self.other_sequences = Counter(other_sequences or {})
        self.below_threshold, self.threshold = below_threshold, threshold

    @property
    def used(self) -> int:
        return sum(len(boxes) for boxes in self.values())

    def beyond(self, frame_count: int) -> list[int]:
        """Frames with boxes that a video of ``frame_count`` frames does not have."""
        return sorted(f for f in self if f >= frame_count)

    def describe(self, frame_count: int | None = None) -> str:
        """One line: how many boxes are used, and how many were left out and why."""
        where = f" (sequence {self.sequence:06d})" if self.sequence is not None else ""
        parts = []
        if self.other_sequences:
            parts.append(f"{sum(self.other_sequences.values())} of other sequences "
                         f"({_sequence_list(self.other_sequences)})")
        if self.below_threshold:
            parts.append(f"{self.below_threshold} scored below {self.threshold:g}")
        used = self.used
        if frame_count is not None:
            beyond = self.beyond(frame_count)
            if beyond:
                count = sum(len(self[f]) for f in beyond)
                used -= count
                parts.append(f"{count} on frames the {frame_count}-frame video does not have "
                             f"({_frame_list(beyond)})")
        text = f"detections: used {used} of the {self.total} boxes in {self.source}{where}"
        return text + (f"; ignored {', '.join(parts)}" if parts else "")


def _frame_list(frames: list[int]) -> str:
    if len(frames) > 4:
        return f"frames {frames[0]}-{frames[-1]}" if frames == list(range(frames[0], frames[-1] + 1)) \
            else f"frames {', '.join(map(str, frames[:3]))}, ... {frames[-1]}"
    return "frame " + str(frames[0]) if len(frames) == 1 else "frames " + ", ".join(map(str, frames))


def check_threshold(value, name: str = "detection_threshold") -> float:
    """A score threshold: a finite number in [0, 1]."""
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1] (detector scores are), got {value!r}")
    return float(value)


def load_detections(source, score_threshold: float = 0.0, sequence: int | None = None) -> Detections:
    """frame index -> [(box xywh, score)] from a COCO-style detections file (path) or its parsed
    content (a :class:`Detections`, which also says what was left out); boxes scored below
    ``score_threshold`` are left out, and so are boxes whose PoseTrack image id names another sequence
    than ``sequence``.  Raises ``FileNotFoundError`` / ``ValueError`` naming the file and the entry at
    fault; ``ValueError`` when no box is left, and when the file holds PoseTrack ids of several
    sequences while ``sequence`` is None."""
    score_threshold = check_threshold(score_threshold)
    if sequence is not None and (isinstance(sequence, bool) or not isinstance(sequence, int)
                                 or not 0 <= sequence < 1_000_000):
        raise ValueError(f"sequence must be a PoseTrack sequence number in [0, 999999], got {sequence!r}")
    name = "detections"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"detections file {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"detections file {path} is not valid JSON ({error})") from None
        except RecursionError:
            raise ValueError(f"detections file {path} is nested too deeply to be a detections file "
                             f"(a list of {{image_id, bbox, score}} objects)") from None
    else:
        data = source
    if isinstance(data, dict):
        data = data.get("annotations")
    if not isinstance(data, list):
        raise ValueError(f"{name}: expected a list of detections (COCO results: image_id, bbox, score) "
                         f"or a dict with 'annotations', got {type(data).__name__}")
    kept: list[tuple[int | None, int, np.ndarray, float]] = []
    total, below = 0, 0
    for i, entry in enumerate(data):
        where = f"{name}: entry {i}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object, got {type(entry).__name__}")
        if entry.get("category_id", 1) != 1:
            continue  # not a person
        total += 1
        bbox = entry.get("bbox")
        if (not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox)
                or not (bbox[2] > 0 and bbox[3] > 0)):
            raise ValueError(f"{where}: 'bbox' must be 4 JSON numbers [x, y, w, h] with w, h > 0, got {bbox!r}")
        score = entry.get("score", 1.0)
        if not _is_number(score) or not 0.0 <= score <= 1.0:
            raise ValueError(f"{where}: 'score' must be a JSON number in [0, 1], got {score!r}")
        entry_sequence, frame = _frame_of(entry, where)
        kept.append((entry_sequence, frame, np.asarray(bbox, dtype=np.float64), float(score)))
    sequences = Counter(s for s, _, _, _ in kept if s is not None)
    if sequence is None and len(sequences) > 1:
        raise ValueError(f"{name} holds PoseTrack image ids of {len(sequences)} sequences "
                         f"({_sequence_list(sequences)}); say which one is the video's (--sequence N, or "
                         f"a video named like a PoseTrack sequence, e.g. 003418_mpii_test)")
    matched = sequence if sequence is not None else next(iter(sequences), None)
    other = Counter({s: n for s, n in sequences.items() if s != matched})
    frames: dict[int, list[tuple[np.ndarray, float]]] = defaultdict(list)
    for entry_sequence, frame, box, score in kept:
        if entry_sequence is not None and entry_sequence != matched:
            continue
        if score < score_threshold:
            below += 1
            continue
        frames[frame].append((box, score))
    if not frames:
        if other and not sequences.get(matched):
            raise ValueError(f"{name}: no person box of sequence {matched:06d}; its {total} boxes belong to "
                             f"other sequences: {_sequence_list(other)} (wrong file, or give --sequence)")
        raise ValueError(f"{name}: holds no person boxes"
                         + (f" with a score >= {score_threshold:g}" if total else " (empty list)"))
    return Detections(dict(frames), source=name, sequence=matched, total=total, other_sequences=other,
                      below_threshold=below, threshold=score_threshold)


class WholeFrameBoxes:
    """The whole frame as one person (track id 0) in every frame."""

    def __init__(self, frame_size: tuple[int, int]):
        width, height = frame_size
        self.person = PersonBox(0, np.array([0.0, 0.0, float(width), float(height)]), 1.0)

    def people(self, index: int) -> list[PersonBox]:
        return [PersonBox(self.person.track_id, self.person.box.copy(), 1.0)]

    def update(self, index: int, results) -> None:
        pass

    needs_results = False


class DetectionBoxes:
    """Boxes of a detections file; ids by greedy IoU matching with the previous frame's people."""

    needs_results = False

    def __init__(self, detections: dict[int, list[tuple[np.ndarray, float]]], frame_size: tuple[int, int],
                 match_iou: float = 0.3, max_missed: int = 5):
        self.detections = detections
        self.frame_size = frame_size
        self.match_iou = float(match_iou)
        self.max_missed = int(max_missed)
        # track id -> (last box, last frame seen): a person the detector misses for up to max_missed
        # frames keeps its id when found again.
        self._tracks: dict[int, tuple[np.ndarray, int]] = {}
        self._next_id = 0

    def people(self, index: int) -> list[PersonBox]:
        width, height = self.frame_size
        current = []
        for j, (box, score) in enumerate(self.detections.get(index, [])):
            x, y, w, h = box
            if x >= width or y >= height or x + w <= 0 or y + h <= 0:
                raise ValueError(f"detections: box {j} of frame {index} ({x:g}, {y:g}, {w:g}, {h:g}) lies "
                                 f"outside the {width}x{height} frame (wrong video, or frame numbering?)")
            current.append(PersonBox(-1, box.copy(), score))
        self._tracks = {t: v for t, v in self._tracks.items() if index - v[1] <= self.max_missed}
        ids = list(self._tracks)
        if current and ids:
            iou = box_iou(np.stack([p.box for p in current]), np.stack([self._tracks[t][0] for t in ids]))
            # greedy: best overlaps first; among equal overlaps the most recently seen track
            recency = np.array([self._tracks[t][1] for t in ids], dtype=np.float64)
            order = np.lexsort((-np.broadcast_to(recency, iou.shape).ravel(), -iou.ravel()))
            taken: set[int] = set()
            for flat in order:
                i, j = np.unravel_index(flat, iou.shape)
                if iou[i, j] < self.match_iou:
                    break
                if current[i].track_id < 0 and ids[j] not in taken:
                    current[i].track_id = ids[j]
                    taken.add(ids[j])
        for person in current:
            if person.track_id < 0:
                person.track_id = self._next_id
                self._next_id += 1
            self._tracks[person.track_id] = (person.box, index)
        return current

    def update(self, index: int, results) -> None:
        pass


class TrackedBoxes:
    """Given boxes on the first frame, then each person's box from its previous keypoints."""

    needs_results = True

    def __init__(self, boxes, frame_size: tuple[int, int], joint_threshold: float = 0.2,
                 track_threshold: float = 0.3, min_joints: int = 3):
        if len(boxes) == 0:
            raise ValueError("boxes: give at least one x,y,w,h box for the first frame")
        self._people = [PersonBox(i, check_box(b, frame_size, f"box {i}"), 1.0) for i, b in enumerate(boxes)]
        self.joint_threshold = float(joint_threshold)
        self.track_threshold = float(track_threshold)
        self.min_joints = int(min_joints)
        self.lost: dict[int, int] = {}     # track id -> first frame it was missing from

    def people(self, index: int) -> list[PersonBox]:
        return [PersonBox(p.track_id, p.box.copy(), p.score) for p in self._people]

    def update(self, index: int, results) -> None:
        """Next frame's boxes from this frame's poses (``results``: a FrameResult); unconfident people
        are dropped for good."""
        kept = []
        for track_id, keypoints, scores, score in zip(results.track_ids, results.keypoints,
                                                      results.scores, results.person_scores):
            box = keypoint_box(keypoints, scores, self.joint_threshold, min_joints=self.min_joints)
            if box is None or score < self.track_threshold:
                self.lost[int(track_id)] = index + 1
                continue
            kept.append(PersonBox(int(track_id), box, 1.0))
        for person in self._people:  # people removed by NMS in this frame are lost as well
            if person.track_id not in {p.track_id for p in kept}:
                self.lost.setdefault(person.track_id, index + 1)
        self._people = kept
