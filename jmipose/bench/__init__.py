"""The benchmark suite behind ``jmipose bench``: both ops and the model against their baselines.

    from jmipose.bench import run, render, write_json
    records, settings = run(["joint_region_gather"], device="cpu", quick=True)
    print(render(records, settings))

Modules: ``timing`` (interleaved repetitions, median/IQR, peak memory), ``records`` (the JSON
schema), ``roofline`` (FLOPs, bytes, device peaks), ``targets`` (the op issues' targets),
``markdown`` and ``plot`` (the report and the charts), ``region_gather``, ``motion_attention`` and
``model`` (the cases), ``runner`` and ``cli``.
"""

from jmipose.bench.markdown import render
from jmipose.bench.records import read_json, validate, write_json
from jmipose.bench.runner import OPS, parse_ops, run
from jmipose.bench.targets import TARGETS, evaluate
from jmipose.bench.timing import Case, Settings, measure

__all__ = ["OPS", "TARGETS", "Case", "Settings", "evaluate", "measure", "parse_ops", "read_json", "render",
           "run", "validate", "write_json"]
