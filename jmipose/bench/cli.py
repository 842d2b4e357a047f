"""Benchmark both ops and the model against their baselines (eager, torch.compile, torchvision, SDPA).

    jmipose bench --quick                                  # < 3 minutes on 2 CPU cores
    jmipose bench --ops A --json a.json --md a.md --plot a.png
    jmipose bench --device cuda --json gpu.json --md gpu.md --plot gpu.png
    jmipose bench --compile-only --arch 80,90 --json aot.json --md aot.md   # no GPU needed

Prints the Markdown report (targets with their status, per op a table of times and speed-ups);
``--json`` writes one record per measurement, ``--md`` the report, ``--plot`` the speed-up charts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SMALLEST_ENV = "JMIPOSE_BENCH_SMALLEST"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="the target shapes only, fewer repetitions, the tiny model at batch 1")
    parser.add_argument("--ops", default=None,
                        help="comma-separated subset of joint_region_gather (A), joint_motion_attention (B), "
                             "model")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when a GPU is visible, else cpu")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the records here")
    parser.add_argument("--md", type=Path, default=None, metavar="OUT", help="write the Markdown report here")
    parser.add_argument("--plot", type=Path, default=None, metavar="OUT.png",
                        help="write the speed-up charts here")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and OpenMP threads (default: the cores this process may use)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile baselines")
    parser.add_argument("--no-memory", action="store_true", help="leave out the peak-memory calls")
    parser.add_argument("--cpu-gflop", type=float, default=150.0,
                        help="CPU: skip op B calls above this many GFLOP (default 150)")
    parser.add_argument("--model-gflop", type=float, default=500.0,
                        help="CPU: skip model calls whose forward is above this many GFLOP (default 500)")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None, metavar="IN",
                        help="measure nothing: render --md/--plot (and a merged --json) from earlier "
                             "JSON files")
    parser.add_argument("--smallest", action="store_true", default=os.environ.get(SMALLEST_ENV) == "1",
                        help=f"tiny shapes and 3 repetitions: checks the machinery, not speed "
                             f"(also {SMALLEST_ENV}=1)")
    aot = parser.add_argument_group("ahead-of-time compilation (no GPU needed; see jmipose.bench.compile_only)")
    aot.add_argument("--compile-only", action="store_true",
                     help="measure nothing: compile every GPU kernel (Triton and the built CUDA library) for "
                          "--arch and report registers, spills, shared memory, occupancy and hardware-limit "
                          "violations (exit status 1 when any)")
    aot.add_argument("--arch", default="80,90", help="--compile-only: compute capabilities (default 80,90)")
    aot.add_argument("--backends", default="triton,cuda", help="--compile-only: triton, cuda or both (default)")
    aot.add_argument("--variants", choices=("covering", "all"), default="covering",
                     help="--compile-only: every launch configuration with every flag value compiled at least "
                          "once (default), or every flag combination (slow)")
    aot.add_argument("--jobs", type=int, default=None,
                     help="--compile-only: compiler processes (default: the cores this process may use)")


def _load(paths: list[Path]) -> tuple[list[dict], dict]:
    """Records of earlier runs (validated) and their settings, merged."""
    from jmipose.bench import records

    results, settings = [], {}
    for path in paths:
        document = records.read_json(path)
        problems = records.validate(document)
        if problems:
            raise ValueError(f"{path}: not a jmipose bench results file: {'; '.join(problems[:5])}")
        results += document["records"]
        for key, value in document["settings"].items():
            if key == "complete":
                settings[key] = settings.get(key, True) and value
            elif key in settings and settings[key] != value and key in ("mode", "ops", "wall_s", "cpu_s"):
                settings[key] = f"{settings[key]} + {value}"
            else:
                settings.setdefault(key, value)
    return results, settings


def _write(args: argparse.Namespace, results: list[dict], taken: dict) -> None:
    from jmipose.bench import markdown, records

    charts = None
    if args.plot:
        from jmipose.bench.plot import write_png

        args.plot.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_png(args.plot, results)
            md_dir = args.md.resolve().parent if args.md else Path.cwd()
            charts = os.path.relpath(args.plot.resolve(), md_dir)
        except ImportError as exc:  # a GPU image without matplotlib: render later with --from-json
            print(f"jmipose bench: no chart ({exc}); `jmipose bench --from-json` can draw it elsewhere",
                  file=sys.stderr)
        except ValueError as exc:
            print(f"jmipose bench: no chart: {exc}", file=sys.stderr)
    report = markdown.render(results, taken, charts)
    if args.json:
        records.write_json(args.json, results, taken)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(report)
    print(report)


def main(args: argparse.Namespace) -> int:
    from jmipose.fileio import check_output_file
    from jmipose.info import available_cores

    for option, path in (("--json", args.json), ("--md", args.md), ("--plot", args.plot)):
        if path is not None:
            check_output_file(path, option)  # before the measurements, not after them

    if getattr(args, "compile_only", False):
        from jmipose.bench import compile_only

        return compile_only.main(args)
    if args.from_json:
        try:
            results, taken = _load(args.from_json)
        except (OSError, ValueError) as exc:
            print(f"jmipose bench: --from-json: {exc}", file=sys.stderr)
            return 2
        _write(args, results, taken)
        return 0

    from jmipose.bench import runner
    from jmipose.bench.timing import Settings

    try:
        ops = runner.parse_ops(args.ops)
    except ValueError as exc:
        print(f"jmipose bench: {exc}", file=sys.stderr)
        return 2
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("jmipose bench: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    threads = args.threads or available_cores()
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    # Before any kernel runs: an OpenMP runtime of the C++ library's own (one that does not share
    # torch's) reads it when it starts.  torch's pool is set by the run (runner.run's threads).
    os.environ["OMP_NUM_THREADS"] = str(threads)
    base = runner.SMALLEST if args.smallest else runner.QUICK if args.quick else runner.FULL
    settings = Settings(**{**vars(base), "memory": not args.no_memory})
    def save_partial(results: list[dict], taken: dict) -> None:
        if args.json:  # a run cut short (a timeout, a lost machine) still leaves its groups on disk
            from jmipose.bench import records

            records.write_json(args.json, results, taken)

    results, taken = runner.run(ops, device, quick=args.quick, smallest=args.smallest, settings=settings,
                                compile_baseline=not args.no_compile, cpu_gflop=args.cpu_gflop,
                                model_gflop=args.model_gflop, threads=threads, after_group=save_partial)
    _write(args, results, taken)
    print(f"jmipose bench: {len(results)} records in {taken['wall_s']} s wall, {taken['cpu_s']} s CPU",
          file=sys.stderr)
    return 0
