"""Multi-frame windows, frame layouts, PoseTrack17/21 and augmentation, on small fixtures in tmp_path."""

import json
import os

import numpy as np
import pytest
import torch

from jmipose.data import DataConfig, PoseTrackVideoDataset, build_dataset
from jmipose.data.transforms import AugmentConfig
from tests.data.helpers import (
    PERSON_BOX,
    PERSON_JOINTS,
    frame_value,
    image_id_of,
    person,
    pixel_value,
    write_frame,
    write_pt18,
)

SMALL = dict(input_size=(48, 64), heatmap_size=(12, 16))


def _names(paths):
    return [os.path.basename(p) for p in paths]


def test_windows_clamp_at_both_borders(tmp_path):
    write_pt18(tmp_path, nframes=6, labelled=(0, 1, 3, 5))
    ds = PoseTrackVideoDataset(tmp_path, None, "val", **SMALL)
    windows = {s.image_id % 100: _names(s.frame_paths) for s in ds.samples}
    assert windows[0] == ["000000.jpg", "000000.jpg", "000000.jpg", "000001.jpg", "000002.jpg"]
    assert windows[1] == ["000000.jpg", "000000.jpg", "000001.jpg", "000002.jpg", "000003.jpg"]
    assert windows[3] == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg", "000005.jpg"]
    assert windows[5] == ["000003.jpg", "000004.jpg", "000005.jpg", "000005.jpg", "000005.jpg"]
    # the loaded frames really are those files, in time order (each fixture frame has its own grey)
    item = ds[[s.image_id % 100 for s in ds.samples].index(1)]
    greys = [pixel_value(frame, 24, 32) for frame in item["frames"]]
    np.testing.assert_allclose(greys, [frame_value(n) for n in (0, 0, 1, 2, 3)], atol=1.5)
    assert item["meta"]["frame_index"] == 1


def test_window_of_only_future_frames(tmp_path):
    write_pt18(tmp_path, nframes=4, labelled=(2,))
    ds = PoseTrackVideoDataset(tmp_path, None, "val", window=(1, 3), **SMALL)
    assert _names(ds.samples[0].frame_paths) == ["000002.jpg", "000003.jpg", "000003.jpg"]
    assert ds.key_index == 0


def test_dcpose_style_eight_digit_names_are_found(tmp_path):
    write_pt18(tmp_path, nframes=5, labelled=(0, 4), disk_width=8)
    ds = PoseTrackVideoDataset(tmp_path, None, "val", **SMALL)
    files = ds.sequences["images/val/000100_test"]
    assert (files.width, files.first, files.last) == (8, 0, 4)
    assert _names(ds.samples[0].frame_paths) == ["00000000.jpg"] * 3 + ["00000001.jpg", "00000002.jpg"]
    assert ds.samples[0].frame_paths[0].endswith(os.path.join("images", "val", "000100_test", "00000000.jpg"))
    item = ds[1]
    np.testing.assert_allclose([pixel_value(f, 24, 32) for f in item["frames"]],
                               [frame_value(n) for n in (2, 3, 4, 4, 4)], atol=1.5)


def test_nframes_bounds_the_window_not_the_files_on_disk(tmp_path):
    write_pt18(tmp_path, nframes=4, labelled=(3,))
    write_frame(tmp_path / "images/val/000100_test/000004.jpg", value=200)   # a stray file past nframes
    ds = PoseTrackVideoDataset(tmp_path, None, "val", **SMALL)
    assert _names(ds.samples[0].frame_paths)[-2:] == ["000003.jpg", "000003.jpg"]


