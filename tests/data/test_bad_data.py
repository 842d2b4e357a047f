"""Bad data: every case raises a DataError naming the file and the field, or is logged and skipped
under skip_bad=True; nothing reaches a DataLoader worker as an obscure crash."""

import json
import logging
import math
import re
import shutil

import cv2
import numpy as np
import pytest
import torch

from jmipose.data import DataError, PoseTrackVideoDataset
from tests.data.helpers import edit_json, image_id_of, person, write_frame, write_pt18

SMALL = dict(input_size=(48, 64), heatmap_size=(12, 16))


def build(root, **kwargs):
    return PoseTrackVideoDataset(root, "annotations/val", "val", **SMALL, **kwargs)


def _set(path, value):
    def edit(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _pop(path):
    def edit(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target.pop(path[-1])
    return edit


def _drop_last_keypoint(data):
    data["annotations"][0]["keypoints"].pop()


# (edit of the fixture JSON, the field the error must name, the problem it must state)
JSON_CASES = {
    "missing keypoints": (
        _pop(["annotations", 0, "keypoints"]),
        "annotations[0].keypoints",
        "missing required field",
    ),
    "short keypoints": (_drop_last_keypoint, "annotations[0].keypoints", "expected 51 numbers, got 50"),
    "NaN keypoint": (
        _set(["annotations", 0, "keypoints", 0], math.nan),
        "annotations[0].keypoints[0]",
        "NaN",
    ),
    "string keypoint": (
        _set(["annotations", 0, "keypoints", 4], "12"),
        "annotations[0].keypoints[4]",
        "expected a number, got '12'",
    ),
    "negative visibility": (
        _set(["annotations", 0, "keypoints", 2], -1),
        "annotations[0].keypoints[2]",
        "negative visibility",
    ),
    "keypoint outside the image": (
        _set(["annotations", 0, "keypoints", 27], 5000),
        "annotations[0].keypoints",
        r"left_wrist at \(5000, 66\) is outside the 160x120 image",
    ),
    "zero-area box": (_set(["annotations", 0, "bbox", 2], 0), "annotations[0].bbox", "zero-area box"),
    "negative box": (_set(["annotations", 0, "bbox", 3], -5), "annotations[0].bbox", "negative box size"),
    "box not a list": (
        _set(["annotations", 0, "bbox"], "55,5,50,105"),
        "annotations[0].bbox",
        "expected a list of numbers",
    ),
    "unknown image": (
        _set(["annotations", 0, "image_id"], 123),
        "annotations[0].image_id",
        "no image with id 123",
    ),
    "missing file_name": (_pop(["images", 0, "file_name"]), "images[0].file_name", "missing required field"),
    "bad file name": (
        _set(["images", 0, "file_name"], "images/val/000100_test/frame.jpg"),
        "images[0].file_name",
        "frame file names must be",
    ),
    "image id not an int": (_set(["images", 0, "id"], "first"), "images[0].id", "expected an integer"),
    "is_labeled not a bool": (
        _set(["images", 0, "is_labeled"], "yes"),
        "images[0].is_labeled",
        "expected true/false",
    ),
    "zero nframes": (_set(["images", 0, "nframes"], 0), "images[0].nframes", "positive frame count"),
    "ragged ignore region": (
        _set(["images", 0, "ignore_regions_y"], [[0, 1]]),
        "images[0].ignore_regions_y[0]",
        "expected 3 numbers, got 2",
    ),
    # wrong types and non-finite numbers (issue 10's list of corrupt inputs)
    "infinite keypoint": (
        _set(["annotations", 0, "keypoints", 0], math.inf),
        "annotations[0].keypoints[0]",
        r"expected a finite number, got inf",
    ),
    "keypoint written as 10**400": (
        _set(["annotations", 0, "keypoints", 0], 10**400),
        "annotations[0].keypoints[0]",
        "expected a finite number, got an integer of 401 digits",
    ),
    "boolean keypoint": (
        _set(["annotations", 0, "keypoints", 0], True),
        "annotations[0].keypoints[0]",
        "expected a number, got True",
    ),
    "keypoints an object": (
        _set(["annotations", 0, "keypoints"], {"x": 1}),
        "annotations[0].keypoints",
        "expected a list of numbers, got dict",
    ),
    "NaN box": (_set(["annotations", 0, "bbox", 0], math.nan), "annotations[0].bbox[0]", "finite number"),
    "infinite box size": (_set(["annotations", 0, "bbox", 2], math.inf), "annotations[0].bbox[2]", "finite number"),
    "short box": (_set(["annotations", 0, "bbox"], [1, 2, 3]), "annotations[0].bbox", "expected 4 numbers, got 3"),
    "track id a string": (
        _set(["annotations", 0, "track_id"], "a"),
        "annotations[0].track_id",
        "expected an integer, got 'a'",
    ),
    "image_id a float": (
        _set(["annotations", 0, "image_id"], 1.5),
        "annotations[0].image_id",
        "expected an integer, got 1.5",
    ),
    "annotation not an object": (
        _set(["annotations", 0], 7),
        "annotations[0]",
        "expected a JSON object, got int",
    ),
    "nframes a string": (_set(["images", 0, "nframes"], "6"), "images[0].nframes", "expected an integer, got '6'"),
    "file_name a number": (_set(["images", 0, "file_name"], 5), "images[0].file_name", "non-empty file name"),
}


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_bad_json_fields(tmp_path, caplog, case):
    edit, field, problem = JSON_CASES[case]
    path = write_pt18(tmp_path, nframes=6, labelled=(0, 3, 5))
    edit_json(path, edit)
    with pytest.raises(DataError) as info:
        build(tmp_path)
    message = str(info.value)
    assert str(path) in message and f"field '{field}'" in message and re.search(problem, message), message
    assert info.value.file == str(path) and info.value.field == field
    with caplog.at_level(logging.WARNING, logger="jmipose.data"):
        ds = build(tmp_path, skip_bad=True)
    assert sorted(s.image_id % 100 for s in ds.samples) == [3, 5]  # only frame 0's entry is lost
    assert any(field in r.getMessage() and "skip_bad" in r.getMessage() for r in caplog.records)
    assert any(field in m for m in ds.skipped)


def test_truncated_json(tmp_path, caplog):
    path = write_pt18(tmp_path, sequence="000100_test", nframes=3, labelled=(1,))
    write_pt18(tmp_path, sequence="000200_test", nframes=3, labelled=(1,))
    path.write_text(path.read_text()[:200])
    with pytest.raises(DataError, match=re.escape(str(path)) + ": not valid JSON"):
        build(tmp_path)
    with caplog.at_level(logging.WARNING, logger="jmipose.data"):
        ds = build(tmp_path, skip_bad=True)
    assert [s.image_id for s in ds.samples] == [image_id_of("000200_test", 1)]
    assert any("not valid JSON" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "not valid JSON"),
        ("\x00\x9fgarbage", "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("[1, 2]", "not a PoseTrack annotation file.* got list"),
        ('{"images": "abc", "annotations": []}', "field 'images': expected a list, got str"),
        ('{"images": [], "annotations": {"a": 1}}', "field 'annotations': expected a list, got dict"),
    ],
)
def test_malformed_whole_files_name_the_file(tmp_path, text, problem):
    path = write_pt18(tmp_path, nframes=3, labelled=(1,))
    path.write_text(text)
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + problem):
        build(tmp_path)


