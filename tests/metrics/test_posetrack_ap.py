"""PoseTrack AP against hand-computed cases and the real PoseTrack18 files.

Expected numbers are worked out by hand from poseval's definition (see the module docstring of
jmipose.metrics.posetrack_ap): per joint, predictions sorted by score, precision/recall, VOC area.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from jmipose.metrics import PredictionCheckError, posetrack_ap
from jmipose.metrics.posetrack_ap import average_precision, points_in_polygon

KEYPOINTS = ["nose", "head_bottom", "head_top", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
             "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
             "left_knee", "right_knee", "left_ankle", "right_ankle"]
CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person", "keypoints": KEYPOINTS}]
# A 17-joint template pose (x, y), 20 px apart so nothing crosses a neighbour's threshold.
TEMPLATE = [(100 + 20 * (k % 4), 100 + 25 * k) for k in range(17)]
HEAD = [90, 60, 30, 40]  # diagonal 50 -> head size 30 -> PCKh@0.5 threshold 15 px
SCORED = [k for k in range(17) if k not in (3, 4)]  # ears are not scored


def pose(dx=0.0, dy=0.0, moved=None):
    """17 (x, y) points: the template shifted by (dx, dy); ``moved`` {k: (ddx, ddy)} extra shifts."""
    moved = moved or {}
    return [(x + dx + moved.get(k, (0, 0))[0], y + dy + moved.get(k, (0, 0))[1])
            for k, (x, y) in enumerate(TEMPLATE)]


def ann(points, image_id, track_id=0, scores=None, head=None, drop=()):
    kps = []
    for k, (x, y) in enumerate(points):
        kps += [0, 0, 0] if k in drop else [x, y, 1]
    a = {"image_id": image_id, "track_id": track_id, "category_id": 1, "keypoints": kps,
         "scores": [] if scores is None else ([scores] * 17 if np.isscalar(scores) else list(scores))}
    if head is not None:
        a["bbox_head"] = head
    return a


def image(image_id, ignore=None, **extra):
    im = {"id": image_id, "file_name": f"images/val/seq/{image_id:06d}.jpg", "is_labeled": True, **extra}
    if ignore is not None:
        im["ignore_regions_x"] = [[x for x, _ in poly] for poly in ignore]
        im["ignore_regions_y"] = [[y for _, y in poly] for poly in ignore]
    return im


def write(folder: Path, name: str, images, anns, categories=CATEGORIES):
    folder.mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": anns}
    if categories is not None:
        data["categories"] = categories
    (folder / f"{name}.json").write_text(json.dumps(data))


def run(tmp_path, gt_images, gt_anns, pr_images, pr_anns, **kw):
    write(tmp_path / "gt", "seq", gt_images, gt_anns)
    write(tmp_path / "pr", "seq", pr_images, pr_anns)
    return posetrack_ap(tmp_path / "gt", tmp_path / "pr", **kw)


def test_average_precision_by_hand():
    # sorted: TP(.9) FP(.8) TP(.7), 2 positives -> P = 1, .5, .667; R = .5, .5, 1
    # VOC: 0.5 * 1 + 0.5 * 2/3
    ap, pre, rec = average_precision(np.array([0.7, 0.9, 0.8]), np.array([1, 1, 0], np.int8), 2)
    assert ap == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
    assert pre == pytest.approx(200 / 3) and rec == pytest.approx(100)
    assert average_precision(np.array([]), np.array([], np.int8), 3) == (0.0, 0.0, 0.0)
    assert math.isnan(average_precision(np.array([0.5]), np.array([0], np.int8), 0)[0])


def test_one_person_two_joints_missed(tmp_path):
    gt = [ann(pose(), 1, head=HEAD)]
    # right_wrist (10) 16 px off (> 15), left_knee (13) 14 px off (<= 15), right_ear 100 px off (unscored)
    pred = [ann(pose(moved={10: (16, 0), 13: (0, 14), 4: (100, 0)}), 1, scores=0.9)]
    r = run(tmp_path, [image(1)], gt, [image(1)], pred)
    assert r["per_joint"]["right_wrist"] == 0.0
    assert r["per_joint"]["left_knee"] == 100.0
    assert r["Wrist"] == 50.0 and r["Knee"] == 100.0 and r["Head"] == 100.0
    assert r["Total"] == pytest.approx(14 / 15 * 100)  # mean of 15 joints, not of the 7 columns
    assert r["frames"] == 1


def test_two_people_swapped_with_a_duplicate(tmp_path):
    a, b = pose(), pose(dx=400)
    gt = [ann(a, 1, 0, head=HEAD), ann(b, 1, 1, head=[HEAD[0] + 400, *HEAD[1:]])]
    # listed B first: assignment is by PCKh, not by order. The duplicate of A (score .8) has 3 joints
    # off, so A keeps the exact copy; the duplicate is a false positive on every joint.
    dup = pose(moved={0: (40, 0), 5: (40, 0), 6: (40, 0)})
    pred = [ann(b, 1, 0, scores=0.7), ann(a, 1, 1, scores=0.9), ann(dup, 1, 2, scores=0.8)]
    r = run(tmp_path, [image(1)], gt, [image(1)], pred)
    # joints where the duplicate is still within 15 px: TP(.9) FP(.8) TP(.7) -> 83.33;
    # nose and shoulders of the duplicate are off, but it is unassigned, so they are FPs all the same.
    for name, value in r["per_joint"].items():
        assert value == pytest.approx(100 * (0.5 + 0.5 * 2 / 3)), name
    assert r["Total"] == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))


def test_ignore_region_removes_gt_and_prediction_points(tmp_path):
    square = [(60, 360), (180, 360), (180, 440), (60, 440)]  # holds joints 11..13 of the template
    inside = [k for k, (x, y) in enumerate(TEMPLATE) if 60 < x < 180 and 360 < y < 440]
    assert inside == [11, 12, 13]
    gt = [ann(pose(), 1, head=HEAD)]
    # prediction wrong on every joint inside the region, but also inside it: all removed ->
    # left_hip, right_hip, left_knee have neither GT nor predictions -> AP 0 (poseval's rule)
    pred = [ann(pose(moved={k: (16, 0) for k in inside}), 1, scores=0.9)]
    r = run(tmp_path, [image(1, ignore=[square])], gt, [image(1)], pred)
    assert [r["per_joint"][n] for n in ("left_hip", "right_hip", "left_knee")] == [0.0, 0.0, 0.0]
    assert r["Total"] == pytest.approx(12 / 15 * 100)
    # without the region the same prediction misses those joints: AP 0 as well, but for another reason
    r2 = run(tmp_path / "b", [image(1)], gt, [image(1)], pred)
    assert r2["per_joint"]["left_knee"] == 0.0
    # a prediction outside the region while its GT point is inside: no positives -> AP NaN, left out
    # of Total, and the column that holds it is NaN
    pred3 = [ann(pose(moved={13: (0, 200)}), 1, scores=0.9)]
    r3 = run(tmp_path / "c", [image(1, ignore=[square])], gt, [image(1)], pred3)
    assert math.isnan(r3["per_joint"]["left_knee"]) and math.isnan(r3["Knee"])
    assert r3["per_joint"]["left_hip"] == 0.0  # no prediction left there
    assert r3["Total"] == pytest.approx(12 / 14 * 100)


def test_points_on_the_region_boundary_are_kept(tmp_path):
    nose = TEMPLATE[0]
    x, y = nose
    square = [(x, y - 5), (x + 5, y - 5), (x + 5, y + 5), (x, y + 5)]  # the nose on its left edge
    gt = [ann(pose(), 1, head=HEAD)]
    r = run(tmp_path, [image(1, ignore=[square])], gt, [image(1)], [ann(pose(), 1, scores=1.0)])
    assert r["per_joint"]["nose"] == 100.0


def test_predictions_on_frames_without_gt_people(tmp_path):
    gt = [ann(pose(), 1, head=HEAD)]
    fp = ann(pose(dx=300), 2, scores=0.95)
    # frame 2 has no GT person: poseval does not evaluate it, its predictions do not count
    r = run(tmp_path, [image(1), image(2)], gt, [image(1), image(2)], [ann(pose(), 1, scores=0.9), fp])
    assert r["Total"] == 100.0 and r["frames"] == 1
    # frame 2 has a GT person, all inside an ignore region: the frame is evaluated with no GT,
    # so every prediction there is a false positive: FP(.95) TP(.9), 1 positive -> AP 50
    everything = [(50, 50), (200, 50), (200, 600), (50, 600)]  # the GT person, not the prediction
    gt2 = gt + [ann(pose(), 2, head=HEAD)]
    r2 = run(tmp_path / "b", [image(1), image(2, ignore=[everything])], gt2, [image(1), image(2)],
             [ann(pose(), 1, scores=0.9), fp])
    assert r2["Total"] == pytest.approx(50.0) and r2["frames"] == 2


def test_missing_scores_refused_or_given_the_poseval_fallback(tmp_path):
    gt = [ann(pose(), 1, head=HEAD)]
    pred = [ann(pose(), 1), ann(pose(dx=300), 1, 1, scores=0.5)]  # the matching one has no scores
    with pytest.raises(PredictionCheckError, match="no per-joint scores"):
        run(tmp_path, [image(1)], gt, [image(1)], pred)
    # fallback -9999 ranks the true positive below the scored false positive: FP(.5) TP -> AP 50
    r = run(tmp_path / "b", [image(1)], gt, [image(1)], pred, require_scores=False)
    assert r["Total"] == pytest.approx(50.0)


def test_joint_only_annotated_as_v0_with_coordinates_counts_as_gt(tmp_path):
    gt_ann = ann(pose(), 1, head=HEAD)
    gt_ann["keypoints"][2] = 0  # nose visibility 0 but coordinates present: poseval keeps it
    r = run(tmp_path, [image(1)], [gt_ann], [image(1)], [ann(pose(), 1, scores=1.0, drop=(0,))])
    assert r["per_joint"]["nose"] == 0.0  # a positive nobody predicted


def test_annolist_layout_gives_the_same_numbers(tmp_path):
    def annolist(people, head=True):
        rects = []
        for points, scores in people:
            pts = [{"id": [i], "x": [points[k][0]], "y": [points[k][1]]} for k, i in _PT17_IDS.items()]
            if scores is not None:
                for p in pts:
                    p["score"] = [scores]
            rect = {"annopoints": [{"point": pts}], "track_id": [0]}
            if head:
                rect.update(x1=[HEAD[0]], y1=[HEAD[1]], x2=[HEAD[0] + HEAD[2]], y2=[HEAD[1] + HEAD[3]])
            rects.append(rect)
        return {"annolist": [{"image": [{"name": "images/seq/00000001.jpg"}], "annorect": rects}]}

    (tmp_path / "gt").mkdir()
    (tmp_path / "pr").mkdir()
    pred_pose = pose(moved={10: (16, 0)})
    (tmp_path / "gt" / "seq.json").write_text(json.dumps(annolist([(pose(), None)])))
    (tmp_path / "pr" / "seq.json").write_text(json.dumps(annolist([(pred_pose, 0.9)], head=False)))
    r = posetrack_ap(tmp_path / "gt", tmp_path / "pr")
    assert r["per_joint"]["right_wrist"] == 0.0 and r["Total"] == pytest.approx(14 / 15 * 100)


# PoseTrack17 ids of the 15 scored joints, keyed by PoseTrack18 keypoint index.
_PT17_IDS = {16: 0, 14: 1, 12: 2, 11: 3, 13: 4, 15: 5, 10: 6, 8: 7, 6: 8, 5: 9, 7: 10, 9: 11, 1: 12, 0: 13,
             2: 14}


def test_per_sequence_and_frame_filter(tmp_path):
    write(tmp_path / "gt", "a", [image(1)], [ann(pose(), 1, head=HEAD)])
    write(tmp_path / "gt", "b", [image(1, hard=True)], [ann(pose(), 1, head=HEAD)])
    write(tmp_path / "pr", "a", [image(1)], [ann(pose(), 1, scores=0.9)])
    write(tmp_path / "pr", "b", [image(1)], [ann(pose(moved={10: (30, 0)}), 1, scores=0.9)])
    r = posetrack_ap(tmp_path / "gt", tmp_path / "pr", per_sequence=True)
    assert r["sequences"]["a"]["Total"] == 100.0
    assert r["sequences"]["b"]["per_joint"]["right_wrist"] == 0.0
    # right_wrist over both: TP(.9) and FP(.9) tie, 2 positives; the tie order decides -> 50 or 25
    assert r["per_joint"]["right_wrist"] in (pytest.approx(50.0), pytest.approx(25.0))
    hard = posetrack_ap(tmp_path / "gt", tmp_path / "pr", frame_filter=lambda seq, im: im.get("hard", False))
    assert hard["frames"] == 1 and hard["per_joint"]["right_wrist"] == 0.0


# ----- pre-check -----

def test_precheck_messages(tmp_path):
    gt_images = [image(1), image(2)]
    gt_anns = [ann(pose(), 1, head=HEAD), ann(pose(), 2, head=HEAD)]
    write(tmp_path / "gt", "seq", gt_images, gt_anns)
    write(tmp_path / "gt", "other", [image(1)], [ann(pose(), 1, head=HEAD)])
    bad = ann(pose(), 1, scores=[0.5] * 16)
    nan = ann(pose(), 1, scores=0.5)
    nan["keypoints"][0] = float("nan")
    write(tmp_path / "pr", "seq", [image(1)], [bad, nan])
    with pytest.raises(PredictionCheckError) as err:
        posetrack_ap(tmp_path / "gt", tmp_path / "pr")
    text = str(err.value)
    assert "no prediction file for sequence other" in text
    assert "1 labelled frame(s) of sequence seq are missing" in text and "id 2" in text
    assert "scores': must list 17 per-joint scores, got 16" in text
    assert "keypoints[0]': expected a finite number, got nan" in text


def test_precheck_malformed_json_and_layouts(tmp_path):
    write(tmp_path / "gt", "seq", [image(1)], [ann(pose(), 1, head=HEAD)])
    (tmp_path / "pr").mkdir()
    (tmp_path / "pr" / "seq.json").write_text('{"images": [')
    with pytest.raises(PredictionCheckError, match="not valid JSON"):
        posetrack_ap(tmp_path / "gt", tmp_path / "pr")
    (tmp_path / "pr" / "seq.json").write_text('{"frames": []}')
    with pytest.raises(PredictionCheckError, match="neither a PoseTrack18"):
        posetrack_ap(tmp_path / "gt", tmp_path / "pr")
    (tmp_path / "pr" / "seq.json").write_text(json.dumps({"annolist": []}))
    with pytest.raises(PredictionCheckError, match="0 frames but the ground truth"):
        posetrack_ap(tmp_path / "gt", tmp_path / "pr")
    with pytest.raises(ValueError, match="pred_dir"):
        posetrack_ap(tmp_path / "gt", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no \\*.json"):
        posetrack_ap(tmp_path / "empty", tmp_path / "pr")


def test_gt_without_head_box_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="head box"):
        run(tmp_path, [image(1)], [ann(pose(), 1)], [image(1)], [ann(pose(), 1, scores=1.0)])


# ----- the real PoseTrack18 files -----

def _real(shared_data: Path) -> Path:
    return shared_data / "posetrack18" / "annotations" / "val"


def _as_predictions(gt_dir: Path, out: Path, edit=None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(gt_dir.glob("*.json")):
        data = json.loads(path.read_text())
        for a in data["annotations"]:
            a["scores"] = [1.0] * 17
            if edit:
                edit(path.stem, a)
        (out / path.name).write_text(json.dumps(data))


def test_real_gt_as_predictions_gives_100(shared_data, tmp_path):
    _as_predictions(_real(shared_data), tmp_path / "pr")
    r = posetrack_ap(_real(shared_data), tmp_path / "pr", per_sequence=True)
    assert all(r[c] == 100.0 for c in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total"))
    assert r["frames"] == 3
    assert set(r["sequences"]) == {"003418_mpii_test", "009473_mpii_test", "012834_mpii_test"}


def test_real_perturbed_keypoints(shared_data, tmp_path):
    gt_dir = _real(shared_data)
    moved = []

    def edit(seq, a):
        k = a["keypoints"]
        # right_wrist (10) of 012834 tracks 1 and 5 and left_ankle (15) of 009473 track 0: 200-300 px off
        for s, track, joint, (dx, dy) in (("012834_mpii_test", 1, 10, (200, 0)),
                                         ("012834_mpii_test", 5, 10, (200, 0)),
                                         ("009473_mpii_test", 0, 15, (0, 300))):
            if seq == s and a["track_id"] == track:
                k[3 * joint] += dx
                k[3 * joint + 1] += dy
                a["scores"][joint] = 0.5
                moved.append((seq, k[3 * joint], k[3 * joint + 1]))

    _as_predictions(gt_dir, tmp_path / "pr", edit)
    assert len(moved) == 3
    # the moved points stay outside every ignore region (checked with OpenCV, an independent test)
    for seq, x, y in moved:
        im = json.loads((gt_dir / f"{seq}.json").read_text())["images"][0]
        for rx, ry in zip(im["ignore_regions_x"], im["ignore_regions_y"]):
            poly = np.array([rx, ry], np.float32).T.reshape(-1, 1, 2)
            assert cv2.pointPolygonTest(poly, (float(x), float(y)), False) < 0
    r = posetrack_ap(gt_dir, tmp_path / "pr")
    # Counted in the files: 11 annotated right wrists (1 + 2 + 8), 10 left ankles (0 + 2 + 8).
    # right_wrist: 9 TPs at score 1 before 2 FPs at .5 -> AP = 9/11; left_ankle: 9/10.
    assert r["per_joint"]["right_wrist"] == pytest.approx(900 / 11)
    assert r["per_joint"]["left_ankle"] == pytest.approx(90.0)
    assert r["Wrist"] == pytest.approx((900 / 11 + 100) / 2)
    assert r["Ankle"] == pytest.approx(95.0)
    assert r["Total"] == pytest.approx((13 * 100 + 900 / 11 + 90) / 15)


def test_real_ignore_region_point(shared_data, tmp_path):
    # In 003418 the GT right knee (1416, 429) lies inside an ignore region (the mask image agrees):
    # a wrong prediction there is dropped with it, so the AP stays 100.
    gt_dir = _real(shared_data)
    mask_file = shared_data / "posetrack18/mask/val/003418_mpii_test/000000.jpg"
    mask = cv2.imread(str(mask_file), cv2.IMREAD_GRAYSCALE)
    assert mask[429, 1416] > 128

    def edit(seq, a):
        if seq == "003418_mpii_test":
            a["keypoints"][3 * 14 + 1] += 40  # still inside the region
    _as_predictions(gt_dir, tmp_path / "pr", edit)
    assert mask[469, 1416] > 128
    assert posetrack_ap(gt_dir, tmp_path / "pr")["Total"] == 100.0


# ----- the polygon test against OpenCV -----

def test_points_in_polygon_matches_opencv():
    rng = np.random.default_rng(0)
    for trial in range(30):
        k = int(rng.integers(3, 12))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k)) if trial % 2 else rng.uniform(0, 2 * np.pi, k)
        radii = rng.uniform(20, 100, k)
        poly = np.stack([200 + radii * np.cos(angles), 200 + radii * np.sin(angles)], 1)
        pts = rng.uniform(80, 320, (400, 2))
        ours = points_in_polygon(pts, poly)
        cv_poly = poly.astype(np.float32).reshape(-1, 1, 2)
        for p, inside in zip(pts, ours):
            d = cv2.pointPolygonTest(cv_poly, (float(p[0]), float(p[1])), True)
            if abs(d) > 1e-3:
                assert inside == (d > 0), (trial, p, d)
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    edge_pts = np.array([[0, 5], [10, 10], [5, 0], [5, 5], [10.000001, 5]])
    assert points_in_polygon(edge_pts, square).tolist() == [False, False, False, True, False]
    assert not points_in_polygon(np.array([[1.0, 1.0]]), square[:2]).any()



# ----- random frames against a loop-by-loop transcription of the rules -----

_PT18_TO_POSEVAL = _PT17_IDS  # PoseTrack17 ids are poseval's joint ids


def _reference_ap(frames):
    """frames: list of (gt [(points{k: xy}, head)], preds [(points{k: xy}, scores[17])]) -> 15 APs."""
    scores = {j: [] for j in range(15)}
    labels = {j: [] for j in range(15)}
    positives = [0] * 15
    for gts, preds in frames:
        for points, _ in gts:
            for k in points:
                if k in _PT18_TO_POSEVAL:
                    positives[_PT18_TO_POSEVAL[k]] += 1
        match = {}
        pck = [[0.0] * len(gts) for _ in preds]
        for p, (pp, _) in enumerate(preds):
            for g, (gp, head) in enumerate(gts):
                size = 0.6 * math.hypot(head[2], head[3])
                n_gt = sum(1 for k in gp if k in _PT18_TO_POSEVAL)
                hits = 0
                for k in _PT18_TO_POSEVAL:
                    ok = k in gp and k in pp and math.dist(gp[k], pp[k]) / size <= 0.5
                    match[p, g, k] = ok
                    hits += ok
                pck[p][g] = hits / n_gt if n_gt else hits
        for p in range(len(preds)):  # keep each prediction's best GT only (first on ties)
            if gts:
                best = max(range(len(gts)), key=lambda g: (pck[p][g], -g))
                pck[p] = [v if g == best else 0.0 for g, v in enumerate(pck[p])]
        owner = {}
        for g in range(len(gts)):
            column = [pck[p][g] for p in range(len(preds))]
            if column and max(column) > 0:
                owner[column.index(max(column))] = g
        for p, (pp, sc) in enumerate(preds):
            for k in _PT18_TO_POSEVAL:
                if k in pp:
                    j = _PT18_TO_POSEVAL[k]
                    scores[j].append(sc[k])
                    labels[j].append(p in owner and match[p, owner[p], k])
    aps = []
    for j in range(15):
        if not scores[j]:
            aps.append(0.0)
            continue
        order = np.argsort(np.array(scores[j]))[::-1]
        tp, prec, rec = 0, [], []
        for rank, i in enumerate(order):
            tp += labels[j][i]
            prec.append(tp / (rank + 1))
            rec.append(tp / positives[j] if positives[j] else float("nan"))
        mpre, mrec = [0.0] + prec + [0.0], [0.0] + rec + [1.0]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        aps.append(100 * sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec))
                             if mrec[i] != mrec[i - 1]))
    return aps


@pytest.mark.parametrize("seed", range(12))
def test_random_frames_against_loop_reference(tmp_path, seed):
    rng = np.random.default_rng(seed)
    frames, gt_images, gt_anns, pr_anns = [], [], [], []
    for image_id in range(1, 5):
        gts, preds = [], []
        for g in range(int(rng.integers(1, 4))):
            centre = rng.uniform(100, 900, 2)
            points = {k: tuple(centre + rng.normal(0, 40, 2)) for k in range(17) if rng.random() < 0.8}
            head = [float(centre[0]), float(centre[1]), float(rng.uniform(10, 40)),
                    float(rng.uniform(10, 40))]
            gts.append((points, head))
            gt_anns.append(ann([points.get(k, (0, 0)) for k in range(17)], image_id, g, head=head,
                               drop=[k for k in range(17) if k not in points]))
            for _ in range(int(rng.integers(0, 3))):  # noisy copies: some match, some not
                noise = rng.uniform(2, 25)
                pp = {k: tuple(np.array(xy) + rng.normal(0, noise, 2))
                      for k, xy in points.items() if rng.random() < 0.9}
                preds.append((pp, [round(float(s), 1) for s in rng.uniform(0, 1, 17)]))  # rounding makes ties
        for _ in range(int(rng.integers(0, 2))):  # a stray detection
            pp = {k: tuple(rng.uniform(0, 1000, 2)) for k in range(17)}
            preds.append((pp, [float(s) for s in rng.uniform(0, 1, 17)]))
        order = rng.permutation(len(preds))
        preds = [preds[i] for i in order]
        for t, (pp, sc) in enumerate(preds):
            pr_anns.append(ann([pp.get(k, (0, 0)) for k in range(17)], image_id, t, scores=sc,
                               drop=[k for k in range(17) if k not in pp]))
        frames.append((gts, preds))
        gt_images.append(image(image_id))
    r = run(tmp_path, gt_images, gt_anns, gt_images, pr_anns)
    expected = _reference_ap(frames)
    from jmipose.joints import POSEVAL_JOINTS

    ours = [r["per_joint"][name] for name in POSEVAL_JOINTS]
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert 0 < r["Total"] < 100  # the random cases are neither trivial nor hopeless


def test_a_merged_ground_truth_file_is_refused(shared_data, tmp_path):
    merged = shared_data / "posetrack18" / "annotations" / "test_posetrack18_val.json"
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "all.json").write_text(merged.read_text())
    (tmp_path / "pr").mkdir()
    with pytest.raises(ValueError, match="holds 3 sequences"):
        posetrack_ap(tmp_path / "gt", tmp_path / "pr")
