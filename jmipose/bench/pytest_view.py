"""The benchmark cases as pytest-benchmark tests: ``benchmarks/bench_<op>.py`` holds
``test_<op> = benchmark_test("<op>")`` for op A, op B and the model.

    PYTHONPATH=. pytest benchmarks/bench_joint_region_gather.py --benchmark-only   # the --quick shapes
    JMIPOSE_BENCH_FULL=1 PYTHONPATH=. pytest benchmarks/bench_model.py --benchmark-only

pytest-benchmark times each implementation on its own (rounds back to back) and keeps its own
statistics and history (``--benchmark-autosave``, ``--benchmark-compare``); ``jmipose bench`` is
the side-by-side run with interleaved rounds, peak memory and the targets.  Environment:
``JMIPOSE_BENCH_FULL=1`` selects every shape (default: the ``--quick`` cases plus their
torch.compile baselines), ``JMIPOSE_BENCH_DEVICE`` the device (default: cuda when visible).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from jmipose.bench import runner
from jmipose.bench.records import shape_label
from jmipose.bench.timing import Case


def device() -> str:
    return os.environ.get("JMIPOSE_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def params(op: str) -> list[Any]:
    """pytest params (one per case) of ``op``, with readable ids."""
    full = os.environ.get("JMIPOSE_BENCH_FULL") == "1"
    cases = runner.build_cases([op], device(), quick=not full)
    return [pytest.param(case, id=f"{shape_label(case.shape)}-{case.variant}-{case.pass_}-{case.backend}-"
                                  f"{case.baseline}".replace(" ", "_")) for case in cases]


def run(benchmark, case: Case, rounds: int = 5) -> None:
    """Times one case with pytest-benchmark (one warm-up call first: compilation, first touch)."""
    if case.make is None:
        pytest.skip(case.skip)
    runner_ = case.make()
    runner_()
    synchronize = torch.cuda.synchronize if case.device.startswith("cuda") else (lambda: None)

    def call() -> None:
        runner_()
        synchronize()

    benchmark.group = f"{case.op} {shape_label(case.shape)} {case.variant} {case.pass_}"
    benchmark.extra_info.update({"backend": case.backend, "baseline": case.baseline, "shape": case.shape,
                                 "dtype": case.dtype, "device": case.device, "flops": case.flops})
    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0)


def benchmark_test(op: str):
    """The pytest-benchmark test of ``op`` (``jmipose bench --ops`` names): one case per shape, pass
    and implementation; assign it to ``test_<op>`` in a ``benchmarks/bench_*.py`` file."""
    @pytest.mark.parametrize("case", params(op))
    def test(benchmark, case: Case) -> None:
        run(benchmark, case)

    test.__name__ = test.__qualname__ = f"test_{op}"
    return test
