"""jmipose.formats.detections: one reading of a detections file, with the training loader's rules and a
video's rules, on the real PoseTrack18 detections file and on hand-made entries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jmipose.formats import BadDataPolicy, DataError, load_detections, read_detections

REAL = "posetrack18/annotations/test_posetrack18_human_detections.json"


def test_the_real_file_read_both_ways(shared_data):
    data = json.loads((shared_data / REAL).read_text())
    training = read_detections(data, "d.json", BadDataPolicy())
    video = read_detections(data, "d.json", BadDataPolicy(), video=True)
    assert len(training) == len(video) == len(data) == 278
    for entry, a, b in zip(data, training, video):
        assert a.image_id == b.image_id == entry["image_id"] and a.score == b.score == entry["score"]
        np.testing.assert_array_equal(a.bbox, entry["bbox"])
        np.testing.assert_array_equal(b.bbox, entry["bbox"])
    found = load_detections(shared_data / REAL, 0.9, sequence=3418)
    want = sum(1 for d in data if d["image_id"] == 10034180000 and d["score"] >= 0.9)
    assert list(found) == [0] and len(found[0]) == found.used == want and found.sequence == 3418
    assert found.other_sequences == {9473: 78, 12834: 100} and found.total == 278


def test_the_rules_that_differ():
    no_score = [{"image_id": 7, "bbox": [1, 2, 3, 4]}]
    assert read_detections(no_score, "d", BadDataPolicy(), video=True)[0].score == 1.0
    with pytest.raises(DataError, match=r"d, field '\[0\]\.score': missing required field"):
        read_detections(no_score, "d", BadDataPolicy())
    high = [{"image_id": 7, "bbox": [1, 2, 3, 4], "score": 1.5}]
    assert read_detections(high, "d", BadDataPolicy())[0].score == 1.5      # a training box's score: any number
    with pytest.raises(DataError, match=r"expected a detector's score in \[0, 1\], got 1\.5"):
        read_detections(high, "d", BadDataPolicy(), video=True)
    by_frame = [{"frame_index": 3, "bbox": [1, 2, 3, 4], "score": 0.5}]
    assert read_detections(by_frame, "d", BadDataPolicy(), video=True)[0].frame == 3
    with pytest.raises(DataError, match=r"field '\[0\]\.image_id': missing required field"):
        read_detections(by_frame, "d", BadDataPolicy())


def test_the_rules_that_are_shared():
    entries = [{"image_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5, "category_id": 2},   # not a person
               {"image_id": 1, "bbox": [1, 2, 0, 4], "score": 0.5},
               {"image_id": 1, "bbox": [1, 2, 3, "4"], "score": 0.5},
               {"image_id": 1.5, "bbox": [1, 2, 3, 4], "score": 0.5},
               {"image_id": 1, "bbox": [1, 2, 3, 4], "score": float("nan")},
               {"image_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5, "category_id": "1"}]
    for video in (False, True):
        policy = BadDataPolicy(collect=True)
        assert read_detections(entries, "d", policy, video=video) == []
        assert [(e.field, e.problem) for e in policy.errors] == [
            ("[1].bbox", "zero-area box: width 0, height 4"),
            ("[2].bbox[3]", "expected a number, got '4'"),
            ("[3].image_id", "expected an integer, got 1.5"),
            ("[4].score", "expected a finite number, got nan"),
            ("[5].category_id", "expected an integer, got '1'"),
        ]
    with pytest.raises(DataError, match="expected a list of detections"):
        read_detections({"boxes": []}, "d", BadDataPolicy())
