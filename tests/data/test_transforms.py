"""Affine crop, flip, augmentation draws, Gaussian targets and joint weights."""

import math

import cv2
import numpy as np
import pytest

from jmipose.data.transforms import (
    FLIP_INDEX,
    FLIP_PAIRS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    JOINT_NAMES,
    JOINT_WEIGHTS,
    Augmentation,
    AugmentConfig,
    affine_points,
    box_to_center_scale,
    crop_geometry,
    flip_joints,
    generate_heatmaps,
    get_affine_transform,
    make_rng,
    normalize_image,
    sample_augmentation,
    warp_frame,
)


def _three_point_reference(center, scale, rotation, output_size):
    """HRNet's construction, written independently: the crop centre, its top-middle and right-middle
    points and their pre-images, turned by +rotation in image coordinates (y down)."""
    theta = math.radians(rotation)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    c = np.asarray(center, dtype=np.float64)
    src = np.stack([c, c + rot @ [0.0, -scale[1] / 2], c + rot @ [scale[0] / 2, 0.0]]).astype(np.float32)
    w, h = output_size
    dst = np.array([[w / 2, h / 2], [w / 2, 0.0], [w, h / 2]], dtype=np.float32)
    return cv2.getAffineTransform(src, dst)


@pytest.mark.parametrize("rotation", [0.0, 17.5, -45.0, 90.0, 180.0])
def test_affine_matches_three_point_construction(rotation):
    center, scale, out = (410.5, 233.25), (240.0, 320.0), (288, 384)
    ours = get_affine_transform(center, scale, rotation, out)
    np.testing.assert_allclose(ours, _three_point_reference(center, scale, rotation, out), atol=2e-3)


def test_affine_rotation_convention_is_opencv():
    center, s = np.array([300.0, 200.0]), 0.5
    ours = get_affine_transform(center, (288 / s, 384 / s), 30.0, (288, 384))
    reference = cv2.getRotationMatrix2D((300.0, 200.0), 30.0, s)
    reference[:, 2] += np.array([144.0, 192.0]) - center
    np.testing.assert_allclose(ours, reference, atol=1e-9)
    # 90 degrees: a point right of the centre goes straight up in the crop (counter-clockwise on screen).
    up = affine_points([[310.0, 200.0]], get_affine_transform(center, (288, 384), 90.0, (288, 384)))
    np.testing.assert_allclose(up, [[144.0, 182.0]], atol=1e-9)


def test_affine_round_trip():
    rng = np.random.default_rng(0)
    points = rng.uniform(-500, 2500, size=(50, 2))
    for _ in range(20):
        center = rng.uniform(0, 1920, 2)
        scale = rng.uniform(20, 900, 2)
        rotation = rng.uniform(-180, 180)
        forward = get_affine_transform(center, scale, rotation, (288, 384))
        inverse = get_affine_transform(center, scale, rotation, (288, 384), inverse=True)
        np.testing.assert_allclose(affine_points(affine_points(points, forward), inverse), points, atol=1e-7)
        np.testing.assert_allclose(affine_points([center], forward), [[144.0, 192.0]], atol=1e-7)
    with pytest.raises(ValueError, match="scale"):
        get_affine_transform((0, 0), (0.0, 10.0), 0.0, (288, 384))


def test_box_to_center_scale_by_hand():
    # tall box: widened to 3:4 then x1.25
    center, scale = box_to_center_scale((10, 20, 30, 80), 0.75)
    np.testing.assert_allclose(center, [25.0, 60.0])
    np.testing.assert_allclose(scale, [75.0, 100.0])
    # wide box: heightened
    center, scale = box_to_center_scale((0, 0, 120, 40), 0.75, enlarge=1.0)
    np.testing.assert_allclose(center, [60.0, 20.0])
    np.testing.assert_allclose(scale, [120.0, 160.0])


