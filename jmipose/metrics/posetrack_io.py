"""Reading PoseTrack ground truth and predictions the way poseval reads them.

poseval (the official PoseTrack evaluator) converts PoseTrack18/21 COCO-style files to the
PoseTrack17 "annolist" layout and scores 15 joints; this module produces the same per-frame people
from either layout:

- Joints: the 17 PoseTrack18 names map to poseval's 15 ids by name (``jmipose.joints.POSEVAL_JOINTS``);
  the ears (and any unknown name) are dropped.
- A COCO-style keypoint with ``x == 0 and y == 0 and v == 0`` is "not annotated" (absent); any other
  keypoint is present, whatever its visibility (poseval keeps a v=0 point with coordinates).
- Per-joint scores come from ``annotations[].scores`` (17 numbers, in keypoint order); an empty or
  missing list means "no scores", which poseval replaces by -9999 with a warning.
- Head box: ``bbox_head`` ``[x, y, w, h]`` becomes ``(x1, y1, x2, y2) = (x, y, x + w, y + h)``.
- Ignore regions: ``ignore_regions_x/_y`` polygons (PoseTrack18) or ``ignore_regions[].point``
  (PoseTrack17).
- A ground-truth frame is evaluated iff it has at least one annotated person (poseval drops frames with
  an empty ``annorect``); ``is_labeled`` frames without people are therefore not scored.

Prediction frames are matched to ground-truth frames by image ``id`` (then ``file_name``) when both
files are PoseTrack18-style; otherwise by position, as poseval always does (equal frame counts).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jmipose.joints import KEYPOINT_NAMES as _PT18_DEFAULT_KEYPOINTS
from jmipose.joints import NUM_POSEVAL_JOINTS, POSEVAL_JOINTS

MISSING_SCORE = -9999.0  # poseval's MIN_SCORE, used when a prediction carries no per-joint score


class PredictionCheckError(ValueError):
    """Prediction files that cannot be evaluated; ``problems`` lists every reason found."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = "\n  ".join(problems[:25])
        more = f"\n  ... and {len(problems) - 25} more" if len(problems) > 25 else ""
        super().__init__(f"{len(problems)} problem(s) in the prediction files:\n  {shown}{more}")


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
    layout: str                    # "coco" (PoseTrack18/21) or "annolist" (PoseTrack17)
    frames: list[Frame]

    @property
    def scored_frames(self) -> list[int]:
        """Indices of frames poseval evaluates: those with at least one annotated person."""
        return [i for i, f in enumerate(self.frames) if f.num_annotations > 0]


def _is_number(value: Any) -> bool:
    """A JSON number a float holds (an integer literal such as 1e400 written out in digits does not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not isinstance(value, int) or abs(value) < 2 ** 1023


def _first(value: Any) -> Any:
    """poseval stores scalars as one-element lists (``"x": [394]``); accept both."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid JSON here (nested too deeply to parse)") from None


def sequence_name(path: Path) -> str:
    # poseval names a sequence by its file name up to the first dot.
    return path.name.split(".")[0]


def _keypoint_table(data: dict, where: str, problems: list[str]) -> list[int | None]:
    """Column k of ``keypoints`` -> poseval joint id (None: not scored), from ``categories``."""
    names: Any = _PT18_DEFAULT_KEYPOINTS
    cats = data.get("categories")
    if cats is not None:
        if (not isinstance(cats, list) or len(cats) != 1 or not isinstance(cats[0], dict)
                or not isinstance(cats[0].get("keypoints"), list)):
            problems.append(f"{where}: 'categories' must be a list with one person category that has "
                            f"a 'keypoints' name list")
            return []
        names = cats[0]["keypoints"]
        if len(names) not in (15, 17):
            problems.append(f"{where}: categories[0].keypoints has {len(names)} names, expected 15 or 17")
            return []
    table = [POSEVAL_JOINTS.index(n) if n in POSEVAL_JOINTS else None for n in names]
    missing = [n for i, n in enumerate(POSEVAL_JOINTS) if i not in table]
    if missing:
        problems.append(f"{where}: categories[0].keypoints lacks {missing}")
        return []
    return table


