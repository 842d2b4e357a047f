"""Where the people are in each frame of a video, for top-down pose estimation.

Three sources, all giving ``(x, y, w, h)`` boxes in image pixels and stable track ids:

- ``DetectionBoxes``: the boxes of a COCO-style detections JSON, read by
  :func:`jmipose.formats.detections.load_detections` (frame numbers, PoseTrack image ids matched to
  the video's sequence, scores).  Track ids come from a greedy IoU match of each frame's boxes with
  the previous frame's.
- ``TrackedBoxes``: boxes given for the first frame and/or found by a person detector every N frames
  (``HOGPeopleDetector``: OpenCV's built-in HOG people detector), linked to tracks by overlap;
  afterwards each person's box is the extent of the previous frame's confident keypoints enlarged
  1.3x (PoseTrack's rule for the ground truth boxes), the standard top-down tracking loop.  A person
  whose pose is not confident (too few joints above ``joint_threshold``, or a person score below
  ``track_threshold``) is lost but kept, from its last confident box (held or moved on with its
  velocity), for up to ``max_lost`` frames; ``report()`` says why each track ended.
- ``WholeFrameBoxes``: the whole frame as one person box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the detections format lives in jmipose.formats; these names stay importable from here
from jmipose.formats.detections import Detections as Detections
from jmipose.formats.detections import check_threshold as check_threshold
from jmipose.formats.detections import load_detections as load_detections
from jmipose.formats.posetrack import posetrack_sequence as posetrack_sequence

KEYPOINT_BOX_ENLARGE = 1.3                  # PoseTrack's GT boxes: keypoint extent x 1.3


@dataclass
class PersonBox:
    """One person to estimate in one frame."""

    track_id: int
    box: np.ndarray        # [4] float64 x, y, w, h in image pixels
    score: float           # detector score (1 for given and tracked boxes)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xywh boxes a [N, 4] and b [M, 4] -> [N, M]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    width = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def check_box(box, frame_size: tuple[int, int], name: str = "box") -> np.ndarray:
    """A finite xywh box with positive size that overlaps the ``(width, height)`` frame."""
    try:
        values = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 4 numbers x, y, w, h, got {box!r}") from None
    if values.shape != (4,) or not np.isfinite(values).all():
        raise ValueError(f"{name} must be 4 finite numbers x, y, w, h, got {box!r}")
    x, y, w, h = values
    if w <= 0 or h <= 0:
        raise ValueError(f"{name} must have a positive width and height, got w={w:g}, h={h:g}")
    width, height = frame_size
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise ValueError(f"{name} ({x:g}, {y:g}, {w:g}, {h:g}) lies outside the {width}x{height} frame")
    return values


def parse_box(text: str) -> np.ndarray:
    """``"x,y,w,h"`` (the CLI's ``--box``) -> [4] float64."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"--box must be x,y,w,h (four numbers), got {text!r}") from None
    if len(values) != 4:
        raise ValueError(f"--box must be x,y,w,h (four numbers), got {text!r}")
    return np.asarray(values, dtype=np.float64)


def keypoint_box(keypoints: np.ndarray, scores: np.ndarray, joint_threshold: float,
                 enlarge: float = KEYPOINT_BOX_ENLARGE, min_joints: int = 3) -> np.ndarray | None:
    """The xywh box of the joints scored above ``joint_threshold``, enlarged about its centre;
    None when fewer than ``min_joints`` are."""
    confident = np.asarray(scores) > joint_threshold
    if int(confident.sum()) < min_joints:
        return None
    points = np.asarray(keypoints, dtype=np.float64)[confident]
    low, high = points.min(0), points.max(0)
    centre = (low + high) / 2
    extent = np.maximum(high - low, 4.0) * enlarge
    return np.concatenate([centre - extent / 2, extent])


class WholeFrameBoxes:
    """The whole frame as one person (track id 0) in every frame."""

    def __init__(self, frame_size: tuple[int, int]):
        width, height = frame_size
        self.person = PersonBox(0, np.array([0.0, 0.0, float(width), float(height)]), 1.0)

    def people(self, index: int, image=None, detections=None) -> list[PersonBox]:
        return [PersonBox(self.person.track_id, self.person.box.copy(), 1.0)]

    def update(self, index: int, results) -> None:
        pass

    needs_results = False
    detected = None

    def report(self):
        return None


class DetectionBoxes:
    """Boxes of a detections file; ids by greedy IoU matching with the previous frame's people."""

    needs_results = False

    def __init__(self, detections: dict[int, list[tuple[np.ndarray, float]]], frame_size: tuple[int, int],
                 match_iou: float = 0.3, max_missed: int = 5):
        self.detections = detections
        self.frame_size = frame_size
        self.match_iou = float(match_iou)
        self.max_missed = int(max_missed)
        # track id -> (last box, last frame seen): a person the detector misses for up to max_missed
        # frames keeps its id when found again.
        self._tracks: dict[int, tuple[np.ndarray, int]] = {}
        self._next_id = 0

    detected = None

    def report(self):
        return None

    def people(self, index: int, image=None, detections=None) -> list[PersonBox]:
        width, height = self.frame_size
        current = []
        for j, (box, score) in enumerate(self.detections.get(index, [])):
            x, y, w, h = box
            if x >= width or y >= height or x + w <= 0 or y + h <= 0:
                raise ValueError(f"detections: box {j} of frame {index} ({x:g}, {y:g}, {w:g}, {h:g}) lies "
                                 f"outside the {width}x{height} frame (wrong video, or frame numbering?)")
            current.append(PersonBox(-1, box.copy(), score))
        self._tracks = {t: v for t, v in self._tracks.items() if index - v[1] <= self.max_missed}
        ids = list(self._tracks)
        if current and ids:
            iou = box_iou(np.stack([p.box for p in current]), np.stack([self._tracks[t][0] for t in ids]))
            # greedy: best overlaps first; among equal overlaps the most recently seen track
            recency = np.array([self._tracks[t][1] for t in ids], dtype=np.float64)
            order = np.lexsort((-np.broadcast_to(recency, iou.shape).ravel(), -iou.ravel()))
            taken: set[int] = set()
            for flat in order:
                i, j = np.unravel_index(flat, iou.shape)
                if iou[i, j] < self.match_iou:
                    break
                if current[i].track_id < 0 and ids[j] not in taken:
                    current[i].track_id = ids[j]
                    taken.add(ids[j])
        for person in current:
            if person.track_id < 0:
                person.track_id = self._next_id
                self._next_id += 1
            self._tracks[person.track_id] = (person.box, index)
        return current

    def update(self, index: int, results) -> None:
        pass


LOST_BOX_RULES = ("velocity", "hold")
CONTAINED = 0.6            # a detection matches a track whose box lies this much inside it (or vice versa)
LOST_VELOCITY_DECAY = 0.8   # a lost track's box moves by its velocity x 0.8, 0.8**2, ...: at most 4x in total


@dataclass
class Track:
    """One tracked person: where its box is, and its history (for the summary)."""

    track_id: int
    box: np.ndarray                 # the box the next frame is cropped from
    confident_box: np.ndarray       # the box of its last confident pose (or its given/detected box)
    first_frame: int
    velocity: np.ndarray            # [2] recent motion of the box centre, pixels per frame
    lost: int = 0                   # consecutive frames without a confident pose or a detection
    lost_frames: int = 0            # frames whose pose was not confident (written with their low scores)
    longest_loss: int = 0
    frames: int = 0                 # frames estimated
    last_frame: int = -1
    source: str = "box"             # "box" (given) or "detector"
    ended: str | None = None        # why the track ended (None: still running)

    def summary(self) -> dict:
        return {"track_id": self.track_id, "source": self.source, "first_frame": self.first_frame,
                "last_frame": self.last_frame, "frames": self.frames, "lost_frames": self.lost_frames,
                "longest_loss": self.longest_loss, "ended": self.ended or "video ended"}


def _shift(box: np.ndarray, offset: np.ndarray) -> np.ndarray:
    moved = np.array(box, dtype=np.float64, copy=True)
    moved[:2] += offset
    return moved


def _centre(box: np.ndarray) -> np.ndarray:
    return np.asarray(box[:2], dtype=np.float64) + np.asarray(box[2:], dtype=np.float64) / 2


def _outside(box: np.ndarray, frame_size: tuple[int, int]) -> bool:
    x, y, w, h = box
    width, height = frame_size
    return bool(x >= width or y >= height or x + w <= 0 or y + h <= 0)


class TrackedBoxes:
    """People followed from frame to frame by their own poses: each person's next box is the extent of
    its confident keypoints enlarged 1.3x (PoseTrack's rule for ground-truth boxes), the standard
    top-down tracking loop.  Tracks start from boxes given on the first frame and/or from a person
    detector run every ``detect_every`` frames, whose boxes are linked to the tracks by IoU.

    A track whose pose is not confident (fewer than ``min_joints`` joints above ``joint_threshold``,
    or a person score below ``track_threshold``) is *lost* but kept: its pose is still estimated and
    written with its real, low scores, from its last confident box (``lost_box="hold"``) or that box
    moved on with the track's recent velocity, slowing down (``"velocity"``, the default).  A
    detection that overlaps a lost track finds it again.  After ``max_lost`` consecutive lost frames
    the track ends; ``report()`` says for each track how many frames it was lost and why it ended.
    """

    needs_results = True

    def __init__(self, boxes, frame_size: tuple[int, int], joint_threshold: float = 0.2,
                 track_threshold: float = 0.3, min_joints: int = 3, *, max_lost: int = 25,
                 lost_box: str = "velocity", detector=None, detect_every: int = 5, match_iou: float = 0.3):
        boxes = [] if boxes is None else list(boxes)
        if len(boxes) == 0 and detector is None:
            raise ValueError("boxes: give at least one x,y,w,h box for the first frame")
        if isinstance(max_lost, bool) or not isinstance(max_lost, (int, np.integer)) or max_lost < 0:
            raise ValueError(f"max_lost must be an int >= 0 (frames a track may stay lost), got {max_lost!r}")
        if lost_box not in LOST_BOX_RULES:
            raise ValueError(f"lost_box must be one of {LOST_BOX_RULES}, got {lost_box!r}")
        if isinstance(detect_every, bool) or not isinstance(detect_every, (int, np.integer)) or detect_every < 1:
            raise ValueError(f"detect_every must be an int >= 1 (frames between detector runs), got {detect_every!r}")
        self.frame_size = frame_size
        self.joint_threshold = float(joint_threshold)
        self.track_threshold = float(track_threshold)
        self.min_joints = int(min_joints)
        self.max_lost = int(max_lost)
        self.lost_box = lost_box
        self.detector = detector
        self.detect_every = int(detect_every)
        self.match_iou = float(match_iou)
        self.tracks: dict[int, Track] = {}
        self.finished: list[Track] = []
        for i, b in enumerate(boxes):
            box = check_box(b, frame_size, f"box {i}")
            self.tracks[i] = Track(i, box, box.copy(), 0, np.zeros(2))
        self._next_id = len(boxes)
        self.detected: dict[int, np.ndarray] = {}     # frame -> [D, 5] detections (x, y, w, h, score)
        self.detector_seconds = 0.0
        self.detector_runs = 0

    @property
    def lost(self) -> dict[int, int]:
        """Track id -> the frame from which it was lost for good (ended tracks)."""
        return {t.track_id: t.last_frame + 1 for t in self.finished}

    # ----- detections -----

    def _detect(self, index: int, image, detections) -> np.ndarray | None:
        if detections is None:
            if self.detector is None or index % self.detect_every or image is None:
                return None
            import time

            started = time.perf_counter()
            found = self.detector(image)
            self.detector_seconds += time.perf_counter() - started
            self.detector_runs += 1
            detections = np.array([[*box, score] for box, score in found], dtype=np.float64).reshape(-1, 5)
        detections = np.asarray(detections, dtype=np.float64).reshape(-1, 5)
        self.detected[index] = detections
        return detections

    def _link(self, index: int, detections: np.ndarray) -> None:
        """Greedy IoU matching of detections to tracks; a matched lost track takes the detection's box,
        an unmatched detection starts a track."""
        ids = list(self.tracks)
        taken_tracks, taken_detections = set(), set()
        if len(detections) and ids:
            tracked = np.stack([self.tracks[t].box for t in ids])
            iou = box_iou(detections[:, :4], tracked)
            # a detector's box is usually looser than the keypoints' box: a track box lying mostly
            # inside a detection (or the reverse) is the same person even at a low IoU
            smaller = np.minimum(detections[:, 2:3] * detections[:, 3:4], (tracked[:, 2] * tracked[:, 3])[None])
            union = (detections[:, 2:3] * detections[:, 3:4]) + (tracked[:, 2] * tracked[:, 3])[None]
            inside = iou * union / (1 + iou) / np.maximum(smaller, 1e-9)   # intersection / smaller area
            match = (iou >= self.match_iou) | (inside >= CONTAINED)
            for flat in np.argsort(-np.where(match, iou + 1, iou), axis=None, kind="stable"):
                i, j = np.unravel_index(flat, iou.shape)
                if not match[i, j]:
                    break
                if i in taken_detections or ids[j] in taken_tracks:
                    continue
                taken_detections.add(i)
                taken_tracks.add(ids[j])
                track = self.tracks[ids[j]]
                if track.lost:   # found again: restart from the detector's box
                    track.box = detections[i, :4].copy()
                    track.confident_box = track.box.copy()
                    track.velocity = np.zeros(2)
                    track.lost = 0
        for i, row in enumerate(detections):
            if i in taken_detections:
                continue
            box = row[:4].copy()
            if _outside(box, self.frame_size) or box[2] <= 0 or box[3] <= 0:
                continue
            self.tracks[self._next_id] = Track(self._next_id, box, box.copy(), index, np.zeros(2),
                                               source="detector")
            self._next_id += 1

    # ----- the box source protocol -----

    def people(self, index: int, image=None, detections=None) -> list[PersonBox]:
        """This frame's people: the tracks' boxes, after linking the detector's boxes when it runs on
        this frame (``detections``: [D, 5] rows to use instead of running it, e.g. when resuming)."""
        found = self._detect(index, image, detections)
        if found is not None:
            self._link(index, found)
        for track in self.tracks.values():
            if track.frames == 0:
                track.first_frame = index
        return [PersonBox(t.track_id, t.box.copy(), 1.0) for t in self.tracks.values()]

    def update(self, index: int, results) -> None:
        """Next frame's boxes from this frame's poses (``results``: a FrameResult)."""
        estimated = set()
        for track_id, keypoints, scores, score in zip(results.track_ids, results.keypoints,
                                                      results.scores, results.person_scores):
            track = self.tracks.get(int(track_id))
            if track is None:
                continue
            estimated.add(track.track_id)
            track.frames += 1
            track.last_frame = index
            box = keypoint_box(keypoints, scores, self.joint_threshold, min_joints=self.min_joints)
            if box is not None and score >= self.track_threshold:
                if track.lost == 0 and track.frames > 1:
                    step = _centre(box) - _centre(track.confident_box)
                    track.velocity = 0.5 * track.velocity + 0.5 * step
                else:
                    track.velocity = np.zeros(2)
                track.box, track.confident_box, track.lost = box, box.copy(), 0
                continue
            track.lost += 1
            track.lost_frames += 1
            track.longest_loss = max(track.longest_loss, track.lost)
            if track.lost > self.max_lost:
                self._end(track, f"lost for {track.lost} frames (more than max_lost={self.max_lost}): "
                                 f"pose not confident")
                continue
            if self.lost_box == "velocity":
                factor = sum(LOST_VELOCITY_DECAY ** k for k in range(1, track.lost + 1))
                track.box = _shift(track.confident_box, track.velocity * factor)
            else:
                track.box = track.confident_box.copy()
            if _outside(track.box, self.frame_size):
                self._end(track, "left the frame while lost")
        for track in list(self.tracks.values()):
            if track.track_id not in estimated and track.ended is None:
                # people() gave it, the result does not hold it: OKS-NMS removed its duplicate pose
                self._end(track, "its pose duplicated another track's (removed by OKS-NMS)")

    def _end(self, track: Track, reason: str) -> None:
        track.ended = reason
        self.finished.append(track)
        del self.tracks[track.track_id]

    def report(self) -> list[dict]:
        """Every track so far (ended ones first, then running ones), as ``Track.summary`` dicts."""
        return [t.summary() for t in sorted(self.finished + list(self.tracks.values()),
                                            key=lambda t: t.track_id)]


class HOGPeopleDetector:
    """OpenCV's built-in HOG + linear SVM people detector (Dalal and Triggs, CVPR 2005; the model
    ships inside OpenCV, nothing is downloaded).

    The frame is scaled so that its longer side is at most ``max_side`` pixels (HOG's window is 64x128
    pixels, so people shorter than about 100 pixels at that scale are missed), searched at scales
    1.05 apart, and overlapping boxes are merged by non-maximum suppression.  Returns
    ``[(box xywh in frame pixels, SVM score)]`` with scores >= ``score_threshold``.

    Limits: upright, mostly unoccluded people seen from the front, back or side; sitting, lying,
    crouching or heavily overlapping people are often missed, and the boxes are loose (HOG's window
    has a margin around the person).  Its cost grows with the frame area (see ``max_side``).
    """

    def __init__(self, max_side: int = 640, score_threshold: float = 0.3, nms_iou: float = 0.4,
                 scale: float = 1.05, stride: int = 8):
        import cv2

        if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 128:
            raise ValueError(f"max_side must be an int >= 128 (HOG's window is 128 pixels tall), got {max_side!r}")
        self.max_side = max_side
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.scale = float(scale)
        self.stride = int(stride)
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def __call__(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        import cv2

        height, width = image.shape[:2]
        factor = min(1.0, self.max_side / max(height, width))
        small = image if factor == 1.0 else cv2.resize(image, (round(width * factor), round(height * factor)),
                                                       interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        rects, weights = self._hog.detectMultiScale(gray, winStride=(self.stride, self.stride),
                                                    padding=(8, 8), scale=self.scale)
        if len(rects) == 0:
            return []
        boxes = np.asarray(rects, dtype=np.float64).reshape(-1, 4) / factor
        scores = np.asarray(weights, dtype=np.float64).reshape(-1)
        keep = scores >= self.score_threshold
        boxes, scores = boxes[keep], scores[keep]
        chosen: list[int] = []
        for i in np.argsort(-scores, kind="stable"):
            if all(box_iou(boxes[i], boxes[j])[0, 0] < self.nms_iou for j in chosen):
                chosen.append(int(i))
        return [(boxes[i], float(scores[i])) for i in chosen]


def make_detector(detector):
    """A detector callable from a name (``"hog"``) or a callable ``image -> [(box xywh, score)]``."""
    if detector is None or callable(detector):
        return detector
    if detector == "hog":
        return HOGPeopleDetector()
    raise ValueError(f"detector must be 'hog' or a callable image -> [(box, score)], got {detector!r}")
