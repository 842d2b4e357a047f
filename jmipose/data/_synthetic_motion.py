"""Body model and motion programs of the synthetic video benchmark (used by ``synthetic.py``).

A person is a 3-D stick skeleton with fixed segment lengths (fractions of the body height taken from
anthropometric tables, rounded), posed by joint angles that always stay inside human joint limits,
seen by an orthographic camera. Motion programs (walk, wave, jumping jacks, turn, idle) give every
angle as a smooth function of time; a person may switch program once, with a cross-fade, so poses
are smooth frame to frame but sometimes fast (waving hands, jumping jacks, turning at a lane end).

Coordinates: image pixels, x right, y down; z points towards the camera. The body frame has x to
the person's own left, so a person facing the camera shows its left side on the image right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jmipose.joints import IGNORED_JOINTS as EAR_JOINTS
from jmipose.joints import NUM_JOINTS

# The PoseTrack18 joints (jmipose.joints); the ears (EAR_JOINTS) exist in the format but are never labelled.
LABELLED_JOINTS = tuple(j for j in range(NUM_JOINTS) if j not in EAR_JOINTS)

# Segment lengths as fractions of the standing height (head + neck + torso + thigh + shin + ankle = 1).
SEGMENTS = {
    "head": 0.13, "neck": 0.05, "torso": 0.29, "shoulder_half": 0.115, "hip_half": 0.085,
    "upper_arm": 0.17, "forearm": 0.145, "hand": 0.05, "thigh": 0.245, "shin": 0.245,
    "foot": 0.07, "ankle_height": 0.04,
}
# Bones whose 3-D length is fixed by SEGMENTS: (joint a, joint b, segment name).
BONES = (
    (5, 7, "upper_arm"), (6, 8, "upper_arm"), (7, 9, "forearm"), (8, 10, "forearm"),
    (11, 13, "thigh"), (12, 14, "thigh"), (13, 15, "shin"), (14, 16, "shin"), (2, 1, "head"),
)

# Joint limits in degrees (human ranges of motion, narrowed a little so poses look natural).
JOINT_LIMITS = {
    "yaw": (-70.0, 70.0),              # whole body about the vertical axis, 0 = facing the camera
    "torso_lean": (-15.0, 15.0),       # sideways, in the image plane
    "torso_bend": (-10.0, 35.0),       # forwards
    "head_yaw": (-40.0, 40.0),
    "head_tilt": (-20.0, 20.0),
    "shoulder_flexion": (-50.0, 170.0),   # arm swing forwards (+) / backwards (-)
    "shoulder_abduction": (0.0, 170.0),   # arm raised sideways
    "elbow_flexion": (0.0, 150.0),        # 0 = straight arm
    "hip_flexion": (-30.0, 100.0),
    "hip_abduction": (-10.0, 45.0),
    "knee_flexion": (0.0, 140.0),         # the shin only ever folds backwards
}
SIDED = ("shoulder_flexion", "shoulder_abduction", "elbow_flexion", "hip_flexion", "hip_abduction",
         "knee_flexion")
ACTIONS = ("walk", "wave", "jump", "turn", "idle")


@dataclass
class PersonMotion:
    """One person's trajectory: 3-D joints per frame and what is needed to draw the body."""

    height: float            # standing height in pixels
    joints: np.ndarray       # [T, 17, 3] image x, y and depth z (towards the camera)
    hands: np.ndarray        # [T, 2, 3] hand ends (left, right)
    toes: np.ndarray         # [T, 2, 3] toe ends (left, right)
    angles: dict             # name -> [T] (or [T, 2] for SIDED names, left then right), degrees
    actions: tuple           # motion programs used, in time order
    yaw: np.ndarray          # [T] degrees


def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    one, zero = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([one, zero, zero], -1), np.stack([zero, c, -s], -1),
                     np.stack([zero, s, c], -1)], -2)


def _rot_y(a):
    c, s = np.cos(a), np.sin(a)
    one, zero = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, zero, s], -1), np.stack([zero, one, zero], -1),
                     np.stack([-s, zero, c], -1)], -2)


def _rot_z(a):
    c, s = np.cos(a), np.sin(a)
    one, zero = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, zero], -1), np.stack([s, c, zero], -1),
                     np.stack([zero, zero, one], -1)], -2)


def _apply(rot, vec):
    return np.einsum("tij,tj->ti", rot, vec)


