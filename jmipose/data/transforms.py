"""Geometry and targets of one training/evaluation window: the affine crop shared by every frame,
the augmentation drawn once per window, Gaussian heatmap targets and joint weights.

Conventions (those of HRNet/DCPose/JMI, so that published checkpoints and decoders line up):

- Boxes are ``(x, y, w, h)`` in image pixels. A box becomes a crop with centre ``(x + w/2, y + h/2)``
  and size ``(w, h)`` widened to the input aspect ratio (3:4 for 288x384) and enlarged 1.25x.
- ``get_affine_transform`` maps image pixels to input-crop pixels: the crop centre goes to
  ``(W/2, H/2)`` and the crop size to ``(W, H)``; a positive rotation turns the content
  counter-clockwise on screen, as ``cv2.getRotationMatrix2D``.
- Heatmaps are at 1/4 of the input; an input-crop point ``p`` is at heatmap position ``p / stride``
  (stride = input size / heatmap size, no half-pixel shift), and a heatmap position ``q`` decodes to
  input-crop point ``q * stride`` and then to the image through ``trans_inv``.
- A horizontal flip mirrors ``x -> width - 1 - x`` (what ``image[:, ::-1]`` does) and swaps the
  left/right channels given by ``FLIP_PAIRS``. The flip is folded into the crop matrix, so the
  original frame is warped once and ``trans_inv`` maps crop pixels back to *original* image pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from jmipose import joints
from jmipose._configbase import ConfigSection
from jmipose.joints import FLIP_INDEX as FLIP_INDEX  # re-exported: this module's public names
from jmipose.joints import FLIP_PAIRS, IGNORED_JOINTS, LOWER_BODY_JOINTS, UPPER_BODY_JOINTS, flip_permutation
from jmipose.joints import NUM_JOINTS as NUM_JOINTS

# The joints' facts (names, flip pairs and permutation, ignored joints, body halves, weights) live in
# jmipose.joints; JOINT_NAMES and JOINT_WEIGHTS are this module's views of them.
JOINT_NAMES = joints.KEYPOINT_NAMES
JOINT_WEIGHTS = np.array(joints.JOINT_WEIGHTS, dtype=np.float32)
JOINT_WEIGHTS.flags.writeable = False

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
IMAGENET_MEAN.flags.writeable = False
IMAGENET_STD.flags.writeable = False


@dataclass(frozen=True)
class AugmentConfig(ConfigSection):
    """Training augmentation of the official JMI configs (all frames of a window share one draw)."""

    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8  # half-body only when more than this many joints are labelled
    half_body_enlarge: float = 1.5
    scale_factor: float = 0.35  # scale = clip(1 + N(0,1) * scale_factor, scale_min, scale_max)
    scale_min: float = 0.65
    scale_max: float = 1.35
    rotation_factor: float = 45.0  # rotation = clip(N(0,1) * rotation_factor, -rotation_max, rotation_max)
    rotation_max: float = 90.0
    rotation_prob: float = 0.6

    error_label = "AugmentConfig."

    def __post_init__(self) -> None:
        for name in ("flip_prob", "half_body_prob", "rotation_prob"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1], got {value!r}")
        for name in ("half_body_enlarge", "scale_min", "scale_max"):
            if not float(getattr(self, name)) > 0.0:
                raise ValueError(f"AugmentConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("scale_factor", "rotation_factor", "rotation_max", "half_body_min_joints"):
            if float(getattr(self, name)) < 0.0:
                raise ValueError(f"AugmentConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.scale_min > self.scale_max:
            raise ValueError(
                f"AugmentConfig.scale_min ({self.scale_min}) must be <= scale_max ({self.scale_max})"
            )


@dataclass(frozen=True)
class Augmentation:
    """One draw of the augmentation, applied identically to every frame of a window."""

    flip: bool = False
    half_body: bool = False
    upper_body_first: bool = True
    scale: float = 1.0
    rotation: float = 0.0


NO_AUGMENTATION = Augmentation()


def make_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` in ``epoch``: independent streams, reproducible on resume
    and identical whatever worker or order loads the sample."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, int(index) & 0xFFFFFFFF])


def sample_augmentation(rng: np.random.Generator, config: AugmentConfig) -> Augmentation:
    """Draw one augmentation. Always draws the same six numbers in the same order, so a sample's
    draw does not depend on its annotation (only on ``rng``)."""
    u_flip, u_half, u_upper, u_rotate = (float(v) for v in rng.random(4))
    n_scale, n_rotate = (float(v) for v in rng.standard_normal(2))
    scale = float(np.clip(1.0 + n_scale * config.scale_factor, config.scale_min, config.scale_max))
    rotation = 0.0
    if u_rotate < config.rotation_prob:
        rotation = float(
            np.clip(n_rotate * config.rotation_factor, -config.rotation_max, config.rotation_max)
        )
    return Augmentation(
        flip=u_flip < config.flip_prob,
        half_body=u_half < config.half_body_prob,
        upper_body_first=u_upper < 0.5,
        scale=scale,
        rotation=rotation,
    )


def box_to_center_scale(box, aspect_ratio: float, enlarge: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Crop centre and size (pixels) of an ``(x, y, w, h)`` box: widened to ``aspect_ratio`` (w/h),
    then enlarged by ``enlarge``."""
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + 0.5 * w, y + 0.5 * h], dtype=np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w * enlarge, h * enlarge], dtype=np.float64)


