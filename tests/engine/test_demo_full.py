"""The full ``jmipose demo`` (opt-in, marker slow: about 5 minutes per seed on 2 cores): JM-Pose beats
the single-frame baseline by at least 3 AP Total on the validation frames, and by more on the hard
frames, for every seed in ``JMIPOSE_DEMO_SEEDS`` (default ``0,1,2``, the seeds the README reports)."""

from __future__ import annotations

import os

import pytest

SEEDS = [int(s) for s in os.environ.get("JMIPOSE_DEMO_SEEDS", "0,1,2").split(",") if s.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_jmpose_beats_the_baseline(seed, tmp_path):
    from jmipose.engine.demo import run_demo

    results = run_demo(tmp_path / f"seed{seed}", seed=seed, progress=False)
    gain = results["jmpose"]["Total"] - results["baseline"]["Total"]
    hard = results["hard_frames"]
    hard_gain = hard["jmpose"]["Total"] - hard["baseline"]["Total"]
    assert gain >= 3.0, f"seed {seed}: JM-Pose {results['jmpose']['Total']:.1f} vs baseline " \
                        f"{results['baseline']['Total']:.1f} AP Total (gain {gain:+.1f} < 3)"
    assert hard_gain > gain, f"seed {seed}: hard-frame gain {hard_gain:+.1f} is not above the gain on all " \
                             f"frames {gain:+.1f}"