def _limb_direction(flexion, abduction, side):
    """Unit direction of a limb hanging down (0, 1, 0), swung forwards by ``flexion`` and raised
    sideways by ``abduction`` (radians, [T]); ``side`` is +1 for the left limb (body +x)."""
    return np.stack([side * np.sin(abduction), np.cos(abduction) * np.cos(flexion),
                     np.cos(abduction) * np.sin(flexion)], -1)


def _bend(direction, preferred, angle):
    """Rotate ``direction`` by ``angle`` towards the part of ``preferred`` perpendicular to it."""
    perp = preferred - np.sum(preferred * direction, -1, keepdims=True) * direction
    norm = np.linalg.norm(perp, axis=-1, keepdims=True)
    # Degenerate only when the preferred direction is parallel to the limb: fall back to "up".
    fallback = np.broadcast_to(np.array([0.0, -1.0, 0.0]), perp.shape)
    perp = np.where(norm > 1e-6, perp / np.maximum(norm, 1e-12), fallback)
    return np.cos(angle)[:, None] * direction + np.sin(angle)[:, None] * perp


def forward_kinematics(angles: dict, height: float):
    """Joint positions relative to the pelvis (pixels, camera frame) for per-frame ``angles``.

    Returns (joints [T, 17, 3], hands [T, 2, 3], toes [T, 2, 3])."""
    seg = {k: v * height for k, v in SEGMENTS.items()}
    rad = {k: np.deg2rad(np.asarray(v, dtype=np.float64)) for k, v in angles.items()}
    frames = rad["yaw"].shape[0]
    joints = np.zeros((frames, NUM_JOINTS, 3))
    torso_rot = _rot_z(rad["torso_lean"]) @ _rot_x(-rad["torso_bend"])
    head_rot = torso_rot @ _rot_y(rad["head_yaw"]) @ _rot_x(-rad["head_tilt"])

    def vec(x, y, z):
        return np.broadcast_to(np.array([x, y, z], dtype=np.float64), (frames, 3))

    spine_top = _apply(torso_rot, vec(0.0, -seg["torso"], 0.0))
    joints[:, 1] = spine_top + _apply(torso_rot, vec(0.0, -seg["neck"], 0.0))
    joints[:, 2] = joints[:, 1] + _apply(head_rot, vec(0.0, -seg["head"], 0.0))
    joints[:, 0] = joints[:, 1] + _apply(head_rot, vec(0.0, -0.4 * seg["head"], 0.38 * seg["head"]))
    joints[:, 3] = joints[:, 1] + _apply(head_rot, vec(0.36 * seg["head"], -0.5 * seg["head"], 0.0))
    joints[:, 4] = joints[:, 1] + _apply(head_rot, vec(-0.36 * seg["head"], -0.5 * seg["head"], 0.0))
    hands = np.zeros((frames, 2, 3))
    toes = np.zeros((frames, 2, 3))
    for s, side in enumerate((1.0, -1.0)):
        shoulder = spine_top + _apply(torso_rot, vec(side * seg["shoulder_half"], 0.0, 0.0))
        flex, abd = rad["shoulder_flexion"][:, s], rad["shoulder_abduction"][:, s]
        upper = _limb_direction(flex, abd, side)
        # The elbow folds the forearm forwards for a low arm and upwards for a raised one.
        preferred = np.stack([np.zeros_like(abd), -np.sin(abd), np.cos(abd)], -1)
        fore = _bend(upper, preferred, rad["elbow_flexion"][:, s])
        elbow = shoulder + seg["upper_arm"] * _apply(torso_rot, upper)
        wrist = elbow + seg["forearm"] * _apply(torso_rot, fore)
        joints[:, 5 + s], joints[:, 7 + s], joints[:, 9 + s] = shoulder, elbow, wrist
        hands[:, s] = wrist + seg["hand"] * _apply(torso_rot, fore)

        hip = vec(side * seg["hip_half"], 0.0, 0.0)
        thigh = _limb_direction(rad["hip_flexion"][:, s], rad["hip_abduction"][:, s], side)
        shin = _bend(thigh, vec(0.0, 0.3, -1.0) / np.hypot(0.3, 1.0), rad["knee_flexion"][:, s])
        knee = hip + seg["thigh"] * thigh
        ankle = knee + seg["shin"] * shin
        joints[:, 11 + s], joints[:, 13 + s], joints[:, 15 + s] = hip, knee, ankle
        toes[:, s] = ankle + seg["foot"] * vec(0.0, 0.25, 1.0) / np.hypot(0.25, 1.0)
    yaw_rot = _rot_y(rad["yaw"])
    rotate = lambda p: np.einsum("tij,tkj->tki", yaw_rot, p)  # noqa: E731
    return rotate(joints), rotate(hands), rotate(toes)


