"""Malformed prediction files: the evaluator refuses each before computing anything, with a
PredictionCheckError naming the file and the field."""

from __future__ import annotations

import json
import re

import pytest

from jmipose.metrics import PredictionCheckError, posetrack_ap
from tests.metrics.test_posetrack_ap import HEAD, ann, image, pose, write


def _good() -> dict:
    return {"images": [image(1)], "annotations": [ann(pose(), 1, scores=[0.9] * 17)]}


def _edited(edit) -> str:
    data = _good()
    edit(data)
    return json.dumps(data)


def _first_ann(key, value):
    return lambda d: d["annotations"][0].__setitem__(key, value)


def _keypoint(index, value):
    return lambda d: d["annotations"][0]["keypoints"].__setitem__(index, value)


# name -> (file text, the message the error must hold)
CASES = {
    "truncated": (_edited(lambda d: None)[:-20], r"not valid JSON \(Expecting ',' delimiter"),
    "empty file": ("", "not valid JSON"),
    "binary garbage": ("\x00\x9f garbage", "not valid JSON"),
    "not UTF-8": (None, "not UTF-8 text"),
    "nested too deeply": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "top level a list": ("[1, 2]", "neither a PoseTrack18/21 file"),
    "top level null": ("null", "neither a PoseTrack18/21 file"),
    "annotations not a list": (_edited(lambda d: d.__setitem__("annotations", {"a": 1})),
                               "'images' and 'annotations' must be lists"),
    "annotation not an object": (_edited(lambda d: d["annotations"].__setitem__(0, 5)),
                                 r"annotations\[0\] has no 'image_id'"),
    "image not an object": (_edited(lambda d: d["images"].__setitem__(0, [])), r"images\[0\] has no 'id'"),
    "image id a float": (_edited(lambda d: d["images"][0].__setitem__("id", 1.5)),
                         r"images\[0\]\.id must be an integer, got 1\.5"),
    "image_id a string": (_edited(_first_ann("image_id", "1")),
                          r"annotations\[0\]\.image_id must be an integer, got '1'"),
    "image_id of no image": (_edited(_first_ann("image_id", 99)),
                             r"annotations\[0\]\.image_id 99 names no image in 'images'"),
    "keypoints a string": (_edited(_first_ann("keypoints", "1,2,3")),
                           r"annotations\[0\]: 'keypoints' must be a list of 51 numbers, got str"),
    "keypoints null": (_edited(_first_ann("keypoints", None)),
                       "'keypoints' must be a list of 51 numbers, got NoneType"),
    "keypoints short": (_edited(_first_ann("keypoints", [1.0] * 50)), "got 50 values"),
    "keypoints nested": (_edited(_first_ann("keypoints", [[1, 2, 3]] * 17)), "got 17 values"),
    "keypoint NaN": (_edited(_keypoint(3, float("nan"))), "'keypoints' holds a non-number or non-finite value"),
    "keypoint inf": (_edited(_keypoint(3, float("inf"))), "'keypoints' holds a non-number or non-finite value"),
    "keypoint 10**400": (_edited(_keypoint(3, 10 ** 400)), "'keypoints' holds a non-number or non-finite value"),
    "keypoint a bool": (_edited(_keypoint(3, True)), "'keypoints' holds a non-number or non-finite value"),
    "keypoint a string": (_edited(_keypoint(3, "12")), "'keypoints' holds a non-number or non-finite value"),
    "scores a string": (_edited(_first_ann("scores", "high")), "'scores' must list 17 per-joint scores, got str"),
    "scores NaN": (_edited(_first_ann("scores", [float("nan")] * 17)), "'scores' holds a non-number or non-finite"),
    "categories broken": (_edited(lambda d: d.__setitem__("categories", "x")),
                          "'categories' must be a list with one person category"),
    "head box malformed": (_edited(_first_ann("bbox_head", [1, 2, 3])), r"'bbox_head' must be \[x, y, w, h\]"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_prediction_file_is_refused_naming_file_and_field(tmp_path, name):
    text, message = CASES[name]
    write(tmp_path / "gt", "seq", [image(1)], [ann(pose(), 1, head=HEAD)])
    (tmp_path / "pr").mkdir()
    path = tmp_path / "pr" / "seq.json"
    if text is None:
        path.write_bytes(b'{"images": "\xff\xfe"}')
    else:
        path.write_text(text)
    with pytest.raises(PredictionCheckError) as raised:
        posetrack_ap(tmp_path / "gt", tmp_path / "pr")
    assert re.search(re.escape(str(path)) + r": .*" + message, str(raised.value)), str(raised.value)


def test_the_unedited_file_scores_100(tmp_path):
    write(tmp_path / "gt", "seq", [image(1)], [ann(pose(), 1, head=HEAD)])
    (tmp_path / "pr").mkdir()
    (tmp_path / "pr" / "seq.json").write_text(json.dumps(_good()))
    assert posetrack_ap(tmp_path / "gt", tmp_path / "pr")["Total"] == 100.0
