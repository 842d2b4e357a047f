"""One synthetic video: people layout, degradation schedule, and per-frame rendering with the
annotations PoseTrack would have (visibility, truncation, boxes) and noisy detector boxes.

Degradations are scheduled as short events (one or two frames) separated by at least two clean
frames, so that for a degraded key frame t the supporting frames t-2 .. t+2 are mostly clean: the
information the key frame lacks is in its neighbours, which is what a video pose model should use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jmipose.data import _synthetic_render as render
from jmipose.data._synthetic_motion import LABELLED_JOINTS, NUM_JOINTS, SEGMENTS, PersonMotion, simulate_person

HARD_THRESHOLD = 0.5          # a frame is hard when some degradation has at least this strength
# Truncation is recorded but never makes a frame hard: joints outside the frame are unlabelled.
HARD_TYPES = ("motion_blur", "defocus", "occluder", "overlap")
EVENT_KINDS = ("motion_blur", "defocus", "occluder", "occluder+motion_blur", "occluder+defocus")
EVENT_PROBS = (0.5, 0.22, 0.16, 0.06, 0.06)
# Joint groups an occluder is placed over (PoseTrack18 indices).
OCCLUDER_GROUPS = ((0, 1, 2), (7, 9), (8, 10), (5, 7, 9), (6, 8, 10), (13, 15), (14, 16), (13, 14),
                   (9, 10), (11, 13), (12, 14))
SENSOR_NOISE = 2.0
MIN_ANNOTATED_JOINTS = 3


@dataclass
class Person:
    track_id: int
    motion: PersonMotion
    look: render.Appearance
    ground_y: float


@dataclass
class Event:
    start: int
    length: int
    kind: str
    strength: float


@dataclass
class Scene:
    width: int
    height: int
    frames: int
    background: np.ndarray
    prop_texture: np.ndarray
    people: list                       # annotated people, drawn in depth order (far first)
    extras: list                       # unannotated people far away, inside ignore regions
    ignore_regions: list               # polygons [K, 2]
    events: list
    occluders: dict = field(default_factory=dict)   # frame -> list of (shape, polygon)
    blur: dict = field(default_factory=dict)        # frame -> list of degradation records
    seed: int = 0
    noise: np.ndarray | None = None                 # sensor noise field, see render.make_noise_field


@dataclass
class PersonFrame:
    track_id: int
    keypoints: np.ndarray      # [17, 3]: x, y, visibility; (0, 0, 0) when not labelled
    bbox: list                 # xywh, from the labelled keypoints enlarged 1.3x (PoseTrack's rule)
    bbox_head: list            # xywh, integers
    body_box: np.ndarray       # x0, y0, x1, y1 of the whole drawn body, clipped to the image


@dataclass
class Frame:
    index: int
    image: np.ndarray
    persons: list
    degradations: list
    hard: bool
    detections: list           # (xywh, score)


def _layout_people(rng, width, height, frames, count, horizon):
    people = []
    centres = (np.arange(count) + 0.5) / count * width + rng.uniform(-0.06, 0.06, count) * width
    rng.shuffle(centres)
    for track_id in range(count):
        body = height * (rng.uniform(0.5, 0.72) if count <= 2 else rng.uniform(0.42, 0.6))
        ground = height * (0.8 + 0.3 * (body / height - 0.42)) + rng.uniform(-0.02, 0.02) * height
        ground = float(np.clip(ground, max(horizon + 0.3 * body, 0.78 * height), 0.97 * height))
        lane = rng.uniform(0.25, 0.6) * width / count
        if rng.random() < 0.25:        # a long lane: crossing others, or leaving the frame for a while
            lane = rng.uniform(0.6, 1.2) * width / count
        lane = min(lane, 0.42 * width)
        motion = simulate_person(rng, frames, body, float(centres[track_id]), lane, ground)
        people.append(Person(track_id, motion, render.random_appearance(rng), ground))
    return sorted(people, key=lambda p: p.ground_y)


def _layout_extras(rng, width, height, frames, horizon):
    extras, regions = [], []
    if rng.random() >= 0.3:
        return extras, regions
    for _ in range(int(rng.integers(1, 3))):
        body = height * rng.uniform(0.2, 0.28)
        ground = min(horizon + rng.uniform(0.05, 0.12) * height + body * 0.1, 0.75 * height)
        x = rng.uniform(0.08, 0.92) * width
        action = ("idle", "wave", "turn")[int(rng.integers(3))]
        motion = simulate_person(rng, frames, body, x, 0.0, ground, actions=(action,))
        points = np.concatenate([motion.joints, motion.hands, motion.toes], 1)[..., :2].reshape(-1, 2)
        margin = 0.1 * body
        x0, y0 = points.min(0) - margin
        x1, y1 = points.max(0) + margin
        regions.append(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
        extras.append(Person(-1, motion, render.random_appearance(rng), ground))
    return extras, regions


def _schedule(rng, frames, hard_fraction):
    """Hard events of 1-2 frames, each followed by >= 2 clean frames; mild blur on some clean ones."""
    events, t = [], int(rng.integers(0, 3))
    # With the shortest gap (2) the hard share is (1 + p2) / (3 + p2) for a share p2 of two-frame
    # events: above about 0.4 more events last two frames instead of the gaps shrinking.
    two_frame = float(np.clip((3 * hard_fraction - 1) / max(1 - hard_fraction, 1e-6), 0.35, 1.0))
    mean_length = 1 + two_frame
    mean_gap = max(2.0, mean_length * (1 - hard_fraction) / max(hard_fraction, 1e-6))
    gap_p = 1.0 / (mean_gap - 1.0)       # gap = 2 + geometric(gap_p) - 1 has mean mean_gap
    clean = np.ones(frames, bool)
    while hard_fraction > 0 and t < frames:
        length = 2 if rng.random() < two_frame else 1
        kind = EVENT_KINDS[int(rng.choice(len(EVENT_KINDS), p=EVENT_PROBS))]
        events.append(Event(t, min(length, frames - t), kind, float(rng.uniform(0.55, 1.0))))
        clean[t:t + length] = False
        t += length + 1 + int(rng.geometric(min(gap_p, 1.0)))
    for t in np.flatnonzero(clean):
        if rng.random() < 0.12:
            kind = ("motion_blur", "defocus")[int(rng.integers(2))]
            events.append(Event(int(t), 1, kind, float(rng.uniform(0.05, 0.2))))
    return sorted(events, key=lambda e: e.start)


def _occluder_polygon(rng, points, body, width, height):
    """An object covering ``points`` with a margin: a blob (bag, sign, ball) or a bar (pole, arm
    of a passer-by) crossing the frame."""
    margin = rng.uniform(0.06, 0.1) * body
    centre = points.mean(0)
    if rng.random() < 0.6:
        spread = points - centre
        if len(points) > 1 and np.abs(spread).max() > 1e-6:
            _, _, axes = np.linalg.svd(spread, full_matrices=False)
        else:
            axes = np.eye(2)
        local = spread @ axes.T
        half = np.abs(local).max(0) + margin
        # Vertices on an ellipse through the corners of the half-extent box, pushed out so that
        # the polygon's edges (not just its vertices) clear the box.
        angles = np.linspace(0, 2 * np.pi, 12, endpoint=False) + rng.uniform(0, np.pi / 6)
        radius = np.sqrt(2.0) / np.cos(np.pi / 12) * rng.uniform(1.0, 1.15, 12)
        ring = np.stack([half[0] * np.cos(angles), half[1] * np.sin(angles)], -1) * radius[:, None]
        return "blob", centre + ring @ axes
    tilt = np.radians(rng.uniform(-25, 25))
    along = np.array([np.sin(tilt), np.cos(tilt)])
    across = np.array([along[1], -along[0]])
    half_width = np.abs((points - centre) @ across).max() + margin
    reach = float(np.hypot(width, height))
    corners = [centre + s1 * half_width * across + s2 * reach * along for s1, s2 in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    return "bar", np.array(corners)


def plan_scene(rng: np.random.Generator, width: int, height: int, frames: int, people=(1, 4),
               hard_fraction: float = 0.4) -> Scene:
    background_rng, people_rng, schedule_rng, noise_seed = rng.spawn(3) + [int(rng.integers(2**31))]
    background, horizon = render.make_background(background_rng, width, height)
    texture = render.make_prop_texture(background_rng, width, height)
    count = int(people_rng.integers(people[0], people[1] + 1))
    persons = _layout_people(people_rng, width, height, frames, count, horizon)
    extras, regions = _layout_extras(people_rng, width, height, frames, horizon)
    events = _schedule(schedule_rng, frames, hard_fraction)
    scene = Scene(width, height, frames, background, texture, persons, extras, regions, events, seed=noise_seed,
                  noise=render.make_noise_field(background_rng, width, height, SENSOR_NOISE))
    mean_body = float(np.mean([p.motion.height for p in persons]))
    for event in events:
        for t in range(event.start, event.start + event.length):
            records = scene.blur.setdefault(t, [])
            if "motion_blur" in event.kind:
                length = event.strength * 0.4 * mean_body
                kernel, offset = render.shake_kernel(schedule_rng, length)
                records.append({"type": "motion_blur", "strength": event.strength, "length": length,
                                "offset": offset, "kernel": kernel})
            if "defocus" in event.kind:
                radius = event.strength * 0.14 * mean_body
                records.append({"type": "defocus", "strength": event.strength, "radius": radius,
                                "kernel": render.defocus_kernel(radius)})
        if "occluder" in event.kind:
            target = persons[int(schedule_rng.integers(len(persons)))]
            group = list(OCCLUDER_GROUPS[int(schedule_rng.integers(len(OCCLUDER_GROUPS)))])
            shape_rng_state = int(schedule_rng.integers(2**31))
            for t in range(event.start, event.start + event.length):
                shape_rng = np.random.default_rng(shape_rng_state)   # same object in both frames
                points = target.motion.joints[t][group, :2]
                scene.occluders.setdefault(t, []).append(
                    _occluder_polygon(shape_rng, points, target.motion.height, width, height))
    return scene


def _head_box(joints, body):
    top, bottom = joints[2, :2], joints[1, :2]
    centre = (top + bottom) / 2
    half_h = max(np.linalg.norm(top - bottom) / 2, 1.0)
    half_w = 0.4 * SEGMENTS["head"] * body
    x0, y0 = int(np.floor(centre[0] - half_w)), int(np.floor(centre[1] - half_h))
    return [x0, y0, int(np.ceil(centre[0] + half_w)) - x0, int(np.ceil(centre[1] + half_h)) - y0]


def _body_box(motion, t, width, height):
    points = np.concatenate([motion.joints[t], motion.hands[t], motion.toes[t]])[:, :2]
    pad = 0.05 * motion.height
    lo = np.clip(points.min(0) - pad, 0, [width - 1, height - 1])
    hi = np.clip(points.max(0) + pad, 0, [width - 1, height - 1])
    return np.concatenate([lo, hi])


def _annotate(scene, t, labels, person, slot, slot_track):
    """Keypoints with PoseTrack visibility for one person at frame t, and the degradation records
    (occlusion by others, truncation) it causes. Returns (PersonFrame or None, records)."""
    joints = person.motion.joints[t]
    radius = max(1, int(round(0.012 * person.motion.height)))
    cause = render.joint_occlusion(labels, joints, slot, radius)
    inside = ((joints[:, 0] >= 0) & (joints[:, 0] <= scene.width - 1)
              & (joints[:, 1] >= 0) & (joints[:, 1] <= scene.height - 1))
    keypoints = np.zeros((NUM_JOINTS, 3))
    labelled = [j for j in LABELLED_JOINTS if inside[j]]
    keypoints[labelled, :2] = joints[labelled, :2]
    keypoints[labelled, 2] = (cause[labelled] == 0).astype(np.float64)
    hidden_by, outside = {}, [j for j in LABELLED_JOINTS if not inside[j]]
    for j in labelled:
        owner, index = render.label_owner(int(cause[j]))
        if owner != "background":
            hidden_by.setdefault((owner, index), []).append(j)
    records = []
    others = {slot_track[i]: js for (o, i), js in hidden_by.items() if o == "person" and i != slot and i in slot_track}
    hidden_by_others = sorted(j for js in others.values() for j in js)
    if hidden_by_others:
        records.append({"type": "overlap", "strength": min(1.0, len(hidden_by_others) / 8), "track_id": person.track_id,
                        "by": sorted(others), "hidden": hidden_by_others})
    if outside:
        records.append({"type": "truncation", "strength": min(1.0, len(outside) / 8),
                        "track_id": person.track_id, "outside": outside})
    occluded = {i: js for (o, i), js in hidden_by.items() if o == "occluder"}
    if len(labelled) < MIN_ANNOTATED_JOINTS or not keypoints[labelled, 2].any():
        return None, records, occluded
    pts = keypoints[labelled, :2]
    centre = (pts.min(0) + pts.max(0)) / 2
    extent = np.maximum(pts.max(0) - pts.min(0), 4.0) * 1.3
    bbox = [*(centre - extent / 2), *extent]
    frame = PersonFrame(person.track_id, keypoints, bbox, _head_box(joints, person.motion.height),
                        _body_box(person.motion, t, scene.width, scene.height))
    return frame, records, occluded


def _detections(rng, persons, extras_boxes, hard, shift, width, height):
    """Noisy detector output: jittered boxes (more on hard frames, and following the picture where
    camera shake moved it by ``shift``), a few misses, false alarms."""
    out = []
    jitter = 2.0 if hard else 1.0
    for box, occluded_fraction, is_extra in persons + [(b, 0.0, True) for b in extras_boxes]:
        if rng.random() < (0.09 if hard else 0.03):
            continue
        size = box[2:] - box[:2]
        centre = (box[:2] + box[2:]) / 2 + shift + rng.normal(0, 0.04 * jitter, 2) * size
        size = size * np.exp(rng.normal(0, 0.06 * jitter, 2))
        lo = np.clip(centre - size / 2, 0, [width - 1, height - 1])
        hi = np.clip(centre + size / 2, 0, [width - 1, height - 1])
        if np.any(hi - lo < 4):
            continue
        score = rng.uniform(0.3, 0.7) if is_extra else (
            0.95 - 0.3 * occluded_fraction - (0.12 if hard else 0.0) + rng.normal(0, 0.04))
        out.append(([*lo, *(hi - lo)], float(np.clip(score, 0.05, 0.999))))
    if rng.random() < 0.06:
        w = rng.uniform(0.08, 0.2) * width
        h = min(w * rng.uniform(1.6, 3.0), height - 1)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        out.append(([x, y, w, h], float(rng.uniform(0.05, 0.35))))
    return out


def render_frame(scene: Scene, t: int) -> Frame:
    """Draw frame t with its annotations; deterministic for the scene and t."""
    rng = np.random.default_rng([scene.seed, t])
    canvas = scene.background.copy()
    labels = np.zeros((scene.height, scene.width), np.uint8)
    slot_track = {slot: p.track_id for slot, p in enumerate(scene.people)}
    for k, extra in enumerate(scene.extras):
        render.draw_person(canvas, labels, extra.motion, t, len(scene.people) + k, extra.look)
    for slot, person in enumerate(scene.people):
        render.draw_person(canvas, labels, person.motion, t, slot, person.look)
    occluders = scene.occluders.get(t, [])
    for index, (_, polygon) in enumerate(occluders):
        render.draw_occluder(canvas, labels, polygon, scene.prop_texture, index)
    persons, records, hidden = [], [], {}
    for slot, person in enumerate(scene.people):
        frame_person, person_records, occluded = _annotate(scene, t, labels, person, slot, slot_track)
        records += person_records
        for index, joints in occluded.items():
            hidden.setdefault(index, []).extend([person.track_id, j] for j in joints)
        if frame_person is not None:
            persons.append(frame_person)
    for index, (shape, polygon) in enumerate(occluders):
        count = len(hidden.get(index, []))
        records.append({"type": "occluder", "strength": min(1.0, count / 4), "shape": shape,
                        "polygon": polygon, "hidden": hidden.get(index, [])})
    for record in scene.blur.get(t, []):
        canvas = render.apply_kernel(canvas, record["kernel"])
        records.append({k: v for k, v in record.items() if k != "kernel"})
    image = render.add_sensor_noise(canvas, rng, scene.noise)
    hard = any(r["strength"] >= HARD_THRESHOLD and r["type"] in HARD_TYPES for r in records)
    visible_fraction = {p.track_id: p.keypoints[list(LABELLED_JOINTS), 2].mean() for p in persons}
    boxes = [(p.body_box, 1.0 - visible_fraction[p.track_id], False) for p in persons]
    extra_boxes = [_body_box(e.motion, t, scene.width, scene.height) for e in scene.extras]
    shift = sum((np.asarray(r["offset"]) for r in records if r["type"] == "motion_blur"), np.zeros(2))
    detections = _detections(rng, boxes, extra_boxes, hard, shift, scene.width, scene.height)
    return Frame(t, image, persons, records, hard, detections)
