"""Runs the benchmark suite: builds the cases of the chosen ops and measures them side by side."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from typing import Any

import torch
from torch.utils.benchmark import set_torch_threads

from jmipose.bench import model, motion_attention, region_gather
from jmipose.bench.timing import Case, Settings, configure_allocator, measure
from jmipose.info import environment

OPS = {"joint_region_gather": region_gather, "joint_motion_attention": motion_attention, "model": model}
ALIASES = {"a": "joint_region_gather", "b": "joint_motion_attention", "gather": "joint_region_gather",
           "attention": "joint_motion_attention", "region_gather": "joint_region_gather",
           "motion_attention": "joint_motion_attention"}

FULL = Settings(min_repeats=3, max_repeats=10, warmup=1, group_budget_s=40.0)
QUICK = Settings(min_repeats=3, max_repeats=7, warmup=1, group_budget_s=12.0)
# The benchmark machinery's own test: tiny shapes, as few calls as give a median and an IQR.
SMALLEST = Settings(min_repeats=3, max_repeats=3, warmup=1, group_budget_s=2.0)


def parse_ops(text: str | None) -> list[str]:
    """'A,B' or full names -> op names in suite order; None -> every op."""
    if not text:
        return list(OPS)
    chosen = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        name = ALIASES.get(item.lower(), item)
        if name not in OPS:
            raise ValueError(f"--ops: unknown op {item!r}; expected a comma-separated subset of "
                             f"{', '.join(OPS)} (or A, B)")
        chosen.append(name)
    return [name for name in OPS if name in chosen]


def build_cases(ops: list[str], device: str, quick: bool = False, smallest: bool = False,
                compile_baseline: bool = True, cpu_gflop: float = 150.0,
                model_gflop: float = 500.0) -> list[Case]:
    cases: list[Case] = []
    for op in ops:
        if op == "joint_region_gather":
            # float32 on every device: the eager reference and torchvision's op have no bfloat16 path
            cases += region_gather.cases(device, "float32", quick, smallest, compile_baseline)
        elif op == "joint_motion_attention":
            cases += motion_attention.cases(device, quick, smallest, compile_baseline, cpu_gflop)
        else:
            cases += model.cases(device, quick, smallest, compile_baseline, model_gflop)
    return cases


def leave_out_compile(cases: list[Case]) -> None:
    """--quick: compiling one graph takes about a minute on 2 cores, more than the run may spend."""
    for case in cases:
        if case.baseline == "compile" and case.skip is None:
            case.make, case.skip = None, "torch.compile is left out of --quick (the full run measures it)"


def run(ops: list[str], device: str = "cpu", quick: bool = False, smallest: bool = False,
        settings: Settings | None = None, compile_baseline: bool = True, cpu_gflop: float = 150.0,
        model_gflop: float = 500.0, threads: int | None = None, log=None,
        after_group=None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(records, settings as a dict) of the chosen ops, measured with ``threads`` torch threads (the
    caller's count is restored after; None: as set); progress lines go to ``log`` (stderr);
    ``after_group(records so far, settings)`` runs after each measured group."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    settings = settings or (SMALLEST if smallest else QUICK if quick else FULL)
    configure_allocator()
    cases = build_cases(ops, device, quick, smallest, compile_baseline, cpu_gflop, model_gflop)
    if quick:
        leave_out_compile(cases)
    started_wall, started_cpu = time.perf_counter(), time.process_time()

    def taken(complete: bool) -> dict[str, Any]:
        return {"mode": "smallest" if smallest else "quick" if quick else "full", "device": device,
                "ops": ",".join(ops), "torch_compile_baseline": compile_baseline, "cpu_gflop": cpu_gflop,
                "model_gflop": model_gflop, **asdict(settings),
                "wall_s": round(time.perf_counter() - started_wall, 1),
                "cpu_s": round(time.process_time() - started_cpu, 1), "complete": complete}

    def progress(line: str) -> None:
        log(f"[{time.perf_counter() - started_wall:6.1f} s] {line}")

    def partial(records: list[dict[str, Any]]) -> None:
        if after_group is not None:
            after_group(records, taken(complete=False))

    with set_torch_threads(threads or torch.get_num_threads()):
        env = environment(device)  # inside: it records the threads
        records = measure(cases, settings, env, progress=progress, after_group=partial)
    return records, taken(complete=True)