def _wave_sum(rng, frames, periods, count=2):
    """A smooth zero-mean signal in [-1, 1]: a sum of ``count`` sines with random periods."""
    t = np.arange(frames, dtype=np.float64)
    signal = np.zeros(frames)
    for _ in range(count):
        signal += np.sin(2 * np.pi * t / rng.uniform(*periods) + rng.uniform(0, 2 * np.pi))
    return signal / count


def _idle(rng, frames):
    """Standing with small sways: the base every program starts from."""
    angles = {
        "yaw": 20 * _wave_sum(rng, frames, (40, 90)) + rng.uniform(-25, 25),
        "torso_lean": 4 * _wave_sum(rng, frames, (30, 70)),
        "torso_bend": 4 + 3 * _wave_sum(rng, frames, (30, 70)),
        "head_yaw": 15 * _wave_sum(rng, frames, (25, 60)),
        "head_tilt": 6 * _wave_sum(rng, frames, (25, 60)),
    }
    two = lambda f: np.stack([f(), f()], -1)  # noqa: E731
    angles["shoulder_flexion"] = two(lambda: 8 * _wave_sum(rng, frames, (20, 50)) + 5)
    angles["shoulder_abduction"] = two(lambda: 6 * _wave_sum(rng, frames, (20, 50)) + 12)
    angles["elbow_flexion"] = two(lambda: 12 * _wave_sum(rng, frames, (20, 50)) + 20)
    angles["hip_flexion"] = two(lambda: 4 * _wave_sum(rng, frames, (30, 60)) + 3)
    angles["hip_abduction"] = two(lambda: 3 * _wave_sum(rng, frames, (30, 60)) + 5)
    angles["knee_flexion"] = two(lambda: 4 * _wave_sum(rng, frames, (30, 60)) + 6)
    return angles, np.zeros(frames), np.zeros(frames)


def _walk(rng, frames, height, lane_half_width):
    """Walking back and forth along a lane; the person turns to face where it goes, slows down
    and turns around at the lane ends."""
    angles, _, _ = _idle(rng, frames)
    t = np.arange(frames, dtype=np.float64)
    top_speed = rng.uniform(0.02, 0.035) * height
    omega = top_speed / max(lane_half_width, 1.0)
    phase0 = rng.uniform(0, 2 * np.pi)
    x = lane_half_width * np.sin(omega * t + phase0)
    velocity = top_speed * np.cos(omega * t + phase0)
    speed = np.abs(velocity) / top_speed
    # One gait cycle (two steps) covers about 0.82 of the body height.
    gait = 2 * np.pi * np.cumsum(np.abs(velocity) / (0.82 * height)) + rng.uniform(0, 2 * np.pi)
    angles["yaw"] = rng.uniform(40, 65) * np.tanh(3 * velocity / top_speed)
    for s in (0, 1):
        leg_phase = gait + s * np.pi      # the legs swing in antiphase, each arm against its leg
        swing = np.sin(leg_phase)
        angles["hip_flexion"][:, s] = 3 + speed * 25 * swing
        # The knee folds most while the leg swings forwards.
        angles["knee_flexion"][:, s] = 8 + speed * (20 + 22 * np.sin(leg_phase + 1.0))
        angles["shoulder_flexion"][:, s] = 3 - speed * 25 * swing
        angles["elbow_flexion"][:, s] = 15 + speed * 12 * (1 - swing)
        angles["shoulder_abduction"][:, s] = 8 + 3 * speed
    lift = 0.008 * height * (1 - np.cos(2 * gait)) * speed
    return angles, x, lift


def _wave(rng, frames):
    """One or both arms raised, waving fast (a period of 6 to 11 frames)."""
    angles, x, lift = _idle(rng, frames)
    t = np.arange(frames, dtype=np.float64)
    both = rng.random() < 0.35
    first = int(rng.integers(2))
    for s in (0, 1):
        if s != first and not both:
            continue
        period = rng.uniform(6, 11)
        phase = rng.uniform(0, 2 * np.pi)
        raised = rng.uniform(115, 160)
        angles["shoulder_abduction"][:, s] = raised + 8 * np.sin(2 * np.pi * t / period + phase)
        angles["shoulder_flexion"][:, s] = rng.uniform(5, 40)
        angles["elbow_flexion"][:, s] = 50 + 35 * np.sin(2 * np.pi * t / period + phase + 1.2)
    return angles, x, lift


