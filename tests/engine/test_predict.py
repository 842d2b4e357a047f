"""``jmipose predict`` and ``jmipose.Inferencer`` on the real PoseTrack clip and on synthetic videos,
with the checkpoint the demo's quick mode trains (one session-wide run, about a minute).

The quick checkpoint is weak (PoseTrack AP about 1 %, heatmap maxima about 0.03), so accuracy is
checked against an independent path instead of an absolute number: with the ground-truth boxes, the
video path must reproduce what ``jmipose eval`` (dataset loader, batched model, the same decoding)
computed for the same checkpoint during the demo, keypoint for keypoint and in AP.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import jmipose
from jmipose.checkpoint import CheckpointError, StateDictMismatchError
from jmipose.cli import main as cli
from jmipose.formats.errors import DataError
from jmipose.engine.inferencer import Inferencer
from jmipose.engine.predict import image_id, predict_video
from jmipose.metrics.posetrack_ap import posetrack_ap
from tests.data.helpers import decoded_frames

REAL_CLIP = "posetrack18/videos/000001_mpiinew_test/000001_mpiinew_test.mp4"
SEQUENCE = "200000_mpii_val"   # the quick demo's validation video


@pytest.fixture(scope="session")
def checkpoint(quick_demo) -> Path:
    return quick_demo / "jmpose" / "checkpoints" / "last"


@pytest.fixture(scope="session")
def ground_truth(quick_demo) -> dict:
    return json.loads((quick_demo / "data" / "annotations" / "val" / f"{SEQUENCE}.json").read_text())


@pytest.fixture(scope="session")
def gt_detections(quick_demo, ground_truth, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gt_boxes") / "detections.json"
    path.write_text(json.dumps([{"image_id": a["image_id"], "bbox": a["bbox"], "score": 1.0}
                                for a in ground_truth["annotations"]]))
    return path


@pytest.fixture(scope="session")
def synthetic_mp4(tmp_path_factory):
    from jmipose.data.synthetic import synthetic_video

    return synthetic_video(tmp_path_factory.mktemp("video") / "walk.mp4", frames=12, size=(192, 144), seed=4,
                           people=2, hard_fraction=0.0)


def _frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


# ----- outputs -----

def test_cli_on_the_real_clip(shared_data, checkpoint, tmp_path, capsys):
    assert cli(["predict", str(shared_data / REAL_CLIP), "--checkpoint", str(checkpoint), "--out",
                str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "5 frames" in printed and "frames/s" in printed
    video, result = tmp_path / "000001_mpiinew_test.mp4", tmp_path / "000001_mpiinew_test.json"
    assert _frame_count(video) == 5
    capture = cv2.VideoCapture(str(video))
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (1280, 720)
    capture.release()
    data = json.loads(result.read_text())
    assert [im["id"] for im in data["images"]] == [10000010000 + t for t in range(5)]
    assert len(data["annotations"]) == 5    # whole-frame box: one person per frame, track 0
    for ann in data["annotations"]:
        assert ann["track_id"] == 0 and len(ann["keypoints"]) == 51 and len(ann["scores"]) == 17
        xy = np.array(ann["keypoints"]).reshape(17, 3)[:, :2]
        # the crop of the whole 1280x720 frame: widened to 3:4 (1280x1920), enlarged 1.25x
        assert (np.abs(xy - [640, 360]) <= [800, 1200]).all()


def test_inferencer_streams_arrays_with_two_frames_delay(shared_data, checkpoint):
    from jmipose.data.video import VideoReader

    frames = [f.image.copy() for f in VideoReader(shared_data / REAL_CLIP)]
    pulled = []

    def stream():
        for frame in frames:
            pulled.append(len(pulled))
            yield frame

    infer = jmipose.Inferencer(checkpoint)
    results = infer(stream())
    first = next(results)
    assert first.index == 0 and len(pulled) == 3   # frame 0 needs frames 1 and 2 of its window
    rest = list(results)
    assert [r.index for r in rest] == [1, 2, 3, 4]
    from_file = list(infer(shared_data / REAL_CLIP))
    for a, b in zip([first, *rest], from_file):   # one window per call vs five: float rounding only
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-2)
        assert a.keypoints.shape == (1, 17, 2) and a.scores.shape == (1, 17)


def test_synthetic_mp4_every_frame_and_ids(synthetic_mp4, checkpoint, tmp_path):
    """GT boxes as detections (by frame_index): every frame written, and the track ids follow the
    ground-truth people one to one over the whole video."""
    detections = [{"frame_index": t, "bbox": p["bbox"], "score": 1.0}
                  for t, people in enumerate(synthetic_mp4.people) for p in people]
    summary = predict_video(synthetic_mp4.path, checkpoint, tmp_path, detections=detections, progress=False)
    assert summary["frames"] == 12 and _frame_count(summary["video"]) == 12
    data = json.loads(summary["json"].read_text())
    assert len(data["images"]) == 12 and len(data["annotations"]) == sum(map(len, synthetic_mp4.people))
    mapping = {}
    for ann in data["annotations"]:
        frame = ann["image_id"]
        box = np.array(ann["person_box"])
        gt = min(synthetic_mp4.people[frame], key=lambda p: np.abs(np.array(p["bbox"]) - box).sum())
        mapping.setdefault(ann["track_id"], set()).add(gt["track_id"])
    assert all(len(v) == 1 for v in mapping.values())
    assert len({next(iter(v)) for v in mapping.values()}) == len(mapping)   # no two ids for one person


# ----- accuracy against jmipose eval -----

def test_reproduces_jmipose_eval_with_gt_boxes(quick_demo, checkpoint, gt_detections, tmp_path):
    infer = Inferencer(checkpoint, crop_hold_iou=1.0)    # crop every box exactly as the dataset does
    folder = quick_demo / "data" / "images" / "val" / SEQUENCE
    summary = predict_video(folder, checkpoint, tmp_path, detections=gt_detections, progress=False,
                            inferencer=infer, detection_threshold=0.0, write_video=False)
    ours = json.loads(summary["json"].read_text())["annotations"]
    theirs = json.loads((quick_demo / "eval" / "jmpose" / "predictions" / f"{SEQUENCE}.json").read_text())
    assert len(ours) == len(theirs["annotations"]) > 0
    for ann in theirs["annotations"]:
        same_image = [a for a in ours if a["image_id"] == ann["image_id"]]
        want = np.array(ann["keypoints"]).reshape(17, 3)[:, :2]
        got = min((np.array(a["keypoints"]).reshape(17, 3)[:, :2] for a in same_image),
                  key=lambda k: np.abs(k - want).max())
        np.testing.assert_allclose(got, want, atol=0.05)
    result = posetrack_ap(quick_demo / "data" / "annotations" / "val", tmp_path)
    demo = json.loads((quick_demo / "results.json").read_text())["jmpose"]
    # the floor: the demo's own evaluation of this checkpoint on these frames (about 1 AP for the quick
    # checkpoint); our file scores the same.
    assert result["Total"] > 0
    assert result["Total"] == pytest.approx(demo["Total"], abs=0.05)


def test_eval_ap_cli_scores_the_written_file(quick_demo, checkpoint, tmp_path, capsys):
    folder = quick_demo / "data" / "images" / "val" / SEQUENCE
    detections = quick_demo / "data" / "annotations" / "val_human_detections.json"   # noisy boxes
    assert cli(["predict", str(folder), "--checkpoint", str(checkpoint), "--detections", str(detections),
                "--out", str(tmp_path), "--no-progress", "--no-video"]) == 0
    capsys.readouterr()
    assert cli(["eval-ap", str(quick_demo / "data" / "annotations" / "val"), str(tmp_path), "--json",
                str(tmp_path / "ap.json")]) == 0
    assert "Total" in capsys.readouterr().out
    ap = json.loads((tmp_path / "ap.json").read_text())
    assert ap["frames"] > 0 and ap["Total"] > 0


# ----- feature reuse -----

def test_feature_reuse_gives_the_naive_keypoints(quick_demo, checkpoint, gt_detections):
    from jmipose.data.video import VideoReader

    frames = [f.image for f in VideoReader(quick_demo / "data" / "images" / "val" / SEQUENCE)][:8]
    reuse, naive = Inferencer(checkpoint), Inferencer(checkpoint, reuse_features=False)
    fast = list(reuse(frames, detections=gt_detections, detection_threshold=0.0))
    slow = list(naive(frames, detections=gt_detections, detection_threshold=0.0))
    assert len(fast) == 8
    assert [len(r) for r in fast] == [len(r) for r in slow] and sum(map(len, fast)) > 0
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a.track_ids, b.track_ids)
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    people = sum(map(len, fast))
    assert naive.backbone_passes == 5 * people
    assert reuse.backbone_passes < 0.6 * naive.backbone_passes


def test_whole_frame_reuse_runs_the_backbone_once_per_frame(shared_data, checkpoint):
    infer = Inferencer(checkpoint)
    compiled = list(infer(shared_data / REAL_CLIP))
    assert len(compiled) == 5 and infer.backbone_passes == 5
    flipped = Inferencer(checkpoint, flip_test=True)
    assert len(list(flipped(shared_data / REAL_CLIP))) == 5 and flipped.backbone_passes == 10
    eager = list(Inferencer(checkpoint, backend="reference")(shared_data / REAL_CLIP))
    for a, b in zip(compiled, eager):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-2)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    with pytest.raises(ValueError, match="backend must be None .* or 'reference'"):
        Inferencer(checkpoint, backend="cuda")


def test_single_frame_baseline_checkpoint(quick_demo, shared_data):
    """The baseline reads the key frame only: no window delay, one backbone pass per frame."""
    infer = Inferencer(quick_demo / "baseline" / "checkpoints" / "last")
    assert infer.offsets == ()
    pulled = []

    def stream():
        for t in range(4):
            pulled.append(t)
            yield np.full((96, 128, 3), 40 * t, np.uint8)

    results = infer(stream())
    assert next(results).index == 0 and pulled == [0]
    assert [r.index for r in results] == [1, 2, 3] and infer.backbone_passes == 4


# ----- tracking from first-frame boxes -----

def test_tracked_boxes_keep_their_ids(synthetic_mp4, checkpoint):
    """With the confidence check off, every person given on frame 0 is followed with its id.  With the
    default check the quick checkpoint's flat heatmaps (maxima ~0.03) are never confident: the people
    are kept, lost, for max_lost frames (their poses written with their low scores), then their tracks
    end, and no new id ever appears."""
    boxes = [p["bbox"] for p in synthetic_mp4.people[0]]
    ids = list(range(len(boxes)))
    follow_all = Inferencer(checkpoint, track_threshold=0.0, joint_threshold=0.0)
    keep = list(follow_all(synthetic_mp4.path, boxes=boxes))
    assert len(keep) == 12 and all(sorted(r.track_ids.tolist()) == ids for r in keep)
    for r in keep:
        assert ((r.boxes[:, :2] >= 0) & (r.boxes[:, :2] + r.boxes[:, 2:] <= [192, 144])).all()
    assert all(t["lost_frames"] == 0 and t["ended"] == "video ended" for t in follow_all.track_report)
    strict = Inferencer(checkpoint, track_threshold=0.3, max_lost=3)
    lost = list(strict(synthetic_mp4.path, boxes=boxes))
    assert all(sorted(r.track_ids.tolist()) == ids for r in lost[:4])     # lost on frames 0, 1, 2, 3
    assert all(r.scores.max() < 0.3 for r in lost[:4])                     # written with their real scores
    assert all(len(r) == 0 for r in lost[4:])
    assert [(t["frames"], t["lost_frames"]) for t in strict.track_report] == [(4, 4)] * len(ids)
    assert all(t["ended"].startswith("lost for 4 frames") for t in strict.track_report)
    default = Inferencer(checkpoint)   # max_lost: one second = 25 frames > the 12 of the clip
    assert all(sorted(r.track_ids.tolist()) == ids for r in default(synthetic_mp4.path, boxes=boxes))
    assert [t["lost_frames"] for t in default.track_report] == [12] * len(ids)


def test_one_euro_smoothing_is_causal_and_damps_jitter(shared_data, checkpoint):
    from jmipose.engine.smoothing import OneEuroFilter

    rng = np.random.default_rng(0)
    one_euro = OneEuroFilter(fps=25)
    noisy = 100 + rng.normal(0, 2, size=(50, 17, 2))
    smoothed = np.stack([one_euro(x) for x in noisy])
    np.testing.assert_array_equal(smoothed[0], noisy[0])
    assert smoothed[10:].std() < 0.5 * noisy[10:].std()
    plain = list(Inferencer(checkpoint)(shared_data / REAL_CLIP))
    smooth = list(Inferencer(checkpoint, smoothing="one_euro")(shared_data / REAL_CLIP))
    np.testing.assert_allclose(smooth[0].keypoints, plain[0].keypoints)
    assert not np.allclose(smooth[-1].keypoints, plain[-1].keypoints)


# ----- bad inputs -----

def test_bad_videos(checkpoint, tmp_path, capsys):
    infer = Inferencer(checkpoint)
    with pytest.raises(FileNotFoundError, match="nothing.mp4 does not exist"):
        infer(tmp_path / "nothing.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(DataError, match="corrupt.mp4"):
        infer(corrupt)
    assert cli(["predict", str(tmp_path / "nothing.mp4"), "--checkpoint", str(checkpoint), "--out",
                str(tmp_path / "o")]) == 2
    assert "nothing.mp4 does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"frame 1 must be an \[H, W, 3\] uint8"):
        list(infer([np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8)]))
    with pytest.raises(ValueError, match="frame 2 is 32x64, the stream started at 64x64"):
        list(infer([np.zeros((64, 64, 3), np.uint8)] * 2 + [np.zeros((64, 32, 3), np.uint8)]))


def test_bad_boxes(shared_data, checkpoint, tmp_path, capsys):
    infer = Inferencer(checkpoint)
    clip = shared_data / REAL_CLIP
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(ValueError, match="empty.json: holds no person boxes"):
        infer(clip, detections=empty)
    with pytest.raises(ValueError, match=r"box 0 \(2000, 10, 50, 50\) lies outside the 1280x720 frame"):
        infer(clip, boxes=[(2000, 10, 50, 50)])
    with pytest.raises(ValueError, match=r"field '\[0\]\.bbox': negative box size"):
        infer(clip, detections=[{"image_id": 0, "bbox": [1, 2, -3, 4], "score": 1}])
    far = [{"frame_index": 0, "bbox": [5000, 5000, 10, 10], "score": 1}]
    with pytest.raises(ValueError, match="outside the 1280x720 frame"):
        list(infer(clip, detections=far))
    assert cli(["predict", str(clip), "--checkpoint", str(checkpoint), "--box", "1,2,3", "--out",
                str(tmp_path)]) == 2
    assert "--box must be x,y,w,h" in capsys.readouterr().err


def test_bad_checkpoints(quick_demo, checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="no such file .*missing.json"):
        Inferencer(tmp_path / "missing")
    # the baseline's weights under the JM-Pose config: the head's keys are missing
    record = json.loads(checkpoint.with_suffix(".json").read_text())
    baseline = quick_demo / "baseline" / "checkpoints" / "last"
    swapped = json.loads(baseline.with_suffix(".json").read_text())
    swapped["config"]["model"] = record["config"]["model"]
    source = baseline.with_name(swapped["weights"]["file"])
    (tmp_path / swapped["weights"]["file"]).write_bytes(source.read_bytes())
    (tmp_path / "swapped.json").write_text(json.dumps(swapped))
    with pytest.raises(StateDictMismatchError, match=r"missing keys \[branches\.0"):
        Inferencer(tmp_path / "swapped")


def test_backbone_weights_public_layouts(shared_data, checkpoint, tmp_path):
    from jmipose.checkpoint import load_checkpoint

    state = {k[len("backbone."):]: v for k, v in load_checkpoint(checkpoint).state_dict.items()
             if k.startswith("backbone.")}
    wrapped = tmp_path / "hrnet_wrapped.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, wrapped)
    plain = tmp_path / "hrnet_plain.pth"
    torch.save(state, plain)
    want = next(iter(Inferencer(checkpoint)(shared_data / REAL_CLIP))).keypoints
    for path in (wrapped, plain):
        got = next(iter(Inferencer(checkpoint, backbone_weights=path)(shared_data / REAL_CLIP))).keypoints
        np.testing.assert_allclose(got, want, atol=1e-5)
    bad_shape = dict(state)
    bad_shape["final_layer.weight"] = torch.zeros(3, 3, 1, 1)
    torch.save(bad_shape, tmp_path / "bad_shape.pth")
    with pytest.raises(StateDictMismatchError, match=r"final_layer.weight: checkpoint \[3, 3, 1, 1\]"):
        Inferencer(checkpoint, backbone_weights=tmp_path / "bad_shape.pth")
    (tmp_path / "object.pth").write_bytes(pickle.dumps({"state_dict": _NotATensor()}, protocol=2))
    with pytest.raises(ValueError, match="would need unpickling arbitrary objects"):
        Inferencer(checkpoint, backbone_weights=tmp_path / "object.pth")


class _NotATensor:
    pass


def test_image_ids_follow_posetrack():
    assert image_id("000001_mpiinew_test", 3) == 10000010003
    assert image_id("200000_mpii_val", 15) == 12000000015
    assert image_id("my_clip", 7) == 7


# ----- streaming results, a killed run, --resume -----

@pytest.fixture(scope="module")
def long_mp4(tmp_path_factory):
    from jmipose.data.synthetic import synthetic_video

    return synthetic_video(tmp_path_factory.mktemp("long") / "long.mp4", frames=90, size=(192, 144), seed=7,
                           people=2, hard_fraction=0.0)


@pytest.mark.parametrize("mode", ["box", "whole-frame"])
def test_a_killed_run_resumes_to_the_files_of_an_uninterrupted_run(long_mp4, checkpoint, tmp_path, mode):
    """kill -9 mid-video: the stream holds every finished frame, the video so far is readable in closed
    one-second pieces; --resume then writes the same final files as a run that was never killed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    boxes = [f"{x:.1f},{y:.1f},{w:.1f},{h:.1f}" for x, y, w, h in (p["bbox"] for p in long_mp4.people[0])]
    args = ["predict", str(long_mp4.path), "--checkpoint", str(checkpoint), "--no-progress", "--threads", "1",
            "--batch-size", "4"]
    if mode == "box":
        args += [a for box in boxes for a in ("--box", box)]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    stream = killed / "long.jsonl"
    # cwd: away from a source checkout, whose un-built jmipose/ folder would shadow the installed package
    process = subprocess.Popen([sys.executable, "-m", "jmipose", *args, "--out", str(killed)], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if stream.exists() and stream.read_bytes().count(b"\n") >= 1 + 40:   # header + 40 frames
                break
            time.sleep(0.02)
        assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()!r}"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.stderr.close()
    # what a killed run leaves: every finished frame in the stream, no final files, readable pieces
    lines = stream.read_bytes().split(b"\n")
    records = [json.loads(line) for line in lines[1:-1]]
    assert len(records) >= 40 and [r["frame"] for r in records] == list(range(len(records)))
    assert not (killed / "long.json").exists() and not (killed / "long.mp4").exists()
    pieces = sorted((killed / "long.partial").glob("*.mp4"))
    closed = [p for p in pieces if not p.name.endswith(".part.mp4")]
    assert closed and sum(len(decoded_frames(p)) for p in closed) == 25 * len(closed) >= 25
    # resume, and an uninterrupted run to compare with
    assert cli([*args, "--out", str(killed), "--resume"]) == 0
    assert cli([*args, "--out", str(whole)]) == 0
    resumed, reference = (json.loads((d / "long.json").read_text()) for d in (killed, whole))
    assert len(resumed["images"]) == 90 and resumed == reference
    assert (killed / "long.jsonl").read_text() == (whole / "long.jsonl").read_text()
    a, b = decoded_frames(killed / "long.mp4"), decoded_frames(whole / "long.mp4")
    assert len(a) == len(b) == 90 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not (killed / "long.partial").exists()
    # without --resume an interrupted stream is not overwritten
    (whole / "long.jsonl").write_text((killed / "long.jsonl").read_text().rsplit("\n", 2)[0] + "\n")
    with pytest.raises(ValueError, match="holds an interrupted run .* pass --resume"):
        predict_video(long_mp4.path, checkpoint, whole, progress=False)


