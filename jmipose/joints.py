"""The 17 PoseTrack18 joints, defined once for data, decoding, evaluation and drawing.

Every joint name of the package is spelled here and nowhere else (``tests/test_joints.py`` scans the
package's sources): the other modules take names, orders, pairs, weights and groups from this module.

Order and flip pairs follow the PoseTrack18 annotation files (``categories[0].keypoints``); the joint
weights are those of the official JMI dataset code (docs/FIDELITY.md; their configs leave them off),
the OKS sigmas COCO's, as the HRNet / DCPose code family's OKS-NMS uses them; the 15-joint order and
the AP columns are poseval's (the PoseTrack evaluator: its ``Joint`` class and ``getCum``).
"""

from __future__ import annotations

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "head_bottom", "head_top", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_JOINTS = len(KEYPOINT_NAMES)

# Other spellings met in converted PoseTrack files (head_bottom is the neck point).
JOINT_ALIASES: dict[str, str] = {"neck": "head_bottom", "head": "head_top"}

# Left/right pairs swapped by a horizontal flip (ears, shoulders, elbows, wrists, hips, knees, ankles).
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

# PoseTrack never labels the ears (the slots exist for COCO compatibility): never a training target.
IGNORED_JOINTS: tuple[int, ...] = (3, 4)

# The halves of the half-body augmentation: head, ears and arms; hips and legs.
UPPER_BODY_JOINTS: tuple[int, ...] = tuple(range(11))
LOWER_BODY_JOINTS: tuple[int, ...] = tuple(range(11, NUM_JOINTS))

# Loss weights per joint: 1 head/shoulders/hips, 1.2 elbows and knees, 1.5 wrists and ankles.
JOINT_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5,
                                    1.0, 1.0, 1.2, 1.2, 1.5, 1.5)

# COCO keypoint sigmas in PoseTrack18 order (head_bottom/head_top take the eyes' 0.025), as the
# HRNet / DCPose code family's OKS-NMS uses them.
OKS_SIGMAS: tuple[float, ...] = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
                                 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089)

# Limbs for drawing (0-based joint indices), the PoseTrack18 ``skeleton`` (which is 1-based).
SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

# poseval's 15 joints in its id order, which is also PoseTrack17's joint id order (annolist files):
# id -> PoseTrack18 name. The ears are not among them (not scored).
POSEVAL_JOINTS: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "head_bottom", "nose", "head_top",
)
NUM_POSEVAL_JOINTS = len(POSEVAL_JOINTS)

# PoseTrack17 / poseval joint id -> index in the PoseTrack18 order.
PT17_TO_PT18: dict[int, int] = {i: KEYPOINT_NAMES.index(name) for i, name in enumerate(POSEVAL_JOINTS)}

# The columns of a PoseTrack AP table and the joints poseval's getCum averages into each, in its order
# (the order matters for rounding); Total is the mean of the 15 joint APs, not of the columns.
AP_COLUMNS: tuple[str, ...] = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total")
AP_COLUMN_JOINTS: dict[str, tuple[str, ...]] = {
    "Head": ("head_top", "head_bottom", "nose"),
    "Shoulder": ("right_shoulder", "left_shoulder"),
    "Elbow": ("right_elbow", "left_elbow"),
    "Wrist": ("right_wrist", "left_wrist"),
    "Hip": ("right_hip", "left_hip"),
    "Knee": ("right_knee", "left_knee"),
    "Ankle": ("right_ankle", "left_ankle"),
}


def flip_permutation(num_joints: int = NUM_JOINTS,
                     pairs: tuple[tuple[int, int], ...] = FLIP_PAIRS) -> list[int]:
    """Index map ``perm`` with ``flipped[j] = original[perm[j]]`` for a horizontal flip."""
    perm = list(range(num_joints))
    for left, right in pairs:
        perm[left], perm[right] = right, left
    return perm


# Channel order of a mirrored prediction: heatmaps_of_flipped_image[:, FLIP_INDEX] are left/right
# consistent with the unflipped image (the flip test uses it).
FLIP_INDEX: tuple[int, ...] = tuple(flip_permutation())
