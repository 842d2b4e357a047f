"""Cost of the data path: one 5-frame PoseTrack sample at 1920x1080, with and without the decoded-frame
cache, and streaming a video with and without the background decoder.

    PYTHONPATH=. pytest benchmarks/bench_data.py --benchmark-only -p no:randomly
"""

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from jmipose.data import PoseTrackVideoDataset, VideoReader

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "posetrack18"
FRAME = SHARED / "images/val/009473_mpii_test/000000.jpg"


@pytest.fixture(scope="module")
def full_hd_sequence(tmp_path_factory):
    """A 5-frame 1920x1080 sequence (the real frame repeated) with the real annotation of its 2 people."""
    if not FRAME.exists():
        pytest.skip(f"shared data missing: {FRAME}")
    root = tmp_path_factory.mktemp("pt18")
    folder = root / "images/val/009473_mpii_test"
    folder.mkdir(parents=True)
    for number in range(5):
        shutil.copy(FRAME, folder / f"{number:06d}.jpg")
    data = json.loads((SHARED / "annotations/val/009473_mpii_test.json").read_text())
    data["images"][0]["file_name"] = "images/val/009473_mpii_test/000002.jpg"
    data["images"][0]["nframes"] = 5
    (root / "annotations/val").mkdir(parents=True)
    (root / "annotations/val/seq.json").write_text(json.dumps(data))
    return root


@pytest.mark.parametrize("cache", [0, None], ids=["no-cache", "window-cache"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_sample_load(benchmark, full_hd_sequence, split, cache):
    dataset = PoseTrackVideoDataset(full_hd_sequence, "annotations/val", split, frame_cache_size=cache)
    counter = iter(range(10**9))
    # the two people of the frame in turn, as an evaluation pass reads them
    benchmark(lambda: dataset[next(counter) % len(dataset)])


@pytest.fixture(scope="module")
def video_720p(tmp_path_factory):
    """60 frames of 1280x720 texture panning right, written with OpenCV (mp4v)."""
    path = tmp_path_factory.mktemp("video") / "pan.mp4"
    base = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8), (9, 9), 0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (1280, 720))
    for index in range(60):
        writer.write(np.roll(base, 5 * index, axis=1))
    writer.release()
    return path


@pytest.mark.parametrize("background", [False, True], ids=["foreground", "background"])
def test_video_stream_with_consumer_work(benchmark, video_720p, background):
    """Windows of a 60-frame 720p video while the consumer spends 10 ms per window (a stand-in for
    the model): the background decoder should hide the decoding time."""

    def run():
        with VideoReader(video_720p, background=background) as reader:
            for _ in reader.windows((-2, -1, 1, 2)):
                time.sleep(0.01)

    benchmark.pedantic(run, rounds=3, iterations=1)