def _jump(rng, frames, height):
    """Jumping jacks (arms and legs open while airborne) or straight jumps with arm swings."""
    angles, x, _ = _idle(rng, frames)
    t = np.arange(frames, dtype=np.float64)
    period = rng.uniform(14, 22)
    phase = 2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)
    open_ = (1 - np.cos(phase)) / 2
    airborne = np.abs(np.sin(phase / 2))
    jacks = rng.random() < 0.6
    for s in (0, 1):
        if jacks:
            angles["shoulder_abduction"][:, s] = 15 + 140 * open_
            angles["shoulder_flexion"][:, s] = 5
            angles["hip_abduction"][:, s] = 3 + 22 * open_
        else:
            angles["shoulder_flexion"][:, s] = -20 + 170 * open_
            angles["shoulder_abduction"][:, s] = 10
        angles["elbow_flexion"][:, s] = 10 + 15 * (1 - open_)
        angles["knee_flexion"][:, s] = 10 + 35 * (1 - airborne) ** 2
        angles["hip_flexion"][:, s] = 5 + 20 * (1 - airborne) ** 2
    angles["torso_bend"] = 5 + 10 * (1 - airborne) ** 2
    lift = rng.uniform(0.05, 0.09) * height * airborne ** 1.5
    return angles, x, lift


def _turn(rng, frames):
    """Turning on the spot from one side to the other, arms swinging a little."""
    angles, x, lift = _idle(rng, frames)
    t = np.arange(frames, dtype=np.float64)
    angles["yaw"] = rng.uniform(55, 70) * np.sin(2 * np.pi * t / rng.uniform(30, 60) + rng.uniform(0, 6.3))
    for s in (0, 1):
        angles["shoulder_flexion"][:, s] += 15 * _wave_sum(rng, frames, (12, 25))
    return angles, x, lift


def _program(rng, action, frames, height, lane_half_width):
    if action == "walk":
        return _walk(rng, frames, height, lane_half_width)
    if action == "wave":
        return _wave(rng, frames)
    if action == "jump":
        return _jump(rng, frames, height)
    if action == "turn":
        return _turn(rng, frames)
    return _idle(rng, frames)


def clip_to_limits(angles: dict) -> dict:
    return {k: np.clip(v, *JOINT_LIMITS[k]) for k, v in angles.items()}


def simulate_person(rng: np.random.Generator, frames: int, height: float, lane_center: float,
                    lane_half_width: float, ground_y: float, actions: tuple | None = None) -> PersonMotion:
    """A person's motion over ``frames`` frames: one or two programs with a smooth cross-fade,
    feet on the ground line ``ground_y`` (except while jumping), walking within the lane."""
    if actions is None:
        first = ACTIONS[int(rng.choice(len(ACTIONS), p=[0.34, 0.22, 0.16, 0.16, 0.12]))]
        actions = (first,)
        if frames >= 24 and rng.random() < 0.45:
            actions = (first, ACTIONS[int(rng.integers(len(ACTIONS)))])
    programs = [_program(rng, a, frames, height, lane_half_width) for a in actions]
    weight = np.zeros(frames)
    if len(programs) == 2:
        switch = rng.uniform(0.3, 0.7) * frames
        weight = np.clip((np.arange(frames) - switch) / 8.0 + 0.5, 0.0, 1.0)
        weight = weight * weight * (3 - 2 * weight)   # smoothstep: no velocity jump at either end
    blend = lambda a, b: a if len(programs) == 1 else (  # noqa: E731
        a * (1 - weight).reshape((-1,) + (1,) * (a.ndim - 1))
        + b * weight.reshape((-1,) + (1,) * (b.ndim - 1)))
    angles = {k: blend(programs[0][0][k], programs[-1][0][k]) for k in programs[0][0]}
    angles = clip_to_limits(angles)
    x = lane_center + blend(programs[0][1], programs[-1][1])
    lift = blend(programs[0][2], programs[-1][2])
    joints, hands, toes = forward_kinematics(angles, height)
    # Stand on the ground: the lowest sole touches ground_y, minus the jump height.
    sole = np.maximum(joints[:, 15:17, 1].max(1), toes[:, :, 1].max(1)) + SEGMENTS["ankle_height"] * height
    offset = np.stack([x, ground_y - sole - lift, np.zeros(frames)], -1)[:, None, :]
    return PersonMotion(height=float(height), joints=joints + offset, hands=hands + offset,
                        toes=toes + offset, angles=angles, actions=tuple(actions), yaw=angles["yaw"])