def test_flip_pairs_and_joint_weights_follow_the_names():
    for left, right in FLIP_PAIRS:
        assert (
            JOINT_NAMES[left].startswith("left_") and JOINT_NAMES[right] == "right_" + JOINT_NAMES[left][5:]
        )
    assert len(FLIP_PAIRS) == 7
    assert all(FLIP_INDEX[FLIP_INDEX[j]] == j for j in range(17))
    assert FLIP_INDEX[JOINT_NAMES.index("left_wrist")] == JOINT_NAMES.index("right_wrist")
    assert FLIP_INDEX[0] == 0 and FLIP_INDEX[1] == 1 and FLIP_INDEX[2] == 2
    expected = {"wrist": 1.5, "ankle": 1.5, "elbow": 1.2, "knee": 1.2}
    for name, weight in zip(JOINT_NAMES, JOINT_WEIGHTS):
        assert weight == pytest.approx(next((w for k, w in expected.items() if k in name), 1.0))


def test_flip_joints_by_hand():
    joints = np.zeros((17, 3), np.float32)
    joints[9] = (10, 50, 1)  # left wrist
    joints[0] = (30, 5, 1)  # nose
    flipped = flip_joints(joints, image_width=100)
    np.testing.assert_allclose(flipped[10], [89, 50, 1])  # becomes the right wrist at 100 - 1 - 10
    np.testing.assert_allclose(flipped[9], [99, 0, 0])  # the (unlabelled) right wrist moved to the left slot
    np.testing.assert_allclose(flipped[0], [69, 5, 1])


def test_heatmap_targets_by_hand():
    joints = np.zeros((17, 2))
    labelled = np.zeros(17, bool)
    joints[9], labelled[9] = (100.0, 200.0), True  # left wrist -> heatmap (25, 50)
    joints[3], labelled[3] = (50.0, 50.0), True  # left ear: labelled but never a target
    joints[0], labelled[0] = (300.0, 10.0), True  # nose outside the 288-wide crop
    joints[5], labelled[5] = (40.0, 40.0), False  # unlabelled
    heatmaps, weights = generate_heatmaps(joints, labelled, (288, 384), (72, 96), sigma=3.0)
    assert heatmaps.shape == (17, 96, 72) and heatmaps.dtype == np.float32
    assert heatmaps[9, 50, 25] == pytest.approx(1.0)
    assert heatmaps[9, 50, 26] == pytest.approx(math.exp(-1 / 18), rel=1e-6)
    assert heatmaps[9, 52, 24] == pytest.approx(math.exp(-5 / 18), rel=1e-6)
    assert heatmaps[9, 50, 34] == pytest.approx(math.exp(-81 / 18), rel=1e-5)  # 3 sigma: still inside
    assert heatmaps[9, 50, 35] == 0.0  # past 3 sigma: truncated
    assert np.argmax(heatmaps[9]) == 50 * 72 + 25
    expected_weights = np.zeros(17, np.float32)
    expected_weights[9] = 1.5
    np.testing.assert_array_equal(weights, expected_weights)
    for j in (0, 3, 5):
        assert not heatmaps[j].any()
    _, plain = generate_heatmaps(joints, labelled, (288, 384), (72, 96), joint_weights=None)
    assert plain[9] == 1.0


def test_unbiased_targets_center_on_the_sub_pixel_location():
    joints = np.zeros((17, 2))
    labelled = np.zeros(17, bool)
    joints[1], labelled[1] = (101.0, 202.0), True  # heatmap (25.25, 50.5)
    heatmaps, _ = generate_heatmaps(joints, labelled, (288, 384), (72, 96), sigma=2.0, unbiased=True)
    assert heatmaps[1, 50, 25] == pytest.approx(math.exp(-(0.25**2 + 0.5**2) / 8), rel=1e-6)
    assert heatmaps[1, 51, 25] == pytest.approx(math.exp(-(0.25**2 + 0.5**2) / 8), rel=1e-6)


def test_augmentation_draws_are_seeded_and_in_range():
    config = AugmentConfig()
    assert sample_augmentation(make_rng(3, 1, 7), config) == sample_augmentation(make_rng(3, 1, 7), config)
    assert sample_augmentation(make_rng(3, 1, 7), config) != sample_augmentation(make_rng(3, 2, 7), config)
    draws = [sample_augmentation(make_rng(0, 0, i), config) for i in range(4000)]
    scales = np.array([d.scale for d in draws])
    rotations = np.array([d.rotation for d in draws])
    assert scales.min() >= 0.65 and scales.max() <= 1.35
    assert np.mean(scales == 0.65) > 0.01 and np.mean(scales == 1.35) > 0.01  # the clip is reached
    assert np.abs(rotations).max() <= 90.0
    assert np.mean(rotations == 0.0) == pytest.approx(0.4, abs=0.03)
    assert np.mean([d.flip for d in draws]) == pytest.approx(0.5, abs=0.03)
    assert np.mean([d.half_body for d in draws]) == pytest.approx(0.3, abs=0.03)
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentConfig(flip_prob=1.5)