POSETRACK17 = {
    "annolist": [
        {"image": [{"name": "images/bonn_5sec/000342_mpii/00000001.jpg"}], "imgnum": [1], "is_labeled": [0],
         "annorect": []},
        {"image": [{"name": "images/bonn_5sec/000342_mpii/00000002.jpg"}], "imgnum": [2], "is_labeled": [1],
         "ignore_regions": [{"point": [{"x": [0], "y": [0]}, {"x": [20], "y": [0]}, {"x": [20], "y": [20]}]}],
         "annorect": [{
             "x1": [72], "y1": [5], "x2": [88], "y2": [32], "track_id": [4],
             "annopoints": [{"point": [
                 {"id": [0], "x": [89], "y": [106], "is_visible": [1]},    # right ankle
                 {"id": [3], "x": [74], "y": [70], "is_visible": [1]},     # left hip
                 {"id": [6], "x": [100], "y": [66], "is_visible": [0]},    # right wrist (occluded, annotated)
                 {"id": [9], "x": [70], "y": [36], "is_visible": [1]},     # left shoulder
                 {"id": [12], "x": [80], "y": [32], "is_visible": [1]},    # head bottom
                 {"id": [13], "x": [80], "y": [20], "is_visible": [1]},    # nose
                 {"id": [14], "x": [80], "y": [10], "is_visible": [1]},    # head top
             ]}]}]},
        {"image": [{"name": "images/bonn_5sec/000342_mpii/00000003.jpg"}], "imgnum": [3], "is_labeled": [0],
         "annorect": []},
    ]
}


def _write_posetrack17(root):
    for number in (1, 2, 3):
        write_frame(root / f"images/bonn_5sec/000342_mpii/{number:08d}.jpg", value=frame_value(number))
    path = root / "annotations/val/000342_mpii.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(POSETRACK17))
    return path


def test_posetrack17_annolist(tmp_path):
    _write_posetrack17(tmp_path)
    ds = PoseTrackVideoDataset(tmp_path, "annotations/val", "val", version="17", **SMALL)
    assert len(ds) == 1 and len(ds.frames) == 3
    frame = ds.frames[ds.samples[0].image_id]
    assert ds.samples[0].image_id == 10_003_420_001          # 1 + video 000342 + 0-based frame 0001
    assert (frame.sequence, frame.frame_number, frame.width, frame.height) == ("000342_mpii", 2, 160, 120)
    np.testing.assert_allclose(frame.ignore_regions[0], [[0, 0], [20, 0], [20, 20]])
    files = ds.sequences["images/bonn_5sec/000342_mpii"]
    assert (files.first, files.last, files.width) == (1, 3, 8)
    person17 = ds.people[ds.samples[0].image_id][0]
    expected = np.zeros((17, 3), np.float32)
    for index, xy in {16: (89, 106), 11: (74, 70), 10: (100, 66), 5: (70, 36), 1: (80, 32), 0: (80, 20),
                      2: (80, 10)}.items():
        expected[index] = (*xy, 1)
    np.testing.assert_array_equal(person17.joints, expected)
    np.testing.assert_allclose(person17.head_box, [72, 5, 16, 27])
    assert person17.track_id == 4
    # PoseTrack17 has no person box: 1.3x the labelled joints' extent (x 70..100, y 10..106), i.e.
    # x 65.5..104.5, y -4.4..120.4, then cut to the 160x120 frame
    np.testing.assert_allclose(ds.samples[0].box, [65.5, 0.0, 39.0, 120.0], rtol=1e-6)
    # frames counted from 1: frame 2 has one frame before and one after
    assert _names(ds.samples[0].frame_paths) == ["00000001.jpg", "00000001.jpg", "00000002.jpg",
                                                "00000003.jpg", "00000003.jpg"]
    item = ds[0]
    assert item["meta"]["frame_index"] == 1 and item["meta"]["track_id"] == 4
    np.testing.assert_allclose([pixel_value(f, 24, 32) for f in item["frames"]],
                               [frame_value(n) for n in (1, 1, 2, 3, 3)], atol=1.5)


