"""The evaluation pipeline on the real PoseTrack18 files: an oracle model whose heatmaps are the
dataset's own targets must give AP 100 after flip test, DARK, back-projection, NMS and writing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from jmipose.config import EvalConfig
from jmipose.data import PoseTrackVideoDataset
from jmipose.decode import flip_back
from jmipose.engine.evaluate import (PersonPrediction, evaluate_model, score, select_people, split_sequences,
                                     write_predictions)
from jmipose.joints import FLIP_PAIRS, JOINT_WEIGHTS, KEYPOINT_NAMES, flip_permutation
from jmipose.metrics import posetrack_ap
from tests.engine.toy import ToyOutput


@pytest.fixture(scope="module")
def val_set(shared_data):
    # only frame 0 of each sequence is on disk: a window of earlier frames clamps to the key frame
    return PoseTrackVideoDataset(shared_data / "posetrack18", "annotations/val", "val", window=(-2, -1),
                                 input_size=(96, 128), heatmap_size=(24, 32), unbiased_targets=True)


class Oracle(nn.Module):
    """Answers each sample's frames with its target heatmaps (and the flipped frames with the mirror)."""

    def __init__(self, dataset):
        super().__init__()
        self.answers = {}
        for i in range(len(dataset)):
            item = dataset[i]
            target = item["heatmaps"][None]
            self.answers[self._key(item["frames"])] = target
            self.answers[self._key(item["frames"].flip(-1))] = flip_back(target)

    @staticmethod
    def _key(frames: torch.Tensor) -> float:
        # weighted by column, so a window and its mirror image differ
        return round(float((frames.double() * torch.arange(frames.shape[-1], dtype=torch.float64)).sum()), 2)

    def forward(self, frames):
        heatmaps = torch.cat([self.answers[self._key(f)] for f in frames])
        return ToyOutput(heatmaps, heatmaps, torch.zeros(()))


def test_joint_tables_agree_with_the_data_pipeline():
    from jmipose.data import transforms

    assert tuple(transforms.FLIP_PAIRS) == FLIP_PAIRS
    assert tuple(transforms.FLIP_INDEX) == tuple(flip_permutation())
    assert tuple(transforms.JOINT_NAMES) == KEYPOINT_NAMES
    np.testing.assert_allclose(np.ravel(transforms.JOINT_WEIGHTS), JOINT_WEIGHTS)


@pytest.mark.parametrize("flip_test, shift", [(False, False), (True, False), (True, True)])
def test_oracle_heatmaps_give_ap_100_on_the_real_files(val_set, shared_data, tmp_path, flip_test, shift):
    gt_dir = shared_data / "posetrack18" / "annotations" / "val"
    cfg = EvalConfig(flip_test=flip_test, shift_heatmap=shift, batch_size=4, num_workers=0)
    result = evaluate_model(Oracle(val_set), val_set, sorted(gt_dir.glob("*.json")), tmp_path, cfg)
    assert result["people"] == 14
    if shift:
        # The oracle mirrors exactly, so the official one-pixel shift (made for a network's flipped
        # heatmaps) leaves a half heatmap pixel bias: one ankle of 012834 then falls into an ignore region.
        assert result["all"]["Total"] > 99 and min(result["all"]["per_joint"].values()) >= 90
        return
    # unbiased (sub-pixel) targets: DARK recovers each joint to a small fraction of a heatmap pixel
    assert result["all"]["Total"] == 100.0
    predictions = json.loads((tmp_path / "predictions" / "012834_mpii_test.json").read_text())
    assert len(predictions["annotations"]) == 11
    # the decoded joints land within a heatmap pixel of the labelled ones (in image pixels)
    gt = {(a["image_id"], tuple(a["keypoints"][:2])): a for a in
          json.loads((gt_dir / "012834_mpii_test.json").read_text())["annotations"]}
    errors = []
    for pred in predictions["annotations"]:
        kp = np.array(pred["keypoints"]).reshape(17, 3)[:, :2]
        best = min(gt.values(), key=lambda a: np.nanmean(_dist(kp, a)))
        errors += list(_dist(kp, best)[~np.isnan(_dist(kp, best))])
    assert np.median(errors) < 1.0  # a heatmap pixel here is 7-30 image pixels


def _dist(kp, ann):
    ref = np.array(ann["keypoints"]).reshape(17, 3)
    d = np.linalg.norm(kp - ref[:, :2], axis=1)
    d[ref[:, 2] == 0] = np.nan
    return d


