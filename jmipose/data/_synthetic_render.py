"""Drawing for the synthetic video benchmark: textured backgrounds, bodies, occluders, blur kernels,
and joint visibility read from a label map drawn alongside the image.

Bodies have one distinct colour per limb segment (warm colours on the left side, cool ones on the
right) with a dark outline and a band across each segment, so that a small network learns clean
frames quickly; what makes a frame hard is then only the degradation applied to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from jmipose.data._synthetic_motion import SEGMENTS, PersonMotion

# Body parts; a label map pixel is 1 + slot * PARTS_PER_PERSON + part, occluders are 200 + k.
TORSO, NECK, HEAD, L_UPPER_ARM, L_FOREARM, R_UPPER_ARM, R_FOREARM, L_THIGH, L_SHIN, R_THIGH, R_SHIN = range(11)
PARTS_PER_PERSON = 16
MAX_SLOTS = 12
OCCLUDER_LABEL = 200
# Parts a joint belongs to: a joint is occluded when other labels cover its neighbourhood.
JOINT_PARTS = (
    (HEAD,), (HEAD, NECK), (HEAD,), (HEAD,), (HEAD,),
    (TORSO, NECK, L_UPPER_ARM), (TORSO, NECK, R_UPPER_ARM), (L_UPPER_ARM, L_FOREARM),
    (R_UPPER_ARM, R_FOREARM), (L_FOREARM,), (R_FOREARM,), (TORSO, L_THIGH), (TORSO, R_THIGH),
    (L_THIGH, L_SHIN), (R_THIGH, R_SHIN), (L_SHIN,), (R_SHIN,),
)
# Limb base colours (BGR): left side warm, right side cool, upper and lower segments different.
LIMB_COLOURS = {
    L_UPPER_ARM: (0, 140, 255), L_FOREARM: (40, 225, 255), R_UPPER_ARM: (215, 95, 30),
    R_FOREARM: (235, 220, 60), L_THIGH: (50, 45, 215), L_SHIN: (205, 70, 215),
    R_THIGH: (60, 175, 45), R_SHIN: (160, 160, 10),
}
# Limb thickness as a fraction of the body height.
LIMB_WIDTH = {L_UPPER_ARM: 0.06, R_UPPER_ARM: 0.06, L_FOREARM: 0.05, R_FOREARM: 0.05,
              L_THIGH: 0.08, R_THIGH: 0.08, L_SHIN: 0.065, R_SHIN: 0.065}
SHIFT = 4                       # cv2 fixed-point bits: sub-pixel accurate drawing
ONE = 1 << SHIFT
SKIN_TONES = ((185, 200, 235), (150, 175, 215), (110, 140, 190), (75, 100, 145), (60, 80, 115))
HAIR_COLOURS = ((25, 25, 30), (30, 50, 85), (60, 120, 190), (150, 150, 155), (20, 30, 60))


@dataclass
class Appearance:
    limb: dict        # part -> BGR
    shirt: tuple
    shirt_band: tuple
    belt: tuple
    skin: tuple
    hair: tuple
    shoe: tuple
    outline: tuple


def _jitter_colour(rng, colour, amount=14, gain=(0.85, 1.1)):
    c = np.asarray(colour, dtype=np.float64) * rng.uniform(*gain) + rng.uniform(-amount, amount, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _hsv_colour(rng, sat, val):
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def random_appearance(rng: np.random.Generator) -> Appearance:
    return Appearance(
        limb={part: _jitter_colour(rng, colour) for part, colour in LIMB_COLOURS.items()},
        shirt=_hsv_colour(rng, (0.3, 0.9), (0.35, 0.95)),
        shirt_band=_hsv_colour(rng, (0.0, 0.3), (0.85, 1.0)),
        belt=_jitter_colour(rng, (30, 30, 30), 10),
        skin=_jitter_colour(rng, SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], 8),
        hair=_jitter_colour(rng, HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))], 8),
        shoe=_jitter_colour(rng, (40, 40, 45), 15),
        outline=(20, 20, 20),
    )


def make_background(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, float]:
    """A room or street: wall and floor with smooth and fine texture and muted clutter.
    Returns (image, horizon row)."""
    horizon = int(rng.uniform(0.35, 0.6) * height)
    wall = np.array(_hsv_colour(rng, (0.05, 0.35), (0.45, 0.85)), np.float32)
    floor = np.array(_hsv_colour(rng, (0.05, 0.35), (0.3, 0.7)), np.float32)
    rows = np.arange(height, dtype=np.float32)[:, None, None]
    image = np.where(rows < horizon, wall, floor) * (0.85 + 0.3 * rows / height)
    image = np.broadcast_to(image, (height, width, 3)).copy()
    # Smooth shading mostly in brightness, a little in colour: texture without limb-like hues.
    coarse = rng.normal(0, 1, (6, 8, 1)) * 16 + rng.normal(0, 1, (6, 8, 3)) * 5
    image += cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0, 4, (height, width, 1)).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 8))):            # windows, doors, posters, boxes
        x0, y0 = int(rng.uniform(-0.1, 0.95) * width), int(rng.uniform(0.0, 0.8) * height)
        w, h = int(rng.uniform(0.05, 0.25) * width), int(rng.uniform(0.05, 0.35) * height)
        colour = _hsv_colour(rng, (0.05, 0.4), (0.25, 0.9))
        cv2.rectangle(image, (x0, y0), (x0 + w, y0 + h), colour, -1)
        cv2.rectangle(image, (x0, y0), (x0 + w, y0 + h), _hsv_colour(rng, (0, 0.2), (0.1, 0.5)), 2)
    for _ in range(int(rng.integers(0, 4))):             # poles
        x = int(rng.uniform(0, width))
        cv2.line(image, (x, 0), (x, horizon + int(rng.uniform(0, 0.3) * height)),
                 _hsv_colour(rng, (0, 0.3), (0.2, 0.6)), int(rng.integers(3, 9)))
    for _ in range(int(rng.integers(0, 3))):             # small saturated things: not every colour is a limb
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        cv2.circle(image, centre, int(rng.integers(3, 9)), _hsv_colour(rng, (0.6, 1.0), (0.6, 1.0)), -1)
    cv2.line(image, (0, horizon), (width, horizon), _hsv_colour(rng, (0, 0.2), (0.15, 0.4)), 2)
    return image, float(horizon)


def make_prop_texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Texture of the objects that pass in front of people: two muted colours in stripes."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(7, 16)
    stripes = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0)[..., None]
    first = np.array(_hsv_colour(rng, (0.0, 0.35), (0.2, 0.5)), np.float32)
    second = np.array(_hsv_colour(rng, (0.0, 0.35), (0.45, 0.8)), np.float32)
    texture = np.where(stripes, first, second) + rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    return np.clip(texture, 0, 255).astype(np.uint8)


def _fixed(points) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * ONE).astype(np.int32)


def _limb(canvas, labels, label, p0, p1, width, colour, outline, band):
    a, b = _fixed(p0[:2]), _fixed(p1[:2])
    w = max(2, int(round(width)))
    cv2.line(canvas, tuple(a), tuple(b), outline, w + 2, cv2.LINE_AA, SHIFT)
    cv2.line(canvas, tuple(a), tuple(b), colour, w, cv2.LINE_AA, SHIFT)
    if band is not None:   # a band across the segment marks its middle and shows its motion
        m0, m1 = _fixed(p0[:2] + 0.45 * (p1[:2] - p0[:2])), _fixed(p0[:2] + 0.6 * (p1[:2] - p0[:2]))
        cv2.line(canvas, tuple(m0), tuple(m1), band, w, cv2.LINE_AA, SHIFT)
    cv2.line(labels, tuple(a), tuple(b), label, w, cv2.LINE_8, SHIFT)


def _shade(colour, factor):
    return tuple(int(min(255, c * factor)) for c in colour)


def _draw_torso(canvas, labels, label, j, height, look: Appearance, shade):
    across = j[5, :2] - j[6, :2]
    across = across / max(np.linalg.norm(across), 1e-6)
    up = np.array([0.0, -1.0])
    # The shoulder joints sit at the torso's outer corners and the waist is narrower, so hanging
    # arms stay beside the torso instead of inside its silhouette.
    corners = np.array([
        j[5, :2] - 0.01 * height * across + 0.015 * height * up,
        j[6, :2] + 0.01 * height * across + 0.015 * height * up,
        j[12, :2] - 0.015 * height * across, j[11, :2] + 0.015 * height * across,
    ])
    poly = _fixed(corners)[None]
    cv2.fillPoly(canvas, poly, _shade(look.shirt, shade), cv2.LINE_AA, SHIFT)
    for start, stop, colour in ((0.22, 0.38, look.shirt_band), (0.86, 1.0, look.belt)):
        top = corners[:2] + start * (corners[[3, 2]] - corners[:2])
        bottom = corners[:2] + stop * (corners[[3, 2]] - corners[:2])
        band = _fixed(np.array([top[0], top[1], bottom[1], bottom[0]]))[None]
        cv2.fillPoly(canvas, band, _shade(colour, shade), cv2.LINE_AA, SHIFT)
    cv2.polylines(canvas, poly, True, look.outline, 2, cv2.LINE_AA, SHIFT)
    cv2.fillPoly(labels, poly, label, cv2.LINE_8, SHIFT)


def _draw_head(canvas, labels, label, j, height, yaw_deg, look: Appearance):
    top, bottom = j[2, :2], j[1, :2]
    axis = top - bottom
    length = max(np.linalg.norm(axis), 1e-3)
    centre = (top + bottom) / 2
    angle = np.degrees(np.arctan2(axis[0], -axis[1]))       # tilt from vertical
    semi_major, semi_minor = length / 2, 0.4 * SEGMENTS["head"] * height
    c, ax = tuple(_fixed(centre)), (int(semi_minor * ONE), int(semi_major * ONE))
    cv2.ellipse(canvas, c, (ax[0] + ONE, ax[1] + ONE), angle, 0, 360, look.outline, -1, cv2.LINE_AA, SHIFT)
    cv2.ellipse(canvas, c, ax, angle, 0, 360, look.hair, -1, cv2.LINE_AA, SHIFT)
    # The face sits low and turns with the head: its offset shows where the person looks.
    down = -axis / length
    right = np.array([-down[1], down[0]])
    face_centre = centre + 0.18 * semi_major * down + 0.35 * semi_minor * np.sin(np.radians(yaw_deg)) * right
    face_axes = (int(0.78 * semi_minor * ONE), int(0.75 * semi_major * ONE))
    cv2.ellipse(canvas, tuple(_fixed(face_centre)), face_axes, angle, 0, 360, look.skin, -1, cv2.LINE_AA, SHIFT)
    nose = j[0, :2]
    eye_gap = 0.16 * SEGMENTS["head"] * height * np.cos(np.radians(yaw_deg))
    for sign in (-1, 1):
        eye = nose - 0.14 * length * down + sign * eye_gap * right
        cv2.circle(canvas, tuple(_fixed(eye)), int(0.012 * height * ONE) + ONE // 2, (25, 25, 25), -1,
                   cv2.LINE_AA, SHIFT)
    cv2.circle(canvas, tuple(_fixed(nose)), int(0.016 * height * ONE) + ONE, (40, 40, 175), -1, cv2.LINE_AA, SHIFT)
    cv2.ellipse(labels, c, (ax[0] + ONE, ax[1] + ONE), angle, 0, 360, label, -1, cv2.LINE_8, SHIFT)


def draw_person(canvas: np.ndarray, labels: np.ndarray, motion: PersonMotion, t: int, slot: int,
                look: Appearance) -> None:
    """Draw one person at frame ``t`` into ``canvas`` (BGR) and ``labels`` (uint8 label map),
    body parts in depth order (far ones first)."""
    j, height = motion.joints[t], motion.height
    base = 1 + slot * PARTS_PER_PERSON
    hands, toes = motion.hands[t], motion.toes[t]
    scale = 0.12 * height

    def shade(z):   # far parts a little darker: a depth cue, as in real lighting
        return 1.0 + 0.2 * float(np.clip(z / scale, -1.0, 0.4))

    def arm(side):
        upper, fore = (L_UPPER_ARM, L_FOREARM) if side == 0 else (R_UPPER_ARM, R_FOREARM)
        s, e, w = j[5 + side], j[7 + side], j[9 + side]
        f = shade((s[2] + w[2]) / 2)
        for part, p0, p1 in ((upper, s, e), (fore, e, w)):
            colour = _shade(look.limb[part], f)
            _limb(canvas, labels, base + part, p0, p1, LIMB_WIDTH[part] * height, colour, look.outline,
                  _shade(colour, 0.6))
        hand = hands[side]
        centre = _fixed((w[:2] + hand[:2]) / 2)
        radius = int(0.03 * height * ONE)
        cv2.circle(canvas, tuple(centre), radius + ONE, look.outline, -1, cv2.LINE_AA, SHIFT)
        cv2.circle(canvas, tuple(centre), radius, _shade(look.skin, f), -1, cv2.LINE_AA, SHIFT)
        cv2.circle(labels, tuple(centre), radius + ONE, base + fore, -1, cv2.LINE_8, SHIFT)

    def leg(side):
        thigh, shin = (L_THIGH, L_SHIN) if side == 0 else (R_THIGH, R_SHIN)
        h, k, a = j[11 + side], j[13 + side], j[15 + side]
        f = shade((h[2] + a[2]) / 2)
        _limb(canvas, labels, base + shin, toes[side], a, 0.045 * height, _shade(look.shoe, f), look.outline, None)
        for part, p0, p1 in ((thigh, h, k), (shin, k, a)):
            colour = _shade(look.limb[part], f)
            _limb(canvas, labels, base + part, p0, p1, LIMB_WIDTH[part] * height, colour, look.outline,
                  _shade(colour, 0.6))

    def torso():
        _draw_torso(canvas, labels, base + TORSO, j, height, look, shade(float(np.mean(j[[5, 6, 11, 12], 2]))))

    def head():
        neck_base = (j[5] + j[6]) / 2
        _limb(canvas, labels, base + NECK, j[1], neck_base, 0.055 * height, look.skin, look.outline, None)
        _draw_head(canvas, labels, base + HEAD, j, height, float(motion.yaw[t]), look)

    torso_z = float(np.mean(j[[5, 6, 11, 12], 2]))
    # Legs sit a little behind the shirt, arms a little in front: ties go the natural way.
    units = [
        (float(np.mean(j[[11, 13, 15], 2])) - 0.02 * height, lambda: leg(0)),
        (float(np.mean(j[[12, 14, 16], 2])) - 0.02 * height, lambda: leg(1)),
        (torso_z, torso),
        (torso_z + 0.01 * height, head),
        (float(np.mean(j[[5, 7, 9], 2])) + 0.015 * height, lambda: arm(0)),
        (float(np.mean(j[[6, 8, 10], 2])) + 0.015 * height, lambda: arm(1)),
    ]
    for _, draw in sorted(units, key=lambda unit: unit[0]):
        draw()


def draw_occluder(canvas: np.ndarray, labels: np.ndarray, polygon: np.ndarray, texture: np.ndarray,
                  index: int) -> None:
    mask = np.zeros(labels.shape, np.uint8)
    poly = _fixed(polygon)[None]
    cv2.fillPoly(mask, poly, 255, cv2.LINE_8, SHIFT)
    inside = mask > 0
    canvas[inside] = texture[inside]
    cv2.polylines(canvas, poly, True, (15, 15, 15), 2, cv2.LINE_AA, SHIFT)
    labels[inside] = OCCLUDER_LABEL + index


def joint_occlusion(labels: np.ndarray, joints: np.ndarray, slot: int, radius: int) -> np.ndarray:
    """Per joint: the label covering most of its neighbourhood if foreign labels (other people,
    occluders, this person's parts the joint does not belong to) cover at least half of it, else 0.
    Joints outside the image give 0 (truncation is handled by the caller)."""
    height, width = labels.shape
    base = 1 + slot * PARTS_PER_PERSON
    cause = np.zeros(len(joints), np.int32)
    for index, (x, y) in enumerate(joints[:, :2]):
        xi, yi = int(round(x)), int(round(y))
        if not (0 <= xi < width and 0 <= yi < height):
            continue
        window = labels[max(0, yi - radius):yi + radius + 1, max(0, xi - radius):xi + radius + 1].ravel()
        not_foreign = np.zeros(256, bool)
        not_foreign[0] = True
        not_foreign[[base + part for part in JOINT_PARTS[index]]] = True
        foreign = window[~not_foreign[window]]
        if foreign.size * 2 >= window.size:
            values, counts = np.unique(foreign, return_counts=True)
            cause[index] = int(values[np.argmax(counts)])
    return cause


def label_owner(label: int) -> tuple[str, int]:
    """('person', slot) / ('occluder', index) / ('background', 0) for a label map value."""
    if label == 0:
        return "background", 0
    if label >= OCCLUDER_LABEL:
        return "occluder", label - OCCLUDER_LABEL
    return "person", (label - 1) // PARTS_PER_PERSON


def defocus_kernel(radius: float) -> np.ndarray:
    """A uniform disk (the point spread function of an out-of-focus lens), anti-aliased."""
    size = int(np.ceil(radius)) + 1
    yy, xx = np.mgrid[-size:size + 1, -size:size + 1]
    kernel = np.clip(radius + 0.5 - np.hypot(xx, yy), 0.0, 1.0).astype(np.float32)
    return kernel / kernel.sum()


def shake_kernel(rng: np.random.Generator, length: float) -> tuple[np.ndarray, np.ndarray]:
    """Camera shake during the exposure: a curved path of ``length`` pixels travelled at a varying
    speed. The camera is at its nominal place when the shutter opens (the instant the labels refer
    to, as in the neighbouring frames) and is then bumped away, so the joints are at one end of the
    blur streak; which end cannot be told from the frame alone (the streak looks the same both
    ways), only from the neighbouring frames. Returns (kernel for cv2.filter2D, mean displacement
    of the image, i.e. where the smeared picture sits relative to the labels)."""
    samples = 128
    tau = (np.arange(samples) + 0.5) / samples
    log_speed = sum(rng.uniform(0.5, 1.2) * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * tau + rng.uniform(0, 2 * np.pi))
                    for _ in range(3))
    speed = np.exp(log_speed)
    heading = rng.uniform(0, 2 * np.pi) + rng.uniform(-2.0, 2.0) * (tau - 0.5)
    steps = speed[:, None] * np.stack([np.cos(heading), np.sin(heading)], -1)
    path = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, 0)])
    path *= length / max(np.sum(np.linalg.norm(np.diff(path, axis=0), axis=-1)), 1e-9)
    # filter2D correlates: out(x) = sum_k K(k) in(x + k); the frame is the mean of the scene
    # shifted by path(tau), i.e. in(x - path), so the weights sit at k = -path.
    reach = int(np.ceil(np.abs(path).max())) + 2
    kernel = np.zeros((2 * reach + 1, 2 * reach + 1), np.float64)
    for kx, ky in -path:
        x0, y0 = int(np.floor(kx)), int(np.floor(ky))
        fx, fy = kx - x0, ky - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                kernel[reach + y0 + dy, reach + x0 + dx] += wy * wx
    kernel /= kernel.sum()
    return kernel.astype(np.float32), path.mean(0)


def apply_kernel(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def make_noise_field(rng: np.random.Generator, width: int, height: int, sigma: float) -> np.ndarray:
    """Gaussian sensor noise for a whole video, drawn once: each frame reads it at a random offset
    (drawing fresh normals per frame costs more than rendering the frame)."""
    margin = 32
    field = rng.standard_normal((height + margin, width + margin, 3), dtype=np.float32) * sigma
    return np.rint(field).astype(np.int16)


def add_sensor_noise(image: np.ndarray, rng: np.random.Generator, field: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    dy = int(rng.integers(field.shape[0] - height + 1))
    dx = int(rng.integers(field.shape[1] - width + 1))
    noisy = image.astype(np.int16) + field[dy:dy + height, dx:dx + width]
    return np.clip(noisy, 0, 255).astype(np.uint8)
