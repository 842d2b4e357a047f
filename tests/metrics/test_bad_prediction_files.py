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
                               "field 'annotations': expected a list, got dict"),
    "annotation not an object": (_edited(lambda d: d["annotations"].__setitem__(0, 5)),
                                 r"field 'annotations\[0\]': expected a JSON object, got int"),
    "image not an object": (_edited(lambda d: d["images"].__setitem__(0, [])),
                            r"field 'images\[0\]': expected a JSON object, got list"),
    "image id a float": (_edited(lambda d: d["images"][0].__setitem__("id", 1.5)),
                         r"field 'images\[0\]\.id': expected an integer, got 1\.5"),
    "image_id a string": (_edited(_first_ann("image_id", "1")),
                          r"field 'annotations\[0\]\.image_id': expected an integer, got '1'"),
    "image_id of no image": (_edited(_first_ann("image_id", 99)),
                             r"field 'annotations\[0\]\.image_id': 99 names no image in 'images'"),
    "keypoints a string": (_edited(_first_ann("keypoints", "1,2,3")),
                           r"field 'annotations\[0\]\.keypoints': expected a list of numbers, got str"),
    "keypoints null": (_edited(_first_ann("keypoints", None)),
                       "keypoints': expected a list of numbers, got NoneType"),
    "keypoints short": (_edited(_first_ann("keypoints", [1.0] * 50)), "keypoints': expected 51 numbers, got 50"),
    "keypoints nested": (_edited(_first_ann("keypoints", [[1, 2, 3]] * 17)), "keypoints': expected 51 numbers, got 17"),
    "keypoint NaN": (_edited(_keypoint(3, float("nan"))), r"keypoints\[3\]': expected a finite number, got nan"),
    "keypoint inf": (_edited(_keypoint(3, float("inf"))), r"keypoints\[3\]': expected a finite number, got inf"),
    "keypoint 10**400": (_edited(_keypoint(3, 10 ** 400)),
                         r"keypoints\[3\]': expected a finite number, got an integer of 401 digits"),
    "keypoint a bool": (_edited(_keypoint(3, True)), r"keypoints\[3\]': expected a number, got True"),
    "keypoint a string": (_edited(_keypoint(3, "12")), r"keypoints\[3\]': expected a number, got '12'"),
    "scores a string": (_edited(_first_ann("scores", "high")), "scores': expected a list of numbers, got str"),
    "scores NaN": (_edited(_first_ann("scores", [float("nan")] * 17)),
                   r"scores\[0\]': expected a finite number, got nan"),
    "categories broken": (_edited(lambda d: d.__setitem__("categories", "x")),
                          "field 'categories': expected a list of category objects"),
    "head box malformed": (_edited(_first_ann("bbox_head", [1, 2, 3])), "bbox_head': expected 4 numbers, got 3"),
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
    # one line per problem: the file, then (for a field) ", field '<field>'", then ": <problem>"
    assert re.search(re.escape(str(path)) + r"[:,] .*" + message, str(raised.value)), str(raised.value)


def test_the_unedited_file_scores_100(tmp_path):
    write(tmp_path / "gt", "seq", [image(1)], [ann(pose(), 1, head=HEAD)])
    (tmp_path / "pr").mkdir()
    (tmp_path / "pr" / "seq.json").write_text(json.dumps(_good()))
    assert posetrack_ap(tmp_path / "gt", tmp_path / "pr")["Total"] == 100.0
