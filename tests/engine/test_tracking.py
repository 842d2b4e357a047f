"""Tracked people are not silently dropped: a track survives frames where the model is unsure (its
pose written with the real, low scores), ends after ``max_lost`` of them, and says why; detections
(a person detector run every N frames) start tracks and find lost ones again.

End to end with a stand-in pose model whose confidence is known per frame: it "sees" a bright figure
on a dark background, puts the 17 joints around the figure's centre and scores them 0.9 when the
figure is in its crop, 0.02 when it is not.  The clip hides the figure for k frames.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from jmipose.engine.boxes import HOGPeopleDetector, TrackedBoxes, box_iou
from jmipose.engine.inferencer import FrameResult, Inferencer
from jmipose.engine.predict import predict_video

SIZE = (160, 120)             # the clip: width, height
FIGURE = (16, 40)             # the figure: width, height
INPUT = (64, 96)              # the stand-in model's input (width, height); heatmaps are a quarter of it
SEEN, UNSEEN = 0.9, 0.02


class FigurePose(nn.Module):
    """The stand-in pose model (a single-frame model, like the baseline)."""

    config = SimpleNamespace(variant="baseline", num_frames=1, key_index=0, use_kernels=True)

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        # where the joints sit in the figure's bounding box (fractions; the corners among them)
        spots = np.concatenate([[[0, 0], [1, 0], [0, 1], [1, 1]], rng.uniform(0, 1, (13, 2))])
        self.register_buffer("spots", torch.tensor(spots, dtype=torch.float32))

    def backbone_features(self, crops):
        n, _, height, width = crops.shape
        h, w = height // 4, width // 4
        bright = crops[:, 0] > 0                                     # normalised: white > 0 > black
        ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                                indexing="ij")
        seen = bright.sum((1, 2)) > 40
        inf = torch.tensor(float("inf"))
        x0 = torch.where(bright, xs, inf).amin((1, 2))
        x1 = torch.where(bright, xs, -inf).amax((1, 2))
        y0 = torch.where(bright, ys, inf).amin((1, 2))
        y1 = torch.where(bright, ys, -inf).amax((1, 2))
        x0, x1 = torch.where(seen, x0, width / 4), torch.where(seen, x1, 3 * width / 4)
        y0, y1 = torch.where(seen, y0, height / 4), torch.where(seen, y1, 3 * height / 4)
        px = (x0[:, None] + self.spots[None, :, 0] * (x1 - x0)[:, None]) / 4
        py = (y0[:, None] + self.spots[None, :, 1] * (y1 - y0)[:, None]) / 4
        gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        peak = torch.where(seen, torch.tensor(SEEN), torch.tensor(UNSEEN))[:, None, None, None]
        distance = (gx - px[..., None, None]) ** 2 + (gy - py[..., None, None]) ** 2
        heatmaps = peak * torch.exp(-distance / 2)
        return heatmaps, [None] * 4

    def forward_head(self, heatmaps, features):
        raise AssertionError("a single-frame model: never called")


def figure_clip(frames: int, hidden: range, speed: float = 1.0, start=(40.0, 40.0)) -> list[np.ndarray]:
    """A bright figure walking right on black, hidden (confidence collapses) during ``hidden``."""
    clip = []
    for t in range(frames):
        image = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
        if t not in hidden:
            x, y = start[0] + speed * t, start[1]
            cv2.rectangle(image, (round(x), round(y)), (round(x) + FIGURE[0], round(y) + FIGURE[1]),
                          (255, 255, 255), -1)
        clip.append(image)
    return clip


def _write(clip, path):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, SIZE)
    for image in clip:
        writer.write(image)
    writer.release()
    return path


FIRST_BOX = (34, 32, 28, 56)


def _infer(**options) -> Inferencer:
    return Inferencer(FigurePose(), input_size=INPUT, oks_nms=None, **options)


# ----- the confidence collapses for k frames -----

def test_a_track_survives_k_unsure_frames_with_its_id_and_low_scores():
    clip = figure_clip(30, hidden=range(10, 16))      # k = 6 <= max_lost
    infer = _infer(max_lost=8)
    results = list(infer(clip, boxes=[FIRST_BOX]))
    assert len(results) == 30 and all(r.track_ids.tolist() == [0] for r in results)
    scores = np.array([r.scores.max() for r in results])
    assert (scores[10:16] < 0.05).all() and (scores[:10] > 0.5).all() and (scores[16:] > 0.5).all()
    [track] = infer.track_report
    assert track == {"track_id": 0, "source": "box", "first_frame": 0, "last_frame": 29, "frames": 30,
                     "lost_frames": 6, "longest_loss": 6, "ended": "video ended"}
    # found again where the figure is: its keypoints' centre follows the figure after the gap
    centre = results[20].keypoints[0].mean(0)
    assert abs(centre[0] - (40 + 20 + FIGURE[0] / 2)) < 4 and abs(centre[1] - (40 + FIGURE[1] / 2)) < 6


def test_a_track_ends_after_max_lost_and_says_why():
    clip = figure_clip(30, hidden=range(10, 22))      # k = 12 > max_lost = 8
    infer = _infer(max_lost=8)
    results = list(infer(clip, boxes=[FIRST_BOX]))
    assert [len(r) for r in results] == [1] * 19 + [0] * 11        # frames 10..18 lost, then ended
    [track] = infer.track_report
    assert (track["frames"], track["lost_frames"], track["last_frame"]) == (19, 9, 18)
    assert track["ended"] == "lost for 9 frames (more than max_lost=8): pose not confident"


def test_max_lost_defaults_to_one_second_of_video(tmp_path):
    clip = figure_clip(40, hidden=range(5, 40))
    path = _write(clip, tmp_path / "figure.mp4")
    infer = _infer()
    results = list(infer(path, boxes=[FIRST_BOX]))           # 25 frames/s: max_lost = 25
    assert sum(len(r) for r in results) == 5 + 26
    assert infer.track_report[0]["ended"].startswith("lost for 26 frames (more than max_lost=25)")


def test_predict_writes_every_frame_and_the_summary(tmp_path, capsys):
    from jmipose.engine.predict import main

    path = _write(figure_clip(30, hidden=range(10, 16)), tmp_path / "figure.mp4")
    summary = predict_video(path, out=tmp_path / "out", boxes=[FIRST_BOX], inferencer=_infer(max_lost=8),
                            progress=False)
    data = json.loads(summary["json"].read_text())
    assert len(data["images"]) == 30 and [a["track_id"] for a in data["annotations"]] == [0] * 30
    low = [max(a["scores"]) for a in data["annotations"][10:16]]
    assert all(s < 0.05 for s in low)                          # written, with their real, low scores
    assert summary["tracks"][0]["lost_frames"] == 6
    del main, capsys


# ----- where a lost track's box goes -----

def _result(index, track_ids, keypoints, score):
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(len(track_ids), 17, 2)
    scores = np.full((len(track_ids), 17), score)
    return FrameResult(index, None, np.zeros((len(track_ids), 4)), keypoints, scores,
                       np.full(len(track_ids), score), np.ones(len(track_ids)), np.asarray(track_ids))


def _pose(centre):
    rng = np.random.default_rng(1)
    return np.asarray(centre) + rng.uniform([-10, -30], [10, 30], (17, 2))


@pytest.mark.parametrize("rule", ["velocity", "hold"])
def test_a_lost_box_is_held_or_moved_on_with_the_tracks_velocity(rule):
    tracker = TrackedBoxes([(90, 70, 30, 80)], (640, 480), max_lost=10, lost_box=rule)
    for t in range(5):                                      # walking right at 6 pixels per frame
        tracker.people(t)
        tracker.update(t, _result(t, [0], _pose((100 + 6 * t, 110)), 0.9))
    confident = tracker.tracks[0].box.copy()
    velocity = tracker.tracks[0].velocity.copy()
    assert velocity[0] > 4 and abs(velocity[1]) < 1e-9
    boxes = []
    for t in range(5, 9):                                   # unsure for 4 frames
        tracker.people(t)
        tracker.update(t, _result(t, [0], _pose((500, 400)), 0.05))   # low-score keypoints are not followed
        boxes.append(tracker.tracks[0].box.copy())
    for lost, box in enumerate(boxes, start=1):
        np.testing.assert_allclose(box[2:], confident[2:])
        shift = box[:2] - confident[:2]
        if rule == "hold":
            np.testing.assert_allclose(shift, 0)
        else:
            factor = sum(0.8 ** k for k in range(1, lost + 1))
            np.testing.assert_allclose(shift, velocity * factor)
    assert tracker.tracks[0].lost == 4 and tracker.tracks[0].lost_frames == 4


def test_a_lost_box_that_leaves_the_frame_ends_the_track():
    tracker = TrackedBoxes([(560, 100, 40, 80)], (640, 480), max_lost=50)
    for t in range(4):
        tracker.people(t)
        tracker.update(t, _result(t, [0], _pose((580 + 20 * t, 140)), 0.9))
    for t in range(4, 40):
        tracker.people(t)
        tracker.update(t, _result(t, [0], _pose((0, 0)), 0.01))
        if not tracker.tracks:
            break
    [report] = tracker.report()
    assert report["ended"] == "left the frame while lost" and report["lost_frames"] < 50


# ----- detections -----

class ScriptedDetector:
    """A detector returning given boxes per call, recording the frames it was run on."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def __call__(self, image):
        self.calls.append(int(image[0, 0, 0]))
        return self.script(int(image[0, 0, 0]))


