"""PoseTrack per-joint AP, the same numbers as poseval's ``evaluateAP`` (multi-person PCKh AP).

The files are read by :func:`jmipose.formats.poseval.read_sequence` as poseval reads them (which
frames are scored, which joints, which scores, head boxes, ignore regions; see there). Prediction frames
are matched to ground-truth frames by image ``id`` (then ``file_name``) when both files are
PoseTrack18-style; otherwise by position, as poseval always does (equal frame counts).

For every evaluated frame:

1. Ignore regions: a ground-truth or predicted point strictly inside one of the frame's polygons
   (even-odd rule; points on the boundary stay, as with shapely's ``Polygon.contains``) is removed; a
   person left without points is removed.
2. Distances: ``d[p, g, j] = ||pred - gt|| / head_size`` with ``head_size = 0.6 * diagonal`` of the GT
   head box, for joints present in both; a joint matches when ``d <= 0.5`` (PCKh@0.5).
3. Pose assignment (poseval's greedy rule): ``pck[p, g]`` = matched joints / annotated GT joints; each
   prediction keeps only its best GT (first on ties), then each GT takes the prediction with the
   highest remaining ``pck`` (first on ties), none when that is 0. Unassigned predictions are false
   positives on every joint.
4. Every predicted joint adds (score, matched) to its joint's list; every annotated GT joint counts
   once in that joint's number of positives.

Per joint: the lists of all frames are sorted by score (``numpy.argsort``, descending, the same call
as poseval so ties break the same way), precision/recall are accumulated and AP is the VOC
all-point area (precision made monotone). A joint with no prediction has AP 0; a joint with
predictions but no ground truth has AP NaN; with no frame to score (no ground-truth frame with an
annotated person, or a filter that keeps none) every value is NaN and ``frames`` is 0. Columns:
:data:`jmipose.joints.AP_COLUMNS`, each the mean of its joints' APs (:data:`jmipose.joints.AP_COLUMN_JOINTS`:
Head = the three head joints, the limbs the mean of left and right), Total = the mean of the 15 joint
APs that are not NaN (not the mean of the columns). Ears are not scored.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jmipose.formats.errors import BadDataPolicy, DataError
from jmipose.formats.poseval import MISSING_SCORE, Frame, Person, Sequence, read_sequence
from jmipose.joints import AP_COLUMN_JOINTS, NUM_POSEVAL_JOINTS, POSEVAL_JOINTS
from jmipose.joints import AP_COLUMNS as COLUMNS

log = logging.getLogger(__name__)

PCKH_THRESHOLD = 0.5


class PredictionCheckError(ValueError):
    """Prediction files that cannot be evaluated; ``problems`` lists every reason found (one line each,
    the file and the field first), ``errors`` the :class:`~jmipose.formats.errors.DataError` behind each."""

    def __init__(self, errors: list[DataError]):
        self.errors = list(errors)
        self.problems = [str(e) for e in self.errors]
        shown = "\n  ".join(self.problems[:25])
        more = f"\n  ... and {len(self.problems) - 25} more" if len(self.problems) > 25 else ""
        super().__init__(f"{len(self.problems)} problem(s) in the prediction files:\n  {shown}{more}")

    def __reduce__(self):
        return (type(self), (self.errors,))

FrameFilter = Callable[[str, dict], bool]


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """bool [N]: which of ``points`` [N, 2] lie strictly inside ``polygon`` [K, 2] (closed implicitly).

    Even-odd crossings with the half-open rule of GEOS's ray-crossing counter; boundary points
    (vertices included) are outside. Fewer than three vertices enclose nothing.
    """
    if len(polygon) < 3 or len(points) == 0:
        return np.zeros(len(points), dtype=bool)
    px, py = points[:, :1], points[:, 1:]
    x1, y1 = polygon[:, 0][None], polygon[:, 1][None]
    x2, y2 = np.roll(polygon[:, 0], -1)[None], np.roll(polygon[:, 1], -1)[None]
    # cross > 0: the point is left of the directed edge (counter-clockwise turn).
    cross = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    straddles = (y1 > py) != (y2 > py)
    crosses_right = np.where(y2 > y1, cross > 0, cross < 0)
    inside = (straddles & crosses_right).sum(axis=1) % 2 == 1
    on_edge = ((cross == 0) & (px >= np.minimum(x1, x2)) & (px <= np.maximum(x1, x2))
               & (py >= np.minimum(y1, y2)) & (py <= np.maximum(y1, y2))).any(axis=1)
    return inside & ~on_edge


def _drop_ignored(people: list[Person], regions: list[np.ndarray]) -> list[Person]:
    kept = []
    for person in people:
        joints = list(person.points)
        xy = np.array([person.points[j][:2] for j in joints], dtype=np.float64).reshape(-1, 2)
        ignored = np.zeros(len(joints), dtype=bool)
        for polygon in regions:
            ignored |= points_in_polygon(xy, polygon)
        points = {j: person.points[j] for j, drop in zip(joints, ignored) if not drop}
        if points:
            kept.append(Person(points, person.head_box, person.where))
    return kept


def _as_arrays(people: list[Person], missing_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xy [N, 15, 2], present [N, 15], score [N, 15] (NaN where absent)."""
    n = len(people)
    xy = np.zeros((n, NUM_POSEVAL_JOINTS, 2))
    has = np.zeros((n, NUM_POSEVAL_JOINTS), dtype=bool)
    score = np.full((n, NUM_POSEVAL_JOINTS), np.nan)
    for i, person in enumerate(people):
        for j, (x, y, s) in person.points.items():
            xy[i, j] = (x, y)
            has[i, j] = True
            score[i, j] = missing_score if s is None else s
    return xy, has, score