def test_posetrack21_person_id(tmp_path):
    people = {0: [person(0, track_id=3, person_id=1024), person(0, track_id=-1, person_id=77)],
              2: [person(0, track_id=3, person_id=1024),
                  person(0, track_id=5, person_id=9, keypoints=[0.0] * 51)]}   # a box-only PoseTrack21 person
    write_pt18(tmp_path, nframes=3, labelled=(0, 2), people=people)
    ds = PoseTrackVideoDataset(tmp_path, "annotations/val", "val", version="21", **SMALL)
    assert sorted(p.person_id for ps in ds.people.values() for p in ps) == [9, 77, 1024, 1024]
    # track ids of the samples; person_id stands in where track_id is missing; no sample without joints
    assert sorted(s.track_id for s in ds.samples) == [3, 3, 77]


def test_ground_truth_boxes_from_keypoints(tmp_path):
    write_pt18(tmp_path, nframes=1, labelled=(0,))
    ds = PoseTrackVideoDataset(tmp_path, None, "val", window=(), gt_box_source="keypoints", **SMALL)
    xs, ys = [j[0] for j in PERSON_JOINTS if j[2]], [j[1] for j in PERSON_JOINTS if j[2]]
    w, h = (max(xs) - min(xs)) * 1.3, (max(ys) - min(ys)) * 1.3
    y1, y2 = max(58 - h / 2, 0.0), min(58 + h / 2, 120.0)   # cut to the 160x120 frame
    np.testing.assert_allclose(ds.samples[0].box, [80 - w / 2, y1, w, y2 - y1], rtol=1e-6)
    assert y1 == 0.0 and y2 == 120.0
    by_bbox = PoseTrackVideoDataset(tmp_path, None, "val", window=(), **SMALL)
    np.testing.assert_allclose(by_bbox.samples[0].box, PERSON_BOX)


def test_detections_on_unlabelled_frames(tmp_path):
    write_pt18(tmp_path, nframes=3, labelled=(1,))
    boxes = [
        {"image_id": image_id_of("000100_test", n), "bbox": [50, 5, 60, 100], "score": 0.5, "category_id": 1}
        for n in range(3)
    ] + [{"image_id": 999, "bbox": [0, 0, 5, 5], "score": 0.9}]
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    labelled = PoseTrackVideoDataset(tmp_path, None, "val", boxes="boxes.json", **SMALL)
    assert [s.image_id % 100 for s in labelled.samples] == [1]
    every = PoseTrackVideoDataset(tmp_path, None, "val", boxes="boxes.json", labeled_only=False, **SMALL)
    assert [s.image_id % 100 for s in every.samples] == [0, 1, 2]


def test_augmentation_is_identical_across_the_window_and_seeded(tmp_path):
    write_pt18(tmp_path, nframes=5, labelled=(2,), textured=True)  # five identical textured frames
    ds = PoseTrackVideoDataset(
        tmp_path,
        "annotations/val",
        "train",
        seed=11,
        **SMALL,
        augment=AugmentConfig(flip_prob=0.5, rotation_prob=1.0),
    )
    seen_flip = set()
    for epoch in range(12):
        item = ds[(epoch, 0)]
        for t in range(1, 5):
            assert torch.equal(item["frames"][t], item["frames"][0])
        seen_flip.add(bool(item["meta"]["trans_inv"][0, 0] < 0))  # a mirrored crop has a negative x scale
        again = ds.load(0, epoch=epoch)
        assert torch.equal(again["frames"], item["frames"]) and torch.equal(
            again["heatmaps"], item["heatmaps"]
        )
    assert seen_flip == {False, True}
    ds.set_epoch(3)
    assert torch.equal(ds[0]["frames"], ds[(3, 0)]["frames"])
    assert not torch.equal(ds[(4, 0)]["frames"], ds[(3, 0)]["frames"])
    rng_item = ds.load(0, rng=np.random.default_rng(0))
    assert torch.equal(rng_item["frames"], ds.load(0, rng=np.random.default_rng(0))["frames"])


