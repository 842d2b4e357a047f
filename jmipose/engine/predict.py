"""jmipose predict: poses on a video (or a folder of frames) with a checkpoint or public HRNet weights.

    jmipose predict clip.mp4 --checkpoint runs/posetrack18/checkpoints/best --out predictions
    jmipose predict clip.mp4 --backbone-weights pose_hrnet_w32_256x192.pth --detector hog

Writes ``OUT/<name>.mp4`` (skeletons, boxes and track ids drawn on the frames), ``OUT/<name>.json``
(PoseTrack18 style: ``images``, ``annotations`` with keypoints, per-joint scores and track ids,
``categories``) and ``OUT/<name>.jsonl`` (one line per frame, flushed as each frame is done, so a
killed run resumes with ``--resume``), and prints frames per second and, for tracked people, how
many frames each track was lost and why it ended.  The model: a jmipose checkpoint (``--checkpoint``),
or a public pose-HRNet checkpoint alone (``--backbone-weights``: the single-frame HRNet), or both
(the public HRNet in the checkpoint's backbone).  Person boxes: ``--detections`` (COCO-style JSON),
``--box x,y,w,h`` (one per person, first frame, then tracked from the keypoints), ``--detector hog``
(every ``--detect-every`` frames, linked to tracks) or, by default, the whole frame.  Image ids follow
PoseTrack18 (``1`` + six sequence digits + four frame digits) when the name is a PoseTrack sequence
name (``000001_mpiinew_test``) or ``--sequence`` gives the sequence, so that ``jmipose eval-ap``
matches the file to its ground truth; otherwise they are the frame numbers.  PoseTrack ids in
``--detections`` are matched to the same sequence (a PoseTrack detections file holds every sequence
of a split); the summary says how many boxes were used and how many were left out and why.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from jmipose.engine.boxes import parse_box
from jmipose.formats.detections import check_threshold, load_detections
from jmipose.formats.posetrack import posetrack_document, posetrack_sequence, prediction_annotation
from jmipose.formats.posetrack import sequence_image_id as image_id  # the PoseTrack18 id of a video's frame
from jmipose.joints import SKELETON

DRAW_THRESHOLD = 0.2   # joints scored at most this are not drawn


def _colour(track_id: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per track id (golden-angle hues)."""
    import cv2

    hue = int((track_id * 137.508) % 180)
    hsv = np.uint8([[[hue, 220, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw_result(result, threshold: float = DRAW_THRESHOLD) -> np.ndarray:
    """The frame (BGR, for OpenCV writers) with boxes, track ids and skeletons drawn."""
    import cv2

    canvas = cv2.cvtColor(result.image, cv2.COLOR_RGB2BGR)
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    for box, keypoints, scores, track_id in zip(result.boxes, result.keypoints, result.scores,
                                                result.track_ids):
        colour = _colour(int(track_id))
        x, y, w, h = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, thickness, cv2.LINE_AA)
        cv2.putText(canvas, f"id {int(track_id)}", (x + 2, max(y - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thickness, colour, thickness, cv2.LINE_AA)
        shown = scores > threshold
        points = [tuple(int(round(v)) for v in p) for p in keypoints]
        for a, b in SKELETON:
            if shown[a] and shown[b]:
                cv2.line(canvas, points[a], points[b], colour, thickness + 1, cv2.LINE_AA)
        for point, visible in zip(points, shown):
            if visible:
                cv2.circle(canvas, point, thickness + 2, (255, 255, 255), -1, cv2.LINE_AA)
    return canvas


def posetrack_annotations(result, name: str, sequence: int | None = None) -> list[dict]:
    """The PoseTrack18 annotations of one frame's people (per-joint score = heatmap maximum x box
    score, as ``jmipose eval`` writes them), each with the box it was cropped from (``person_box``)."""
    return [prediction_annotation(image_id(name, result.index, sequence), result.track_ids[i], result.keypoints[i],
                                  result.scores[i], result.box_scores[i], result.person_scores[i],
                                  person_box=[float(v) for v in result.boxes[i]])
            for i in range(len(result))]


def _frame_names(reader, count: int, name: str) -> list[str]:
    if reader.is_folder:
        return [f"{name}/{p.name}" for p in reader._files[:count]]  # the frames, in reading order
    return [f"{name}/{i:06d}.jpg" for i in range(count)]


# ----- the result stream (JSON Lines) and the resumable outputs -----

STREAM_FORMAT = "jmipose-predict-stream"
STREAM_VERSION = 1
SYNC_SECONDS = 1.0     # the stream is flushed every frame and fsynced at least this often


def _array(value) -> list:
    return np.asarray(value, dtype=np.float64).tolist()


def result_record(result) -> dict:
    """One frame's results as a JSON-able dict (exact: floats round-trip through JSON's repr)."""
    return {"frame": int(result.index), "track_ids": [int(t) for t in result.track_ids],
            "boxes": _array(result.boxes), "keypoints": _array(result.keypoints), "scores": _array(result.scores),
            "person_scores": _array(result.person_scores), "box_scores": _array(result.box_scores),
            "detections": None if result.detections is None else _array(result.detections),
            "raw_keypoints": None if result.raw_keypoints is None else _array(result.raw_keypoints),
            "resume": result.resume_info}


def record_result(record: dict):
    """The ``FrameResult`` of a ``result_record`` (without its image)."""
    from jmipose.engine.inferencer import FrameResult

    people = len(record["track_ids"])

    def arr(key, *shape):
        return np.asarray(record[key], dtype=np.float64).reshape(people, *shape)

    optional = {k: None if record.get(k) is None else np.asarray(record[k], dtype=np.float64)
                for k in ("detections", "raw_keypoints")}
    if optional["raw_keypoints"] is not None:
        optional["raw_keypoints"] = optional["raw_keypoints"].reshape(people, 17, 2)
    if optional["detections"] is not None:
        optional["detections"] = optional["detections"].reshape(-1, 5)
    return FrameResult(int(record["frame"]), None, arr("boxes", 4), arr("keypoints", 17, 2), arr("scores", 17),
                       arr("person_scores"), arr("box_scores"), np.asarray(record["track_ids"], dtype=np.int64),
                       optional["detections"], optional["raw_keypoints"], record.get("resume"))


def read_stream(path: Path) -> tuple[dict, list[dict], bool, int]:
    """(header, frame records, finished, byte length of the complete lines) of a result stream; a
    torn last line (a run killed while writing it) is left out."""
    data = path.read_bytes()
    lines, ends, good = [], [], 0
    for line in data.split(b"\n")[:-1]:        # the part after the last newline is torn
        try:
            lines.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            break
        good += len(line) + 1
        ends.append(good)
    if not lines or not isinstance(lines[0], dict) or lines[0].get("format") != STREAM_FORMAT:
        raise ValueError(f"resume: {path} is not a jmipose predict stream (its first line is not a "
                         f"{STREAM_FORMAT} header)")
    header, records, finished = lines[0], [], False
    for number, line in enumerate(lines[1:], start=2):
        if isinstance(line, dict) and line.get("end") is True:
            finished = True
            break
        if not isinstance(line, dict) or line.get("frame") != len(records):
            raise ValueError(f"resume: {path} line {number} is not the record of frame {len(records)}")
        records.append(line)
    if not finished:
        # frames of a model call that was cut short are estimated again (together, as they were)
        while records and (records[-1].get("resume") or {}).get("flush_end", records[-1]["frame"]) >= len(records):
            records.pop()
        good = ends[len(records)]    # the end of the header's line, then of each kept record's
    return header, records, finished, good


class _VideoOutputs:
    """The annotated video: ``<name>.mp4`` (written under a temporary name, renamed when complete) and,
    while the run lasts, the same frames in closed one-second mp4 pieces in ``<name>.partial/``, which
    stay readable if the run is killed (an mp4 being written is not: its index comes at the end)."""

    def __init__(self, out: Path, name: str, fps: float, size: tuple[int, int], segment: int):
        self.final = out / f"{name}.mp4"
        self.temporary = out / f".{name}.partial.mp4"
        self.parts = out / f"{name}.partial"
        self.fps, self.size, self.segment = float(fps), size, max(1, int(segment))
        self._writer = self._part = None
        self._part_frames = 0
        self._count = 0
        if self.parts.is_dir():
            for old in self.parts.glob("*.mp4"):
                old.unlink()
        self.parts.mkdir(parents=True, exist_ok=True)

    def _open(self, path: Path):
        import cv2

        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write an mp4 to {path}")
        return writer

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            self._writer = self._open(self.temporary)
        if self._part is None:
            self._part = self._open(self.parts / f"{self._count:06d}.part.mp4")
        self._writer.write(frame)
        self._part.write(frame)
        self._count += 1
        self._part_frames += 1
        if self._part_frames == self.segment:    # close it: readable from now on
            self._close_part()

    def _close_part(self) -> None:
        if self._part is not None:
            self._part.release()
            start = self._count - self._part_frames
            done = self.parts / f"{start:06d}.part.mp4"
            done.rename(self.parts / f"{start:06d}-{self._count - 1:06d}.mp4")
            self._part, self._part_frames = None, 0

    def finish(self) -> Path | None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._part is not None:
            self._part.release()
            self._part = None
        if self._count:
            os.replace(self.temporary, self.final)
        import shutil

        shutil.rmtree(self.parts, ignore_errors=True)
        return self.final if self._count else None

    def abort(self) -> None:
        """Stop writing (a crash or ^C): the closed pieces stay, the unfinished ones go."""
        for writer in (self._writer, self._part):
            if writer is not None:
                writer.release()
        self._writer = self._part = None
        self.temporary.unlink(missing_ok=True)
        for unfinished in self.parts.glob("*.part.mp4"):
            unfinished.unlink()


def _settings(video, checkpoint, backbone_weights, inferencer, detections, boxes, detector, detect_every,
              detection_threshold) -> dict:
    """What a resumed run must share with the interrupted one."""
    def name(value):
        return None if value is None else str(value) if isinstance(value, (str, os.PathLike)) else type(value).__name__

    return {"video": str(video), "checkpoint": name(checkpoint), "backbone_weights": name(backbone_weights),
            "input_size": list(inferencer.input_size), "flip_test": inferencer.flip_test,
            "smoothing": inferencer.smoothing, "detections": name(detections) if not isinstance(detections, list)
            else f"{len(detections)} entries",
            "boxes": None if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4).tolist(),
            "detector": name(detector), "detect_every": int(detect_every) if detector is not None else None,
            "detection_threshold": float(detection_threshold), "max_lost": inferencer.max_lost,
            "lost_box": inferencer.lost_box, "track_threshold": inferencer.track_threshold,
            "joint_threshold": inferencer.joint_threshold, "oks_nms": inferencer.oks_nms,
            "crop_hold_iou": inferencer.crop_hold_iou, "backend": inferencer.backend,
            "batch_size": inferencer.batch_size, "reuse_features": inferencer.reuse_features}


def predict_video(video, checkpoint=None, out="predict_out", *, detections=None, boxes=None, detector=None,
                  detect_every: int = 5, backbone_weights=None, input_size=None, device=None, backend=None,
                  batch_size: int = 16, smoothing=None, flip_test: bool = False, detection_threshold: float = 0.2,
                  write_video: bool = True, progress: bool = True, inferencer=None, max_lost: int | None = None,
                  lost_box: str = "velocity", resume: bool = False, sequence: int | None = None) -> dict:
    """Run the model over ``video`` and write ``out/<name>.mp4``, ``out/<name>.json`` and the result
    stream ``out/<name>.jsonl``; returns a summary (frames, seconds, fps, the paths, the tracks).

    The stream gets one line per frame as soon as the frame is done (flushed every frame), and the
    annotated video is kept readable in one-second pieces while the run lasts, so a killed run loses
    nothing: ``resume=True`` continues it from its last written frame to the same files an
    uninterrupted run writes (the tracking is replayed from the stream; the model runs on the rest).
    ``sequence``: the video's PoseTrack sequence number (default: from its name), for image ids and for
    matching PoseTrack ids in ``detections``; with ``detections`` the summary says which boxes were used.
    """
    from jmipose.data.video import VideoReader
    from jmipose.engine.inferencer import Inferencer
    from jmipose.fileio import atomic_write_json, check_output_dir

    check_threshold(detection_threshold, "detection_threshold")
    out = check_output_dir(out, "--out")   # before the work: a file, or a path under a file, fails now
    reader = VideoReader(video, background=True)   # missing or undecodable input fails here
    name = reader.path.stem if not reader.is_folder else reader.path.name
    if sequence is None:
        sequence = posetrack_sequence(name)
    if checkpoint is None and backbone_weights is None and inferencer is None:
        reader.close()
        raise ValueError("give a checkpoint (a jmipose/JM-Pose checkpoint) or backbone_weights (a public "
                         "pose-HRNet .pth/.safetensors) or both")
    if detections is not None and not isinstance(detections, dict):
        detections = load_detections(detections, detection_threshold, sequence=sequence)
    if hasattr(detections, "beyond") and reader.frame_count and \
            len(detections.beyond(reader.frame_count)) == len(detections):
        reader.close()
        raise ValueError(f"{detections.describe(reader.frame_count)}: no box lies on a frame of this video "
                         f"(wrong video, or frame numbering?)")
    if inferencer is None:
        inferencer = Inferencer(checkpoint, device=device, backend=backend, batch_size=batch_size,
                                smoothing=smoothing, flip_test=flip_test, backbone_weights=backbone_weights,
                                input_size=input_size, max_lost=max_lost, lost_box=lost_box)
    fps = reader.fps or 25.0
    stream_path = out / f"{name}.jsonl"
    settings = _settings(reader.path, checkpoint, backbone_weights, inferencer, detections, boxes, detector,
                         detect_every, detection_threshold)
    header = {"format": STREAM_FORMAT, "version": STREAM_VERSION, "name": name, "width": reader.width,
              "height": reader.height, "fps": fps, "frame_count": reader.frame_count, "settings": settings}
    replay: dict = {}
    if stream_path.exists():
        old, records, finished, good = read_stream(stream_path)
        if not resume and not finished:
            reader.close()
            raise ValueError(f"{stream_path} holds an interrupted run ({len(records)} frames done): pass "
                             f"--resume (resume=True) to continue it, or delete it or choose another --out")
        if resume:
            differing = sorted(k for k in set(old.get("settings", {})) | set(settings)
                               if old.get("settings", {}).get(k) != settings.get(k))
            same_video = (old.get("width"), old.get("height"), old.get("frame_count")) == \
                (reader.width, reader.height, reader.frame_count)
            if differing or not same_video:
                reader.close()
                what = ", ".join(f"{k}: was {old.get('settings', {}).get(k)!r}, now {settings.get(k)!r}"
                                 for k in differing[:5]) or "the video's size or frame count changed"
                raise ValueError(f"resume: {stream_path} was written with other settings ({what}); run without "
                                 f"--resume into another --out, or with the same arguments")
            replay = {r["frame"]: record_result(r) for r in records}
            with open(stream_path, "r+b") as handle:     # drop a torn last line (and an end marker)
                handle.truncate(good if not finished else _length_before_end(stream_path))
    if not replay:
        stream_path.write_text(json.dumps(header) + "\n")
    results = inferencer(reader, detections=detections, boxes=boxes, detection_threshold=detection_threshold,
                         fps=fps, sequence=sequence, detector=detector, detect_every=detect_every,
                         replay=replay)
    video_out = _VideoOutputs(out, name, fps, reader.size, round(fps)) if write_video else None
    all_results, frames, estimated = [], 0, 0
    first_done = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=reader.frame_count, desc=f"predict {name}", unit="frame", file=sys.stderr,
                   initial=0)
    stream = open(stream_path, "a", encoding="utf-8")
    synced = time.perf_counter()
    started = time.perf_counter()
    try:
        for result in results:
            if video_out is not None:
                video_out.write(draw_result(result))
            replayed = result.index in replay
            if not replayed:
                stream.write(json.dumps(result_record(result)) + "\n")
                stream.flush()
                if time.perf_counter() - synced >= SYNC_SECONDS:
                    os.fsync(stream.fileno())
                    synced = time.perf_counter()
                estimated += 1
                if first_done is None:
                    first_done = time.perf_counter()
            all_results.append(_Light(result))
            frames += 1
            if bar is not None:
                bar.update(1)
    except BaseException:
        if video_out is not None:
            video_out.abort()
        raise
    finally:
        stream.close()
        if bar is not None:
            bar.close()
        reader.close()
    finished_at = time.perf_counter()
    seconds = finished_at - started
    # the first frame also pays for warm-up (first convolutions, library loads, the first decodes)
    steady = ((estimated - 1) / (finished_at - first_done) if estimated > 1 and first_done is not None
              and finished_at > first_done else None)
    video_path = video_out.finish() if video_out is not None else None
    names = _frame_names(reader, frames, name)
    images = [{"id": image_id(name, t, sequence), "frame_id": image_id(name, t, sequence), "file_name": names[t],
               "nframes": frames, "is_labeled": True, "width": reader.width, "height": reader.height}
              for t in range(frames)]
    annotations = [a for r in all_results for a in posetrack_annotations(r, name, sequence)]
    json_path = out / f"{name}.json"
    atomic_write_json(json_path, posetrack_document(images, annotations), indent=None)
    with open(stream_path, "a", encoding="utf-8") as handle:   # the run is complete
        handle.write(json.dumps({"end": True, "frames": frames}) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    run_seconds = seconds
    return {"name": name, "frames": frames, "estimated": estimated, "resumed_from": len(replay) if resume else None,
            "seconds": run_seconds, "fps": estimated / run_seconds if run_seconds and estimated else 0.0,
            "fps_after_first": steady, "people": len(annotations), "json": json_path, "stream": stream_path,
            "video": video_path, "backbone_passes": inferencer.backbone_passes,
            "tracks": inferencer.track_report, "detector_seconds": inferencer.detector_seconds,
            "detector_runs": inferencer.detector_runs, "weights": inferencer.weights,
            "detections": detections.describe(frames) if hasattr(detections, "describe") else None}


class _Light:
    """A FrameResult without its image (the run keeps every frame's results, not its pixels)."""

    def __init__(self, result):
        for key in ("index", "boxes", "keypoints", "scores", "person_scores", "box_scores", "track_ids"):
            setattr(self, key, getattr(result, key))

    def __len__(self) -> int:
        return len(self.track_ids)


def _length_before_end(path: Path) -> int:
    data = path.read_bytes()
    end = data.rstrip(b"\n").rfind(b"\n")
    return end + 1


# ----- command line -----

def _input_size(text: str) -> tuple[int, int]:
    """``--input-size HEIGHTxWIDTH`` (as the public files name it: 256x192) -> (width, height)."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"must be HEIGHTxWIDTH in pixels, e.g. 256x192 or 384x288; got {text!r}")
    height, width = (int(p) for p in parts)
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        raise argparse.ArgumentTypeError(f"height and width must be positive multiples of 32, got {text!r}")
    return (width, height)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="a video file or a folder of frame images")
    parser.add_argument("--checkpoint", default=None,
                        help="a jmipose checkpoint: <name> of <name>.json + <name>.safetensors (the temporal "
                             "model); optional with --backbone-weights")
    boxes = parser.add_mutually_exclusive_group()
    boxes.add_argument("--detections", default=None,
                       help="COCO-style person detections JSON (image_id or frame_index, bbox, score)")
    boxes.add_argument("--box", action="append", default=None, metavar="X,Y,W,H",
                       help="a person's box on the first frame, tracked afterwards (repeat per person)")
    parser.add_argument("--detector", default=None, choices=("hog",),
                        help="find people with OpenCV's built-in HOG people detector (nothing to download; "
                             "upright people at least about 100 pixels tall at 640 pixels width), linked to "
                             "tracks by IoU; combines with --box")
    parser.add_argument("--detect-every", type=int, default=5, metavar="N",
                        help="run the detector every N frames; people are tracked in between (default 5)")
    parser.add_argument("--max-lost", type=int, default=None, metavar="FRAMES",
                        help="frames a tracked person may stay without a confident pose before its track "
                             "ends (default: one second of video)")
    parser.add_argument("--lost-box", default="velocity", choices=("velocity", "hold"),
                        help="a lost person's crop: its last confident box moved on with its velocity "
                             "(default) or held where it was")
    parser.add_argument("--out", default="predict_out", help="output folder (default: predict_out)")
    parser.add_argument("--backbone-weights", default=None,
                        help="a public pose-HRNet checkpoint (pose-HRNet .pth, mmpose 1.x/0.x, DCPose-style "
                             "whole model, or .safetensors): alone, the single-frame HRNet; with "
                             "--checkpoint, loaded into its backbone")
    parser.add_argument("--input-size", type=_input_size, default=None, metavar="HxW",
                        help="model input HEIGHTxWIDTH, e.g. 256x192 (default: from the checkpoint, else the "
                             "weights file's name, else 256x192 for W32 and 384x288 for W48)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --out from its last written frame")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--backend", default=None, choices=("reference",),
                        help="'reference': eager PyTorch ops instead of the compiled kernels")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--smoothing", default=None, choices=("one_euro",),
                        help="temporal keypoint smoothing")
    parser.add_argument("--flip", action="store_true", help="flip test (twice the work)")
    parser.add_argument("--det-threshold", type=_score, default=0.2, help="minimum detection score (0.2)")
    parser.add_argument("--sequence", type=_sequence, default=None, metavar="N",
                        help="the video's PoseTrack sequence number (default: from a PoseTrack name such as "
                             "003418_mpii_test): image ids 1SSSSSSFFFF, and which boxes of --detections are "
                             "this video's")
    parser.add_argument("--no-video", action="store_true", help="write the JSON only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def _score(text: str) -> float:
    """argparse type of --det-threshold: a number in [0, 1] (NaN refused)."""
    try:
        return check_threshold(float(text), "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}") from None


def _sequence(text: str) -> int:
    """argparse type of --sequence: 0 ... 999999 (``3418`` or ``003418``)."""
    if not text.isdigit() or int(text) >= 1_000_000:
        raise argparse.ArgumentTypeError(f"must be a PoseTrack sequence number (0 to 999999), got {text!r}")
    return int(text)


def _count(number: int, noun: str) -> str:
    """``"1 frame"``, ``"5 frames"``."""
    return f"{number} {noun}" + ("" if number == 1 else "s")


def track_lines(tracks) -> list[str]:
    """The summary's lines about tracked people: frames, frames lost, and why each track ended."""
    lines = []
    for t in tracks or []:
        lost = (f"lost {t['lost_frames']} of them (longest {t['longest_loss']} in a row; written with their low "
                f"scores)" if t["lost_frames"] else "never lost")
        span = f"frames {t['first_frame']}-{t['last_frame']}" if t["frames"] else "never estimated"
        lines.append(f"track {t['track_id']} ({t['source']}): {_count(t['frames'], 'frame')} ({span}), {lost}; "
                     f"ended: {t['ended']}")
    return lines


def main(args: argparse.Namespace) -> int:
    if args.threads is not None:
        import torch

        if args.threads < 1:
            print(f"jmipose predict: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    if args.checkpoint is None and args.backbone_weights is None:
        print("jmipose predict: give --checkpoint (a jmipose checkpoint) or --backbone-weights (a public "
              "pose-HRNet file), or both", file=sys.stderr)
        return 2
    if args.detector is not None and args.detections is not None:
        print("jmipose predict: give either --detections (a file) or --detector, not both", file=sys.stderr)
        return 2
    # errors end in one line through the command line's error contract (jmipose.cli)
    from jmipose.engine.distributed import pick_device

    pick_device(args.device or "auto", what="--device")   # named as the option, before any work
    boxes = [parse_box(text) for text in args.box] if args.box else None
    summary = predict_video(args.video, args.checkpoint, args.out, detections=args.detections,
                            boxes=boxes, detector=args.detector, detect_every=args.detect_every,
                            backbone_weights=args.backbone_weights, input_size=args.input_size,
                            device=args.device, backend=args.backend, batch_size=args.batch_size,
                            smoothing=args.smoothing, flip_test=args.flip,
                            detection_threshold=args.det_threshold, write_video=not args.no_video,
                            progress=not args.no_progress, max_lost=args.max_lost, lost_box=args.lost_box,
                            resume=args.resume, sequence=args.sequence)
    if summary["detections"]:
        print(summary["detections"])
    weights = summary["weights"]
    if weights is not None:
        layout = "tiny HRNet" if weights.model_name == "tiny" else f"HRNet-W{weights.width}"
        print(f"weights: {weights.source}, {weights.scheme} layout, {layout}"
              + (f"; {len(weights.unused)} keys of the whole-model checkpoint not used (its temporal head): "
                 f"{', '.join(weights.unused[:5])}{', ...' if len(weights.unused) > 5 else ''}"
                 if weights.unused else ""))
    steady = summary["fps_after_first"]
    resumed = summary["resumed_from"]
    print(f"{_count(summary['frames'], 'frame')}, {_count(summary['people'], 'pose')}"
          + (f" ({_count(resumed, 'frame')} from the interrupted run, {summary['estimated']} estimated now)"
             if resumed else "")
          + f" in {summary['seconds']:.1f} s: {summary['fps']:.1f} frames/s"
          + (f", {steady:.1f} after the first frame" if steady else "")
          + " (decoding, model, drawing and writing)")
    if summary["detector_runs"]:
        per_run = 1000 * summary["detector_seconds"] / summary["detector_runs"]
        per_frame = 1000 * summary["detector_seconds"] / max(1, summary["estimated"])
        print(f"detector: {_count(summary['detector_runs'], 'run')}, {per_run:.0f} ms each, "
              f"{per_frame:.0f} ms per frame on average")
    for line in track_lines(summary["tracks"]):
        print(line)
    for key in ("video", "json", "stream"):
        if summary[key] is not None:
            print(f"wrote {summary[key]}")
    return 0