def _frame(index):
    image = np.zeros((480, 640, 3), np.uint8)
    image[0, 0, 0] = index            # the frame number, for the scripted detector
    return image


def test_detections_start_tracks_and_find_lost_ones_again():
    def script(t):
        person_a = (np.array([100.0 + 2 * t, 100, 60, 160]), 1.2)
        person_b = (np.array([400.0, 120, 60, 150]), 0.8)
        return [person_a] + ([person_b] if t >= 10 else [])

    detector = ScriptedDetector(script)
    tracker = TrackedBoxes([], (640, 480), max_lost=8, detector=detector, detect_every=5)
    seen = {}
    for t in range(20):
        people = tracker.people(t, _frame(t))
        seen[t] = sorted(p.track_id for p in people)
        centres = {p.track_id: p.box[:2] + p.box[2:] / 2 for p in people}
        # track 0 is unsure on frames 6..12 (found again by the detection of frame 10)
        score = {0: 0.05 if 6 <= t <= 12 else 0.9, 1: 0.9}
        ids = sorted(centres)
        result = _result(t, ids, np.stack([_pose(centres[i]) * [1, 1] for i in ids]) if ids else np.zeros((0, 17, 2)),
                         0.9)
        result.scores = np.stack([np.full(17, score[i]) for i in ids]) if ids else np.zeros((0, 17))
        result.person_scores = np.array([score[i] for i in ids])
        tracker.update(t, result)
    assert detector.calls == [0, 5, 10, 15]                       # every detect_every frames
    assert seen[0] == [0] and seen[9] == [0] and seen[10] == [0, 1] and seen[19] == [0, 1]
    assert sorted(tracker.detected) == [0, 5, 10, 15] and tracker.detected[10].shape == (2, 5)
    report = {t["track_id"]: t for t in tracker.report()}
    assert report[0]["source"] == "detector" and report[0]["lost_frames"] == 7
    assert report[0]["longest_loss"] == 4            # frames 6-9 lost, then found by the detection of frame 10
    assert report[1]["first_frame"] == 10 and report[1]["lost_frames"] == 0


def test_hog_finds_the_people_of_a_real_frame_and_nobody_in_an_empty_one(shared_data):
    frame = cv2.cvtColor(cv2.imread(str(shared_data / "posetrack18/images/val/009473_mpii_test/000000.jpg")),
                         cv2.COLOR_BGR2RGB)
    truth = json.loads((shared_data / "posetrack18/annotations/val/009473_mpii_test.json").read_text())
    boxes = np.array([a["bbox"] for a in truth["annotations"]])
    detector = HOGPeopleDetector()
    found = detector(frame)
    assert found and all(np.isfinite(b).all() and s >= detector.score_threshold for b, s in found)
    assert box_iou(np.stack([b for b, _ in found]), boxes).max() > 0.5     # a labelled person found
    assert detector(np.zeros_like(frame)) == []
    noise = np.random.default_rng(0).integers(0, 40, frame.shape, dtype=np.uint8)
    assert detector(noise) == []
    with pytest.raises(ValueError, match="max_side must be an int >= 128"):
        HOGPeopleDetector(max_side=64)
