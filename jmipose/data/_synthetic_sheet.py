"""Contact sheet of a synthetic dataset: windows t-2 .. t+2 around hard frames and a row of clean
frames, ground-truth skeletons drawn, read back from the written files only."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from jmipose.data._synthetic_scene import HARD_THRESHOLD, HARD_TYPES
from jmipose.joints import SKELETON


def _draw_skeleton(image, annotations, scale):
    for ann in annotations:
        kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        labelled = (kp[:, 0] != 0) | (kp[:, 1] != 0) | (kp[:, 2] != 0)
        for a, b in SKELETON:
            if labelled[a] and labelled[b]:
                p = tuple(np.round(kp[a, :2] * scale).astype(int))
                q = tuple(np.round(kp[b, :2] * scale).astype(int))
                cv2.line(image, p, q, (0, 0, 0), 2, cv2.LINE_AA)
                cv2.line(image, p, q, (255, 255, 255), 1, cv2.LINE_AA)
        for j in np.flatnonzero(labelled):
            centre = tuple(np.round(kp[j, :2] * scale).astype(int))
            if kp[j, 2] > 0:
                cv2.circle(image, centre, 3, (0, 0, 0), -1, cv2.LINE_AA)
                cv2.circle(image, centre, 2, (60, 255, 60), -1, cv2.LINE_AA)
            else:          # occluded: coordinates kept, visibility 0
                cv2.circle(image, centre, 4, (0, 0, 0), 2, cv2.LINE_AA)
                cv2.circle(image, centre, 4, (40, 40, 255), 1, cv2.LINE_AA)


def _tile(root, image_info, annotations, label, tile_width):
    image = cv2.imread(str(root / image_info["file_name"]))
    if image is None:
        raise FileNotFoundError(f"cannot read frame {root / image_info['file_name']}")
    scale = tile_width / image.shape[1]
    image = cv2.resize(image, (tile_width, int(round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    _draw_skeleton(image, annotations, scale)
    for record in label["degradations"]:
        if record["type"] == "occluder":
            poly = np.round(np.asarray(record["polygon"]) * scale).astype(np.int32)
            cv2.polylines(image, [poly], True, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def _caption(image, text, hard):
    bar = np.full((22, image.shape[1], 3), (40, 40, 200) if hard else (60, 60, 60), np.uint8)
    cv2.putText(bar, text, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], 0)


def _hard_windows(sequences, labels, count):
    """Up to ``count`` (sequence, t): hard frames with clean frames at t-2 and t+2, each adding a
    degradation kind not shown yet."""
    windows, seen_kinds = [], set()
    for seq, (images, _) in sequences.items():
        for t in range(2, len(images) - 2):
            label = labels[str(images[t]["id"])]
            kinds = {r["type"] for r in label["degradations"]
                     if r["strength"] >= HARD_THRESHOLD and r["type"] in HARD_TYPES}
            clean_neighbours = not any(labels[str(images[t + d]["id"])]["hard"] for d in (-2, 2))
            if label["hard"] and clean_neighbours and not kinds <= seen_kinds:
                windows.append((seq, t))
                seen_kinds |= kinds
                if len(windows) == count:
                    return windows
    return windows


def render_contact_sheet(dataset_dir, out_png, split: str = "val", *, rows: int = 4,
                         tile_width: int = 320) -> Path:
    """A PNG grid: each row is a window t-2 .. t+2 around a hard frame (one row per degradation
    kind found), the last row clean frames; ground-truth skeletons drawn (filled dots visible,
    red rings occluded), occluder outlines in white, captions name the degradations."""
    root = Path(dataset_dir)
    for name, value, low, high in (("rows", rows, 2, 12), ("tile_width", tile_width, 64, 1024)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    labels_path = root / "annotations" / f"{split}_degradations.json"
    if not labels_path.is_file():
        raise FileNotFoundError(f"{root} is not a synthetic dataset with a {split!r} split: "
                                f"{labels_path} is missing")
    labels = json.loads(labels_path.read_text())["images"]
    sequences = {}
    for path in sorted((root / "annotations" / split).glob("*.json")):
        data = json.loads(path.read_text())
        by_image = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        sequences[path.stem] = (data["images"], by_image)
    if not sequences:
        raise FileNotFoundError(f"no annotations for split {split!r} under {root / 'annotations' / split}")
    windows = _hard_windows(sequences, labels, rows - 1)
    lines = []
    for seq, t in windows:
        images, by_image = sequences[seq]
        tiles = []
        for d in range(-2, 3):
            info = images[t + d]
            label = labels[str(info["id"])]
            text = f"t{d:+d}" if d else "t"
            strong = [f"{r['type']} {r['strength']:.2f}" for r in label["degradations"]
                      if r["strength"] >= HARD_THRESHOLD and r["type"] in HARD_TYPES]
            text += (": " + ", ".join(strong)) if strong else ""
            tile = _tile(root, info, by_image.get(info["id"], []), label, tile_width)
            tiles.append(_caption(tile, text, label["hard"]))
        lines.append(np.concatenate(tiles, 1))
    easy = [(seq, info) for seq, (images, _) in sequences.items() for info in images
            if info["is_labeled"] and not labels[str(info["id"])]["hard"]]
    picks = [easy[int(i)] for i in np.linspace(0, len(easy) - 1, 5)] if easy else []
    if picks:
        tiles = [_caption(_tile(root, info, sequences[seq][1].get(info["id"], []), labels[str(info["id"])],
                                tile_width), f"clean {seq[:6]}/{info['file_name'][-10:-4]}", False)
                 for seq, info in picks]
        lines.append(np.concatenate(tiles, 1))
    if not lines:
        raise ValueError(f"split {split!r} of {root} has no frames to show")
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 4), (0, width - line.shape[1]), (0, 0))) for line in lines]
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.concatenate(lines, 0)):
        raise OSError(f"cannot write the contact sheet to {out}")
    return out