def test_not_a_posetrack_file_and_missing_paths(tmp_path):
    path = write_pt18(tmp_path, nframes=2, labelled=(0,))
    edit_json(path, _pop(["images"]))
    with pytest.raises(DataError, match="not a PoseTrack annotation file"):
        build(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PoseTrackVideoDataset(tmp_path, "annotations/nowhere", "val")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .json files"):
        PoseTrackVideoDataset(tmp_path, "empty", "val")


def test_duplicate_image_ids_across_files(tmp_path):
    path = write_pt18(tmp_path, nframes=2, labelled=(0,))
    shutil.copy(path, path.with_name("copy.json"))
    with pytest.raises(DataError, match=r"copy\.json, field 'images\[0\]\.id': image id \d+ is already used"):
        build(tmp_path)
    assert len(build(tmp_path, skip_bad=True)) == 1


def test_inconsistent_nframes_and_frame_outside_the_sequence(tmp_path):
    path = write_pt18(tmp_path, nframes=6, labelled=(0, 3))
    edit_json(path, _set(["images", 3, "nframes"], 9))
    with pytest.raises(DataError, match=r"images\[3\]\.nframes'.*inconsistent nframes \[6, 9\]"):
        build(tmp_path)
    path = write_pt18(tmp_path, nframes=6, labelled=(0, 3))
    edit_json(path, _set(["images", 3, "file_name"], "images/val/000100_test/000007.jpg"))
    with pytest.raises(DataError, match=r"images\[3\]\.file_name'.*frame 7 is outside the sequence \[0, 5\]"):
        build(tmp_path)


def test_missing_frame_files(tmp_path, caplog):
    write_pt18(tmp_path, nframes=6, labelled=(0, 3, 5))
    missing = tmp_path / "images/val/000100_test/000004.jpg"
    missing.unlink()
    with pytest.raises(DataError, match=re.escape(str(missing)) + ": missing frame file"):
        build(tmp_path)
    with caplog.at_level(logging.WARNING, logger="jmipose.data"):
        ds = build(tmp_path, skip_bad=True)
    assert [s.image_id % 100 for s in ds.samples] == [0]
    assert sum("000004.jpg: missing frame file" in r.getMessage() for r in caplog.records) == 2
    shutil.rmtree(tmp_path / "images")
    with pytest.raises(DataError, match=r"000000\.jpg: missing frame file \(key frame"):
        build(tmp_path)


def test_bad_detections(tmp_path, caplog):
    write_pt18(tmp_path, nframes=2, labelled=(0, 1))
    image = image_id_of("000100_test", 0)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(
        json.dumps(
            [
                {"image_id": image, "bbox": [50, 5, 60, 100], "score": 0.9},
                {"image_id": image, "bbox": [50, 5, 60, 100]},
                {"image_id": image, "bbox": [50, 5, 0, 100], "score": 0.8},
            ]
        )
    )
    with pytest.raises(
        DataError, match=re.escape(str(boxes)) + r", field '\[1\]\.score': missing required field"
    ):
        build(tmp_path, boxes="boxes.json")
    with caplog.at_level(logging.WARNING, logger="jmipose.data"):
        ds = build(tmp_path, boxes="boxes.json", skip_bad=True)
    assert len(ds) == 1 and ds.samples[0].score == pytest.approx(0.9)
    assert any("'[2].bbox': zero-area box" in r.getMessage() for r in caplog.records)
    boxes.write_text('[{"image_id": 1, "bbox": [')
    with pytest.raises(DataError, match="not valid JSON"):
        build(tmp_path, boxes="boxes.json", skip_bad=True)


def test_bad_posetrack17_points(tmp_path):
    write_frame(tmp_path / "images/seq/000001_x/00000001.jpg", value=50)
    rect = {
        "x1": [1],
        "y1": [1],
        "x2": [9],
        "y2": [9],
        "track_id": [0],
        "annopoints": [{"point": [{"id": [13], "x": [5], "y": [5]}, {"id": [15], "x": [6], "y": [6]}]}],
    }
    data = {
        "annolist": [
            {"image": [{"name": "images/seq/000001_x/00000001.jpg"}], "is_labeled": [1], "annorect": [rect]}
        ]
    }
    path = tmp_path / "annotations/val/seq.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    with pytest.raises(
        DataError, match=r"annorect\[0\]\.annopoints\[0\]\.point\[1\]\.id'.*unknown PoseTrack17 joint id 15"
    ):
        build(tmp_path, version="17")
    rect["annopoints"][0]["point"][1]["id"] = [13]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="joint id 13 appears twice"):
        build(tmp_path, version="17")
    rect["annopoints"][0]["point"][1] = {"id": [14], "x": [1, 2], "y": [6]}
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"point\[1\]\.x'.*one-element list, got a list of 2"):
        build(tmp_path, version="17")


