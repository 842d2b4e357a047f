"""The synthetic video benchmark: PoseTrack18 layout and schema (against a real PoseTrack18 file),
determinism, body plausibility, visibility against occluders, degradation labels, detections,
the contact sheet and the mp4 writer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from jmipose.data import _synthetic_motion as motion
from jmipose.data.synthetic import (
    CATEGORY, hard_image_ids, make_synthetic_posetrack, render_contact_sheet, synthetic_video,
    write_frame_subset,
)
from tests.data.helpers import decoded_frames

REAL_SEQUENCE = "posetrack18/annotations/val/003418_mpii_test.json"
SMALL = dict(n_videos=3, frames=16, size=(256, 192), seed=3, val_videos=1, people=(2, 3), hard_fraction=0.45)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    start = time.perf_counter()
    summary = make_synthetic_posetrack(root, **SMALL)
    seconds = time.perf_counter() - start
    frames = sum(s.frames for s in summary.splits.values())
    print(f"\nsynthetic dataset: {frames} frames of {SMALL['size']} in {seconds:.2f}s "
          f"({1000 * seconds / frames:.1f} ms/frame)")
    return summary


def _sequences(root: Path, split: str):
    return {p.stem: json.loads(p.read_text()) for p in sorted((root / "annotations" / split).glob("*.json"))}


def _labels(root: Path, split: str):
    return json.loads((root / "annotations" / f"{split}_degradations.json").read_text())


def _keypoints(annotation):
    return np.asarray(annotation["keypoints"], np.float64).reshape(17, 3)


def _type_names(record: dict) -> dict:
    return {k: type(v).__name__ for k, v in record.items()}


def _all_splits(dataset):
    for split in dataset.splits:
        for seq, data in _sequences(dataset.root, split).items():
            yield split, seq, data


# ----------------------------------------------------------------------------- format


def test_schema_matches_real_posetrack18(dataset, shared_data):
    real = json.loads((shared_data / REAL_SEQUENCE).read_text())
    real_image, real_annotation = real["images"][0], real["annotations"][0]
    assert list(real) == ["categories", "images", "annotations"]
    count = 0
    for _, _, data in _all_splits(dataset):
        assert list(data) == ["info", *real]     # plus a COCO "info" block saying it is synthetic
        assert data["info"]["synthetic"] is True and "synthetic" in data["info"]["description"]
        assert data["categories"] == real["categories"] == [CATEGORY]
        for image in data["images"]:
            assert list(image) == list(real_image)
            assert _type_names(image) == _type_names(real_image)
        for annotation in data["annotations"]:
            count += 1
            assert list(annotation) == list(real_annotation)
            assert _type_names(annotation) == _type_names(real_annotation)
            assert len(annotation["keypoints"]) == 51 and len(annotation["bbox"]) == 4
            assert all(isinstance(v, int) for v in annotation["bbox_head"])
            assert all(isinstance(v, int) and v in (0, 1) for v in annotation["keypoints"][2::3])
            assert annotation["num_keypoints"] == sum(1 for v in annotation["keypoints"][2::3] if v > 0)
    assert count > 0


def _check_posetrack_ids_and_boxes(data):
    """The PoseTrack18 rules, which hold for the real files too: image id = 1, the 6-digit video id
    and the 4-digit frame index; annotation id = image id * 100 + k; bbox = the labelled keypoints'
    extent enlarged 1.3x about its centre."""
    for image in data["images"]:
        frame = int(Path(image["file_name"]).stem)
        assert image["id"] == image["frame_id"] == 10000000000 + int(image["vid_id"]) * 10000 + frame
        assert image["nframes"] >= len(data["images"])
    per_image = {}
    for annotation in data["annotations"]:
        k = per_image.setdefault(annotation["image_id"], 0)
        per_image[annotation["image_id"]] += 1
        assert annotation["id"] == annotation["image_id"] * 100 + k
        kp = _keypoints(annotation)
        labelled = kp[(kp[:, 0] != 0) | (kp[:, 1] != 0)]
        centre = (labelled[:, :2].min(0) + labelled[:, :2].max(0)) / 2
        extent = 1.3 * (labelled[:, :2].max(0) - labelled[:, :2].min(0))
        x, y, w, h = annotation["bbox"]
        np.testing.assert_allclose([x + w / 2, y + h / 2], centre, atol=0.02)
        np.testing.assert_allclose([w, h], np.maximum(extent, 5.2), atol=0.02)


def test_ids_and_boxes_follow_posetrack_rules(dataset, shared_data):
    _check_posetrack_ids_and_boxes(json.loads((shared_data / REAL_SEQUENCE).read_text()))
    for _, _, data in _all_splits(dataset):
        _check_posetrack_ids_and_boxes(data)


# poseval's converter (posetrack18_fname2id) splits a sequence folder's name at "_": an integer video
# number, then a source it knows, each source being the leading digit of the image ids.
POSEVAL_SOURCES = {"mpii": 1, "bonn": 2, "mpiinew": 3}
POSEVAL_NAME = r"^(\d{6})_(mpii|bonn|mpiinew)_(train|val|test)$"


def test_sequence_names_pass_posevals_converter(dataset, shared_data):
    import re

    real = json.loads((shared_data / REAL_SEQUENCE).read_text())
    assert re.match(POSEVAL_NAME, Path(REAL_SEQUENCE).stem)          # the pattern admits the real name
    names = [seq for _, seq, _ in _all_splits(dataset)]
    assert names and all(re.match(POSEVAL_NAME, seq) for seq in names)
    for data in [real] + [data for _, _, data in _all_splits(dataset)]:
        for image in data["images"]:
            folder = Path(image["file_name"]).parent.name             # what poseval reads the name from
            number, source, _ = re.match(POSEVAL_NAME, folder).groups()
            frame = int(Path(image["file_name"]).stem)
            assert image["id"] == POSEVAL_SOURCES[source] * 10**10 + int(number) * 10**4 + frame


def test_layout_files_and_keypoints(dataset):
    root = dataset.root
    assert set(dataset.splits) == {"train", "val"}
    assert len(dataset.splits["train"].sequences) == SMALL["n_videos"]
    vid_ids = {"train": set(), "val": set()}
    width, height = SMALL["size"]
    for split, seq, data in _all_splits(dataset):
        assert (root / "images" / split / seq).is_dir()
        assert len(data["images"]) == SMALL["frames"]
        for t, image in enumerate(data["images"]):
            assert image["file_name"] == f"images/{split}/{seq}/{t:06d}.jpg"
            assert image["is_labeled"] is True and image["vid_id"] == seq[:6]
            pixels = cv2.imread(str(root / image["file_name"]))
            assert pixels is not None and pixels.shape == (height, width, 3)
            mask = cv2.imread(str(root / image["mask_file"]), cv2.IMREAD_GRAYSCALE)
            assert mask is not None and mask.shape == (height, width)
            vid_ids[split].add(image["vid_id"])
        for annotation in data["annotations"]:
            kp = _keypoints(annotation)
            assert np.all(kp[list(motion.EAR_JOINTS)] == 0)        # ears are never labelled
            labelled = (kp[:, 0] != 0) | (kp[:, 1] != 0)
            assert np.all((kp[labelled, 0] >= 0) & (kp[labelled, 0] <= width - 1))
            assert np.all((kp[labelled, 1] >= 0) & (kp[labelled, 1] <= height - 1))
            assert np.all(kp[~labelled, 2] == 0)
    assert vid_ids["train"].isdisjoint(vid_ids["val"])


def test_detections_are_coco_results_near_the_ground_truth(dataset, shared_data):
    real_path = shared_data / "posetrack18/annotations/test_posetrack18_human_detections.json"
    real = json.loads(real_path.read_text())
    matched = total = 0
    for split, info in dataset.splits.items():
        detections = json.loads(info.detections.read_text())
        assert isinstance(detections, list) and detections
        image_ids = {im["id"] for _, _, d in _all_splits(dataset) for im in d["images"]}
        by_image = {}
        for det in detections:
            assert list(det) == list(real[0]) and _type_names(det) == _type_names(real[0])
            assert det["category_id"] == 1 and 0 < det["score"] <= 1 and det["image_id"] in image_ids
            assert det["bbox"][2] > 0 and det["bbox"][3] > 0
            by_image.setdefault(det["image_id"], []).append(det["bbox"])
        for data in _sequences(dataset.root, split).values():
            for annotation in data["annotations"]:
                total += 1
                gt = np.array(annotation["bbox"])
                ious = [_iou(gt, np.array(b)) for b in by_image.get(annotation["image_id"], [])]
                matched += bool(ious) and max(ious) >= 0.4
    assert matched / total >= 0.8, (matched, total)


def _iou(a, b):
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


# ----------------------------------------------------------------------------- determinism


def _tree_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_bytes_whatever_the_workers(tmp_path):
    args = dict(n_videos=2, frames=6, size=(160, 120), seed=11, val_videos=1)
    first = make_synthetic_posetrack(tmp_path / "a", workers=1, **args)
    make_synthetic_posetrack(tmp_path / "b", workers=2, **args)
    make_synthetic_posetrack(tmp_path / "c", workers=1, **{**args, "seed": 12})
    a, b, c = (_tree_bytes(tmp_path / name) for name in "abc")
    assert len(a) > 20 and a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]][:5]
    assert a.keys() == c.keys() and any(a[k] != c[k] for k in a if k.endswith(".jpg"))
    # Same arguments again: the dataset is reused untouched.
    stamp = (tmp_path / "a" / "synthetic.json").stat().st_mtime_ns
    again = make_synthetic_posetrack(tmp_path / "a", workers=1, **args)
    assert again.seconds == 0.0 and again.splits == first.splits
    assert (tmp_path / "a" / "synthetic.json").stat().st_mtime_ns == stamp


def test_out_dir_protection(tmp_path):
    args = dict(n_videos=1, frames=2, size=(128, 96), val_videos=1, workers=1)
    make_synthetic_posetrack(tmp_path / "d", seed=1, **args)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_synthetic_posetrack(tmp_path / "d", seed=2, **args)
    make_synthetic_posetrack(tmp_path / "d", seed=2, overwrite=True, **args)
    marker = tmp_path / "d" / "synthetic.json"
    record = json.loads(marker.read_text())
    assert record["arguments"]["seed"] == 2
    # A dataset cached by an older generator version is rebuilt, not reused.
    marker.write_text(json.dumps({**record, "version": record["version"] - 1}))
    assert make_synthetic_posetrack(tmp_path / "d", seed=2, **args).seconds > 0
    assert json.loads(marker.read_text())["version"] == record["version"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not"):
            make_synthetic_posetrack(tmp_path / "mine", overwrite=overwrite, **args)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(n_videos=0), ValueError, "n_videos"),
    (dict(n_videos=2.5), TypeError, "n_videos"),
    (dict(frames=-1), ValueError, "frames"),
    (dict(size=(50, 40)), ValueError, "width"),
    (dict(size="big"), ValueError, "size"),
    (dict(people=(3, 1)), ValueError, "people"),
    (dict(hard_fraction=0.9), ValueError, "hard_fraction"),
    (dict(label_every=0), ValueError, "label_every"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(workers=0), ValueError, "workers"),
])
def test_bad_arguments_are_named(tmp_path, kwargs, error, name):
    with pytest.raises(error, match=name):
        make_synthetic_posetrack(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- body plausibility


@pytest.mark.parametrize("action", motion.ACTIONS)
def test_skeleton_lengths_and_joint_limits(action):
    rng = np.random.default_rng(7)
    height, frames = 170.0, 80
    person = motion.simulate_person(rng, frames, height, 200.0, 60.0, 260.0, actions=(action,))
    joints = person.joints
    for a, b, segment in motion.BONES:       # 3-D bone lengths never change
        length = np.linalg.norm(joints[:, a] - joints[:, b], axis=-1)
        np.testing.assert_allclose(length, motion.SEGMENTS[segment] * height, rtol=1e-9)
    for name, (low, high) in motion.JOINT_LIMITS.items():
        assert np.all(person.angles[name] >= low - 1e-9) and np.all(person.angles[name] <= high + 1e-9), name
    # The same limits read back from the 3-D joints: elbows and knees open between 180 degrees and
    # 180 minus their flexion limit, and knees only ever fold backwards.
    for (a, m, c), limit in (((5, 7, 9), 150), ((6, 8, 10), 150), ((11, 13, 15), 140), ((12, 14, 16), 140)):
        u, v = joints[:, a] - joints[:, m], joints[:, c] - joints[:, m]
        cos = np.sum(u * v, -1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
        angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        assert np.all(angle >= 180 - limit - 1e-6) and np.all(angle <= 180 + 1e-6)
    yaw = np.radians(person.yaw)
    forward = np.stack([np.sin(yaw), np.zeros_like(yaw), np.cos(yaw)], -1)
    for hip, knee, ankle in ((11, 13, 15), (12, 14, 16)):
        thigh = joints[:, knee] - joints[:, hip]
        thigh /= np.linalg.norm(thigh, axis=-1, keepdims=True)
        shin = joints[:, ankle] - joints[:, knee]
        fold = shin - np.sum(shin * thigh, -1, keepdims=True) * thigh      # the part that bends
        assert np.all(np.sum(fold * forward, -1) <= 1e-6 * height)
    # Smooth motion: no joint jumps more than a fifth of the body height between frames.
    assert np.abs(np.diff(joints[..., :2], axis=0)).max() < 0.2 * height
    # Feet on the ground line unless jumping.
    sole = np.maximum(joints[:, 15:17, 1].max(1), person.toes[:, :, 1].max(1)) + 0.04 * height
    assert sole.max() <= 260.0 + 1e-6
    if action != "jump":
        np.testing.assert_allclose(sole, 260.0, atol=0.02 * height)


def test_written_poses_are_plausible(dataset):
    """From the files alone: projected limbs never exceed their 3-D length, tracks move smoothly."""
    for split in dataset.splits:
        labels = _labels(dataset.root, split)
        for seq, data in _sequences(dataset.root, split).items():
            tracks = labels["sequences"][seq]["tracks"]
            previous = {}
            for annotation in sorted(data["annotations"], key=lambda a: a["image_id"]):
                height = tracks[str(annotation["track_id"])]["height"]
                kp = _keypoints(annotation)
                labelled = (kp[:, 0] != 0) | (kp[:, 1] != 0)
                for a, b, segment in motion.BONES:
                    if labelled[a] and labelled[b]:
                        length = np.linalg.norm(kp[a, :2] - kp[b, :2])
                        assert length <= motion.SEGMENTS[segment] * height + 0.02
                last = previous.get(annotation["track_id"])
                if last is not None and annotation["image_id"] - last[0] == 1:
                    both = labelled & last[2]
                    assert np.abs(kp[both, :2] - last[1][both, :2]).max(initial=0) < 0.2 * height
                previous[annotation["track_id"]] = (annotation["image_id"], kp, labelled)


# ----------------------------------------------------------------------------- degradations


def _annotations_by_track(root, split):
    """(image id, track id) -> keypoints [17, 3] of every annotation of the split."""
    return {(a["image_id"], a["track_id"]): _keypoints(a)
            for data in _sequences(root, split).values() for a in data["annotations"]}


def test_occluded_joints_lie_under_the_occluders(dataset):
    occluders = hidden_checked = deep_checked = 0
    for split in dataset.splits:
        labels = _labels(dataset.root, split)["images"]
        annotations = _annotations_by_track(dataset.root, split)
        for image_id, label in labels.items():
            for record in label["degradations"]:
                if record["type"] != "occluder":
                    continue
                occluders += 1
                polygon = np.asarray(record["polygon"], np.float32)
                hidden = {tuple(h) for h in record["hidden"]}
                for track, joint in hidden:
                    kp = annotations.get((int(image_id), track))
                    if kp is None:
                        continue
                    hidden_checked += 1
                    assert kp[joint, 2] == 0
                    point = (float(kp[joint, 0]), float(kp[joint, 1]))
                    assert cv2.pointPolygonTest(polygon, point, True) >= -2.5
                for (iid, track), kp in annotations.items():
                    if iid != int(image_id):
                        continue
                    for joint in motion.LABELLED_JOINTS:
                        if kp[joint, 0] == 0 and kp[joint, 1] == 0:
                            continue
                        point = (float(kp[joint, 0]), float(kp[joint, 1]))
                        depth = cv2.pointPolygonTest(polygon, point, True)
                        if depth >= 3.0:         # well inside: nothing can show through
                            deep_checked += 1
                            assert kp[joint, 2] == 0 and (track, joint) in hidden
    assert occluders > 0 and hidden_checked > 0 and deep_checked > 0


def test_overlap_and_truncation_records_match_annotations(dataset):
    for split in dataset.splits:
        labels = _labels(dataset.root, split)["images"]
        annotations = _annotations_by_track(dataset.root, split)
        for image_id, label in labels.items():
            for record in label["degradations"]:
                kp = annotations.get((int(image_id), record.get("track_id")))
                if kp is None:
                    continue
                if record["type"] == "overlap":
                    assert all(kp[j, 2] == 0 for j in record["hidden"])
                    assert record["track_id"] not in record["by"]
                if record["type"] == "truncation":
                    assert all(np.all(kp[j] == 0) for j in record["outside"])


def test_labels_cover_every_frame_and_define_hard(dataset):
    for split, info in dataset.splits.items():
        labels = _labels(dataset.root, split)
        ids = {im["id"] for data in _sequences(dataset.root, split).values() for im in data["images"]}
        assert {int(k) for k in labels["images"]} == ids
        threshold, types = labels["hard_threshold"], set(labels["hard_types"])
        for label in labels["images"].values():
            strong = [r for r in label["degradations"] if r["strength"] >= threshold and r["type"] in types]
            assert label["hard"] == bool(strong)
            assert all(0 <= r["strength"] <= 1 for r in label["degradations"])
        assert info.hard_frames == len(hard_image_ids(dataset.root, split))
    train = dataset.splits["train"]
    assert 0.25 <= train.hard_frames / train.labelled_frames <= 0.65


def test_degradation_events_are_short_with_clean_neighbours(dataset):
    """Blur and occluder events last at most two frames: any five-frame window around a degraded
    key frame holds at least three frames without one."""
    event_types = {"motion_blur", "defocus", "occluder"}
    for split in dataset.splits:
        labels = _labels(dataset.root, split)
        for data in _sequences(dataset.root, split).values():
            strong = [any(r["type"] in event_types and r["strength"] >= 0.5
                          for r in labels["images"][str(im["id"])]["degradations"]) for im in data["images"]]
            for t in range(2, len(strong) - 2):
                if strong[t]:
                    assert sum(strong[t - 2:t + 3]) <= 2, (data["images"][t]["id"], strong[t - 2:t + 3])


def test_blur_kernels_move_light_as_described():
    """A point blurred by the shake kernel is smeared along a path that starts at the point (the
    labelled instant) and whose centroid is the returned offset; defocus keeps the centroid."""
    from jmipose.data import _synthetic_render as render

    rng = np.random.default_rng(4)
    for length in (12.0, 40.0):
        image = np.zeros((161, 161), np.float32)
        image[80, 80] = 1000.0
        kernel, offset = render.shake_kernel(rng, length)
        out = render.apply_kernel(image, kernel)
        ys, xs = np.mgrid[0:161, 0:161]
        centroid = np.array([(out * xs).sum(), (out * ys).sum()]) / out.sum()
        np.testing.assert_allclose(centroid, [80 + offset[0], 80 + offset[1]], atol=0.05)
        assert out[79:82, 79:82].sum() > 0                        # the streak starts at the point
        extent = np.ptp(np.argwhere(out > 1e-3), axis=0).max()
        assert 0.4 * length <= extent <= length + 2
        defocused = render.apply_kernel(image, render.defocus_kernel(length / 4))
        centroid = np.array([(defocused * xs).sum(), (defocused * ys).sum()]) / defocused.sum()
        np.testing.assert_allclose(centroid, [80, 80], atol=1e-3)


def _sharpness(image, boxes):
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)
    lap = cv2.Laplacian(gray, cv2.CV_64F)
    mask = np.zeros(gray.shape, bool)
    for x, y, w, h in boxes:
        x0, y0 = max(int(x), 0), max(int(y), 0)
        mask[y0:int(y + h), x0:int(x + w)] = True
    return lap[mask].var()


def test_blurred_frames_are_less_sharp_than_their_neighbours(dataset):
    checked = 0
    for split in dataset.splits:
        labels = _labels(dataset.root, split)["images"]
        for data in _sequences(dataset.root, split).values():
            images = data["images"]
            boxes = {}
            for a in data["annotations"]:
                boxes.setdefault(a["image_id"], []).append(a["bbox"])

            def blur_of(t):
                return max([r["strength"] for r in labels[str(images[t]["id"])]["degradations"]
                            if r["type"] in ("motion_blur", "defocus")], default=0.0)

            for t in range(1, len(images) - 1):
                isolated = blur_of(t) >= 0.5 and blur_of(t - 1) == 0 and blur_of(t + 1) == 0
                if not isolated or not boxes.get(images[t]["id"]):
                    continue
                region = boxes[images[t]["id"]]
                sharp = [_sharpness(cv2.imread(str(dataset.root / images[u]["file_name"])), region)
                         for u in (t - 1, t, t + 1)]
                assert sharp[1] < 0.6 * min(sharp[0], sharp[2]), (images[t]["id"], sharp)
                checked += 1
    assert checked > 0


# ----------------------------------------------------------------------------- helpers


def test_hard_subset_keeps_only_hard_frames(dataset, tmp_path):
    hard = hard_image_ids(dataset.root, "val")
    easy = hard_image_ids(dataset.root, "val", hard=False)
    assert hard and easy and hard.isdisjoint(easy)
    out = write_frame_subset(dataset.root, "val", tmp_path / "gt_hard")
    for seq, original in _sequences(dataset.root, "val").items():
        subset = json.loads((out / f"{seq}.json").read_text())
        assert [im["id"] for im in subset["images"]] == [im["id"] for im in original["images"]]
        assert {im["id"] for im in subset["images"] if im["is_labeled"]} <= hard
        assert subset["annotations"] == [a for a in original["annotations"] if a["image_id"] in hard]


def test_contact_sheet(dataset, tmp_path):
    path = render_contact_sheet(dataset.root, tmp_path / "sheet.png", split="train", rows=3, tile_width=160)
    sheet = cv2.imread(str(path))
    assert sheet is not None and sheet.shape[1] == 5 * 160
    assert sheet.shape[0] >= 2 * (22 + 120)        # at least one degraded window and the clean row


def test_synthetic_video_mp4(tmp_path):
    video = synthetic_video(tmp_path / "clip.mp4", frames=12, size=(192, 144), seed=5, people=2)
    capture = cv2.VideoCapture(str(video.path))
    assert capture.isOpened() and capture.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
    capture.release()
    frames = decoded_frames(video.path)
    assert len(frames) == 12 == len(video.people) == len(video.hard)
    assert frames[0].shape == (144, 192, 3)
    kp = np.asarray(video.people[0][0]["keypoints"])
    assert kp.shape == (17, 3) and np.all(kp[:, 0] <= 191)
    with pytest.raises(ValueError, match="mp4"):
        synthetic_video(tmp_path / "clip.avi", frames=2)


# ----------------------------------------------------------------------------- the PoseTrack loader


def test_posetrack_loader_reads_the_dataset(dataset):
    """The PoseTrack18 loader reads the synthetic files without special cases: ground-truth samples
    with the written joints (visibility 0 is "not a training target" there, as for PoseTrack), and
    detector-box samples from the detections JSON."""
    from jmipose.data import PoseTrackVideoDataset

    val = dataset.splits["val"]
    gt = PoseTrackVideoDataset(dataset.root, split="val", input_size=(96, 128), heatmap_size=(24, 32))
    written = {}
    for data in _sequences(dataset.root, "val").values():
        for annotation in data["annotations"]:
            written[(annotation["image_id"], annotation["track_id"])] = _keypoints(annotation)
    assert len(gt) == len(written)
    for index in (0, len(gt) // 2, len(gt) - 1):
        sample = gt[index]
        meta = sample["meta"]
        assert sample["frames"].shape == (5, 3, 128, 96)
        kp = written[(meta["image_id"], meta["track_id"])]
        visible = kp[:, 2] > 0
        np.testing.assert_allclose(meta["joints"].numpy()[visible], kp[visible], atol=1e-4)
        assert np.all(meta["joints"].numpy()[~visible] == 0)
        assert np.all(sample["target_weight"].numpy()[~visible] == 0)
    detections = json.loads(val.detections.read_text())
    boxed = PoseTrackVideoDataset(dataset.root, split="val", boxes=val.detections, box_score_threshold=0.2,
                                  input_size=(96, 128), heatmap_size=(24, 32))
    assert len(boxed) == sum(d["score"] >= 0.2 for d in detections)
    assert boxed[0]["frames"].shape == (5, 3, 128, 96)
    train = PoseTrackVideoDataset(dataset.root, split="train", input_size=(96, 128), heatmap_size=(24, 32))
    assert len(train) > 0 and train[0]["heatmaps"].shape == (17, 32, 24)
