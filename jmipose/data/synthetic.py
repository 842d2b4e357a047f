"""The synthetic video benchmark: labelled multi-person videos written in PoseTrack18 format.

``make_synthetic_posetrack`` writes a dataset that the PoseTrack loaders, the trainer and the
evaluator read like the real one::

    out_dir/
      images/{train,val}/<seq>/000000.jpg ...        frames
      mask/{train,val}/<seq>/000000.jpg ...          ignore-region masks (white = ignore)
      annotations/{train,val}/<seq>.json             one PoseTrack18 JSON per sequence
      annotations/{train,val}_human_detections.json  noisy person boxes, COCO detection format
      annotations/{train,val}_degradations.json      per image: degradations, strengths, ``hard``
      synthetic.json                                 the arguments and counts (written last)

Each video has 1-4 articulated people (17 PoseTrack18 joints, human limb proportions and joint
limits) walking, waving, jumping and turning in front of a textured background. Short degradation
events hit one or two frames at a time while the frames around them stay clean: camera shake
(motion blur; the labels refer to the instant the shutter opens, so the joints lie at one end of
the streak and the frame alone cannot tell which), defocus, and objects passing in front of a joint
region; people also overlap and leave the frame edge. Occluded joints keep their coordinates with
visibility 0 and joints outside the image are unlabelled (0, 0, 0), as in PoseTrack. A frame is
``hard`` when a degradation of strength >= 0.5 applies to it (truncation excepted); by default about
40 % of frames are. Output is byte-identical for the same arguments whatever the number of worker
processes (on one machine: OpenCV's SIMD paths and numpy's generators may differ across builds).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from jmipose.data._synthetic_scene import HARD_THRESHOLD, HARD_TYPES, plan_scene, render_frame
from jmipose.data._synthetic_sheet import render_contact_sheet
from jmipose.formats.posetrack import CATEGORY, posetrack_image_id

__all__ = ["make_synthetic_posetrack", "synthetic_video", "render_contact_sheet", "hard_image_ids",
           "write_frame_subset", "SyntheticPoseTrack", "SyntheticSplit", "SyntheticVideo", "CATEGORY"]

# Bumped whenever the generator's output changes, so a dataset cached by an older version is rebuilt.
# 3: sequences named <id>_mpii_<split> (poseval's pattern) with an "info" block saying "synthetic".
FORMAT_VERSION = 3
SPLITS = ("train", "val")
_SPLIT_BASE = {"train": 100000, "val": 200000}     # video ids: train 100000.., val 200000..


@dataclass(frozen=True)
class SyntheticSplit:
    name: str
    annotations: Path          # folder of per-sequence PoseTrack18 JSONs
    images: Path
    detections: Path           # COCO detection results JSON
    degradations: Path
    sequences: tuple
    frames: int
    labelled_frames: int
    hard_frames: int           # among the labelled frames


@dataclass(frozen=True)
class SyntheticPoseTrack:
    root: Path
    splits: dict               # name -> SyntheticSplit
    seconds: float             # generation time (0 when an existing dataset was reused)


@dataclass(frozen=True)
class SyntheticVideo:
    path: Path
    fps: float
    size: tuple                # (width, height)
    people: list               # per frame: [{"track_id", "keypoints" [17, 3] list, "bbox" xywh}]
    hard: list                 # per frame: bool


def _check_int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def _check_size(size):
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(round(size * 4 / 3)), int(size))
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        raise ValueError(f"size must be (width, height) or an int height, got {size!r}")
    width = _check_int("size[0] (width)", size[0], 96, 4096)
    height = _check_int("size[1] (height)", size[1], 96, 4096)
    return width, height


def _check_people(people):
    if isinstance(people, (int, np.integer)) and not isinstance(people, bool):
        people = (people, people)
    if not (isinstance(people, (tuple, list)) and len(people) == 2):
        raise ValueError(f"people must be an int or a (min, max) pair, got {people!r}")
    low = _check_int("people[0]", people[0], 1, 6)
    high = _check_int("people[1]", people[1], low, 6)
    return low, high


def _check_fraction(hard_fraction):
    if not isinstance(hard_fraction, (int, float)) or not 0.0 <= float(hard_fraction) <= 0.5:
        raise ValueError(f"hard_fraction must be a number in [0, 0.5] (events need clean neighbours), "
                         f"got {hard_fraction!r}")
    return float(hard_fraction)


def _r(value, digits=2):
    return round(float(value), digits)


# poseval (the PoseTrack benchmark's evaluator) parses a sequence's name as <6-digit id>_<source>_<split>
# and knows the sources mpii, bonn and mpiinew; any other name fails its converter.  The synthetic
# videos take "mpii" (image ids: jmipose.formats.posetrack's rule); the sequence JSON's "info" says
# they are synthetic.
SEQUENCE_SOURCE = "mpii"


def sequence_name(vid_id: str, split: str) -> str:
    """The PoseTrack-style name of synthetic video ``vid_id`` (six digits) of ``split``."""
    return f"{vid_id}_{SEQUENCE_SOURCE}_{split}"


def _image_id(vid_id: str, frame: int) -> int:
    image_id = posetrack_image_id(int(vid_id), frame)
    if image_id is None:   # the arguments' checks keep video ids to six digits and frames to four
        raise ValueError(f"video {vid_id} frame {frame} has no PoseTrack18 image id")
    return image_id


def _sequence_json(split, seq, vid_id, frames, size, regions, records, label_every):
    width, height = size
    images, annotations = [], []
    regions_x = [[int(round(x)) for x in poly[:, 0]] for poly in regions]
    regions_y = [[int(round(y)) for y in poly[:, 1]] for poly in regions]
    for t, frame in enumerate(records):
        image_id = _image_id(vid_id, t)
        labelled = t % label_every == 0
        images.append({
            "has_no_densepose": True, "is_labeled": labelled,
            "file_name": f"images/{split}/{seq}/{t:06d}.jpg", "nframes": frames, "frame_id": image_id,
            "vid_id": vid_id, "ignore_regions_y": regions_y, "ignore_regions_x": regions_x, "id": image_id,
            "width": width, "height": height,
            "mask_file": f"mask/{split}/{seq}/{t:06d}.jpg",
        })
        if not labelled:
            continue
        for k, person in enumerate(sorted(frame.persons, key=lambda p: p.track_id)):
            keypoints = []
            for x, y, v in person.keypoints:
                keypoints += [0, 0, 0] if (x, y, v) == (0, 0, 0) else [_r(x), _r(y), int(v)]
            annotations.append({
                "bbox_head": [int(v) for v in person.bbox_head], "keypoints": keypoints,
                "track_id": person.track_id, "image_id": image_id, "bbox": [_r(v) for v in person.bbox],
                "scores": [], "category_id": 1, "id": image_id * 100 + k, "iscrowd": False,
                "num_keypoints": int(sum(1 for v in person.keypoints[:, 2] if v > 0)),
            })
    info = {"description": f"jmipose synthetic video {seq} (rendered figures, not PoseTrack footage)",
            "synthetic": True, "generator": "jmipose.data.synthetic", "version": FORMAT_VERSION}
    return {"info": info, "categories": [CATEGORY], "images": images, "annotations": annotations}


def _degradation_json(record):
    out = {}
    for key, value in record.items():
        if key == "polygon":
            out[key] = [[_r(x), _r(y)] for x, y in value]
        elif key == "offset":
            out[key] = [_r(v) for v in value]
        elif isinstance(value, float):
            out[key] = _r(value, 3)
        else:
            out[key] = value
    return out


def _render_video(job):
    """Render one video to disk (images, masks); return its JSON pieces. Runs in a worker."""
    root, split, index, frames, size, people, hard_fraction, label_every, quality, seed = job
    vid_id = f"{_SPLIT_BASE[split] + index:06d}"
    seq = sequence_name(vid_id, split)
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    scene = plan_scene(rng, size[0], size[1], frames, people, hard_fraction)
    image_dir, mask_dir = root / "images" / split / seq, root / "mask" / split / seq
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((size[1], size[0]), np.uint8)
    for poly in scene.ignore_regions:
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 255)
    mask_bytes = cv2.imencode(".jpg", mask, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    records, detections, labels = [], [], {}
    for t in range(frames):
        frame = render_frame(scene, t)
        ok, encoded = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {seq} frame {t}")
        (image_dir / f"{t:06d}.jpg").write_bytes(encoded.tobytes())
        (mask_dir / f"{t:06d}.jpg").write_bytes(mask_bytes)
        image_id = _image_id(vid_id, t)
        for box, score in sorted(frame.detections, key=lambda d: -d[1]):
            detections.append({"bbox": [_r(v) for v in box], "category_id": 1, "image_id": image_id,
                               "score": _r(score, 4)})
        labels[str(image_id)] = {
            "sequence": seq, "frame_index": t, "is_labeled": t % label_every == 0, "hard": bool(frame.hard),
            "degradations": [_degradation_json(r) for r in frame.degradations],
        }
        frame.image = None        # keep only the annotations in memory
        records.append(frame)
    tracks = {str(p.track_id): {"height": _r(p.motion.height), "actions": list(p.motion.actions)}
              for p in sorted(scene.people, key=lambda p: p.track_id)}
    seq_json = _sequence_json(split, seq, vid_id, frames, size, scene.ignore_regions, records, label_every)
    return seq, seq_json, detections, labels, {"vid_id": vid_id, "tracks": tracks,
                                               "ignore_regions": len(scene.ignore_regions)}


def _worker_init():
    cv2.setNumThreads(1)      # one video per process already uses every core


def _dump(path, obj, indent=None):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=indent, separators=None if indent else (",", ":")) + "\n")
    os.replace(tmp, path)


def _prepare_out_dir(root, arguments, overwrite):
    """Return the summary of an identical existing dataset, or None after making room."""
    marker = root / "synthetic.json"
    if marker.is_file():
        existing = json.loads(marker.read_text())
        stale = existing.get("version") != FORMAT_VERSION        # ours, by an older generator: rebuild
        if existing.get("arguments") == arguments and not stale and not overwrite:
            return existing
        if existing.get("arguments") == arguments and stale:
            overwrite = True
        if not overwrite:
            raise FileExistsError(f"out_dir {root} holds a synthetic dataset made with other arguments "
                                  f"({existing.get('arguments')}); pass overwrite=True to replace it")
    if root.is_dir():
        ours = {"images", "mask", "annotations", "synthetic.json"}
        entries = {p.name for p in root.iterdir()}
        if entries and not overwrite:
            raise FileExistsError(f"out_dir {root} is not empty and has no synthetic.json (an interrupted "
                                  f"run?); pass overwrite=True to clear it or choose a new folder")
        if entries - ours:
            raise FileExistsError(f"out_dir {root} holds files that are not a synthetic dataset "
                                  f"({sorted(entries - ours)[:5]}); refusing to overwrite it")
        for name in entries:
            path = root / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return None


def _summary(root, record, seconds):
    splits = {}
    for name, info in record["splits"].items():
        splits[name] = SyntheticSplit(
            name, root / "annotations" / name, root / "images" / name,
            root / "annotations" / f"{name}_human_detections.json",
            root / "annotations" / f"{name}_degradations.json", tuple(info["sequences"]), info["frames"],
            info["labelled_frames"], info["hard_frames"])
    return SyntheticPoseTrack(root, splits, seconds)


def make_synthetic_posetrack(out_dir, n_videos: int = 12, frames: int = 40, size=(384, 288), seed: int = 0, *,
                             val_videos: int | None = None, people=(1, 4), hard_fraction: float = 0.4,
                             label_every: int = 1, jpeg_quality: int = 90, workers: int | None = None,
                             overwrite: bool = False) -> SyntheticPoseTrack:
    """Write the synthetic benchmark to ``out_dir`` in PoseTrack18 format (see the module doc).

    n_videos: training videos; val_videos: validation videos (default n_videos // 3, at least 1);
    frames: frames per video; size: (width, height) in pixels, or an int height (4:3);
    people: people per video, an int or a (min, max) pair; hard_fraction: share of frames hit by a
    degradation event, in [0, 0.5]; label_every: every k-th frame is labelled (1: all, 4: as in
    PoseTrack's validation set); workers: processes (default: the CPU count, capped by the number
    of videos). An existing dataset made with the same arguments is reused as it is."""
    n_videos = _check_int("n_videos", n_videos, 1, 99999)
    if val_videos is None:
        val_videos = max(1, n_videos // 3)
    val_videos = _check_int("val_videos", val_videos, 1, 99999)
    frames = _check_int("frames", frames, 1, 9999)
    width, height = _check_size(size)
    seed = _check_int("seed", seed, 0)
    people = _check_people(people)
    hard_fraction = _check_fraction(hard_fraction)
    label_every = _check_int("label_every", label_every, 1, frames)
    jpeg_quality = _check_int("jpeg_quality", jpeg_quality, 50, 100)
    if workers is not None:
        workers = _check_int("workers", workers, 1)
    arguments = {"n_videos": n_videos, "val_videos": val_videos, "frames": frames, "size": [width, height],
                 "seed": seed, "people": list(people), "hard_fraction": hard_fraction,
                 "label_every": label_every, "jpeg_quality": jpeg_quality}
    root = Path(out_dir)
    existing = _prepare_out_dir(root, arguments, overwrite)
    if existing is not None:
        return _summary(root, existing, 0.0)
    start = time.perf_counter()
    counts = {"train": n_videos, "val": val_videos}
    jobs = [(root, split, i, frames, (width, height), people, hard_fraction, label_every, jpeg_quality, seed)
            for split in SPLITS for i in range(counts[split])]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers > 1:
        # Never fork: a parent that has already run OpenCV or torch (OpenMP) thread pools leaves
        # their locks held in a forked child, which then hangs for ever (seen in the test suite).
        # A fork server starts clean; it imports this module once and forks workers from there.
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
        else:
            context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, context, _worker_init) as pool:
            results = list(pool.map(_render_video, jobs))
    else:
        results = [_render_video(job) for job in jobs]
    record = {"generator": "jmipose.data.synthetic", "version": FORMAT_VERSION, "arguments": arguments,
              "splits": {}}
    for split in SPLITS:
        videos = [result for job, result in zip(jobs, results) if job[1] == split]
        record["splits"][split] = _write_split(root, split, videos)
    _dump(root / "synthetic.json", record, indent=2)       # last: it marks the dataset complete
    return _summary(root, record, time.perf_counter() - start)


def _write_split(root, split, results):
    """The split's JSON files from its videos' pieces; returns its counts for synthetic.json."""
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    detections, labels, sequences = [], {}, {}
    for seq, seq_json, seq_detections, seq_labels, seq_info in results:
        _dump(root / "annotations" / split / f"{seq}.json", seq_json)
        detections += seq_detections
        labels.update(seq_labels)
        sequences[seq] = seq_info
    _dump(root / "annotations" / f"{split}_human_detections.json", detections)
    _dump(root / "annotations" / f"{split}_degradations.json",
          {"version": FORMAT_VERSION, "split": split, "hard_threshold": HARD_THRESHOLD,
           "hard_types": list(HARD_TYPES), "sequences": sequences, "images": labels})
    labelled = [v for v in labels.values() if v["is_labeled"]]
    return {"sequences": list(sequences), "frames": len(labels), "labelled_frames": len(labelled),
            "hard_frames": sum(v["hard"] for v in labelled)}


def hard_image_ids(dataset_dir, split: str, hard: bool = True) -> set:
    """Image ids of the labelled frames that are hard (or, with hard=False, easy)."""
    path = Path(dataset_dir) / "annotations" / f"{split}_degradations.json"
    if not path.is_file():
        raise FileNotFoundError(f"no degradation labels for split {split!r}: {path} is missing")
    images = json.loads(path.read_text())["images"]
    return {int(k) for k, v in images.items() if v["is_labeled"] and v["hard"] == hard}


def write_frame_subset(dataset_dir, split: str, out_dir, hard: bool = True) -> Path:
    """Copy the split's ground-truth JSONs to ``out_dir`` keeping labels only on hard (or easy)
    frames; the other frames become unlabelled, so any PoseTrack evaluator scores the subset with
    the same prediction files."""
    keep = hard_image_ids(dataset_dir, split, hard)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((Path(dataset_dir) / "annotations" / split).glob("*.json")):
        data = json.loads(path.read_text())
        for image in data["images"]:
            image["is_labeled"] = bool(image["is_labeled"] and image["id"] in keep)
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        _dump(out / path.name, data)
    return out


def synthetic_video(path, frames: int = 30, size=(384, 288), seed: int = 0, *, people=(1, 3),
                    fps: float = 25.0, hard_fraction: float = 0.4) -> SyntheticVideo:
    """Write one synthetic video as an mp4 (MPEG-4 part 2) and return its ground truth."""
    frames = _check_int("frames", frames, 1, 9999)
    width, height = _check_size(size)
    seed = _check_int("seed", seed, 0)
    people = _check_people(people)
    hard_fraction = _check_fraction(hard_fraction)
    if not isinstance(fps, (int, float)) or not 1 <= fps <= 240:
        raise ValueError(f"fps must be a number in [1, 240], got {fps!r}")
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"path must end in .mp4, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    scene = plan_scene(np.random.default_rng([seed, 2]), width, height, frames, people, hard_fraction)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an mp4 to {path} (no MPEG-4 encoder in this build?)")
    all_people, hard = [], []
    try:
        for t in range(frames):
            frame = render_frame(scene, t)
            writer.write(frame.image)
            all_people.append([{"track_id": p.track_id, "keypoints": p.keypoints.tolist(),
                                "bbox": [float(v) for v in p.bbox]} for p in frame.persons])
            hard.append(bool(frame.hard))
    finally:
        writer.release()
    return SyntheticVideo(path, float(fps), (width, height), all_people, hard)
