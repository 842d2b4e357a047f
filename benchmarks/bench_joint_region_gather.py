"""pytest-benchmark cases of op A, ``joint_region_gather`` (modulated deformable
convolution): our backends, eager, torch.compile and the other
baselines at the shapes of ``jmipose.bench.region_gather``.

    PYTHONPATH=. pytest benchmarks/bench_joint_region_gather.py --benchmark-only    # the --quick shapes
    JMIPOSE_BENCH_FULL=1 PYTHONPATH=. pytest benchmarks/bench_joint_region_gather.py --benchmark-only

The side-by-side run (interleaved repetitions, peak memory, the targets) is ``jmipose bench``.
"""

import pytest

from jmipose.bench import pytest_view


@pytest.mark.parametrize("case", pytest_view.params("joint_region_gather"))
def test_joint_region_gather(benchmark, case):
    pytest_view.run(benchmark, case)