def test_resume_refuses_other_settings(synthetic_mp4, checkpoint, tmp_path):
    """Two frames per model call (batch_size=2): a stream cut after 5 frames resumes from frame 4 (frame
    4's model call was cut short: it is made again, whole), and only with the same settings."""
    options = dict(progress=False, write_video=False, batch_size=2)
    predict_video(synthetic_mp4.path, checkpoint, tmp_path, **options)
    stream = tmp_path / "walk.jsonl"
    stream.write_text("\n".join(stream.read_text().splitlines()[:6]) + "\n")   # as if killed after 5 frames
    with pytest.raises(ValueError, match=r"resume: .*walk.jsonl was written with other settings \(flip_test"):
        predict_video(synthetic_mp4.path, checkpoint, tmp_path, flip_test=True, resume=True, **options)
    with pytest.raises(ValueError, match=r"other settings \(batch_size: was 2, now 16"):
        predict_video(synthetic_mp4.path, checkpoint, tmp_path, progress=False, resume=True)
    summary = predict_video(synthetic_mp4.path, checkpoint, tmp_path, resume=True, **options)
    assert summary["resumed_from"] == 4 and summary["estimated"] == 8 and summary["frames"] == 12


# ----- a public pose-HRNet checkpoint alone -----

@pytest.fixture(scope="module")
def public_weights(quick_demo, tmp_path_factory) -> Path:
    """The quick demo's single-frame HRNet saved as a public pose-HRNet file (that layout, with the
    input size in its name as the public files have it)."""
    from jmipose.checkpoint import load_checkpoint

    baseline = quick_demo / "baseline" / "checkpoints" / "last"
    width, height = json.loads(baseline.with_suffix(".json").read_text())["config"]["data"]["image_size"]
    state = {k[len("backbone."):]: v for k, v in load_checkpoint(baseline).state_dict.items()
             if k.startswith("backbone.")}
    path = tmp_path_factory.mktemp("public") / f"pose_hrnet_tiny_{height}x{width}.pth"
    torch.save({"state_dict": state}, path)
    return path