def _two_frame_dataset(tmp_path, **kwargs):
    write_pt18(tmp_path, nframes=6, labelled=(0, 3, 5))
    return build(tmp_path, **kwargs)


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda p: p.write_bytes(b"\x00garbage" * 20), "cannot decode the image"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated JPEG"),
        (lambda p: p.write_bytes(b""), "empty frame file"),
        (lambda p: write_frame(p, value=10, size=(80, 60)), "image is 80x60 but .* says 160x120"),
    ],
)
def test_unreadable_frames_fail_at_load_naming_the_file(tmp_path, caplog, damage, problem):
    ds = _two_frame_dataset(tmp_path)
    key = tmp_path / "images/val/000100_test/000003.jpg"
    damage(key)
    index = [s.image_id % 100 for s in ds.samples].index(3)
    with pytest.raises(DataError, match=re.escape(str(key)) + ": " + problem):
        ds[index]
    assert ds[0]["frames"].shape[0] == 5  # sample 0 does not use frame 3
    skipping = build(tmp_path, skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="jmipose.data"):
        item = skipping[index]  # frames 3 and 5 both use frame 3: the loader moves on to sample 0
    assert item["meta"]["image_id"] % 100 == 0
    assert sum("000003.jpg" in r.getMessage() for r in caplog.records) == 2


