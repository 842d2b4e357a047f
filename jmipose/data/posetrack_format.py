"""Parsers of the PoseTrack annotation formats and of detector boxes, with field-level validation.

- PoseTrack18/21: COCO-style ``{"images", "annotations", "categories"}``, one file per sequence or
  several sequences merged; PoseTrack21 adds ``person_id`` to each annotation.
- PoseTrack17: ``{"annolist": [...]}`` with one entry per frame (``image[0].name``, ``imgnum``,
  ``is_labeled``, ``ignore_regions``, ``annorect`` people with a head box ``x1/y1/x2/y2``,
  ``track_id`` and ``annopoints[0].point`` joints ``{id, x, y, is_visible}``); values are usually
  one-element lists. PT17 joint ids are poseval's (``jmipose.joints.POSEVAL_JOINTS``), mapped to the PT18 order.
- Detections: a COCO results list ``[{image_id, bbox: [x, y, w, h], score, category_id}]``.

Everything is converted to the 17-joint PoseTrack18 order with ``(x, y, v)`` rows where ``v > 0``
means labelled (PoseTrack uses 1 for every annotated joint, visible or not) and unlabelled rows are
all zeros. Every problem raises :class:`DataError` naming the file and the field.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jmipose.data.errors import BadDataPolicy, DataError
from jmipose.joints import JOINT_ALIASES as _JOINT_ALIASES
from jmipose.joints import KEYPOINT_NAMES as JOINT_NAMES
from jmipose.joints import NUM_JOINTS, PT17_TO_PT18


@dataclass
class FrameInfo:
    """One annotated frame (an entry of ``images`` / ``annolist``)."""

    image_id: int
    file_name: str                 # relative to the image root, as written in the annotation
    sequence: str                  # the sequence folder name, e.g. "003418_mpii_test"
    sequence_dir: str              # folder of the frame files, relative to the image root
    frame_number: int              # the number in the file name
    number_width: int              # how many digits the annotation's file name has
    extension: str                 # ".jpg"
    is_labeled: bool
    nframes: int | None
    width: int | None
    height: int | None
    ignore_regions: list[np.ndarray] = field(default_factory=list)   # [K, 2] float32 polygons
    mask_file: str | None = None
    vid_id: str | None = None
    frame_id: int | None = None    # PoseTrack18's frame_id (equal to the image id there)
    source: str = ""               # the annotation file
    where: str = ""                # e.g. "images[0]"


@dataclass
class PersonAnnotation:
    """One ground-truth person of one frame."""

    image_id: int
    joints: np.ndarray             # [17, 3] float32 (x, y, v); v > 0 labelled; zeros when unlabelled
    bbox: np.ndarray | None        # [4] float32 (x, y, w, h) or None
    head_box: np.ndarray | None    # [4] float32 (x, y, w, h) or None
    track_id: int = -1
    person_id: int = -1
    annotation_id: int | None = None
    source: str = ""
    where: str = ""

    @property
    def num_labelled(self) -> int:
        return int(np.count_nonzero(self.joints[:, 2] > 0))


@dataclass
class Detection:
    """One detector box."""

    image_id: int
    bbox: np.ndarray               # [4] float32 (x, y, w, h)
    score: float
    where: str = ""


# ---------------------------------------------------------------------------------------------
# small typed readers: each names the file and the field when it refuses a value

def load_json(path: str | Path):
    """Parse a JSON file; a missing, unreadable or truncated file raises :class:`DataError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None
    except OSError as exc:
        raise DataError(path, None, f"cannot read the file: {exc}") from None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(path, None, f"not valid JSON (truncated or corrupt file?): {exc}") from None
    except RecursionError:
        raise DataError(path, None, "not valid JSON here: nested too deeply to parse") from None


def _too_big(value) -> bool:
    """An integer literal no float or int64 holds (JSON allows 10**400 written out in digits)."""
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2 ** 63


def _unwrap(value, file, where):
    """PoseTrack17 stores scalars as one-element lists; accept both."""
    if isinstance(value, list):
        if len(value) != 1:
            problem = f"expected a value or a one-element list, got a list of {len(value)}"
            raise DataError(file, where, problem)
        return value[0]
    return value


def _get(obj, key, file, where, default=...):
    if not isinstance(obj, dict):
        raise DataError(file, where, f"expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        if default is ...:
            raise DataError(file, f"{where}.{key}" if where else key, "missing required field")
        return default
    return obj[key]


def _as_int(value, file, where) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not (math.isfinite(value) and value.is_integer()))
        or _too_big(value)
    ):
        raise DataError(file, where, f"expected an integer, got {_shown(value)}")
    return int(value)


def _as_float(value, file, where) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(file, where, f"expected a number, got {value!r}")
    if _too_big(value) or not math.isfinite(value):
        raise DataError(file, where, f"expected a finite number, got {_shown(value)}")
    return float(value)


def _shown(value) -> str:
    """``repr`` of a value for a message, a huge integer as its digit count."""
    if _too_big(value):
        return f"an integer of {len(str(abs(value)))} digits"
    return repr(value)


def _as_bool(value, file, where) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise DataError(file, where, f"expected true/false or 0/1, got {value!r}")


def _as_numbers(value, file, where, length: int | None = None) -> np.ndarray:
    if not isinstance(value, list):
        raise DataError(file, where, f"expected a list of numbers, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise DataError(file, where, f"expected {length} numbers, got {len(value)}")
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise DataError(file, f"{where}[{i}]", f"expected a number, got {v!r}")
        if _too_big(v):
            raise DataError(file, f"{where}[{i}]", f"expected a finite number, got {_shown(v)}")
    array = np.asarray(value, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise DataError(
            file, f"{where}[{bad[0]}]", f"expected a finite number, got {value[bad[0]]!r} (NaN/inf)"
        )
    return array


def _as_box(value, file, where) -> np.ndarray:
    """An (x, y, w, h) box with w, h > 0 (x, y may be negative: PoseTrack boxes leave the frame)."""
    box = _as_numbers(value, file, where, length=4)
    if box[2] < 0 or box[3] < 0:
        raise DataError(
            file, where, f"negative box size: width {box[2]:g}, height {box[3]:g} (expected x, y, w, h)"
        )
    if box[2] == 0 or box[3] == 0:
        raise DataError(file, where, f"zero-area box: width {box[2]:g}, height {box[3]:g}")
    return box.astype(np.float32)


def split_frame_file_name(file_name: str, file, where) -> tuple[str, int, int, str]:
    """``images/val/seq/000012.jpg`` -> (``images/val/seq``, 12, 6 digits, ``.jpg``)."""
    if not isinstance(file_name, str) or not file_name:
        raise DataError(file, where, f"expected a non-empty file name, got {file_name!r}")
    normalized = file_name.replace("\\", "/")
    directory, base = os.path.split(normalized)
    stem, extension = os.path.splitext(base)
    if not stem.isdigit() or not extension:
        raise DataError(
            file, where, f"frame file names must be <frame number>.<ext> (e.g. 000000.jpg), got {file_name!r}"
        )
    if not directory:
        raise DataError(file, where, f"frame file name {file_name!r} has no sequence folder")
    return directory, int(stem), len(stem), extension


def make_image_id(sequence: str, frame_index: int, fallback: int) -> int:
    """PoseTrack18's image id rule (``1`` + six-digit video id + four-digit frame index), used for
    PoseTrack17 frames that carry no id; ``fallback`` when the folder does not start with digits."""
    digits = sequence.split("_")[0]
    if digits.isdigit() and len(digits) <= 6 and 0 <= frame_index < 10000:
        return 10_000_000_000 + int(digits) * 10_000 + frame_index
    return fallback


# ---------------------------------------------------------------------------------------------
# PoseTrack18 / PoseTrack21


def keypoint_mapping(data: dict, file) -> list[int]:
    """Index in the PT18 order of each keypoint slot of the file (from ``categories[0].keypoints``)."""
    categories = data.get("categories")
    if not categories:
        return list(range(NUM_JOINTS))
    if not isinstance(categories, list) or not isinstance(categories[0], dict):
        raise DataError(file, "categories", "expected a list of category objects")
    names = categories[0].get("keypoints")
    if names is None:
        return list(range(NUM_JOINTS))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(file, "categories[0].keypoints", "expected a list of joint names")
    mapping = []
    for i, name in enumerate(names):
        canonical = _JOINT_ALIASES.get(name, name)
        if canonical not in JOINT_NAMES:
            raise DataError(
                file,
                f"categories[0].keypoints[{i}]",
                f"unknown joint {name!r}; expected names of the PoseTrack18 order {JOINT_NAMES}",
            )
        mapping.append(JOINT_NAMES.index(canonical))
    if len(set(mapping)) != len(mapping):
        raise DataError(file, "categories[0].keypoints", f"repeated joint names in {names}")
    return mapping


def _ignore_regions_coco(image: dict, file, where) -> list[np.ndarray]:
    xs, ys = image.get("ignore_regions_x"), image.get("ignore_regions_y")
    if xs is None and ys is None:
        return []
    if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
        raise DataError(
            file, f"{where}.ignore_regions_x/y", "expected two lists with one polygon each per region"
        )
    regions = []
    for k, (px, py) in enumerate(zip(xs, ys)):
        x = _as_numbers(px, file, f"{where}.ignore_regions_x[{k}]")
        y = _as_numbers(py, file, f"{where}.ignore_regions_y[{k}]", length=len(x))
        regions.append(np.stack([x, y], axis=1).astype(np.float32))
    return regions


def _parse_coco_image(image, file, where) -> FrameInfo:
    image_id = _as_int(_get(image, "id", file, where), file, f"{where}.id")
    file_name = _get(image, "file_name", file, where)
    directory, number, width, extension = split_frame_file_name(file_name, file, f"{where}.file_name")
    nframes = _get(image, "nframes", file, where, None)
    if nframes is not None:
        nframes = _as_int(nframes, file, f"{where}.nframes")
        if nframes <= 0:
            raise DataError(file, f"{where}.nframes", f"expected a positive frame count, got {nframes}")
    size = []
    for key in ("width", "height"):
        value = _get(image, key, file, where, None)
        if value is not None:
            value = _as_int(value, file, f"{where}.{key}")
            if value <= 0:
                raise DataError(file, f"{where}.{key}", f"expected a positive image size, got {value}")
        size.append(value)
    mask_file = _get(image, "mask_file", file, where, None)
    vid_id = _get(image, "vid_id", file, where, None)
    frame_id = _get(image, "frame_id", file, where, None)
    if frame_id is not None:
        frame_id = _as_int(frame_id, file, f"{where}.frame_id")
    return FrameInfo(
        image_id=image_id,
        file_name=file_name.replace("\\", "/"),
        sequence=os.path.basename(directory),
        sequence_dir=directory,
        frame_number=number,
        number_width=width,
        extension=extension,
        is_labeled=_as_bool(_get(image, "is_labeled", file, where, True), file, f"{where}.is_labeled"),
        nframes=nframes,
        width=size[0],
        height=size[1],
        ignore_regions=_ignore_regions_coco(image, file, where),
        mask_file=mask_file if isinstance(mask_file, str) else None,
        vid_id=None if vid_id is None else str(vid_id),
        frame_id=frame_id,
        source=str(file),
        where=where,
    )


def _joints_from_slots(values: np.ndarray, mapping: list[int], file, where) -> np.ndarray:
    rows = values.reshape(len(mapping), 3)
    if np.any(rows[:, 2] < 0):
        slot = int(np.flatnonzero(rows[:, 2] < 0)[0])
        raise DataError(file, f"{where}.keypoints[{3 * slot + 2}]", f"negative visibility {rows[slot, 2]:g}")
    joints = np.zeros((NUM_JOINTS, 3), dtype=np.float32)
    for slot, target in enumerate(mapping):
        if rows[slot, 2] > 0:
            joints[target] = rows[slot]
    return joints


def _person_box(value, joints: np.ndarray, file, where) -> np.ndarray | None:
    """A person box; ``None`` for the zero-size box PoseTrack18 derives from fewer than two distinct
    labelled joints (a legitimate annotation, just not a trainable one). A zero-size box around
    spread-out joints, or a negative size, is bad data."""
    box = _as_numbers(value, file, where, length=4)
    if (box[2] == 0 or box[3] == 0) and box[2] >= 0 and box[3] >= 0:
        points = joints[joints[:, 2] > 0, :2]
        spread = points.max(axis=0) - points.min(axis=0) if len(points) else np.zeros(2)
        if (box[2] == 0 and spread[0] == 0) or (box[3] == 0 and spread[1] == 0):
            return None
    return _as_box(box.tolist(), file, where)


def _parse_coco_person(ann, mapping, file, where) -> PersonAnnotation | None:
    category = _get(ann, "category_id", file, where, 1)
    if _as_int(category, file, f"{where}.category_id") != 1:
        return None  # not a person
    image_id = _as_int(_get(ann, "image_id", file, where), file, f"{where}.image_id")
    keypoints = _as_numbers(
        _get(ann, "keypoints", file, where), file, f"{where}.keypoints", length=3 * len(mapping)
    )
    joints = _joints_from_slots(keypoints, mapping, file, where)
    bbox = _get(ann, "bbox", file, where, None)
    if bbox is not None:
        bbox = _person_box(bbox, joints, file, f"{where}.bbox")
    head = _get(ann, "bbox_head", file, where, None)
    if head is not None:  # only the evaluator reads head boxes (sizes, as poseval): kept as given
        head = _as_numbers(head, file, f"{where}.bbox_head", length=4).astype(np.float32)
    ann_id = _get(ann, "id", file, where, None)
    return PersonAnnotation(
        image_id=image_id,
        joints=joints,
        bbox=bbox,
        head_box=head,
        track_id=_as_int(_get(ann, "track_id", file, where, -1), file, f"{where}.track_id"),
        person_id=_as_int(_get(ann, "person_id", file, where, -1), file, f"{where}.person_id"),
        annotation_id=None if ann_id is None else _as_int(ann_id, file, f"{where}.id"),
        source=str(file),
        where=where,
    )


def parse_coco_style(
    data: dict, file, policy: BadDataPolicy
) -> tuple[list[FrameInfo], list[PersonAnnotation]]:
    """Frames and people of a PoseTrack18/21 file; bad entries go through ``policy``."""
    images = _get(data, "images", file, "")
    annotations = _get(data, "annotations", file, "", [])
    for key, value in (("images", images), ("annotations", annotations)):
        if not isinstance(value, list):
            raise DataError(file, key, f"expected a list, got {type(value).__name__}")
    mapping = keypoint_mapping(data, file)
    frames, people = [], []
    for i, image in enumerate(images):
        try:
            frames.append(_parse_coco_image(image, file, f"images[{i}]"))
        except DataError as error:
            policy.handle(error, "frame")
    for i, ann in enumerate(annotations):
        try:
            person = _parse_coco_person(ann, mapping, file, f"annotations[{i}]")
        except DataError as error:
            policy.handle(error, "person")
            continue
        if person is not None:
            people.append(person)
    return frames, people


# ---------------------------------------------------------------------------------------------
# PoseTrack17 annolist


def _ignore_regions_annolist(entry, file, where) -> list[np.ndarray]:
    regions = _get(entry, "ignore_regions", file, where, [])
    if not isinstance(regions, list):
        raise DataError(file, f"{where}.ignore_regions", "expected a list of {'point': [...]} regions")
    polygons = []
    for k, region in enumerate(regions):
        points = _get(region, "point", file, f"{where}.ignore_regions[{k}]")
        if not isinstance(points, list):
            raise DataError(file, f"{where}.ignore_regions[{k}].point", "expected a list of points")
        coords = []
        for p, point in enumerate(points):
            at = f"{where}.ignore_regions[{k}].point[{p}]"
            coords.append(
                [
                    _as_float(
                        _unwrap(_get(point, axis, file, at), file, f"{at}.{axis}"), file, f"{at}.{axis}"
                    )
                    for axis in ("x", "y")
                ]
            )
        polygons.append(np.asarray(coords, dtype=np.float32).reshape(-1, 2))
    return polygons


def _parse_annorect(rect, image_id, file, where) -> PersonAnnotation:
    head_values = [rect.get(key) for key in ("x1", "y1", "x2", "y2")] if isinstance(rect, dict) else [None]
    head_box = None
    if any(v is not None for v in head_values):
        x1, y1, x2, y2 = (
            _as_float(_unwrap(_get(rect, k, file, where), file, f"{where}.{k}"), file, f"{where}.{k}")
            for k in ("x1", "y1", "x2", "y2")
        )
        head_box = np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float32)
    track_id = _as_int(
        _unwrap(_get(rect, "track_id", file, where, -1), file, f"{where}.track_id"), file, f"{where}.track_id"
    )
    joints = np.zeros((NUM_JOINTS, 3), dtype=np.float32)
    annopoints = _get(rect, "annopoints", file, where, [])
    if isinstance(annopoints, dict):
        annopoints = [annopoints]
    if not isinstance(annopoints, list):
        raise DataError(file, f"{where}.annopoints", "expected [{'point': [...]}]")
    points = _get(annopoints[0], "point", file, f"{where}.annopoints[0]", []) if annopoints else []
    if not isinstance(points, list):
        raise DataError(file, f"{where}.annopoints[0].point", "expected a list of joints")
    for p, point in enumerate(points):
        at = f"{where}.annopoints[0].point[{p}]"
        joint_id = _as_int(_unwrap(_get(point, "id", file, at), file, f"{at}.id"), file, f"{at}.id")
        if joint_id not in PT17_TO_PT18:
            raise DataError(file, f"{at}.id", f"unknown PoseTrack17 joint id {joint_id} (expected 0..14)")
        target = PT17_TO_PT18[joint_id]
        if joints[target, 2] > 0:
            raise DataError(file, f"{at}.id", f"joint id {joint_id} appears twice in one person")
        x = _as_float(_unwrap(_get(point, "x", file, at), file, f"{at}.x"), file, f"{at}.x")
        y = _as_float(_unwrap(_get(point, "y", file, at), file, f"{at}.y"), file, f"{at}.y")
        # Every listed point is annotated (is_visible only tells occlusion), as PoseTrack18's v = 1.
        joints[target] = (x, y, 1.0)
    return PersonAnnotation(
        image_id=image_id,
        joints=joints,
        bbox=None,
        head_box=head_box,
        track_id=track_id,
        source=str(file),
        where=where,
    )


def parse_annolist(
    data: dict, file, policy: BadDataPolicy, first_fallback_id: int = 0
) -> tuple[list[FrameInfo], list[PersonAnnotation]]:
    """Frames and people of a PoseTrack17 annolist file."""
    annolist = _get(data, "annolist", file, "")
    if not isinstance(annolist, list):
        raise DataError(file, "annolist", f"expected a list of frames, got {type(annolist).__name__}")
    frames, people = [], []
    for i, entry in enumerate(annolist):
        where = f"annolist[{i}]"
        try:
            image = _unwrap(_get(entry, "image", file, where), file, f"{where}.image")
            name = _get(image, "name", file, f"{where}.image[0]")
            directory, number, width, extension = split_frame_file_name(name, file, f"{where}.image[0].name")
            rects = _get(entry, "annorect", file, where, [])
            if not isinstance(rects, list):
                raise DataError(file, f"{where}.annorect", "expected a list of people")
            sequence = os.path.basename(directory)
            # PoseTrack17 numbers frames from 1 (00000001.jpg); the id uses the 0-based index.
            image_id = make_image_id(sequence, number - 1 if width == 8 else number, first_fallback_id + i)
            frame_people = [
                _parse_annorect(rect, image_id, file, f"{where}.annorect[{r}]")
                for r, rect in enumerate(rects)
            ]
            labeled_default = any(p.num_labelled > 0 for p in frame_people)
            is_labeled = _as_bool(
                _unwrap(_get(entry, "is_labeled", file, where, labeled_default), file, f"{where}.is_labeled"),
                file,
                f"{where}.is_labeled",
            )
            frames.append(
                FrameInfo(
                    image_id=image_id,
                    file_name=name.replace("\\", "/"),
                    sequence=sequence,
                    sequence_dir=directory,
                    frame_number=number,
                    number_width=width,
                    extension=extension,
                    is_labeled=is_labeled,
                    nframes=None,
                    width=None,
                    height=None,
                    ignore_regions=_ignore_regions_annolist(entry, file, where),
                    source=str(file),
                    where=where,
                )
            )
        except DataError as error:
            policy.handle(error, "frame")
            continue
        people.extend(frame_people)
    return frames, people


# ---------------------------------------------------------------------------------------------
# detections


def parse_detections(data, file, policy: BadDataPolicy) -> list[Detection]:
    """Person boxes of a COCO-style detections file (a list, or an object with ``annotations``)."""
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]
    if not isinstance(data, list):
        raise DataError(
            file, None, f"expected a list of detections {{image_id, bbox, score}}, got {type(data).__name__}"
        )
    detections = []
    for i, det in enumerate(data):
        where = f"[{i}]"
        try:
            if _as_int(_get(det, "category_id", file, where, 1), file, f"{where}.category_id") != 1:
                continue
            detections.append(
                Detection(
                    image_id=_as_int(_get(det, "image_id", file, where), file, f"{where}.image_id"),
                    bbox=_as_box(_get(det, "bbox", file, where), file, f"{where}.bbox"),
                    score=_as_float(_get(det, "score", file, where), file, f"{where}.score"),
                    where=where,
                )
            )
        except DataError as error:
            policy.handle(error, "detection")
    return detections
