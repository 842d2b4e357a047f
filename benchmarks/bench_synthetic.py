"""Cost of the synthetic benchmark: one 384x288 frame rendered (people, occluders, blur, noise, JPEG),
and a whole 200-frame dataset (4 training + 1 validation videos of 40 frames) with 1 and 2 workers.

    PYTHONPATH=. pytest benchmarks/bench_synthetic.py --benchmark-only -p no:randomly
"""

import shutil

import cv2
import numpy as np
import pytest

from jmipose.data._synthetic_scene import plan_scene, render_frame
from jmipose.data.synthetic import make_synthetic_posetrack


def test_render_one_frame(benchmark):
    scene = plan_scene(np.random.default_rng(0), 384, 288, 40, (1, 4), 0.4)
    counter = iter(range(10**9))
    benchmark(lambda: cv2.imencode(".jpg", render_frame(scene, next(counter) % 40).image))


@pytest.mark.parametrize("workers", [1, 2])
def test_dataset_200_frames(benchmark, tmp_path, workers):
    def build():
        shutil.rmtree(tmp_path / "ds", ignore_errors=True)
        return make_synthetic_posetrack(tmp_path / "ds", n_videos=4, frames=40, val_videos=1, workers=workers)

    summary = benchmark.pedantic(build, rounds=1, iterations=1)
    assert sum(s.frames for s in summary.splits.values()) == 200
