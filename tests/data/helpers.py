"""Small PoseTrack-format datasets written into a temporary folder (frames with OpenCV, JSON by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

IMAGE_SIZE = (160, 120)   # width, height of the fixture frames

# A standing person inside the 160x120 frame, PoseTrack18 order, ears unlabelled.
PERSON_JOINTS = [
    (80, 20, 1), (80, 32, 1), (80, 10, 1), (0, 0, 0), (0, 0, 0),
    (70, 36, 1), (90, 36, 1), (64, 52, 1), (96, 52, 1), (60, 66, 1), (100, 66, 1),
    (74, 70, 1), (86, 70, 1), (72, 88, 1), (88, 88, 1), (71, 106, 1), (89, 106, 1),
]
PERSON_BOX = [55.0, 5.0, 50.0, 105.0]


def frame_value(number: int) -> int:
    """The grey level of fixture frame ``number`` (tests recover which frame went where)."""
    return 20 + 30 * number


def write_frame(path: Path, value: int | None = None, texture_seed: int | None = None,
                size=IMAGE_SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if texture_seed is not None:
        image = np.random.default_rng(texture_seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        image = cv2.GaussianBlur(image, (5, 5), 0)
    else:
        image = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    # PNG keeps the grey levels exact; JPEG is what PoseTrack ships, so .jpg paths are written as JPEG.
    params = [cv2.IMWRITE_JPEG_QUALITY, 100] if path.suffix == ".jpg" else []
    assert cv2.imwrite(str(path), image, params)


def person(image_id: int, track_id: int = 0, joints=PERSON_JOINTS, bbox=PERSON_BOX, **extra) -> dict:
    keypoints = [float(v) for joint in joints for v in joint]
    entry = {"image_id": image_id, "keypoints": keypoints, "track_id": track_id, "category_id": 1,
             "bbox": list(bbox), "bbox_head": [72.0, 5.0, 16.0, 27.0]}
    entry.update(extra)
    return entry


def image_id_of(sequence: str, number: int) -> int:
    return 10_000_000_000 + int(sequence.split("_")[0]) * 10_000 + number


def write_pt18(root: Path, sequence: str = "000100_test", nframes: int = 6, on_disk=None, labelled=(0, 3, 5),
               disk_width: int = 6, split: str = "val", people=None, textured: bool = False,
               annotation_name: str | None = None, size=IMAGE_SIZE) -> Path:
    """One PoseTrack18 sequence: ``nframes`` frames (``on_disk`` of them written, default all),
    frames ``labelled`` with one person each (or ``people[number]``); returns the JSON path."""
    on_disk = range(nframes) if on_disk is None else on_disk
    for number in on_disk:
        write_frame(root / "images" / split / sequence / f"{number:0{disk_width}d}.jpg",
                    value=frame_value(number) if not textured else None,
                    texture_seed=7 if textured else None, size=size)
    images, annotations = [], []
    for number in range(nframes):
        image_id = image_id_of(sequence, number)
        images.append({"id": image_id, "file_name": f"images/{split}/{sequence}/{number:06d}.jpg",
                       "is_labeled": number in labelled, "nframes": nframes, "frame_id": image_id,
                       "vid_id": sequence.split("_")[0], "width": size[0], "height": size[1],
                       "ignore_regions_x": [[0, 10, 10]], "ignore_regions_y": [[0, 0, 10]]})
        if number in labelled:
            for k, entry in enumerate((people or {}).get(number, [person(image_id)])):
                annotations.append({**entry, "image_id": image_id, "id": image_id * 100 + k})
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [
            {
                "id": 1,
                "name": "person",
                "keypoints": [
                    "nose",
                    "head_bottom",
                    "head_top",
                    "left_ear",
                    "right_ear",
                    "left_shoulder",
                    "right_shoulder",
                    "left_elbow",
                    "right_elbow",
                    "left_wrist",
                    "right_wrist",
                    "left_hip",
                    "right_hip",
                    "left_knee",
                    "right_knee",
                    "left_ankle",
                    "right_ankle",
                ],
            }
        ],
    }
    path = root / "annotations" / split / (annotation_name or f"{sequence}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def decoded_frames(path: Path) -> list[np.ndarray]:
    """Every frame OpenCV decodes from the video file ``path`` (BGR), in order."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def pixel_value(normalized_crop, x: int, y: int) -> float:
    """Grey level (0..255) of a normalized [3, H, W] crop at (x, y), from its first channel."""
    return float((normalized_crop[0, y, x] * 0.229 + 0.485) * 255.0)
