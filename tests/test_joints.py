"""The joints are defined once: jmipose/joints.py spells every joint name, no other source file of the
package does (in code, strings, docstrings or comments), and the other modules' views agree with it."""

from __future__ import annotations

import importlib
import io
import re
import tokenize
from pathlib import Path

import numpy as np

import jmipose
from jmipose import joints

PACKAGE = Path(jmipose.__file__).parent
NAME = re.compile(r"\b(" + "|".join(map(re.escape, joints.KEYPOINT_NAMES)) + r")\b")


def spelled_names(source: str, suffix: str = ".py") -> list[tuple[int, str]]:
    """(line, name) of every joint name in ``source``'s strings and comments (a YAML file: anywhere)."""
    if suffix != ".py":
        return [(source.count("\n", 0, m.start()) + 1, m.group(1)) for m in NAME.finditer(source)]
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.STRING, tokenize.COMMENT) or token.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            found += [(token.start[0] + token.string.count("\n", 0, m.start()), m.group(1))
                      for m in NAME.finditer(token.string)]
    return found


def test_the_scan_finds_a_spelled_name():
    assert spelled_names('x = "left_wrist"\n') == [(1, "left_wrist")]
    assert spelled_names('"""Head = mean of\nhead_top and nose"""\n') == [(2, "head_top"), (2, "nose")]
    assert spelled_names("y = 1  # the right_ankle\n") == [(1, "right_ankle")]
    assert spelled_names("z = f'{a}right_knee{b}'\n") == [(1, "right_knee")]
    assert spelled_names("keypoints:\n  - left_hip\n", ".yaml") == [(2, "left_hip")]
    # identifiers are not names spelled as data; parts of longer words are not names
    assert spelled_names("nose = points[0]\nleft_hip_width = 2\n") == []


def test_no_joint_name_is_spelled_outside_joints_py():
    offenders = []
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix not in (".py", ".yaml") or path == PACKAGE / "joints.py":
            continue
        for line, name in spelled_names(path.read_text(encoding="utf-8"), path.suffix):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name}")
    assert not offenders, "joint names belong in jmipose/joints.py only:\n" + "\n".join(offenders)


def test_the_definitions_hang_together():
    names = joints.KEYPOINT_NAMES
    assert len(names) == joints.NUM_JOINTS == 17 and len(set(names)) == 17
    for left, right in joints.FLIP_PAIRS:
        assert names[left].startswith("left_") and names[right] == "right_" + names[left][len("left_"):]
    assert [names[j] for j in joints.IGNORED_JOINTS] == ["left_ear", "right_ear"]
    assert sorted(joints.UPPER_BODY_JOINTS + joints.LOWER_BODY_JOINTS) == list(range(17))
    assert all(names[j].split("_")[-1] in ("hip", "knee", "ankle") for j in joints.LOWER_BODY_JOINTS)
    assert len(joints.JOINT_WEIGHTS) == len(joints.OKS_SIGMAS) == 17
    assert set(joints.POSEVAL_JOINTS) == set(names) - {"left_ear", "right_ear"}
    assert len(joints.POSEVAL_JOINTS) == joints.NUM_POSEVAL_JOINTS == 15
    # PoseTrack17's documented joint ids: 0 right ankle ... 12 neck (head_bottom), 13 nose, 14 head top
    assert [names[joints.PT17_TO_PT18[i]] for i in (0, 5, 6, 11, 12, 13, 14)] == [
        "right_ankle", "left_ankle", "right_wrist", "left_wrist", "head_bottom", "nose", "head_top"]
    assert joints.AP_COLUMNS[-1] == "Total" and tuple(joints.AP_COLUMN_JOINTS) == joints.AP_COLUMNS[:-1]
    grouped = [n for group in joints.AP_COLUMN_JOINTS.values() for n in group]
    assert sorted(grouped) == sorted(joints.POSEVAL_JOINTS)
    assert all(a != b and 0 <= a < 17 and 0 <= b < 17 for a, b in joints.SKELETON)
    assert set(joints.JOINT_ALIASES.values()) <= set(names)


def test_every_module_takes_the_joints_from_joints_py():
    from jmipose.data import _synthetic_motion, transforms
    from jmipose.engine import demo, demo_report
    from jmipose.formats import posetrack

    posetrack_ap = importlib.import_module("jmipose.metrics.posetrack_ap")  # the package exports a function so named

    assert transforms.JOINT_NAMES is joints.KEYPOINT_NAMES and transforms.FLIP_INDEX is joints.FLIP_INDEX
    np.testing.assert_array_equal(transforms.JOINT_WEIGHTS, np.array(joints.JOINT_WEIGHTS, dtype=np.float32))
    assert transforms.IGNORED_JOINTS is joints.IGNORED_JOINTS
    assert _synthetic_motion.NUM_JOINTS == joints.NUM_JOINTS
    assert posetrack_ap.COLUMNS is demo.COLUMNS is demo_report.COLUMNS is joints.AP_COLUMNS
    assert posetrack.CATEGORY["keypoints"] == list(joints.KEYPOINT_NAMES)
    assert posetrack.CATEGORY["skeleton"] == [[a + 1, b + 1] for a, b in joints.SKELETON]
