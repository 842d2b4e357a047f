"""The real PoseTrack18 excerpts in ../shared/data/posetrack18 (expected numbers read from the JSON files)."""

import logging

import numpy as np
import pytest
import torch

from jmipose.data import DataError, PoseTrackVideoDataset
from jmipose.data.transforms import affine_points


@pytest.fixture(scope="module")
def pt18(shared_data):
    return shared_data / "posetrack18"


@pytest.fixture(scope="module")
def val_gt(pt18):
    # Only frame 0 of each sequence is on disk: a window of earlier frames clamps to the key frame.
    return PoseTrackVideoDataset(pt18, "annotations/val", "val", window=(-2, -1))


def _sample_index(dataset, image_id, track_id):
    return next(i for i, s in enumerate(dataset.samples) if s.image_id == image_id and s.track_id == track_id)


def test_parse_frames_people_and_sequences(val_gt):
    assert sorted(val_gt.frames) == [10034180000, 10094730000, 10128340000]
    assert {i: len(p) for i, p in val_gt.people.items()} == {10034180000: 1, 10094730000: 2, 10128340000: 11}
    assert len(val_gt) == 14
    frame = val_gt.frames[10094730000]
    assert (frame.sequence, frame.frame_number, frame.nframes, frame.width, frame.height) == \
        ("009473_mpii_test", 0, 101, 1920, 1080)
    assert frame.is_labeled and frame.mask_file == "mask/val/009473_mpii_test/000000.jpg"
    assert (frame.vid_id, frame.frame_id) == ("009473", 10094730000)
    files = val_gt.sequences["images/val/012834_mpii_test"]
    assert (files.first, files.last, files.width) == (0, 139, 6)


def test_keypoints_boxes_and_ignore_regions_against_the_json(val_gt):
    second = next(p for p in val_gt.people[10094730000] if p.track_id == 1)
    np.testing.assert_allclose(second.joints[0], [900, 272, 1])                       # nose
    np.testing.assert_allclose(second.joints[2], [936.0065308, 219.1595001, 1])      # head_top
    np.testing.assert_allclose(second.joints[9], [986, 422, 1])                       # left_wrist
    np.testing.assert_allclose(second.joints[16], [959, 804, 1])                      # right_ankle
    np.testing.assert_array_equal(second.joints[3:5], 0)                              # ears never labelled
    np.testing.assert_allclose(
        second.bbox, [656.45, 127.83342511500007, 412.0999999999999, 791.4926498699999]
    )
    np.testing.assert_allclose(second.head_box, [878, 201, 90, 125])
    top = next(p for p in val_gt.people[10128340000] if p.track_id == 10)
    np.testing.assert_array_equal(top.joints[0], [0, 0, 0])  # nose not labelled
    np.testing.assert_allclose(top.joints[2], [424.0380249, -24.93852425, 1])  # slightly above the frame
    regions = val_gt.frames[10034180000].ignore_regions
    assert [len(r) for r in regions] == [66, 13, 46, 18, 23, 13, 35, 26, 23]
    np.testing.assert_allclose(regions[1][:3], [[341, 94], [347, 71], [352, 62]])


def test_gt_box_is_clipped_to_the_image_and_enlarged(val_gt):
    sample = val_gt.samples[_sample_index(val_gt, 10128340000, 10)]
    # bbox [364.675, -54.6293..., 124.15, 257.3200...] cut at y = 0
    np.testing.assert_allclose(
        sample.box, [364.675, 0.0, 124.15, 257.32008152500003 - 54.62930288750002], rtol=1e-6
    )
    item = val_gt[_sample_index(val_gt, 10128340000, 10)]
    h = 257.32008152500003 - 54.62930288750002
    np.testing.assert_allclose(item["meta"]["center"], [364.675 + 124.15 / 2, h / 2], rtol=1e-6)
    np.testing.assert_allclose(item["meta"]["scale"], [h * 0.75 * 1.25, h * 1.25], rtol=1e-6)


def test_sample_contract(val_gt):
    index = _sample_index(val_gt, 10094730000, 1)
    item = val_gt[index]
    assert item["frames"].shape == (3, 3, 384, 288) and item["frames"].dtype == torch.float32
    assert item["heatmaps"].shape == (17, 96, 72) and item["target_weight"].shape == (17,)
    meta = item["meta"]
    assert meta["image_id"] == 10094730000 and meta["sequence"] == "009473_mpii_test"
    assert meta["frame_index"] == 0 and meta["file_name"] == "images/val/009473_mpii_test/000000.jpg"
    assert meta["score"] == 1.0 and meta["rotation"] == 0.0 and meta["track_id"] == 1
    assert meta["trans_inv"].shape == (2, 3) and meta["joints"].shape == (17, 3)
    np.testing.assert_allclose(meta["joints"][9], [986, 422, 1])
    # frames -2 and -1 do not exist: both slots repeat the key frame
    assert torch.equal(item["frames"][0], item["frames"][2]) and torch.equal(
        item["frames"][1], item["frames"][2]
    )
    # weights: labelled joints x JM-Pose weights, ears 0 (this person has every body joint labelled)
    expected = np.array([1, 1, 1, 0, 0, 1, 1, 1.2, 1.2, 1.5, 1.5, 1, 1, 1.2, 1.2, 1.5, 1.5], np.float32)
    np.testing.assert_allclose(item["target_weight"], expected)
    # every target peak, taken back through trans_inv, lands within a heatmap cell of the JSON keypoint
    for j in np.flatnonzero(expected):
        y, x = divmod(int(torch.argmax(item["heatmaps"][j])), 72)
        image_xy = affine_points([[x * 4.0, y * 4.0]], meta["trans_inv"].double().numpy())[0]
        crop_pixel = float(meta["scale"][0]) / 288
        assert np.abs(image_xy - meta["joints"][j, :2].numpy()).max() <= 2 * crop_pixel + 1e-3