def test_supporting_frame_of_another_size(tmp_path):
    ds = _two_frame_dataset(tmp_path)
    write_frame(tmp_path / "images/val/000100_test/000004.jpg", value=10, size=(80, 60))
    with pytest.raises(
        DataError, match=r"000004\.jpg: frame is 80x60 but the key frame .*000003\.jpg is 160x120"
    ):
        ds[1]


def test_worker_errors_reach_the_main_process_with_the_file(tmp_path):
    ds = _two_frame_dataset(tmp_path)
    key = tmp_path / "images/val/000100_test/000005.jpg"
    assert cv2.imwrite(str(key.with_suffix(".png")), np.zeros((4, 4, 3), np.uint8))
    key.write_bytes(b"not a jpeg")
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1)
    with pytest.raises(DataError, match=re.escape(str(key)) + ": cannot decode the image"):
        next(iter(loader))


def test_zero_size_box_of_a_one_joint_person_is_not_bad_data(tmp_path):
    # PoseTrack18 boxes are 1.3x the labelled joints' extent: one joint gives a zero-size box.
    one_joint = [(0, 0, 0)] * 17
    one_joint[2] = (80, 10, 1)
    people = {0: [person(0, joints=one_joint, bbox=[80, 10, 0, 0]), person(0, track_id=1)]}
    write_pt18(tmp_path, nframes=2, labelled=(0,), people=people)
    ds = build(tmp_path)
    assert [s.track_id for s in ds.samples] == [1] and not ds.skipped
    assert ds.people[ds.samples[0].image_id][0].bbox is None


def test_without_the_disk_listing_missing_frames_fail_at_load(tmp_path):
    write_pt18(tmp_path, nframes=6, labelled=(0, 3))
    (tmp_path / "images/val/000100_test/000004.jpg").unlink()
    ds = build(tmp_path, check_files=False)
    assert len(ds) == 2 and ds[0]["frames"].shape[0] == 5
    with pytest.raises(DataError, match=r"000004\.jpg: missing frame file"):
        ds[1]