def _head_sizes(people: list[Person]) -> np.ndarray:
    sizes = np.empty(len(people))
    for g, person in enumerate(people):
        if person.head_box is None:
            raise ValueError(f"{person.where}: a ground-truth person needs a head box ('bbox_head' or "
                             f"x1, y1, x2, y2) for PCKh; poseval stops on it too")
        x1, y1, x2, y2 = person.head_box
        sizes[g] = 0.6 * np.linalg.norm(np.subtract([x2, y2], [x1, y1]))
    return sizes


def assign_frame(gt_people: list[Person], pred_people: list[Person], missing_score: float
                 ) -> tuple[list[tuple[int, float, bool]], np.ndarray]:
    """One frame: ([(joint, score, is_true_positive)] in poseval's order, GT joint counts [15])."""
    _, gt_has, _ = _as_arrays(gt_people, missing_score)
    n_gt = gt_has.sum(axis=0).astype(np.int64)
    if not pred_people:
        return [], n_gt
    pr_xy, pr_has, pr_score = _as_arrays(pred_people, missing_score)
    matched = np.zeros(pr_has.shape, dtype=bool)
    if gt_people:
        gt_xy = _as_arrays(gt_people, missing_score)[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            diff = gt_xy[None] - pr_xy[:, None]                      # [P, G, 15, 2]
            dist = np.sqrt(diff[..., 0] ** 2 + diff[..., 1] ** 2) / _head_sizes(gt_people)[None, :, None]
        both = pr_has[:, None] & gt_has[None]
        match = both & (dist <= PCKH_THRESHOLD)                       # NaN/inf never match
        annotated = gt_has.sum(axis=1)
        pck = match.sum(axis=2).astype(np.float64)
        pck = np.where(annotated[None] > 0, pck / np.maximum(annotated[None], 1), pck)
        best_gt = np.argmax(pck, axis=1)
        pck = np.where(np.arange(len(gt_people))[None] == best_gt[:, None], pck, 0.0)
        gt_to_pred = np.argmax(pck, axis=0)
        gt_to_pred[pck.max(axis=0) == 0] = -1
        for g, p in enumerate(gt_to_pred):
            if p >= 0:
                matched[p] = match[p, g]
    entries = [(j, float(pr_score[p, j]), bool(matched[p, j]))
               for p in range(len(pred_people)) for j in range(NUM_POSEVAL_JOINTS) if pr_has[p, j]]
    return entries, n_gt


def average_precision(scores: np.ndarray, labels: np.ndarray, num_positives: int
                      ) -> tuple[float, float, float]:
    """(AP, final precision, final recall) in percent, as poseval's computeRPC + VOCap."""
    if len(scores) == 0:
        return 0.0, 0.0, 0.0
    order = np.asarray(scores, dtype=np.float64).argsort()[::-1]
    true_pos = np.cumsum(labels[order] == 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = true_pos / np.float64(num_positives)
    precision = true_pos / np.arange(1, len(scores) + 1)
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    mrec = np.concatenate(([0.0], recall, [1.0]))
    steps = np.flatnonzero(~np.equal(mrec[1:], mrec[:-1])) + 1
    ap = np.sum(np.multiply(np.subtract(mrec[steps], mrec[steps - 1]), mpre[steps]))
    return float(ap * 100), float(precision[-1] * 100), float(recall[-1] * 100)


class _Accumulator:
    """Per-joint (score, label) lists in poseval's concatenation order, and positives."""

    def __init__(self) -> None:
        self.scores: list[list[float]] = [[] for _ in range(NUM_POSEVAL_JOINTS)]
        self.labels: list[list[bool]] = [[] for _ in range(NUM_POSEVAL_JOINTS)]
        self.positives = np.zeros(NUM_POSEVAL_JOINTS, dtype=np.int64)
        self.frames = 0

    def add(self, entries: list[tuple[int, float, bool]], n_gt: np.ndarray) -> None:
        for joint, score, label in entries:
            self.scores[joint].append(score)
            self.labels[joint].append(label)
        self.positives += n_gt
        self.frames += 1

    def result(self) -> dict:
        if not self.frames:  # nothing scored: no AP at all (NaN), never a 0 that reads as a result
            return {col: float("nan") for col in COLUMNS} | {
                "per_joint": {name: float("nan") for name in POSEVAL_JOINTS}, "frames": 0}
        per_joint = {}
        for j, name in enumerate(POSEVAL_JOINTS):
            ap, _, _ = average_precision(np.array(self.scores[j], dtype=np.float64),
                                         np.array(self.labels[j], dtype=np.int8), int(self.positives[j]))
            per_joint[name] = ap
        return summarize(per_joint) | {"per_joint": per_joint, "frames": self.frames}


def summarize(per_joint: dict[str, float]) -> dict[str, float]:
    """The Head ... Ankle, Total columns from the 15 joint APs, as poseval averages them."""
    out = {col: float(np.mean(np.array([per_joint[n] for n in names], dtype=np.float64)))
           for col, names in AP_COLUMN_JOINTS.items()}
    values = np.array([per_joint[n] for n in POSEVAL_JOINTS], dtype=np.float64)
    valid = values[~np.isnan(values)]
    out["Total"] = float(valid.mean()) if len(valid) else float("nan")
    return out


def evaluate_frame(gt: Frame, pred: Frame, missing_score: float = MISSING_SCORE
                   ) -> tuple[list[tuple[int, float, bool]], np.ndarray]:
    """Ignore regions, then :func:`assign_frame` for one ground-truth frame and its predictions."""
    gt_people, pred_people = gt.people, pred.people
    if gt.ignore_regions:
        gt_people = _drop_ignored(gt_people, gt.ignore_regions)
        pred_people = _drop_ignored(pred_people, gt.ignore_regions)
    return assign_frame(gt_people, pred_people, missing_score)


def align_predictions(gt: Sequence, pred: Sequence, policy: BadDataPolicy) -> dict[int, Frame]:
    """GT frame index -> prediction frame, for every frame poseval scores; gaps go to ``policy``."""
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
            policy.handle(DataError(pred.path, "images", f"{len(missing)} labelled frame(s) of sequence {gt.name} "
                                                         f"are missing, e.g. {missing[:3]}"), "frame")
        return aligned
    if len(pred.frames) != len(gt.frames):
        policy.handle(DataError(pred.path, None, f"{len(pred.frames)} frames but the ground truth {gt.path} has "
                                                 f"{len(gt.frames)}; an annolist file is matched to the ground "
                                                 f"truth frame by frame (as poseval does), so it must list every "
                                                 f"frame in the same order"), "file")
        return {}
    return {i: pred.frames[i] for i in scored}


def load_and_check(gt_dir: str | os.PathLike | list, pred_dir: str | os.PathLike, *,
                   require_scores: bool = True) -> list[tuple[Sequence, dict[int, Frame]]]:
    """Read every GT sequence and its prediction file; raise one error listing every problem."""
    pred_dir = Path(pred_dir)
    if isinstance(gt_dir, (list, tuple)):
        gt_files = [Path(p) for p in gt_dir]
        missing = [str(p) for p in gt_files if not p.is_file()]
        if missing or not gt_files:
            raise ValueError(f"gt_dir: expected a folder or a non-empty list of files; missing: {missing}")
    else:
        gt_dir = Path(gt_dir)
        if not gt_dir.is_dir():
            raise ValueError(f"gt_dir: {gt_dir} is not a folder")
        gt_files = sorted(Path(p) for p in glob.glob(str(gt_dir / "*.json")))
        if not gt_files:
            raise ValueError(f"gt_dir: no *.json ground-truth files in {gt_dir}")
    if not pred_dir.is_dir():
        raise ValueError(f"pred_dir: {pred_dir} is not a folder")
    gt_problems = BadDataPolicy(collect=True)
    sequences = [read_sequence(p, want_scores=False, policy=gt_problems) for p in gt_files]
    for sequence in sequences:
        videos = sorted({os.path.basename(os.path.dirname(f.name)) for f in sequence.frames})
        if len(videos) > 1:  # poseval reads only a file's first video and would drop the others silently
            gt_problems.handle(DataError(sequence.path, None, f"holds {len(videos)} sequences ({videos[:3]}...); "
                                                              f"PoseTrack evaluation needs one file per sequence "
                                                              f"(jmipose.engine.evaluate.split_sequences splits a "
                                                              f"merged file)"))
    if gt_problems.errors:
        raise ValueError("malformed ground truth:\n  " + "\n  ".join(gt_problems.skipped[:25]))
    problems = BadDataPolicy(collect=True)
    pairs = []
    for gt in sequences:
        path = pred_dir / gt.path.name
        if not path.is_file():
            problems.handle(DataError(path, None, f"no prediction file for sequence {gt.name}"))
            continue
        pred = read_sequence(path, want_scores=require_scores, policy=problems, predictions=True)
        if pred.layout != "unreadable":
            pairs.append((gt, align_predictions(gt, pred, problems)))
    if problems.errors:
        if any("no per-joint scores" in e.problem for e in problems.errors):
            problems.handle(DataError(pred_dir, None, "per-joint scores are needed for AP; require_scores=False "
                                                      "(--allow-missing-scores) gives unscored joints poseval's "
                                                      "fallback -9999"))
        raise PredictionCheckError(problems.errors)
    return pairs


def posetrack_ap(gt_dir: str | os.PathLike | list, pred_dir: str | os.PathLike, per_sequence: bool = False, *,
                 require_scores: bool = True, frame_filter: FrameFilter | None = None) -> dict:
    """PoseTrack multi-person AP (percent) of the predictions in ``pred_dir`` against ``gt_dir``.

    Both folders hold one JSON per sequence with the same file names (PoseTrack18/21 COCO-style or
    PoseTrack17 annolist); ``gt_dir`` may also be a list of ground-truth files. Returns ``{"Head",
    "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total"}`` plus ``per_joint`` (the 15 joint
    APs), ``frames`` (frames scored) and, with ``per_sequence``, ``sequences`` (the same dict for each
    sequence on its own, as poseval's per-sequence output). ``require_scores=False`` accepts
    predictions without per-joint scores and gives them poseval's fallback score -9999 (with a
    warning). ``frame_filter(sequence, image_entry)`` restricts the evaluation to the frames for which
    it returns True (e.g. the hard frames).
    Every prediction file is checked before anything is computed (:class:`PredictionCheckError`).
    """
    pairs = load_and_check(gt_dir, pred_dir, require_scores=require_scores)
    if not require_scores and any(p.points and any(v[2] is None for v in p.points.values())
                                  for _, aligned in pairs for f in aligned.values() for p in f.people):
        log.warning("some predictions have no per-joint score; using poseval's fallback %s", MISSING_SCORE)
    total = _Accumulator()
    sequences = {}
    for gt, aligned in pairs:
        acc = _Accumulator()
        for i in gt.scored_frames:
            if frame_filter is not None and not frame_filter(gt.name, gt.frames[i].entry):
                continue
            entries, n_gt = evaluate_frame(gt.frames[i], aligned[i])
            acc.add(entries, n_gt)
            total.add(entries, n_gt)
        if per_sequence:
            sequences[gt.name] = acc.result()
    result = total.result()
    if per_sequence:
        result["sequences"] = sequences
    return result


def format_table(result: dict) -> str:
    """A Markdown table of the columns (poseval prints the same numbers with one decimal)."""
    head = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "|".join("---:" for _ in COLUMNS) + "|"
    row = "| " + " | ".join(f"{result[c]:.1f}" for c in COLUMNS) + " |"
    return "\n".join((head, rule, row))


# ----- command line: jmipose eval-ap GT_DIR PRED_DIR [--json OUT] -----

def add_arguments(parser) -> None:
    parser.add_argument("gt_dir", help="folder of ground-truth JSON files, one per sequence")
    parser.add_argument("pred_dir", help="folder of prediction JSON files with the same names")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the result to this file")
    parser.add_argument("--per-sequence", action="store_true", help="include each sequence's AP")
    parser.add_argument("--allow-missing-scores", action="store_true",
                        help="accept predictions without per-joint scores (poseval's fallback -9999)")


def main(args) -> int:
    from jmipose.fileio import atomic_write_json, check_output_file

    if args.json_out:
        check_output_file(args.json_out, "--json")  # before the work, not after the table is printed
    result = posetrack_ap(args.gt_dir, args.pred_dir, per_sequence=args.per_sequence,
                          require_scores=not args.allow_missing_scores)
    if not result["frames"]:
        raise ValueError(f"nothing to score: no ground-truth frame in {args.gt_dir} has an annotated person "
                         f"(poseval scores only those), so there is no AP")
    print(format_table(result))
    print(f"({result['frames']} labelled frames)")
    if args.json_out:
        atomic_write_json(args.json_out, result)
        print(f"wrote {args.json_out}")
    return 0
