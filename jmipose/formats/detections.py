"""COCO-style person detections: ``[{"image_id", "bbox": [x, y, w, h], "score", "category_id"}]`` (or
an object whose ``"annotations"`` holds that list), as PoseTrack's detection files and COCO results
are written.

One reading (:func:`read_detections`) for both consumers, with the two rules that differ made explicit:

- the training loader's validation boxes (:mod:`jmipose.data.posetrack_index`): entries name their
  image by ``image_id`` (any integer: it is matched to the annotations' ids); ``score`` is required;
- a video's boxes (:func:`load_detections`, for ``jmipose predict`` and the inferencer): entries name
  their frame by ``frame_index`` (or ``frame``) when they have it, else by ``image_id``, a frame
  number or a PoseTrack18 id ``1SSSSSSFFFF`` (:mod:`jmipose.formats.posetrack`); such ids are matched
  to the video's sequence: boxes of other sequences are left out and counted, and a file with
  several sequences for a video whose sequence is unknown is an error, never a guess. ``score``
  defaults to 1 and is a detector's score in [0, 1].

Everywhere: every number is a JSON number (a string is refused, in ``bbox`` as in ``score``), boxes
have a positive width and height, entries with a ``category_id`` other than 1 are not people.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jmipose.formats.errors import BadDataPolicy, DataError
from jmipose.formats.fields import as_box, as_float, as_int, get, load_json
from jmipose.formats.posetrack import IMAGE_ID_BASE, SEQUENCE_NUMBERS, split_image_id


@dataclass
class Detection:
    """One detector box."""

    image_id: int | None           # None when the entry names its frame by frame_index / frame
    bbox: np.ndarray               # [4] float64 (x, y, w, h)
    score: float
    where: str = ""                # e.g. "[3]"
    frame: int | None = None       # frame_index / frame (video detections only)


def read_detections(data, file, policy: BadDataPolicy, *, video: bool = False) -> list[Detection]:
    """The person boxes of a detections file's parsed content; bad entries go through ``policy``.
    ``video=False``: the training loader's rules, ``True``: a video's (see the module docstring)."""
    entries = data["annotations"] if isinstance(data, dict) and "annotations" in data else data
    if not isinstance(entries, list):
        raise DataError(file, None, "expected a list of detections (COCO results: image_id, bbox, score) or "
                                    f"an object with 'annotations', got {type(entries).__name__}")
    detections = []
    for i, entry in enumerate(entries):
        where = f"[{i}]"
        try:
            if as_int(get(entry, "category_id", file, where, 1), file, f"{where}.category_id") != 1:
                continue  # not a person
            frame = _frame_number(entry, file, where) if video else None
            image_id = None
            if frame is None:
                if video and "image_id" not in entry:
                    raise DataError(file, f"{where}.image_id", "missing required field (or give the frame "
                                                               "number as 'frame_index')")
                image_id = as_int(get(entry, "image_id", file, where), file, f"{where}.image_id")
                if video and image_id < 0:
                    raise DataError(file, f"{where}.image_id", f"expected a frame number or a PoseTrack image "
                                                               f"id, got {image_id}")
            bbox = as_box(get(entry, "bbox", file, where), file, f"{where}.bbox")
            score = as_float(get(entry, "score", file, where, 1.0 if video else ...), file, f"{where}.score")
            if video and not 0.0 <= score <= 1.0:
                raise DataError(file, f"{where}.score", f"expected a detector's score in [0, 1], got {score:g}")
            detections.append(Detection(image_id, bbox, score, where, frame))
        except DataError as error:
            policy.handle(error, "detection")
    return detections


def _frame_number(entry, file, where) -> int | None:
    for key in ("frame_index", "frame"):
        if isinstance(entry, dict) and key in entry:
            value = as_int(entry[key], file, f"{where}.{key}")
            if value < 0:
                raise DataError(file, f"{where}.{key}", f"expected a frame number >= 0, got {value}")
            return value
    return None


def _video_frame(detection: Detection, file) -> tuple[int | None, int]:
    """(PoseTrack sequence or None, frame number) of a video's detection."""
    if detection.frame is not None:
        return None, detection.frame
    if detection.image_id < IMAGE_ID_BASE:
        return None, detection.image_id
    split = split_image_id(detection.image_id)
    if split is None:
        raise DataError(file, f"{detection.where}.image_id",
                        f"{detection.image_id} is neither a frame number nor a PoseTrack id (1, six sequence "
                        f"digits, four frame digits)")
    return split


