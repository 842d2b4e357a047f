"""Benchmark of the toy op scale_add (proves the benchmark path; removed with the op).

    pytest benchmarks/bench_scale_add.py --benchmark-only
"""

import pytest
import torch

import jmipose
from jmipose.ops.scale_add import scale_add_reference

SIZES = [1 << 16, 1 << 22]


def _live(backend):
    status = jmipose.ops.backends()[backend]
    if not status.live:
        pytest.skip(f"{backend}: {status.reason}")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", ["eager", "cpp"])
def test_scale_add_cpu(benchmark, impl, n):
    a, b = torch.randn(n), torch.randn(n)
    if impl == "eager":
        benchmark(scale_add_reference, a, b, 2.0)
    else:
        _live("cpp")
        benchmark(jmipose.ops.scale_add, a, b, 2.0, backend="cpp")
