"""pytest-benchmark cases of op B, ``joint_motion_attention`` (both cross-attention
directions): our backends, eager, torch.compile and the other
baselines at the shapes of ``jmipose.bench.motion_attention``.

    PYTHONPATH=. pytest benchmarks/bench_joint_motion_attention.py --benchmark-only    # the --quick shapes
    JMIPOSE_BENCH_FULL=1 PYTHONPATH=. pytest benchmarks/bench_joint_motion_attention.py --benchmark-only

The side-by-side run (interleaved repetitions, peak memory, the targets) is ``jmipose bench``.
"""

import pytest

from jmipose.bench import pytest_view


@pytest.mark.parametrize("case", pytest_view.params("joint_motion_attention"))
def test_joint_motion_attention(benchmark, case):
    pytest_view.run(benchmark, case)