def half_body_center_scale(
    joints: np.ndarray, labelled: np.ndarray, upper_first: bool, aspect_ratio: float, enlarge: float = 1.5
) -> tuple[np.ndarray, np.ndarray] | None:
    """Crop around the labelled upper (or lower) body joints; ``None`` when neither half has two."""
    upper = [j for j in UPPER_BODY_JOINTS if labelled[j]]
    lower = [j for j in LOWER_BODY_JOINTS if labelled[j]]
    chosen = upper if upper_first else lower
    if len(chosen) < 2:
        chosen = lower if upper_first else upper
    if len(chosen) < 2:
        return None
    points = joints[chosen, :2].astype(np.float64)
    low, high = points.min(axis=0), points.max(axis=0)
    center = points.mean(axis=0)
    w, h = high - low
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w * enlarge, h * enlarge], dtype=np.float64)


def get_affine_transform(center, scale, rotation: float, output_size, inverse: bool = False) -> np.ndarray:
    """The 2x3 float64 map from image pixels to crop pixels (or back with ``inverse=True``).

    ``center`` (x, y) goes to ``(out_w / 2, out_h / 2)``; the ``scale`` = (w, h) pixel box goes to
    ``output_size`` = (out_w, out_h); ``rotation`` in degrees turns the content counter-clockwise on
    screen. Equal to HRNet's three-point construction when ``scale`` has the output's aspect ratio.
    """
    cx, cy = (float(v) for v in center)
    src_w, src_h = (float(v) for v in scale)
    out_w, out_h = (float(v) for v in output_size)
    if not (src_w > 0 and src_h > 0 and math.isfinite(src_w) and math.isfinite(src_h)):
        raise ValueError(f"scale must be two finite positive sizes, got {tuple(scale)!r}")
    if not (out_w > 0 and out_h > 0):
        raise ValueError(f"output_size must be positive, got {tuple(output_size)!r}")
    theta = math.radians(float(rotation))
    cos, sin = math.cos(theta), math.sin(theta)
    # image -> crop: rotate by -rotation about the centre (y points down), then scale to the output.
    linear = np.array([[out_w / src_w, 0.0], [0.0, out_h / src_h]]) @ np.array([[cos, sin], [-sin, cos]])
    offset = np.array([out_w * 0.5, out_h * 0.5]) - linear @ np.array([cx, cy])
    matrix = np.concatenate([linear, offset[:, None]], axis=1)
    return invert_affine(matrix) if inverse else matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    full = np.eye(3)
    full[:2] = matrix
    return np.linalg.inv(full)[:2]


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer`` after ``inner`` (both 2x3)."""
    a, b = np.eye(3), np.eye(3)
    a[:2], b[:2] = outer, inner
    return (a @ b)[:2]


def affine_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine map to ``[..., 2]`` points (float64 result)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ np.asarray(matrix, dtype=np.float64)[:, :2].T + np.asarray(matrix, dtype=np.float64)[:, 2]


def mirror_matrix(image_width: int) -> np.ndarray:
    """``x -> image_width - 1 - x``: the pixel map of ``image[:, ::-1]``."""
    return np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0]])


def flip_joints(joints: np.ndarray, image_width: int, pairs=FLIP_PAIRS) -> np.ndarray:
    """Mirror ``[J, >=2]`` image-space joints and swap the left/right slots (labels travel along)."""
    flipped = np.array(joints, dtype=np.float64 if np.asarray(joints).dtype == np.float64 else np.float32)
    flipped[:, 0] = image_width - 1 - flipped[:, 0]
    return flipped[flip_permutation(flipped.shape[0], tuple(pairs))]


@dataclass(frozen=True)
class CropGeometry:
    """Where one window is cut from its frames."""

    matrix: np.ndarray  # [2, 3] original image -> crop pixels (mirror included)
    center: np.ndarray  # [2] crop centre in original image pixels
    scale: np.ndarray  # [2] crop size in image pixels
    rotation: float  # degrees, in the (possibly mirrored) frame the crop was cut from
    flipped: bool

    @property
    def inverse(self) -> np.ndarray:
        return invert_affine(self.matrix)


def crop_geometry(
    box,
    joints: np.ndarray | None,
    labelled: np.ndarray | None,
    image_width: int,
    input_size,
    aug: Augmentation = NO_AUGMENTATION,
    config: AugmentConfig | None = None,
    enlarge: float = 1.25,
) -> CropGeometry:
    """Crop of a window around ``box``, with ``aug`` applied in the HRNet order (half-body, scale,
    rotation, flip). ``joints``/``labelled`` are only needed for half-body."""
    config = config or AugmentConfig()
    aspect = float(input_size[0]) / float(input_size[1])
    center, scale = box_to_center_scale(box, aspect, enlarge)
    if (
        aug.half_body
        and joints is not None
        and labelled is not None
        and int(np.count_nonzero(labelled)) > config.half_body_min_joints
    ):
        half = half_body_center_scale(
            joints, labelled, aug.upper_body_first, aspect, config.half_body_enlarge
        )
        if half is not None:
            center, scale = half
    scale = scale * aug.scale
    if aug.flip:
        mirrored_center = np.array([image_width - 1.0 - center[0], center[1]])
        crop = get_affine_transform(mirrored_center, scale, aug.rotation, input_size)
        matrix = compose_affine(crop, mirror_matrix(image_width))
    else:
        matrix = get_affine_transform(center, scale, aug.rotation, input_size)
    return CropGeometry(
        matrix=matrix, center=center, scale=scale, rotation=float(aug.rotation), flipped=aug.flip
    )


def warp_frame(image: np.ndarray, matrix: np.ndarray, input_size) -> np.ndarray:
    """Cut the crop out of an ``[H, W, 3]`` uint8 frame (bilinear, black outside the frame)."""
    return cv2.warpAffine(
        image,
        np.asarray(matrix, dtype=np.float64),
        (int(input_size[0]), int(input_size[1])),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def normalize_image(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` RGB uint8 -> ``[3, H, W]`` float32 with the ImageNet mean/std."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] uint8 RGB image, got {image.dtype} {image.shape}")
    scaled = image.astype(np.float32) * (1.0 / 255.0)
    return np.ascontiguousarray(((scaled - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))


def generate_heatmaps(
    joints: np.ndarray,
    labelled: np.ndarray,
    input_size,
    heatmap_size,
    sigma: float = 3.0,
    joint_weights: np.ndarray | None = JOINT_WEIGHTS,
    unbiased: bool = False,
    ignored_joints=IGNORED_JOINTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian targets of ``[J, 2]`` input-crop joints: ``([J, h, w] float32, [J] float32 weights)``.

    A joint gets a target when it is labelled, not ignored (ears) and inside the input crop; its
    Gaussian (peak 1, truncated at 3 sigma as HRNet) sits at ``round(p / stride)`` or, with
    ``unbiased=True``, at the exact sub-pixel ``p / stride`` (DARK's unbiased encoding). The weight is
    ``joint_weights[j]`` (or 1) for such a joint, else 0 with an all-zero heatmap.
    """
    in_w, in_h = (float(v) for v in input_size)
    hm_w, hm_h = (int(v) for v in heatmap_size)
    num_joints = joints.shape[0]
    stride_x, stride_y = in_w / hm_w, in_h / hm_h
    heatmaps = np.zeros((num_joints, hm_h, hm_w), dtype=np.float32)
    weights = np.zeros(num_joints, dtype=np.float32)
    radius = 3.0 * sigma
    xs = np.arange(hm_w, dtype=np.float32)
    ys = np.arange(hm_h, dtype=np.float32)
    for j in range(num_joints):
        if not labelled[j] or j in ignored_joints:
            continue
        x, y = float(joints[j, 0]), float(joints[j, 1])
        # The official JMI pipeline drops joints that leave the crop after augmentation.
        if not (math.isfinite(x) and math.isfinite(y)) or x < 0 or y < 0 or x > in_w or y > in_h:
            continue
        grid_x, grid_y = int(x / stride_x + 0.5), int(y / stride_y + 0.5)
        if (
            grid_x - radius >= hm_w
            or grid_y - radius >= hm_h
            or grid_x + radius + 1 < 0
            or grid_y + radius + 1 < 0
        ):
            continue
        mu_x, mu_y = (x / stride_x, y / stride_y) if unbiased else (float(grid_x), float(grid_y))
        gx = np.exp(-((xs - mu_x) ** 2) / (2.0 * sigma * sigma)) * (np.abs(xs - grid_x) <= radius)
        gy = np.exp(-((ys - mu_y) ** 2) / (2.0 * sigma * sigma)) * (np.abs(ys - grid_y) <= radius)
        heatmaps[j] = np.outer(gy, gx)
        weights[j] = 1.0 if joint_weights is None else float(joint_weights[j])
    return heatmaps, weights
