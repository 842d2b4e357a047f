"""jmipose predict: poses on a video (or a folder of frames) with a checkpoint.

    jmipose predict clip.mp4 --checkpoint runs/posetrack18/checkpoints/best --out predictions

Writes ``OUT/<name>.mp4`` (skeletons, boxes and track ids drawn on the frames) and ``OUT/<name>.json``
(PoseTrack18 style: ``images``, ``annotations`` with keypoints, per-joint scores and track ids,
``categories``), and prints frames per second.  Person boxes: ``--detections`` (COCO-style JSON),
``--box x,y,w,h`` (one per person, first frame, then tracked from the keypoints) or, by default,
the whole frame.  Image ids follow PoseTrack18 (``1`` + six sequence digits + four frame digits)
when the name is a PoseTrack sequence name (``000001_mpiinew_test``) or ``--sequence`` gives the
sequence, so that ``jmipose eval-ap`` matches the file to its ground truth; otherwise they are the
frame numbers.  PoseTrack ids in ``--detections`` are matched to the same sequence (a PoseTrack
detections file holds every sequence of a split); the summary says how many boxes were used and how
many were left out and why.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from jmipose.engine.boxes import (POSETRACK_FRAMES, POSETRACK_IMAGE_ID_BASE, check_threshold, load_detections,
                                  parse_box, posetrack_sequence)
from jmipose.joints import KEYPOINT_NAMES, SKELETON

DRAW_THRESHOLD = 0.2   # joints scored at most this are not drawn


def image_id(name: str, frame: int, sequence: int | None = None) -> int:
    """PoseTrack18 image id of frame ``frame`` of sequence ``sequence`` (default: the sequence of a
    PoseTrack name such as ``000001_mpiinew_test``); the frame number without one."""
    sequence = posetrack_sequence(name) if sequence is None else sequence
    if sequence is not None and frame < POSETRACK_FRAMES:
        return POSETRACK_IMAGE_ID_BASE + sequence * POSETRACK_FRAMES + frame
    return frame


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
    score, as ``jmipose eval`` writes them)."""
    annotations = []
    for i in range(len(result)):
        keypoints = result.keypoints[i]
        box_score = float(result.box_scores[i])
        xs, ys = keypoints[:, 0], keypoints[:, 1]
        annotations.append({
            "image_id": image_id(name, result.index, sequence), "track_id": int(result.track_ids[i]), "category_id": 1,
            "keypoints": [float(v) for x, y in keypoints for v in (x, y, 1)],
            "scores": [float(s) * box_score for s in result.scores[i]],
            "score": float(result.person_scores[i]),
            "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()),
                     float(ys.max() - ys.min())],
            "person_box": [float(v) for v in result.boxes[i]],
        })
    return annotations


def _frame_names(reader, count: int, name: str) -> list[str]:
    if reader.is_folder:
        return [f"{name}/{p.name}" for p in reader._files[:count]]  # the frames, in reading order
    return [f"{name}/{i:06d}.jpg" for i in range(count)]