def _person(image_id, x0, score=1.0, box=1.0, name="images/val/seq/000000.jpg"):
    keypoints = np.stack([x0 + np.arange(17) * 10.0, np.arange(17) * 12.0], 1)
    return PersonPrediction(image_id, name, keypoints, np.full(17, score), box, area=200.0 * 300.0)


def test_select_people_rescoring_and_oks_nms():
    people = [_person(1, 0.0, score=0.9), _person(1, 0.5, score=0.8), _person(1, 400.0, score=0.1),
              _person(2, 0.0)]
    kept = select_people(people, EvalConfig(oks_nms=0.9, in_vis_threshold=0.2))
    # the near duplicate goes; the far person stays, its joints all under 0.2: person score 0
    assert [(p.image_id, p.keypoints[0, 0]) for p in kept] == [(1, 0.0), (1, 400.0), (2, 0.0)]
    assert kept[0].score == pytest.approx(0.9) and kept[1].score == 0.0
    assert len(select_people(people, EvalConfig(oks_nms=None))) == 4


def test_split_merged_ground_truth_and_write_both_layouts(shared_data, tmp_path):
    merged = shared_data / "posetrack18" / "annotations" / "test_posetrack18_val.json"
    files = split_sequences([merged], tmp_path / "gt")
    assert sorted(p.name for p in files) == ["003418_mpii_test.json", "009473_mpii_test.json",
                                             "012834_mpii_test.json"]
    # GT as predictions, through the writer: AP 100
    people = []
    for path in files:
        data = json.loads(path.read_text())
        for a in data["annotations"]:
            kp = np.array(a["keypoints"], float).reshape(17, 3)
            name = next(im["file_name"] for im in data["images"] if im["id"] == a["image_id"])
            # unlabelled joints are predicted too (every prediction has 17 joints), with score 0
            scores = (kp[:, 2] > 0).astype(float)
            people.append(PersonPrediction(a["image_id"], name, kp[:, :2], scores, 1.0, 1e4))
    write_predictions(tmp_path / "pred", files, people)
    assert posetrack_ap(files, tmp_path / "pred")["Total"] == 100.0
    # PoseTrack17 annolist ground truth gets annolist predictions, frame by frame
    annolist = {"annolist": [{"image": [{"name": "images/seq/00000001.jpg"}], "annorect": [{
        "x1": [0], "y1": [0], "x2": [30], "y2": [40], "track_id": [0],
        "annopoints": [{"point": [{"id": [13], "x": [5.0], "y": [0.0]}]}]}]}]}
    (tmp_path / "gt17").mkdir()
    (tmp_path / "gt17" / "seq.json").write_text(json.dumps(annolist))
    person = _person(0, 5.0, name="images/seq/00000001.jpg")  # nose at (5, 0)
    write_predictions(tmp_path / "pred17", [tmp_path / "gt17" / "seq.json"], [person])
    written = json.loads((tmp_path / "pred17" / "seq.json").read_text())
    assert len(written["annolist"][0]["annorect"][0]["annopoints"][0]["point"]) == 15
    assert posetrack_ap(tmp_path / "gt17", tmp_path / "pred17")["per_joint"]["nose"] == 100.0


def test_hard_and_easy_frames_are_scored_apart(tmp_path):
    images = [{"id": 1, "file_name": "images/s/000000.jpg", "hard": True},
              {"id": 2, "file_name": "images/s/000001.jpg", "hard": False}]
    keypoints = [v for k in range(17) for v in (100.0 + 5 * k, 100.0 + 20 * k, 1)]
    anns = [{"image_id": i, "track_id": 0, "keypoints": keypoints, "bbox_head": [90, 60, 30, 40]}
            for i in (1, 2)]
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "s.json").write_text(json.dumps({"images": images, "annotations": anns}))
    good = PersonPrediction(2, "", np.array(keypoints).reshape(17, 3)[:, :2], np.ones(17), 1.0, 1e4, 1.0)
    bad = PersonPrediction(1, "", good.keypoints + 100, np.ones(17), 1.0, 1e4, 1.0)
    write_predictions(tmp_path / "pred", [tmp_path / "gt" / "s.json"], [good, bad])
    result = score([tmp_path / "gt" / "s.json"], tmp_path / "pred")
    assert result["hard"]["Total"] == 0.0 and result["easy"]["Total"] == 100.0
    assert result["all"]["Total"] == pytest.approx(50.0)
