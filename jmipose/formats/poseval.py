"""PoseTrack files as the evaluator reads them: the frames and people poseval (the PoseTrack
benchmark's evaluator) sees once it has converted a file to its PoseTrack17 layout.

- Joints: its 15 joints by name (:data:`jmipose.joints.POSEVAL_JOINTS`); the ears and unknown names
  are dropped; a file's ``categories[0].keypoints`` must name all 15 (15 or 17 names, one category).
- A COCO-style keypoint is absent only when ``x == 0 and y == 0 and v == 0``; any other keypoint is
  present, whatever its visibility (poseval keeps a ``v = 0`` point with coordinates).
- Per-joint scores come from ``annotations[].scores`` (in keypoint order); an empty or missing list
  means "no scores", which poseval replaces by -9999 with a warning.
- Head box: ``bbox_head`` ``[x, y, w, h]`` becomes ``(x1, y1, x2, y2) = (x, y, x + w, y + h)``.
- Ignore regions: ``ignore_regions_x/_y`` polygons (PoseTrack18) or ``ignore_regions[].point``
  (PoseTrack17).
- A ground-truth frame is evaluated iff it has at least one annotated person (poseval drops frames
  with an empty ``annorect``); ``is_labeled`` frames without people are therefore not scored.

Every problem is a :class:`~jmipose.formats.errors.DataError` handed to a
:class:`~jmipose.formats.errors.BadDataPolicy`: the evaluator's pre-check collects them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jmipose.formats.errors import BadDataPolicy, DataError
from jmipose.formats.fields import as_float, as_int, as_list, as_numbers, get, load_json, unwrap
from jmipose.formats.posetrack import (
    category_keypoints, coco_lists, head_corners, ignore_regions_annolist, ignore_regions_coco, layout_of, point_xy,
)
from jmipose.joints import KEYPOINT_NAMES, NUM_POSEVAL_JOINTS, POSEVAL_JOINTS

MISSING_SCORE = -9999.0  # poseval's MIN_SCORE, used when a prediction carries no per-joint score


@dataclass
class Person:
    """One person of one frame: poseval joint id -> (x, y, score or None); head box or None."""

    points: dict[int, tuple[float, float, float | None]]
    head_box: tuple[float, float, float, float] | None = None
    where: str = ""  # for messages: file, image and annotation index


@dataclass
class Frame:
    name: str                      # image file name (for messages)
    image_id: Any                  # PoseTrack18 image id, or the frame index for annolist files
    entry: dict                    # the raw image entry (frame filters read e.g. "hard" labels)
    people: list[Person] = field(default_factory=list)
    ignore_regions: list[np.ndarray] = field(default_factory=list)  # each [K, 2]
    num_annotations: int = 0       # people listed in the file, before any cleanup


@dataclass
class Sequence:
    name: str
    path: Path
    layout: str                    # "coco" (PoseTrack18/21), "annolist" (PoseTrack17) or "unknown"
    frames: list[Frame]

    @property
    def scored_frames(self) -> list[int]:
        """Indices of frames poseval evaluates: those with at least one annotated person."""
        return [i for i, f in enumerate(self.frames) if f.num_annotations > 0]


def sequence_name(path: Path) -> str:
    # poseval names a sequence by its file name up to the first dot.
    return Path(path).name.split(".")[0]


def read_sequence(path, *, want_scores: bool, policy: BadDataPolicy, predictions: bool = False) -> Sequence:
    """One per-sequence file (either layout) as poseval reads it; each problem goes to ``policy``
    (a collecting policy lists them all). ``want_scores``: a person without per-joint scores is a
    problem; ``predictions``: the file holds predictions (a person on an image it does not list is
    then a problem, where poseval would silently drop it). A file that is not a PoseTrack file at all
    has the layout ``"unreadable"`` and no frames."""
    path = Path(path)
    try:
        data = load_json(path)
        layout = layout_of(data, path)
    except DataError as error:
        policy.handle(error, "file")
        return Sequence(sequence_name(path), path, "unreadable", [])
    try:
        if layout == "annolist":
            frames = _poseval_annolist(data, path, want_scores, policy)
        else:
            frames = _poseval_coco(data, path, want_scores, policy, predictions)
    except DataError as error:   # the file's structure (its lists, its categories)
        policy.handle(error, "file")
        frames = []
    return Sequence(sequence_name(path), path, layout, frames)


def _poseval_table(data: dict, file) -> list[int | None]:
    """Column k of ``keypoints`` -> poseval joint id (None: not scored), as poseval's converter maps
    ``categories[0].keypoints`` (15 or 17 names of which 15 must be its joints; one category)."""
    categories = data.get("categories")
    if categories is None:
        return [POSEVAL_JOINTS.index(n) if n in POSEVAL_JOINTS else None for n in KEYPOINT_NAMES]
    names = category_keypoints(data, file)
    if not isinstance(categories, list) or len(categories) != 1 or names is None:
        raise DataError(file, "categories", "expected one person category with a 'keypoints' name list "
                                            "(poseval's converter asserts exactly one)")
    if len(names) not in (15, 17):
        raise DataError(file, "categories[0].keypoints", f"expected 15 or 17 names, got {len(names)}")
    table = [POSEVAL_JOINTS.index(n) if n in POSEVAL_JOINTS else None for n in names]
    missing = [n for i, n in enumerate(POSEVAL_JOINTS) if i not in table]
    if missing:
        raise DataError(file, "categories[0].keypoints", f"lacks {missing}")
    return table


def _poseval_coco(data: dict, file: Path, want_scores: bool, policy: BadDataPolicy,
                  predictions: bool) -> list[Frame]:
    images, annotations = coco_lists(data, file)
    table = _poseval_table(data, file)
    frames, by_id = [], {}
    for i, image in enumerate(images):
        where = f"images[{i}]"
        try:
            image_id = as_int(get(image, "id", file, where), file, f"{where}.id")
            if image_id in by_id:
                raise DataError(file, f"{where}.id", f"image id {image_id} appears twice in 'images'")
        except DataError as error:
            policy.handle(error, "frame")
            continue
        frame = by_id[image_id] = Frame(str(image.get("file_name", where)), image_id, image)
        frames.append(frame)
        try:
            frame.ignore_regions = ignore_regions_coco(image, file, where)
        except DataError as error:
            policy.handle(error, "frame")
    for a, ann in enumerate(annotations):
        where = f"annotations[{a}]"
        try:
            image_id = as_int(get(ann, "image_id", file, where), file, f"{where}.image_id")
            frame = by_id.get(image_id)
            if frame is None:
                # A ground-truth person on an image the file does not list: poseval never sees it.  A
                # prediction there is a mistake that would silently cost recall: refuse it.
                if predictions:
                    raise DataError(file, f"{where}.image_id", f"{image_id} names no image in 'images'")
                continue
            frame.num_annotations += 1
            frame.people.append(_poseval_coco_person(ann, table, file, where, want_scores,
                                                     f"{file}: {frame.name} {where}"))
        except DataError as error:
            policy.handle(error, "person")
    return frames


def _poseval_coco_person(ann: dict, table: list[int | None], file, where: str, want_scores: bool,
                         label: str) -> Person:
    keypoints = as_numbers(get(ann, "keypoints", file, where), file, f"{where}.keypoints",
                           length=3 * len(table)).tolist()
    scores = ann.get("scores")
    if scores:  # poseval: an empty or missing list means "no scores"
        if isinstance(scores, list) and len(scores) != len(table):
            raise DataError(file, f"{where}.scores", f"must list {len(table)} per-joint scores, got {len(scores)}")
        scores = as_numbers(scores, file, f"{where}.scores", length=len(table)).tolist()
    else:
        scores = None
        if want_scores:
            raise DataError(file, f"{where}.scores", "no per-joint scores ('scores' missing or empty)")
    points: dict[int, tuple[float, float, float | None]] = {}
    for k, joint in enumerate(table):
        x, y, v = keypoints[3 * k: 3 * k + 3]
        if joint is None or (x == 0 and y == 0 and v == 0):
            continue
        points.setdefault(joint, (x, y, None if scores is None else scores[k]))
    head = ann.get("bbox_head")
    head_box = None
    if head is not None:
        x, y, w, h = (float(v) for v in as_numbers(head, file, f"{where}.bbox_head", length=4))
        head_box = (x, y, x + w, y + h)
    return Person(points, head_box, label)


def _poseval_annolist(data: dict, file: Path, want_scores: bool, policy: BadDataPolicy) -> list[Frame]:
    annolist = as_list(get(data, "annolist", file, ""), file, "annolist", "a list of frames")
    frames = []
    for i, item in enumerate(annolist):
        where = f"annolist[{i}]"
        if not isinstance(item, dict):
            policy.handle(DataError(file, where, f"expected a JSON object, got {type(item).__name__}"), "frame")
            continue
        image = item.get("image")
        image = image[0] if isinstance(image, list) and image else image
        name = str(image.get("name", where)) if isinstance(image, dict) else where
        frame = Frame(name, i, item)
        frames.append(frame)
        try:
            frame.ignore_regions = ignore_regions_annolist(item, file, where)
        except DataError as error:
            policy.handle(error, "frame")
        rects = item.get("annorect") or []
        if not isinstance(rects, list):
            policy.handle(DataError(file, f"{where}.annorect", "expected a list of people"), "frame")
            rects = []
        frame.num_annotations = len(rects)
        for r, rect in enumerate(rects):
            try:
                person = _poseval_annorect(rect, file, f"{where}.annorect[{r}]", want_scores, f"{file}: {name}")
            except DataError as error:
                policy.handle(error, "person")
                continue
            if person is not None:
                frame.people.append(person)
    return frames


def _poseval_annorect(rect, file, where: str, want_scores: bool, label: str) -> Person | None:
    annopoints = get(rect, "annopoints", file, where, None)
    # poseval keeps a rect only when annopoints[0] has a "point" key.
    if not (isinstance(annopoints, list) and annopoints and isinstance(annopoints[0], dict)
            and "point" in annopoints[0]):
        return None
    points: dict[int, tuple[float, float, float | None]] = {}
    missing_score = False
    listed = as_list(annopoints[0]["point"] or [], file, f"{where}.annopoints[0].point", "a list of joints")
    for p, point in enumerate(listed):
        at = f"{where}.annopoints[0].point[{p}]"
        joint = as_int(unwrap(get(point, "id", file, at), file, f"{at}.id"), file, f"{at}.id")
        x, y = point_xy(point, file, at)
        score = unwrap(point.get("score"), file, f"{at}.score")
        if score is not None:
            score = as_float(score, file, f"{at}.score")
        missing_score |= score is None
        if 0 <= joint < NUM_POSEVAL_JOINTS:
            points.setdefault(joint, (x, y, score))
    if missing_score and want_scores:
        raise DataError(file, f"{where}.annopoints[0].point", "no per-joint scores (a point has no 'score')")
    head_box = head_corners(rect, file, where) if all(k in rect for k in ("x1", "y1", "x2", "y2")) else None
    return Person(points, head_box, f"{label} {where}")