def _sequence_list(counts: Counter) -> str:
    shown = ", ".join(f"{s:06d} ({n})" for s, n in sorted(counts.items())[:6])
    return shown + (f" and {len(counts) - 6} more" if len(counts) > 6 else "")


def _frame_list(frames: list[int]) -> str:
    if len(frames) > 4:
        return f"frames {frames[0]}-{frames[-1]}" if frames == list(range(frames[0], frames[-1] + 1)) \
            else f"frames {', '.join(map(str, frames[:3]))}, ... {frames[-1]}"
    return "frame " + str(frames[0]) if len(frames) == 1 else "frames " + ", ".join(map(str, frames))


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


def check_threshold(value, name: str = "detection_threshold") -> float:
    """A score threshold: a finite number in [0, 1]."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1] (detector scores are), got {value!r}")
    return float(value)


def load_detections(source, score_threshold: float = 0.0, sequence: int | None = None) -> Detections:
    """frame index -> [(box xywh, score)] of a video, from a COCO-style detections file (path) or its
    parsed content (a :class:`Detections`, which also says what was left out); boxes scored below
    ``score_threshold`` are left out, and so are boxes whose PoseTrack image id names another sequence
    than ``sequence``.  Raises :class:`DataError` naming the file and the entry at fault, also when no
    box is left, and when the file holds PoseTrack ids of several sequences while ``sequence`` is None."""
    score_threshold = check_threshold(score_threshold)
    if sequence is not None and (isinstance(sequence, bool) or not isinstance(sequence, int)
                                 or not 0 <= sequence < SEQUENCE_NUMBERS):
        raise ValueError(f"sequence must be a PoseTrack sequence number in [0, 999999], got {sequence!r}")
    name = "detections"
    if isinstance(source, (str, os.PathLike)):
        name = str(Path(source))
        source = load_json(source)
    found = [(*_video_frame(d, name), d) for d in read_detections(source, name, BadDataPolicy(), video=True)]
    sequences = Counter(s for s, _, _ in found if s is not None)
    if sequence is None and len(sequences) > 1:
        raise DataError(name, None, f"holds PoseTrack image ids of {len(sequences)} sequences "
                                    f"({_sequence_list(sequences)}); say which one is the video's (--sequence N, "
                                    f"or a video named like a PoseTrack sequence, e.g. 003418_mpii_test)")
    matched = sequence if sequence is not None else next(iter(sequences), None)
    other = Counter({s: n for s, n in sequences.items() if s != matched})
    frames: dict[int, list[tuple[np.ndarray, float]]] = defaultdict(list)
    below = 0
    for entry_sequence, frame, detection in found:
        if entry_sequence is not None and entry_sequence != matched:
            continue
        if detection.score < score_threshold:
            below += 1
            continue
        frames[frame].append((detection.bbox, detection.score))
    if not frames:
        if other and not sequences.get(matched):
            raise DataError(name, None, f"no person box of sequence {matched:06d}; its {len(found)} boxes belong "
                                        f"to other sequences: {_sequence_list(other)} (wrong file, or give "
                                        f"--sequence)")
        raise DataError(name, None, "holds no person boxes"
                        + (f" with a score >= {score_threshold:g}" if found else " (empty list)"))
    return Detections(dict(frames), source=name, sequence=matched, total=len(found), other_sequences=other,
                      below_threshold=below, threshold=score_threshold)