def test_flipped_targets_swap_left_and_right(tmp_path):
    write_pt18(tmp_path, nframes=1, labelled=(0,))
    ds = PoseTrackVideoDataset(
        tmp_path,
        "annotations/val",
        "train",
        window=(),
        input_size=(96, 128),
        heatmap_size=(24, 32),
        augment=AugmentConfig(flip_prob=1.0, half_body_prob=0.0, scale_factor=0.0, rotation_prob=0.0),
    )
    item = ds[0]
    trans_inv = item["meta"]["trans_inv"].double().numpy()
    for channel, source in ((9, 10), (10, 9), (5, 6), (0, 0)):
        y, x = divmod(int(torch.argmax(item["heatmaps"][channel])), 24)
        image_xy = trans_inv[:, :2] @ [x * 4.0, y * 4.0] + trans_inv[:, 2]
        # the left-wrist target sits on the mirror image of the right wrist, mapped to original pixels
        assert np.abs(image_xy - np.array(PERSON_JOINTS[source][:2])).max() <= 4 * 2.0
    np.testing.assert_allclose(item["target_weight"][[9, 10, 7, 8]], [1.5, 1.5, 1.2, 1.2])


def test_data_config_round_trip_and_build(tmp_path):
    write_pt18(tmp_path, nframes=3, labelled=(1,))
    config = DataConfig.from_dict(
        {"root": str(tmp_path), "window": [1, -1], "image_size": [48, 64], "augment": {"rotation_prob": 0.0}}
    )
    assert config.window == (-1, 1) and config.heatmap_size == (12, 16)
    assert DataConfig.from_dict(config.to_dict()) == config
    ds = build_dataset(config, "val")
    assert isinstance(ds, PoseTrackVideoDataset) and not ds.train and ds.window == (-1, 1)
    assert ds[0]["frames"].shape == (3, 3, 64, 48) and ds[0]["heatmaps"].shape == (17, 16, 12)
    assert build_dataset(config, "val", train=True).train
    with pytest.raises(ValueError, match="unknown keys \\['windw'\\]"):
        DataConfig.from_dict({"windw": [1]})
    with pytest.raises(ValueError, match="split must be one of"):
        build_dataset(config, "dev")
    with pytest.raises(FileNotFoundError, match="data.test_annotations is not set and data.root holds no annotations"):
        build_dataset(config, "test")


def test_every_config_field_reaches_the_dataset(tmp_path):
    write_pt18(tmp_path, nframes=3, labelled=(1,))
    config = DataConfig(root=str(tmp_path), image_size=(48, 64), sigma=2.0, box_enlarge=1.5, seed=9,
                        frame_cache_size=0, use_joint_weights=False, unbiased_targets=True)
    ds = build_dataset(config, "val")
    assert (ds.sigma, ds.box_enlarge, ds.seed, ds.frame_cache_size) == (2.0, 1.5, 9, 0)
    assert not ds.use_joint_weights and ds.unbiased_targets and ds.input_size == (48, 64)
    ds[0]
    assert len(ds._frame_cache) == 0
    cached = build_dataset(DataConfig(root=str(tmp_path), image_size=(48, 64)), "val")
    cached[0]
    assert len(cached._frame_cache) == 3   # frames 0, 1 and 2 of the window of frame 1


def test_frames_under_a_separate_image_root(tmp_path):
    write_pt18(tmp_path / "frames", nframes=3, labelled=(1,))
    (tmp_path / "frames/annotations").rename(tmp_path / "annotations")
    ds = PoseTrackVideoDataset(tmp_path, "annotations/val", "val", image_root=tmp_path / "frames", **SMALL)
    assert ds.samples[0].frame_paths[2] == str(tmp_path / "frames/images/val/000100_test/000001.jpg")
    assert ds[0]["frames"].shape == (5, 3, 64, 48)
