"""jmipose.formats.posetrack: the image-id rule against the real PoseTrack18 files, the two readings of
one file (training, evaluator) against each other, the writer read back, and one error type whether
a problem is raised or collected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jmipose.formats import BadDataPolicy, DataError, read_annotation_file, read_sequence
from jmipose.formats.posetrack import (
    CATEGORY, posetrack_document, posetrack_image_id, posetrack_sequence, prediction_annotation, sequence_image_id,
    split_image_id,
)
from jmipose.joints import KEYPOINT_NAMES, POSEVAL_JOINTS


def _real_files(shared_data: Path) -> list[Path]:
    folder = shared_data / "posetrack18" / "annotations"
    return sorted((folder / "val").glob("*.json")) + [folder / "test_posetrack18_val.json"]


def test_the_image_id_rule_gives_the_ids_of_the_real_files(shared_data):
    """Every image id, frame_id and annotation image_id of the real PoseTrack18 files is the rule's id of
    the frame its file name names (10**10 + sequence x 10**4 + frame: ``1`` for these mpii sequences)."""
    checked = 0
    for path in _real_files(shared_data):
        data = json.loads(path.read_text())
        for image in data["images"]:
            folder, frame = Path(image["file_name"]).parent.name, int(Path(image["file_name"]).stem)
            want = posetrack_image_id(posetrack_sequence(folder), frame)
            assert image["id"] == image["frame_id"] == want == sequence_image_id(folder, frame), image["file_name"]
            assert split_image_id(image["id"]) == (int(image["vid_id"]), frame)
            checked += 1
        ids = {image["id"] for image in data["images"]}
        assert {a["image_id"] for a in data["annotations"]} <= ids
    assert checked == 6
    detections = json.loads((shared_data / "posetrack18/annotations/test_posetrack18_human_detections.json")
                            .read_text())
    assert {split_image_id(d["image_id"]) for d in detections} == {(3418, 0), (9473, 0), (12834, 0)}


def test_the_six_digit_guard():
    assert posetrack_image_id(3418, 7) == 10034180007 and posetrack_image_id(999999, 9999) == 19999999999
    assert posetrack_image_id(1_000_000, 0) is None and posetrack_image_id(1, 10_000) is None
    assert posetrack_image_id(-1, 0) is None and posetrack_image_id(0, -1) is None
    assert sequence_image_id("my_clip", 7) == 7 and sequence_image_id("000001_mpiinew_test", 12345) == 12345
    assert sequence_image_id("clip", 3, sequence=1_000_000) == 3    # a sequence of seven digits has no id
    assert split_image_id(9_999_999_999) is None and split_image_id(2 * 10**10) is None
    assert posetrack_sequence("003418_mpii_test") == 3418 and posetrack_sequence("3418_mpii") is None
    assert posetrack_sequence("24575_mpii", loose=True) == 24575 and posetrack_sequence("000100", loose=True) == 100
    assert posetrack_sequence("1234567_x", loose=True) is None and posetrack_sequence("clip", loose=True) is None


def test_training_and_evaluator_readings_of_the_real_files_agree(shared_data):
    for path in _real_files(shared_data)[:3]:
        found = read_annotation_file(path, BadDataPolicy())
        sequence = read_sequence(path, want_scores=False, policy=BadDataPolicy())
        assert found.layout == sequence.layout == "coco" and found.entries == len(sequence.frames) == 1
        frame = sequence.frames[0]
        assert found.frames[0].image_id == frame.image_id and found.frames[0].file_name == frame.name
        people = [p for p in found.people if p.image_id == frame.image_id]
        assert len(people) == frame.num_annotations == len(frame.people)
        for ours, theirs in zip(people, frame.people):
            x, y, w, h = ours.head_box
            np.testing.assert_allclose(theirs.head_box, [x, y, x + w, y + h], rtol=1e-6)
            for pose_id, name in enumerate(POSEVAL_JOINTS):
                joint = ours.joints[KEYPOINT_NAMES.index(name)]
                if joint[2] > 0:     # labelled for training: present for poseval, at the same place
                    np.testing.assert_allclose(theirs.points[pose_id][:2], joint[:2], rtol=1e-6)
        assert len(found.frames[0].ignore_regions) == len(frame.ignore_regions)


def test_a_written_prediction_file_reads_back(tmp_path):
    keypoints = np.arange(34, dtype=np.float64).reshape(17, 2) + 10
    scores = np.linspace(0.1, 0.9, 17)
    image = {"id": sequence_image_id("000007_mpii_test", 3), "file_name": "000007_mpii_test/000003.jpg"}
    annotation = prediction_annotation(image["id"], 5, keypoints, scores, 0.5, 0.7, person_box=[1.0, 2.0, 3.0, 4.0])
    path = tmp_path / "000007_mpii_test.json"
    path.write_text(json.dumps(posetrack_document([image], [annotation])))
    assert json.loads(path.read_text())["categories"] == [CATEGORY]
    sequence = read_sequence(path, want_scores=True, policy=BadDataPolicy(), predictions=True)
    (person,) = sequence.frames[0].people
    for pose_id, name in enumerate(POSEVAL_JOINTS):
        k = KEYPOINT_NAMES.index(name)
        assert person.points[pose_id] == pytest.approx((*keypoints[k], scores[k] * 0.5))
    found = read_annotation_file(path, BadDataPolicy())
    assert found.frames[0].frame_number == 3 and found.people[0].track_id == 5
    np.testing.assert_allclose(found.people[0].joints[:, :2], keypoints, rtol=1e-6)
    np.testing.assert_allclose(found.people[0].bbox, [10, 11, 32, 32])


def test_one_error_type_raised_or_collected(tmp_path):
    """The same problem is the same DataError (file, field, wording) whether the training reader raises
    it, skip_bad logs it, or the evaluator collects it."""
    path = tmp_path / "000007_mpii_test.json"
    image = {"id": 10000070000, "file_name": "images/000007_mpii_test/000000.jpg"}
    bad = {"image_id": "10000070000", "keypoints": [1.0] * 51, "category_id": 1}
    path.write_text(json.dumps(posetrack_document([image], [bad])))
    with pytest.raises(DataError) as raised:
        read_annotation_file(path, BadDataPolicy())
    assert (raised.value.file, raised.value.field) == (str(path), "annotations[0].image_id")
    skipped, collected = BadDataPolicy(skip_bad=True), BadDataPolicy(collect=True)
    assert read_annotation_file(path, skipped).people == []
    read_sequence(path, want_scores=False, policy=collected)
    assert str(raised.value) == skipped.skipped[0] == str(collected.errors[0])
    assert str(raised.value).endswith("field 'annotations[0].image_id': expected an integer, got '10000070000'")
