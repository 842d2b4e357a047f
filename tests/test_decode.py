"""Decoding against hand-built heatmaps with known sub-pixel peaks, OpenCV's blur and affine maps."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from jmipose.decode import (
    argmax_coords, dark_blur, decode_heatmaps, flip_back, heatmap_to_image, merge_flipped, oks_iou, oks_nms,
    rescore,
)
from jmipose.joints import FLIP_PAIRS, OKS_SIGMAS


def gaussian(h, w, x0, y0, sigma=2.0):
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                          indexing="ij")
    return torch.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))


PEAKS = [(20.3, 15.7), (10.8, 40.45), (30.0, 30.0), (5.49, 50.51)]


def test_argmax_first_maximum_and_empty_heatmaps():
    hm = torch.zeros(1, 3, 4, 5)
    hm[0, 0, 2, 3] = 1.0
    hm[0, 1, 1, 1] = hm[0, 1, 3, 0] = 0.5  # tie: the first in row-major order
    coords, maxvals = argmax_coords(hm)
    assert coords[0].tolist() == [[3, 2], [1, 1], [0, 0]]  # empty heatmap: (0, 0)
    assert maxvals[0].tolist() == [1.0, 0.5, 0.0]


def test_dark_without_blur_recovers_gaussian_peaks_exactly():
    hm = torch.stack([gaussian(64, 48, x, y) for x, y in PEAKS])[None]
    coords, maxvals = decode_heatmaps(hm, blur_kernel=None)
    np.testing.assert_allclose(coords[0].numpy(), np.array(PEAKS), atol=1e-9)
    # the score is the maximum of the unblurred heatmap
    np.testing.assert_allclose(maxvals[0].numpy(), hm.amax(dim=(2, 3))[0].numpy())


def test_dark_with_the_official_blur():
    hm = torch.stack([gaussian(64, 48, x, y, sigma=2.5) for x, y in PEAKS])[None].float()
    coords, _ = decode_heatmaps(hm)
    np.testing.assert_allclose(coords[0].numpy(), np.array(PEAKS), atol=2e-3)
    # argmax alone is off by up to half a pixel
    plain, _ = decode_heatmaps(hm, dark=False)
    assert np.abs(plain[0].numpy() - np.array(PEAKS)).max() > 0.4


def test_dark_blur_equals_opencv():
    rng = np.random.default_rng(0)
    hm = rng.random((2, 3, 20, 17))
    ours = dark_blur(torch.from_numpy(hm)).numpy()
    for b in range(2):
        for j in range(3):
            padded = np.zeros((30, 27))
            padded[5:-5, 5:-5] = hm[b, j]
            ref = cv2.GaussianBlur(padded, (11, 11), 0)[5:-5, 5:-5]
            ref *= hm[b, j].max() / ref.max()
            np.testing.assert_allclose(ours[b, j], ref, rtol=1e-12, atol=1e-14)


def test_dark_skips_peaks_near_the_border():
    hm = torch.stack([gaussian(32, 32, 1.3, 10.2), gaussian(32, 32, 29.6, 20.0)])[None]
    coords, _ = decode_heatmaps(hm, blur_kernel=None)
    assert coords[0].tolist() == [[1.0, 10.0], [30.0, 20.0]]  # integer argmax kept


def test_flip_back_swaps_pairs_and_mirrors():
    hm = torch.zeros(1, 17, 4, 10)
    hm[0, 5, 2, 3] = 1.0  # left shoulder at x = 3
    hm[0, 0, 1, 0] = 1.0  # nose at x = 0
    back = flip_back(hm)
    assert back[0, 6, 2, 6] == 1.0 and back[0, 5].sum() == 0  # right shoulder at 10 - 1 - 3
    assert back[0, 0, 1, 9] == 1.0
    assert torch.equal(flip_back(back), hm)
    assert set(FLIP_PAIRS) == {(3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)}


def _render(points_input, h=64, w=48, stride=4):
    """A perfect 'model' in the HRNet geometry: an input point x is heatmap point x / stride."""
    return torch.stack([gaussian(h, w, x / stride, y / stride) for x, y in points_input])[None]


def test_flip_test_with_the_one_pixel_shift():
    width_in = 48 * 4
    points = [(81.0, 100.0)] * 17
    hm = _render(points)
    # the flipped input has the point at width_in - 1 - x, and left/right channels exchanged (all equal here)
    flipped = _render([(width_in - 1 - x, y) for x, y in points])
    merged = merge_flipped(hm, flipped)
    coords, _ = decode_heatmaps(merged, blur_kernel=None)
    # flipped back: x/4 - 3/4; shifted: x/4 + 1/4; the average of the two equal Gaussians peaks midway
    np.testing.assert_allclose(coords[0, :, 0].numpy(), 81 / 4 + 1 / 8, atol=2e-3)
    np.testing.assert_allclose(coords[0, :, 1].numpy(), 25.0, atol=1e-9)
    unshifted, _ = decode_heatmaps(merge_flipped(hm, flipped, shift=False), blur_kernel=None)
    np.testing.assert_allclose(unshifted[0, :, 0].numpy(), 81 / 4 - 3 / 8, atol=2e-3)


def test_back_projection_through_an_opencv_affine():
    centre, size, angle = np.array([500.0, 300.0]), np.array([150.0, 200.0]), math.radians(30)
    width_in, height_in = 192, 256
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    src = np.float32([centre, centre + rot @ [0, -size[1] / 2], centre + rot @ [-size[0] / 2, 0]])
    dst = np.float32([[width_in / 2, height_in / 2], [width_in / 2, 0], [0, height_in / 2]])
    trans = cv2.getAffineTransform(src, dst)
    trans_inv = cv2.invertAffineTransform(trans)
    image_points = np.array([[480.3, 290.2], [530.0, 350.7], [455.5, 260.1]])
    crop = image_points @ trans[:, :2].T + trans[:, 2]
    hm = _render([tuple(p) for p in crop], h=height_in // 4, w=width_in // 4)
    coords, _ = decode_heatmaps(hm, blur_kernel=None)
    back = heatmap_to_image(coords, torch.from_numpy(trans_inv)[None], (width_in // 4, height_in // 4),
                            (width_in, height_in))
    np.testing.assert_allclose(back[0].numpy(), image_points, atol=1e-4)  # float32 affine from OpenCV


def test_rescore_by_hand():
    scores = np.array([[0.9, 0.1, 0.5], [0.1, 0.2, 0.15]])
    np.testing.assert_allclose(rescore(np.array([0.8, 0.5]), scores), [0.8 * 0.7, 0.0])


def test_oks_and_nms_by_hand():
    base = np.zeros((17, 3))
    base[:, 0] = np.arange(17) * 10.0
    base[:, 2] = 1
    near = base.copy()
    near[0, 0] += 1.0  # one joint 1 px off
    # OKS: 16 joints at exp(0) and the nose at exp(-1 / (2 * 0.052**2) / 100 / 2) with area 100
    expected = (16 + math.exp(-1 / (2 * OKS_SIGMAS[0]) ** 2 / (100 + np.spacing(1)) / 2)) / 17
    assert oks_iou(base, near[None], 100.0, np.array([100.0]))[0] == pytest.approx(expected)
    far = base.copy()
    far[:, 1] += 500
    keep = oks_nms(np.stack([near, base, far]), np.array([0.5, 0.9, 0.3]), np.array([100.0, 100.0, 100.0]))
    assert keep == [1, 2]  # the near duplicate (OKS > 0.9) goes, the far pose stays
    assert oks_nms(np.zeros((0, 17, 3)), np.zeros(0), np.zeros(0)) == []


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="heatmaps must have shape"):
        decode_heatmaps(torch.zeros(3, 4, 5))
    with pytest.raises(TypeError, match="floating-point"):
        decode_heatmaps(torch.zeros(1, 1, 4, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="same shape"):
        merge_flipped(torch.zeros(1, 17, 4, 5), torch.zeros(1, 17, 4, 6))
    with pytest.raises(ValueError, match="trans_inv"):
        heatmap_to_image(torch.zeros(2, 17, 2), torch.zeros(2, 3, 3), (4, 4), (16, 16))
    with pytest.raises(ValueError, match="keypoints must have shape"):
        oks_nms(np.zeros((2, 5, 3)), np.zeros(2), np.zeros(2))
