"""The 17 PoseTrack18 joints, defined once for data, decoding, evaluation and drawing.

Order and flip pairs follow the PoseTrack18 annotation files (``categories[0].keypoints``); the joint
weights are those of the official JMI dataset code (docs/FIDELITY.md; their configs leave them off),
the OKS sigmas COCO's, as the HRNet / DCPose code family's OKS-NMS uses them.
"""

from __future__ import annotations

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "head_bottom", "head_top", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_JOINTS = len(KEYPOINT_NAMES)

# Left/right pairs swapped by a horizontal flip (ears, shoulders, elbows, wrists, hips, knees, ankles).
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

# Loss weights per joint: 1 head/shoulders/hips, 1.2 elbows and knees, 1.5 wrists and ankles.
JOINT_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5,
                                    1.0, 1.0, 1.2, 1.2, 1.5, 1.5)

# COCO keypoint sigmas in PoseTrack18 order (head_bottom/head_top take the eyes' 0.025), as the
# HRNet / DCPose code family's OKS-NMS uses them.
OKS_SIGMAS: tuple[float, ...] = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
                                 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089)

# Limbs for drawing (0-based joint indices), the PoseTrack18 ``skeleton``.
SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)


def flip_permutation(num_joints: int = NUM_JOINTS,
                     pairs: tuple[tuple[int, int], ...] = FLIP_PAIRS) -> list[int]:
    """Index map ``perm`` with ``flipped[j] = original[perm[j]]`` for a horizontal flip."""
    perm = list(range(num_joints))
    for left, right in pairs:
        perm[left], perm[right] = right, left
    return perm