def _coco_person(ann: dict, table: list[int | None], where: str, problems: list[str],
                 want_scores: bool) -> Person | None:
    kps = ann.get("keypoints")
    if not isinstance(kps, list) or len(kps) != 3 * len(table):
        got = f"{len(kps)} values" if isinstance(kps, list) else type(kps).__name__
        problems.append(f"{where}: 'keypoints' must be a list of {3 * len(table)} numbers, got {got}")
        return None
    if not all(_is_number(v) and math.isfinite(v) for v in kps):
        problems.append(f"{where}: 'keypoints' holds a non-number or non-finite value")
        return None
    scores = ann.get("scores")
    if scores:  # poseval: an empty or missing list means "no scores"
        if not isinstance(scores, list) or len(scores) != len(table):
            problems.append(f"{where}: 'scores' must list {len(table)} per-joint scores, got "
                            f"{len(scores) if isinstance(scores, list) else type(scores).__name__}")
            return None
        if not all(_is_number(s) and math.isfinite(s) for s in scores):
            problems.append(f"{where}: 'scores' holds a non-number or non-finite value")
            return None
    elif want_scores:
        problems.append(f"{where}: no per-joint scores ('scores' missing or empty)")
    points: dict[int, tuple[float, float, float | None]] = {}
    for k, joint in enumerate(table):
        x, y, v = kps[3 * k], kps[3 * k + 1], kps[3 * k + 2]
        if joint is None or (x == 0 and y == 0 and v == 0):
            continue
        points.setdefault(joint, (float(x), float(y), float(scores[k]) if scores else None))
    head = ann.get("bbox_head")
    head_box = None
    if head is not None:
        if not (isinstance(head, list) and len(head) == 4 and all(_is_number(v) for v in head)):
            problems.append(f"{where}: 'bbox_head' must be [x, y, w, h]")
            return None
        x, y, w, h = head
        head_box = (x, y, x + w, y + h)
    return Person(points, head_box, where)


def _coco_ignore_regions(image: dict, where: str, problems: list[str]) -> list[np.ndarray]:
    xs, ys = image.get("ignore_regions_x"), image.get("ignore_regions_y")
    if xs is None or ys is None:
        return []
    if not (isinstance(xs, list) and isinstance(ys, list) and len(xs) == len(ys)):
        problems.append(f"{where}: ignore_regions_x/_y must be two lists of the same length")
        return []
    regions = []
    for r, (rx, ry) in enumerate(zip(xs, ys)):
        if not (isinstance(rx, list) and isinstance(ry, list) and len(rx) == len(ry)
                and all(_is_number(v) for v in rx + ry)):
            problems.append(f"{where}: ignore region {r} needs equally long number lists in x and y")
            continue
        regions.append(np.array([rx, ry], dtype=np.float64).T.reshape(-1, 2))
    return regions


def _parse_coco(data: dict, path: Path, want_scores: bool, problems: list[str],
                predictions: bool = False) -> list[Frame]:
    images, anns = data.get("images"), data.get("annotations", [])
    if not isinstance(images, list) or not isinstance(anns, list):
        problems.append(f"{path}: 'images' and 'annotations' must be lists")
        return []
    table = _keypoint_table(data, str(path), problems)
    if not table:
        return []
    frames, by_id = [], {}
    for i, image in enumerate(images):
        if not isinstance(image, dict) or "id" not in image:
            problems.append(f"{path}: images[{i}] has no 'id'")
            continue
        if not isinstance(image["id"], int) or isinstance(image["id"], bool):
            problems.append(f"{path}: images[{i}].id must be an integer, got {image['id']!r}")
            continue
        name = str(image.get("file_name", f"images[{i}]"))
        frame = Frame(name, image["id"], image,
                      ignore_regions=_coco_ignore_regions(image, f"{path}: {name}", problems))
        if image["id"] in by_id:
            problems.append(f"{path}: image id {image['id']} appears twice in 'images'")
            continue
        by_id[image["id"]] = frame
        frames.append(frame)
    for a, ann in enumerate(anns):
        if not isinstance(ann, dict) or "image_id" not in ann:
            problems.append(f"{path}: annotations[{a}] has no 'image_id'")
            continue
        image_id = ann["image_id"]
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            problems.append(f"{path}: annotations[{a}].image_id must be an integer, got {image_id!r}")
            continue
        frame = by_id.get(image_id)
        if frame is None:
            # A ground-truth person on an image the file does not list: poseval never sees it.  A
            # prediction there is a mistake that would silently cost recall: refuse it.
            if predictions:
                problems.append(f"{path}: annotations[{a}].image_id {image_id} names no image in 'images'")
            continue
        frame.num_annotations += 1
        person = _coco_person(ann, table, f"{path}: {frame.name} annotations[{a}]", problems, want_scores)
        if person is not None:
            frame.people.append(person)
    return frames


