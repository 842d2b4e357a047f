"""pytest-benchmark cases of the JM-Pose model (head fps, whole-model fps, one
training step): our backends, eager, torch.compile and the other
baselines at the shapes of ``jmipose.bench.model``.

    PYTHONPATH=. pytest benchmarks/bench_model.py --benchmark-only    # the --quick shapes
    JMIPOSE_BENCH_FULL=1 PYTHONPATH=. pytest benchmarks/bench_model.py --benchmark-only

The side-by-side run (interleaved repetitions, peak memory, the targets) is ``jmipose bench``.
"""

import pytest

from jmipose.bench import pytest_view


@pytest.mark.parametrize("case", pytest_view.params("model"))
def test_model(benchmark, case):
    pytest_view.run(benchmark, case)