def test_the_crop_shows_the_person(val_gt, pt18):
    import cv2

    item = val_gt[_sample_index(val_gt, 10094730000, 1)]
    image = cv2.cvtColor(cv2.imread(str(pt18 / "images/val/009473_mpii_test/000000.jpg")), cv2.COLOR_BGR2RGB)
    # the crop pixel at the left wrist equals the image pixel there (bilinear, so compare a smooth mean)
    inverse = item["meta"]["trans_inv"].double().numpy()
    forward = np.linalg.inv(np.vstack([inverse, [0, 0, 1]]))[:2]
    x, y = affine_points([[986.0, 422.0]], forward)[0].round().astype(int)
    crop = item["frames"][2].numpy().transpose(1, 2, 0) * [0.229, 0.224, 0.225] + [0.485, 0.456, 0.406]
    crop_patch = crop[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(axis=0) * 255
    sx, sy = affine_points([[x, y]], inverse)[0].round().astype(int)
    scale = float(item["meta"]["scale"][0]) / 288
    r = round(2 * scale)
    image_patch = image[sy - r : sy + r + 1, sx - r : sx + r + 1].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(crop_patch, image_patch, atol=12)


def test_merged_file_gives_the_same_samples(pt18, val_gt):
    merged = PoseTrackVideoDataset(pt18, "annotations/test_posetrack18_val.json", "val", window=(-2, -1))
    assert len(merged) == len(val_gt)

    def key(s):
        return (s.image_id, s.track_id)

    for a, b in zip(sorted(merged.samples, key=key), sorted(val_gt.samples, key=key)):
        assert a.frame_paths == b.frame_paths
        np.testing.assert_array_equal(a.box, b.box)
        np.testing.assert_array_equal(a.joints, b.joints)


def test_detector_boxes_with_threshold(pt18):
    dets = PoseTrackVideoDataset(
        pt18,
        "annotations/test_posetrack18_val.json",
        "val",
        window=(),
        boxes="annotations/test_posetrack18_human_detections.json",
        box_score_threshold=0.9,
    )
    counts = {}
    for s in dets.samples:
        counts[s.image_id] = counts.get(s.image_id, 0) + 1
    assert counts == {10094730000: 5, 10034180000: 2, 10128340000: 1}
    best = max(dets.samples, key=lambda s: s.score)
    assert best.score == pytest.approx(0.988675594329834)
    np.testing.assert_allclose(
        best.box, [639.7239379882812, 226.8717498779297, 344.6689453125, 663.6336212158203]
    )
    assert not dets.train and all(s.track_id == -1 for s in dets.samples)
    item = dets[dets.samples.index(best)]
    assert item["meta"]["score"] == pytest.approx(0.988675594329834)
    assert item["frames"].shape == (1, 3, 384, 288) and float(item["target_weight"].sum()) == 0.0
    np.testing.assert_allclose(
        item["meta"]["center"],
        [639.7239379882812 + 344.6689453125 / 2, 226.8717498779297 + 663.6336212158203 / 2],
        rtol=1e-6,
    )
    everything = PoseTrackVideoDataset(
        pt18,
        "annotations/val",
        "val",
        window=(),
        boxes="annotations/test_posetrack18_human_detections.json",
        box_score_threshold=0.0,
    )
    assert len(everything) == 278


def test_missing_supporting_frames_are_found_when_building(pt18, caplog):
    with pytest.raises(DataError, match=r"000001\.jpg: missing frame file") as info:
        PoseTrackVideoDataset(pt18, "annotations/val", "train")
    assert "003418_mpii_test.json" in str(info.value)
    with caplog.at_level(logging.WARNING, logger="jmipose.data"), \
            pytest.raises(ValueError, match="no usable samples .*3 bad entries skipped"):
        PoseTrackVideoDataset(pt18, "annotations/val", "train", skip_bad=True)
    assert sum("missing frame file" in r.getMessage() for r in caplog.records) == 3


def test_training_samples_through_a_dataloader(pt18):
    train = PoseTrackVideoDataset(pt18, "annotations/val", "train", window=(-1,), seed=5)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(train, [0, 1, 2]), batch_size=3, num_workers=0
    )
    batch = next(iter(loader))
    assert batch["frames"].shape == (3, 2, 3, 384, 288)
    assert batch["meta"]["trans_inv"].shape == (3, 2, 3) and batch["meta"]["image_id"].shape == (3,)
    again = train[1]
    assert torch.equal(again["frames"], batch["frames"][1]) and torch.equal(
        again["heatmaps"], batch["heatmaps"][1]
    )