def predict_video(video, checkpoint, out="predict_out", *, detections=None, boxes=None,
                  backbone_weights=None, device=None, backend=None, batch_size: int = 16, smoothing=None,
                  flip_test: bool = False, detection_threshold: float = 0.2, write_video: bool = True,
                  progress: bool = True, inferencer=None, sequence: int | None = None) -> dict:
    """Run the model over ``video`` and write ``out/<name>.mp4`` and ``out/<name>.json``; returns a
    summary (frames, seconds, fps, the paths, and with ``detections`` a line saying which boxes were
    used).  ``sequence``: the video's PoseTrack sequence number (default: from its name), for image ids
    and for matching PoseTrack ids in ``detections``."""
    import cv2

    from jmipose.data.video import VideoReader
    from jmipose.engine.inferencer import Inferencer
    from jmipose.fileio import atomic_write_json, check_output_dir

    check_threshold(detection_threshold, "detection_threshold")
    out = check_output_dir(out, "--out")   # before the work: a file, or a path under a file, fails now
    reader = VideoReader(video, background=True)   # missing or undecodable input fails here
    name = reader.path.stem if not reader.is_folder else reader.path.name
    if sequence is None:
        sequence = posetrack_sequence(name)
    if detections is not None and not isinstance(detections, dict):
        detections = load_detections(detections, detection_threshold, sequence=sequence)
    if hasattr(detections, "beyond") and reader.frame_count and \
            len(detections.beyond(reader.frame_count)) == len(detections):
        raise ValueError(f"{detections.describe(reader.frame_count)}: no box lies on a frame of this video "
                         f"(wrong video, or frame numbering?)")
    if inferencer is None:
        inferencer = Inferencer(checkpoint, device=device, backend=backend, batch_size=batch_size,
                                smoothing=smoothing, flip_test=flip_test, backbone_weights=backbone_weights)
    fps = reader.fps or 25.0
    results = inferencer(reader, detections=detections, boxes=boxes, detection_threshold=detection_threshold,
                         fps=fps, sequence=sequence)
    video_path, temporary = out / f"{name}.mp4", out / f".{name}.partial.mp4"
    writer = None
    annotations, frames = [], 0
    first_done = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=reader.frame_count, desc=f"predict {name}", unit="frame", file=sys.stderr)
    started = time.perf_counter()
    try:
        for result in results:
            if write_video:
                if writer is None:
                    writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), float(fps),
                                             reader.size)
                    if not writer.isOpened():
                        raise RuntimeError(f"OpenCV cannot write an mp4 to {temporary}")
                writer.write(draw_result(result))
            annotations += posetrack_annotations(result, name, sequence)
            frames += 1
            if frames == 1:
                first_done = time.perf_counter()
            if bar is not None:
                bar.update(1)
    except BaseException:
        if writer is not None:
            writer.release()
            writer = None
        temporary.unlink(missing_ok=True)   # no half-written video left behind
        raise
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.release()
        reader.close()
    finished = time.perf_counter()
    seconds = finished - started
    # the first frame also pays for warm-up (first convolutions, library loads, the first decodes)
    steady = (frames - 1) / (finished - first_done) if frames > 1 and finished > first_done else None
    if write_video and frames:
        os.replace(temporary, video_path)
    names = _frame_names(reader, frames, name)
    images = [{"id": image_id(name, t, sequence), "frame_id": image_id(name, t, sequence), "file_name": names[t],
               "nframes": frames, "is_labeled": True, "width": reader.width, "height": reader.height}
              for t in range(frames)]
    categories = [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(KEYPOINT_NAMES),
                   "skeleton": [[a + 1, b + 1] for a, b in SKELETON]}]
    json_path = out / f"{name}.json"
    atomic_write_json(json_path, {"images": images, "annotations": annotations, "categories": categories},
                      indent=None)
    return {"name": name, "frames": frames, "seconds": seconds, "fps": frames / seconds if seconds else 0.0,
            "fps_after_first": steady,
            "people": len(annotations), "json": json_path, "video": video_path if write_video else None,
            "backbone_passes": inferencer.backbone_passes,
            "detections": detections.describe(frames) if hasattr(detections, "describe") else None}


# ----- command line -----

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="a video file or a folder of frame images")
    parser.add_argument("--checkpoint", required=True, help="<name> of <name>.json + <name>.safetensors")
    boxes = parser.add_mutually_exclusive_group()
    boxes.add_argument("--detections", default=None,
                       help="COCO-style person detections JSON (image_id or frame_index, bbox, score)")
    boxes.add_argument("--box", action="append", default=None, metavar="X,Y,W,H",
                       help="a person's box on the first frame, tracked afterwards (repeat per person)")
    parser.add_argument("--out", default="predict_out", help="output folder (default: predict_out)")
    parser.add_argument("--backbone-weights", default=None,
                        help="public pose-HRNet weights (.pth state dict or .safetensors) for the backbone")
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


def main(args: argparse.Namespace) -> int:
    if args.threads is not None:
        import torch

        if args.threads < 1:
            print(f"jmipose predict: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    # errors end in one line through the command line's error contract (jmipose.cli)
    from jmipose.engine.distributed import pick_device

    pick_device(args.device or "auto", what="--device")   # named as the option, before any work
    boxes = [parse_box(text) for text in args.box] if args.box else None
    summary = predict_video(args.video, args.checkpoint, args.out, detections=args.detections,
                            boxes=boxes, backbone_weights=args.backbone_weights, device=args.device,
                            backend=args.backend, batch_size=args.batch_size, smoothing=args.smoothing,
                            flip_test=args.flip, detection_threshold=args.det_threshold,
                            write_video=not args.no_video, progress=not args.no_progress,
                            sequence=args.sequence)
    if summary["detections"]:
        print(summary["detections"])
    steady = summary["fps_after_first"]
    print(f"{summary['frames']} frames, {summary['people']} poses in {summary['seconds']:.1f} s: "
          f"{summary['fps']:.1f} frames/s" + (f", {steady:.1f} after the first frame" if steady else "")
          + " (decoding, model, drawing and writing)")
    for key in ("video", "json"):
        if summary[key] is not None:
            print(f"wrote {summary[key]}")
    return 0
