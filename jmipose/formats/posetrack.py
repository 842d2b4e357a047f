"""PoseTrack annotation and prediction files: the image-id rule, reading and writing.

- PoseTrack18/21: COCO-style ``{"images", "annotations", "categories"}``, one file per sequence or
  several sequences merged; PoseTrack21 adds ``person_id`` to each annotation.
- PoseTrack17: ``{"annolist": [...]}`` with one entry per frame (``image[0].name``, ``imgnum``,
  ``is_labeled``, ``ignore_regions``, ``annorect`` people with a head box ``x1/y1/x2/y2``,
  ``track_id`` and ``annopoints[0].point`` joints ``{id, x, y, is_visible}``); values are usually
  one-element lists. PT17 joint ids are poseval's (:data:`jmipose.joints.POSEVAL_JOINTS`).

Two readings of one file, for two consumers, built from the same pieces (layout, lists, categories,
ignore regions, points; :mod:`jmipose.formats.fields` for every value):

- :func:`read_annotation_file` here (the training loader): frames and people in the 17-joint
  PoseTrack18 order with ``(x, y, v)`` rows where ``v > 0`` means labelled (PoseTrack uses 1 for every
  annotated joint, visible or not) and unlabelled rows are all zeros; every field it uses is checked.
- :func:`jmipose.formats.poseval.read_sequence` (the evaluator): what poseval sees.

Every problem is a :class:`~jmipose.formats.errors.DataError` naming the file and the field; a
:class:`~jmipose.formats.errors.BadDataPolicy` decides whether it is raised, skipped or collected.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np

from jmipose.formats.errors import BadDataPolicy, DataError
from jmipose.formats.fields import as_bool, as_box, as_float, as_int, as_list, as_numbers, get, load_json, unwrap
from jmipose.joints import JOINT_ALIASES, KEYPOINT_NAMES, NUM_JOINTS, POSEVAL_JOINTS, PT17_TO_PT18, SKELETON

# ---------------------------------------------------------------------------------------------
# the image-id rule

# PoseTrack18 image ids are 1SSSSSSFFFF: 10**10 + six sequence digits x 10**4 + four frame digits, as
# the annotation files write them (the mpii excerpts in tests' shared data; PoseTrack21's format
# documentation gives 000001_bonn_train's first frame as 10000010000). poseval's posetrack18_id2fname.py
# writes a leading 2 for bonn and 3 for mpiinew sequences instead: that is its PoseTrack17 -> 18
# converter's convention, which rebuilds ids from file names and never reads a file's ids, and its
# evaluation matches frames by position, not by id. We write the annotation files' 1.
IMAGE_ID_BASE = 10_000_000_000
SEQUENCE_NUMBERS = 1_000_000        # six digits
FRAME_NUMBERS = 10_000              # four digits


def posetrack_image_id(sequence: int, frame: int) -> int | None:
    """The PoseTrack18 image id of frame ``frame`` of sequence number ``sequence``; None when either
    does not fit its digits (a sequence of more than six, a frame of more than four)."""
    if 0 <= sequence < SEQUENCE_NUMBERS and 0 <= frame < FRAME_NUMBERS:
        return IMAGE_ID_BASE + sequence * FRAME_NUMBERS + frame
    return None


def split_image_id(image_id: int) -> tuple[int, int] | None:
    """(sequence number, frame) of a PoseTrack18 image id; None for a number outside
    [10**10, 2 x 10**10) (a plain frame number below, no PoseTrack id above)."""
    if IMAGE_ID_BASE <= image_id < 2 * IMAGE_ID_BASE:
        return divmod(image_id - IMAGE_ID_BASE, FRAME_NUMBERS)
    return None


def posetrack_sequence(name: str, *, loose: bool = False) -> int | None:
    """The sequence number in a PoseTrack sequence name: six digits and ``_`` (``003418_mpii_test`` ->
    3418), None for any other name. ``loose``: the looser PoseTrack17 folder names too, one to six
    digits followed by ``_`` or nothing (``24575_mpii``)."""
    pattern = r"(\d{1,6})(?:_.*)?" if loose else r"(\d{6})_.*"
    match = re.fullmatch(pattern, str(name), flags=re.DOTALL)
    return int(match.group(1)) if match else None


def sequence_image_id(name: str, frame: int, sequence: int | None = None) -> int:
    """The image id of frame ``frame`` of a video: the PoseTrack18 id when the video is a PoseTrack
    sequence (``sequence``, or a name such as ``000001_mpiinew_test``) and both numbers fit their
    digits, else the frame number itself."""
    sequence = posetrack_sequence(name) if sequence is None else sequence
    image_id = None if sequence is None else posetrack_image_id(sequence, frame)
    return frame if image_id is None else image_id


# ---------------------------------------------------------------------------------------------
# the training reading


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


def layout_of(data, file) -> str:
    """``"coco"`` (PoseTrack18/21) or ``"annolist"`` (PoseTrack17); any other content is refused."""
    if isinstance(data, dict) and "annolist" in data:
        return "annolist"
    if isinstance(data, dict) and "images" in data:
        return "coco"
    keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
    raise DataError(file, None, "not a PoseTrack annotation file: neither a PoseTrack18/21 file ('images', "
                                f"'annotations') nor a PoseTrack17 file ('annolist'); got {keys}")


@dataclass
class AnnotationFile:
    """What :func:`read_annotation_file` found in one file."""

    layout: str                    # "coco" (PoseTrack18/21) or "annolist" (PoseTrack17)
    frames: list[FrameInfo]
    people: list[PersonAnnotation]
    entries: int                   # frame entries in the file (``images`` / ``annolist``), bad ones included


def read_annotation_file(path, policy: BadDataPolicy, first_fallback_id: int = 0) -> AnnotationFile:
    """The frames and people of one annotation file (either layout); bad entries go through
    ``policy``, an unusable file raises. ``first_fallback_id``: the id of the first entry of a
    PoseTrack17 file, counted on per entry, for frames whose folder name carries no sequence number."""
    data = load_json(path)
    layout = layout_of(data, path)
    if layout == "annolist":
        frames, people = parse_annolist(data, path, policy, first_fallback_id)
    else:
        frames, people = parse_coco_style(data, path, policy)
    entries = data[layout if layout == "annolist" else "images"]
    return AnnotationFile(layout, frames, people, len(entries) if isinstance(entries, list) else 0)


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


def category_keypoints(data: dict, file) -> list | None:
    """The keypoint names of a COCO-style file's person category (``categories[0].keypoints``), None
    when the file gives none."""
    categories = data.get("categories")
    if not categories:
        return None
    if not isinstance(categories, list) or not isinstance(categories[0], dict):
        raise DataError(file, "categories", "expected a list of category objects")
    names = categories[0].get("keypoints")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise DataError(file, "categories[0].keypoints", "expected a list of joint names")
    return names


def keypoint_mapping(data: dict, file) -> list[int]:
    """Index in the PT18 order of each keypoint slot of the file (from ``categories[0].keypoints``)."""
    names = category_keypoints(data, file)
    if names is None:
        return list(range(NUM_JOINTS))
    mapping = []
    for i, name in enumerate(names):
        canonical = JOINT_ALIASES.get(name, name)
        if canonical not in KEYPOINT_NAMES:
            raise DataError(
                file,
                f"categories[0].keypoints[{i}]",
                f"unknown joint {name!r}; expected names of the PoseTrack18 order {KEYPOINT_NAMES}",
            )
        mapping.append(KEYPOINT_NAMES.index(canonical))
    if len(set(mapping)) != len(mapping):
        raise DataError(file, "categories[0].keypoints", f"repeated joint names in {names}")
    return mapping


def coco_lists(data: dict, file) -> tuple[list, list]:
    """The ``images`` and ``annotations`` lists of a COCO-style file (``annotations`` may be absent)."""
    images = get(data, "images", file, "")
    annotations = get(data, "annotations", file, "", [])
    for key, value in (("images", images), ("annotations", annotations)):
        as_list(value, file, key)
    return images, annotations


def ignore_regions_coco(image: dict, file, where) -> list[np.ndarray]:
    """The ``ignore_regions_x`` / ``_y`` polygons of an image entry, [K, 2] float64 each."""
    xs, ys = image.get("ignore_regions_x"), image.get("ignore_regions_y")
    if xs is None and ys is None:
        return []
    if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
        raise DataError(
            file, f"{where}.ignore_regions_x/y", "expected two lists with one polygon each per region"
        )
    regions = []
    for k, (px, py) in enumerate(zip(xs, ys)):
        x = as_numbers(px, file, f"{where}.ignore_regions_x[{k}]")
        y = as_numbers(py, file, f"{where}.ignore_regions_y[{k}]", length=len(x))
        regions.append(np.stack([x, y], axis=1))
    return regions


def ignore_regions_annolist(entry, file, where) -> list[np.ndarray]:
    """The ``ignore_regions[].point`` polygons of a PoseTrack17 frame, [K, 2] float64 each."""
    regions = get(entry, "ignore_regions", file, where, [])
    if not isinstance(regions, list):
        raise DataError(file, f"{where}.ignore_regions", "expected a list of {'point': [...]} regions")
    polygons = []
    for k, region in enumerate(regions):
        points = get(region, "point", file, f"{where}.ignore_regions[{k}]")
        if not isinstance(points, list):
            raise DataError(file, f"{where}.ignore_regions[{k}].point", "expected a list of points")
        coords = [point_xy(point, file, f"{where}.ignore_regions[{k}].point[{p}]")
                  for p, point in enumerate(points)]
        polygons.append(np.asarray(coords, dtype=np.float64).reshape(-1, 2))
    return polygons


def point_xy(point, file, at) -> tuple[float, float]:
    """The finite ``x``, ``y`` of a PoseTrack17 point (one-element lists or scalars)."""
    return tuple(as_float(unwrap(get(point, axis, file, at), file, f"{at}.{axis}"), file, f"{at}.{axis}")
                 for axis in ("x", "y"))


def _parse_coco_image(image, file, where) -> FrameInfo:
    image_id = as_int(get(image, "id", file, where), file, f"{where}.id")
    file_name = get(image, "file_name", file, where)
    directory, number, width, extension = split_frame_file_name(file_name, file, f"{where}.file_name")
    nframes = get(image, "nframes", file, where, None)
    if nframes is not None:
        nframes = as_int(nframes, file, f"{where}.nframes")
        if nframes <= 0:
            raise DataError(file, f"{where}.nframes", f"expected a positive frame count, got {nframes}")
    size = []
    for key in ("width", "height"):
        value = get(image, key, file, where, None)
        if value is not None:
            value = as_int(value, file, f"{where}.{key}")
            if value <= 0:
                raise DataError(file, f"{where}.{key}", f"expected a positive image size, got {value}")
        size.append(value)
    mask_file = get(image, "mask_file", file, where, None)
    vid_id = get(image, "vid_id", file, where, None)
    frame_id = get(image, "frame_id", file, where, None)
    if frame_id is not None:
        frame_id = as_int(frame_id, file, f"{where}.frame_id")
    return FrameInfo(
        image_id=image_id,
        file_name=file_name.replace("\\", "/"),
        sequence=os.path.basename(directory),
        sequence_dir=directory,
        frame_number=number,
        number_width=width,
        extension=extension,
        is_labeled=as_bool(get(image, "is_labeled", file, where, True), file, f"{where}.is_labeled"),
        nframes=nframes,
        width=size[0],
        height=size[1],
        ignore_regions=[r.astype(np.float32) for r in ignore_regions_coco(image, file, where)],
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
    box = as_numbers(value, file, where, length=4)
    if (box[2] == 0 or box[3] == 0) and box[2] >= 0 and box[3] >= 0:
        points = joints[joints[:, 2] > 0, :2]
        spread = points.max(axis=0) - points.min(axis=0) if len(points) else np.zeros(2)
        if (box[2] == 0 and spread[0] == 0) or (box[3] == 0 and spread[1] == 0):
            return None
    return as_box(box.tolist(), file, where).astype(np.float32)


def _parse_coco_person(ann, mapping, file, where) -> PersonAnnotation | None:
    category = get(ann, "category_id", file, where, 1)
    if as_int(category, file, f"{where}.category_id") != 1:
        return None  # not a person
    image_id = as_int(get(ann, "image_id", file, where), file, f"{where}.image_id")
    keypoints = as_numbers(
        get(ann, "keypoints", file, where), file, f"{where}.keypoints", length=3 * len(mapping)
    )
    joints = _joints_from_slots(keypoints, mapping, file, where)
    bbox = get(ann, "bbox", file, where, None)
    if bbox is not None:
        bbox = _person_box(bbox, joints, file, f"{where}.bbox")
    head = get(ann, "bbox_head", file, where, None)
    if head is not None:  # only the evaluator reads head boxes (sizes, as poseval): kept as given
        head = as_numbers(head, file, f"{where}.bbox_head", length=4).astype(np.float32)
    ann_id = get(ann, "id", file, where, None)
    return PersonAnnotation(
        image_id=image_id,
        joints=joints,
        bbox=bbox,
        head_box=head,
        track_id=as_int(get(ann, "track_id", file, where, -1), file, f"{where}.track_id"),
        person_id=as_int(get(ann, "person_id", file, where, -1), file, f"{where}.person_id"),
        annotation_id=None if ann_id is None else as_int(ann_id, file, f"{where}.id"),
        source=str(file),
        where=where,
    )


def parse_coco_style(
    data: dict, file, policy: BadDataPolicy
) -> tuple[list[FrameInfo], list[PersonAnnotation]]:
    """Frames and people of a PoseTrack18/21 file; bad entries go through ``policy``."""
    images, annotations = coco_lists(data, file)
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


def _parse_annorect(rect, image_id, file, where) -> PersonAnnotation:
    head_values = [rect.get(key) for key in ("x1", "y1", "x2", "y2")] if isinstance(rect, dict) else [None]
    head_box = None
    if any(v is not None for v in head_values):
        x1, y1, x2, y2 = head_corners(rect, file, where)
        head_box = np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float32)
    track_id = as_int(
        unwrap(get(rect, "track_id", file, where, -1), file, f"{where}.track_id"), file, f"{where}.track_id"
    )
    joints = np.zeros((NUM_JOINTS, 3), dtype=np.float32)
    annopoints = get(rect, "annopoints", file, where, [])
    if isinstance(annopoints, dict):
        annopoints = [annopoints]
    if not isinstance(annopoints, list):
        raise DataError(file, f"{where}.annopoints", "expected [{'point': [...]}]")
    points = get(annopoints[0], "point", file, f"{where}.annopoints[0]", []) if annopoints else []
    if not isinstance(points, list):
        raise DataError(file, f"{where}.annopoints[0].point", "expected a list of joints")
    for p, point in enumerate(points):
        at = f"{where}.annopoints[0].point[{p}]"
        joint_id = as_int(unwrap(get(point, "id", file, at), file, f"{at}.id"), file, f"{at}.id")
        if joint_id not in PT17_TO_PT18:
            raise DataError(file, f"{at}.id", f"unknown PoseTrack17 joint id {joint_id} (expected 0..14)")
        target = PT17_TO_PT18[joint_id]
        if joints[target, 2] > 0:
            raise DataError(file, f"{at}.id", f"joint id {joint_id} appears twice in one person")
        # Every listed point is annotated (is_visible only tells occlusion), as PoseTrack18's v = 1.
        joints[target] = (*point_xy(point, file, at), 1.0)
    return PersonAnnotation(
        image_id=image_id,
        joints=joints,
        bbox=None,
        head_box=head_box,
        track_id=track_id,
        source=str(file),
        where=where,
    )


def head_corners(rect, file, where) -> tuple[float, float, float, float]:
    """The finite head box corners ``x1, y1, x2, y2`` of a PoseTrack17 person."""
    return tuple(as_float(unwrap(get(rect, k, file, where), file, f"{where}.{k}"), file, f"{where}.{k}")
                 for k in ("x1", "y1", "x2", "y2"))


def _annolist_frame_name(entry, file, where) -> str:
    image = unwrap(get(entry, "image", file, where), file, f"{where}.image")
    return get(image, "name", file, f"{where}.image[0]")


def parse_annolist(
    data: dict, file, policy: BadDataPolicy, first_fallback_id: int = 0
) -> tuple[list[FrameInfo], list[PersonAnnotation]]:
    """Frames and people of a PoseTrack17 annolist file."""
    annolist = as_list(get(data, "annolist", file, ""), file, "annolist", "a list of frames")
    frames, people = [], []
    for i, entry in enumerate(annolist):
        where = f"annolist[{i}]"
        try:
            name = _annolist_frame_name(entry, file, where)
            directory, number, width, extension = split_frame_file_name(name, file, f"{where}.image[0].name")
            rects = get(entry, "annorect", file, where, [])
            if not isinstance(rects, list):
                raise DataError(file, f"{where}.annorect", "expected a list of people")
            sequence = os.path.basename(directory)
            # PoseTrack17 numbers frames from 1 (00000001.jpg); the id uses the 0-based index.
            number_in_sequence = posetrack_sequence(sequence, loose=True)
            image_id = None if number_in_sequence is None else posetrack_image_id(
                number_in_sequence, number - 1 if width == 8 else number)
            image_id = first_fallback_id + i if image_id is None else image_id
            frame_people = [
                _parse_annorect(rect, image_id, file, f"{where}.annorect[{r}]")
                for r, rect in enumerate(rects)
            ]
            labeled_default = any(p.num_labelled > 0 for p in frame_people)
            is_labeled = as_bool(
                unwrap(get(entry, "is_labeled", file, where, labeled_default), file, f"{where}.is_labeled"),
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
                    ignore_regions=[r.astype(np.float32) for r in ignore_regions_annolist(entry, file, where)],
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
# writing

# The person category of PoseTrack18 files, as the annotation files write it (1-based skeleton).
CATEGORY: dict = {
    "supercategory": "person", "id": 1, "name": "person", "keypoints": list(KEYPOINT_NAMES),
    "skeleton": [[a + 1, b + 1] for a, b in SKELETON],
}


def posetrack_document(images: list[dict], annotations: list[dict]) -> dict:
    """A PoseTrack18 file: ``images``, ``annotations`` and the person category."""
    return {"images": images, "annotations": annotations, "categories": [CATEGORY]}


def prediction_annotation(image_id: int, track_id: int, keypoints, joint_scores, box_score: float,
                          person_score: float, **extra) -> dict:
    """One predicted person of a PoseTrack18 prediction file: keypoints [17, 2] with visibility 1,
    per-joint score = joint score x box score (the official JMI / DCPose convention), the person
    score, and the keypoints' extent as ``bbox``; ``extra`` fields follow (e.g. ``person_box``)."""
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(NUM_JOINTS, 2)
    xs, ys = keypoints[:, 0], keypoints[:, 1]
    return {"image_id": int(image_id), "track_id": int(track_id), "category_id": 1,
            "keypoints": [v for x, y in keypoints for v in (float(x), float(y), 1)],
            "scores": [float(s) * float(box_score) for s in joint_scores],
            "score": float(person_score),
            "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())],
            **extra}


def prediction_annorect(track_id: int, keypoints, joint_scores, box_score: float, person_score: float) -> dict:
    """One predicted person of a PoseTrack17 prediction file (poseval's 15 joints, one-element lists)."""
    points = []
    for pose_id, name in enumerate(POSEVAL_JOINTS):
        k = KEYPOINT_NAMES.index(name)
        x, y = keypoints[k]
        points.append({"id": [pose_id], "x": [float(x)], "y": [float(y)],
                       "score": [float(joint_scores[k]) * float(box_score)]})
    return {"annopoints": [{"point": points}], "score": [float(person_score)], "track_id": [int(track_id)]}