def test_backbone_weights_alone_run_the_single_frame_hrnet(quick_demo, public_weights, shared_data):
    public = Inferencer(None, backbone_weights=public_weights)
    baseline = Inferencer(quick_demo / "baseline" / "checkpoints" / "last")
    assert public.input_size == baseline.input_size and public.offsets == () and public.weights.scheme == "pose-hrnet"
    for a, b in zip(public(shared_data / REAL_CLIP), baseline(shared_data / REAL_CLIP)):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.scores, b.scores)
    sized = jmipose.Inferencer(backbone_weights=public_weights, input_size=(96, 128))
    assert sized.input_size == (96, 128)
    with pytest.raises(TypeError, match="needs a checkpoint .* or backbone_weights"):
        jmipose.Inferencer()


def test_cli_backbone_weights_with_the_hog_detector_on_the_real_clip(public_weights, shared_data, tmp_path, capsys):
    assert cli(["predict", str(shared_data / REAL_CLIP), "--backbone-weights", str(public_weights), "--detector",
                "hog", "--detect-every", "2", "--out", str(tmp_path), "--no-progress", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "pose-hrnet layout, tiny HRNet" in printed and "5 frames" in printed
    assert "detector: 3 runs" in printed and "ms per frame" in printed
    assert "track 0 (detector)" in printed and "ended:" in printed
    data = json.loads((tmp_path / "000001_mpiinew_test.json").read_text())
    people = [[a for a in data["annotations"] if a["image_id"] == im["id"]] for im in data["images"]]
    assert len(people) == 5 and all(len(p) >= 1 for p in people)        # somebody in every frame
    assert {a["track_id"] for a in people[0]} <= {a["track_id"] for a in people[4]}   # the same ids all along
    assert _frame_count(tmp_path / "000001_mpiinew_test.mp4") == 5


def test_cli_needs_a_checkpoint_or_weights(shared_data, tmp_path, capsys):
    assert cli(["predict", str(shared_data / REAL_CLIP), "--out", str(tmp_path)]) == 2
    assert "give --checkpoint" in capsys.readouterr().err
    assert cli(["predict", str(shared_data / REAL_CLIP), "--backbone-weights", str(tmp_path / "none.pth"), "--out",
                str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    # a usage error in-process: exit code 2 returned, not raised (jmipose.cli's one error contract)
    assert cli(["predict", "x.mp4", "--backbone-weights", "w.pth", "--input-size", "250x190"]) == 2
    assert "multiples of 32" in capsys.readouterr().err