def test_flip_folded_into_the_crop_equals_cropping_the_mirrored_frame():
    image = cv2.GaussianBlur(
        np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8), (7, 7), 0
    )
    box = (40.0, 10.0, 60.0, 90.0)
    aug = Augmentation(flip=True, scale=1.1, rotation=20.0)
    geometry = crop_geometry(box, None, None, 160, (72, 96), aug)
    ours = warp_frame(image, geometry.matrix, (72, 96)).astype(np.float64)
    center, scale = box_to_center_scale(box, 0.75)
    mirrored = np.ascontiguousarray(image[:, ::-1])
    plain = get_affine_transform((159 - center[0], center[1]), scale * 1.1, 20.0, (72, 96))
    reference = warp_frame(mirrored, plain, (72, 96)).astype(np.float64)
    assert np.abs(ours - reference).mean() < 0.5 and np.abs(ours - reference).max() <= 8
    # trans_inv maps the crop centre back to the box centre in *original* coordinates
    np.testing.assert_allclose(affine_points([[36.0, 48.0]], geometry.inverse), [center], atol=1e-9)
    np.testing.assert_allclose(geometry.center, center)


def test_half_body_crops_around_the_chosen_half():
    joints = np.zeros((17, 3))
    for j in range(17):
        joints[j] = (100 + 3 * j, 50 + 10 * j, 1)
    joints[3:5] = 0
    labelled = joints[:, 2] > 0
    geometry = crop_geometry(
        (90, 40, 60, 180),
        joints,
        labelled,
        400,
        (288, 384),
        Augmentation(half_body=True, upper_body_first=True),
    )
    upper = [j for j in range(11) if labelled[j]]
    np.testing.assert_allclose(geometry.center, joints[upper, :2].mean(axis=0))
    # the tight box of the upper joints (30 x 100), widened to 3:4 and enlarged 1.5x
    np.testing.assert_allclose(geometry.scale, [75.0 * 1.5, 100.0 * 1.5])
    few = labelled.copy()
    few[5:] = False  # only 3 labelled joints (<= 8): no half-body
    plain = crop_geometry((90, 40, 60, 180), joints, few, 400, (288, 384), Augmentation(half_body=True))
    np.testing.assert_allclose(plain.center, [120.0, 130.0])


def test_normalize_image():
    image = np.zeros((4, 5, 3), np.uint8)
    image[..., 1] = 255
    out = normalize_image(image)
    assert out.shape == (3, 4, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], -IMAGENET_MEAN[0] / IMAGENET_STD[0], rtol=1e-6)
    np.testing.assert_allclose(out[1], (1 - IMAGENET_MEAN[1]) / IMAGENET_STD[1], rtol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        normalize_image(image.astype(np.float32))


def test_clip_box_keeps_the_clipped_box_inside_the_image():
    """Clipping to a 192 x 144 frame: a box across the right / bottom edge ends exactly at the edge
    (x + w <= 192 also after the float32 rounding, which alone overshoots by an ulp for about a
    quarter of the positions), one inside is unchanged, one outside is None."""
    from jmipose.data.posetrack_index import clip_box

    for x in np.linspace(100.0, 191.0, 4001):
        box = clip_box(np.array([x, 100.0 + x / 1000, 120.0, 80.0]), 192, 144)
        right, bottom = float(box[0]) + float(box[2]), float(box[1]) + float(box[3])
        assert 192 - 1e-4 <= right <= 192 and 144 - 1e-4 <= bottom <= 144, (x, box)
        assert box[0] == np.float32(x)
    np.testing.assert_array_equal(clip_box(np.array([-5.0, -2.0, 20.0, 10.0]), 192, 144), [0, 0, 15, 8])
    np.testing.assert_array_equal(clip_box(np.array([10.5, 20.25, 30.0, 40.0]), 192, 144), [10.5, 20.25, 30, 40])
    assert clip_box(np.array([200.0, 10.0, 20.0, 10.0]), 192, 144) is None