def _annolist_person(rect: dict, where: str, problems: list[str], want_scores: bool) -> Person | None:
    annopoints = rect.get("annopoints")
    # poseval keeps a rect only when annopoints[0] has a "point" key.
    if not (isinstance(annopoints, list) and annopoints and isinstance(annopoints[0], dict)
            and "point" in annopoints[0]):
        return None
    points: dict[int, tuple[float, float, float | None]] = {}
    missing_score = False
    for p, point in enumerate(annopoints[0]["point"] or []):
        joint, x, y = _first(point.get("id")), _first(point.get("x")), _first(point.get("y"))
        score = _first(point.get("score"))
        if not (isinstance(joint, int) and _is_number(x) and _is_number(y)
                and math.isfinite(x) and math.isfinite(y)):
            problems.append(f"{where} point {p}: needs an integer 'id' and finite 'x', 'y'")
            return None
        if score is not None and not (_is_number(score) and math.isfinite(score)):
            problems.append(f"{where} point {p}: 'score' must be a finite number")
            return None
        missing_score |= score is None
        if 0 <= joint < NUM_POSEVAL_JOINTS:
            points.setdefault(joint, (float(x), float(y), None if score is None else float(score)))
    if missing_score and want_scores:
        problems.append(f"{where}: no per-joint scores (a point has no 'score')")
    head_box = None
    if all(k in rect for k in ("x1", "y1", "x2", "y2")):
        box = tuple(_first(rect[k]) for k in ("x1", "y1", "x2", "y2"))
        if not all(_is_number(v) for v in box):
            problems.append(f"{where}: head box x1, y1, x2, y2 must be numbers")
            return None
        head_box = box
    return Person(points, head_box, where)


def _parse_annolist(data: dict, path: Path, want_scores: bool, problems: list[str]) -> list[Frame]:
    annolist = data.get("annolist")
    if not isinstance(annolist, list):
        problems.append(f"{path}: 'annolist' must be a list")
        return []
    frames = []
    for i, item in enumerate(annolist):
        if not isinstance(item, dict):
            problems.append(f"{path}: annolist[{i}] is not an object")
            continue
        image = _first(item.get("image"))
        name = str(image.get("name", f"annolist[{i}]")) if isinstance(image, dict) else f"annolist[{i}]"
        frame = Frame(name, i, item)
        for r, region in enumerate(item.get("ignore_regions") or []):
            pts = region.get("point") if isinstance(region, dict) else None
            coords = [(_first(p.get("x")), _first(p.get("y"))) for p in pts or [] if isinstance(p, dict)]
            if pts is None or not all(_is_number(x) and _is_number(y) for x, y in coords):
                problems.append(f"{path}: {name} ignore_regions[{r}] needs points with numbers x, y")
                continue
            frame.ignore_regions.append(np.array(coords, dtype=np.float64).reshape(-1, 2))
        rects = item.get("annorect") or []
        if not isinstance(rects, list):
            problems.append(f"{path}: {name} 'annorect' must be a list")
            rects = []
        frame.num_annotations = len(rects)
        for r, rect in enumerate(rects):
            if not isinstance(rect, dict):
                problems.append(f"{path}: {name} annorect[{r}] is not an object")
                continue
            person = _annolist_person(rect, f"{path}: {name} annorect[{r}]", problems, want_scores)
            if person is not None:
                frame.people.append(person)
        frames.append(frame)
    return frames


def load_sequence(path: str | os.PathLike, *, want_scores: bool, problems: list[str],
                  predictions: bool = False) -> Sequence:
    """Parse one per-sequence file (either layout); format problems are appended to ``problems``.
    ``predictions``: the file holds predictions (a person on an image it does not list is an error)."""
    path = Path(path)
    data = read_json(path)
    if isinstance(data, dict) and "annolist" in data:
        layout, frames = "annolist", _parse_annolist(data, path, want_scores, problems)
    elif isinstance(data, dict) and "images" in data:
        layout, frames = "coco", _parse_coco(data, path, want_scores, problems, predictions)
    else:
        problems.append(f"{path}: neither a PoseTrack18/21 file ('images', 'annotations') nor a "
                        f"PoseTrack17 file ('annolist')")
        layout, frames = "unknown", []
    return Sequence(sequence_name(path), path, layout, frames)


def align_predictions(gt: Sequence, pred: Sequence, problems: list[str]) -> dict[int, Frame]:
    """GT frame index -> prediction frame, for every frame poseval scores; gaps go to ``problems``."""
    scored = gt.scored_frames
    if gt.layout == "coco" and pred.layout == "coco":
        by_id = {f.image_id: f for f in pred.frames}
        by_name = {f.name: f for f in pred.frames}
        aligned, missing = {}, []
        for i in scored:
            frame = by_id.get(gt.frames[i].image_id) or by_name.get(gt.frames[i].name)
            if frame is None:
                missing.append(f"{gt.frames[i].name} (id {gt.frames[i].image_id})")
            else:
                aligned[i] = frame
        if missing:
            problems.append(f"{pred.path}: {len(missing)} labelled frame(s) of sequence {gt.name} are "
                            f"missing from 'images', e.g. {missing[:3]}")
        return aligned
    if len(pred.frames) != len(gt.frames):
        problems.append(f"{pred.path}: {len(pred.frames)} frames but the ground truth {gt.path} has "
                        f"{len(gt.frames)}; an annolist file is matched to the ground truth frame by "
                        f"frame (as poseval does), so it must list every frame in the same order")
        return {}
    return {i: pred.frames[i] for i in scored}
