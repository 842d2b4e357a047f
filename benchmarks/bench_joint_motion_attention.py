"""Benchmark of joint_motion_attention: every live backend against the eager reference, torch.compile
of the reference, and two calls of ``torch.nn.functional.scaled_dot_product_attention`` plus the
residual adds, at the model's shapes; forward and forward+backward; time and peak memory.

    python benchmarks/bench_joint_motion_attention.py                 # this machine's device, Markdown table
    python benchmarks/bench_joint_motion_attention.py --device cuda --json results.json
    python benchmarks/bench_joint_motion_attention.py --all           # also the long CPU cases

Shapes (JM-Pose, ../shared/PAPER.md): B in {8, 32}, (h, d) in {(1, 48), (4, 16)}, N_m = N_j = N in
{1728 (48 x 36), 6912 (96 x 72)}; float32 on the CPU, bfloat16 on a GPU.

Method: the variants of one (shape, pass) are warmed up (twice; the compiled one compiles then),
then timed in interleaved rounds (each round runs every variant once, so a noisy neighbour slows all
of them alike); median and inter-quartile range over the rounds.  "fwd" runs under ``no_grad``;
"fwd+bwd" runs the forward with gradients and backpropagates given output gradients into all eight
inputs.  FLOPs count the useful matrix work: forward 8 B h N_m N_j d (two directions, two products,
2 FLOP per multiply-add), backward 2.5 times that, whatever a variant really executes.

Peak memory is the growth during one pass over what was allocated before it: on a GPU
``torch.cuda.max_memory_allocated``; on the CPU the kernel's resident-set high-water mark (VmHWM,
reset through /proc/self/clear_refs before the pass) minus the RSS before it, after glibc's free heap
pages are handed back and its mmap threshold is pinned at 64 KiB so that the RSS follows the live
tensors (without clear_refs: the RSS sampled every 0.5 ms by a thread).

Variants whose eager score matrices would not fit (estimated) are skipped with a note, and so are
CPU cases above ``--cpu-gflop`` (default 550 GFLOP per call: B=8, h=1, N=6912 runs, for the
memory-versus-N comparison) unless ``--all`` is given.

Importable: ``cases(device)`` lists case dicts, ``measure(case)`` / ``measure_group(cases)`` return
record dicts (op, variant, pass, backend, baseline, shape, dtype, device, median_s, iqr_s,
peak_mem_bytes, flops, tflops, note), ``markdown(records)`` renders them.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import jmipose
from jmipose.ops.joint_motion_attention import joint_motion_attention_reference

OP = "joint_motion_attention"
MODEL_SHAPES = [dict(B=b, h=h, N_m=n, N_j=n, d=d)
                for b in (8, 32) for h, d in ((1, 48), (4, 16)) for n in (1728, 6912)]
PASSES = ("fwd", "fwd+bwd")
BASELINES = ("eager", "compiled_eager", "sdpa_pair")
# Dense peak TFLOP/s (bfloat16 tensor cores, float32 CUDA cores) for the achieved-vs-peak column.
DEVICE_PEAK_TFLOPS = {"H100 PCIe": (756.0, 51.0), "H100": (989.0, 67.0), "H200": (989.0, 67.0),
                      "A100": (312.0, 19.5), "L4": (121.0, 30.0)}


def flops(shape: dict, pass_: str) -> float:
    forward = 8.0 * shape["B"] * shape["h"] * shape["N_m"] * shape["N_j"] * shape["d"]
    return forward * (3.5 if pass_ == "fwd+bwd" else 1.0)


def _eager_bytes(shape: dict, pass_: str) -> float:
    """Rough peak of the eager reference: score-sized float32 matrices alive at once (2 without
    autograd; scores, probabilities and their gradients of both directions with it)."""
    matrices = 2 if pass_ == "fwd" else 6
    return matrices * 4.0 * shape["B"] * shape["h"] * shape["N_m"] * shape["N_j"]


def _memory_budget(device: str) -> float:
    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return 0.6 * free
    try:
        with open("/proc/meminfo") as f:
            available_kb = int(next(line for line in f if line.startswith("MemAvailable")).split()[1])
        return min(0.4 * available_kb * 1024, 8e9)
    except (OSError, StopIteration, ValueError):
        return 4e9


def cases(device: str | None = None, include_long: bool = False, cpu_gflop: float = 550.0,
          shapes: list[dict] | None = None, passes: tuple[str, ...] = PASSES) -> list[dict]:
    """Case dicts (shape, pass, variant, backend, dtype, device, skip) for the live backends of a device."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = "bfloat16" if device == "cuda" else "float32"
    status = jmipose.ops.backends()
    live = [b for b in (("cuda", "triton") if device == "cuda" else ("cpp",)) if status[b].live]
    budget = _memory_budget(device)
    result = []
    for shape in shapes or MODEL_SHAPES:
        for pass_ in passes:
            too_long = (device == "cpu" and not include_long and flops(shape, pass_) > cpu_gflop * 1e9)
            eager_too_big = _eager_bytes(shape, pass_) > budget
            for variant, backend in [("op", b) for b in live] + [(v, None) for v in BASELINES]:
                skip = None
                if too_long:
                    skip = f"{flops(shape, pass_) / 1e9:.0f} GFLOP per call on the CPU (--all runs it)"
                elif variant in ("eager", "compiled_eager") and eager_too_big:
                    skip = (f"eager scores need ~{_eager_bytes(shape, pass_) / 1e9:.0f} GB "
                            f"(budget {budget / 1e9:.0f} GB)")
                result.append({"op": OP, "shape": dict(shape), "pass": pass_, "variant": variant,
                               "backend": backend, "dtype": dtype, "device": device, "skip": skip})
    return result


def _inputs(case: dict, requires_grad: bool, seed: int = 0):
    shape, device, dtype = case["shape"], torch.device(case["device"]), getattr(torch, case["dtype"])
    gen = torch.Generator().manual_seed(seed)

    def tensor(n):
        x = torch.randn(shape["B"], shape["h"], n, shape["d"], generator=gen).to(device, dtype)
        return x.requires_grad_(requires_grad)

    tokens = [tensor(n) for n in (shape["N_m"],) * 3 + (shape["N_j"],) * 3]
    residuals = [tensor(shape["N_m"]), tensor(shape["N_j"])]
    grad_outputs = [torch.randn_like(r) for r in residuals]
    return tokens, residuals, grad_outputs


def _sdpa_pair(q_m, k_m, v_m, q_j, k_j, v_j, *, res_m, res_j):
    return (res_m + F.scaled_dot_product_attention(q_m, k_j, v_j),
            res_j + F.scaled_dot_product_attention(q_j, k_m, v_m))


def _function(case: dict) -> Callable:
    variant = case["variant"]
    if variant == "op":
        backend = case["backend"]
        return lambda *tokens, **kw: jmipose.ops.joint_motion_attention(*tokens, **kw, backend=backend)
    if variant == "eager":
        return joint_motion_attention_reference
    if variant == "compiled_eager":
        return torch.compile(joint_motion_attention_reference, dynamic=False)
    if variant == "sdpa_pair":
        return _sdpa_pair
    raise ValueError(f"unknown variant {variant!r}")


class Runner:
    """One pass of a case; inputs are allocated once, outside the timed calls.  ``reset()`` drops the
    gradients of the previous pass (each call does it first; memory accounting does it before its
    baseline so that the old gradients are not counted as freed)."""

    def __init__(self, case: dict) -> None:
        self.fn = _function(case)
        self.device = case["device"]
        self.backward = case["pass"] == "fwd+bwd"
        self.tokens, self.residuals, self.grad_outputs = _inputs(case, requires_grad=self.backward)

    def reset(self) -> None:
        for leaf in self.tokens + self.residuals:
            leaf.grad = None

    def __call__(self) -> None:
        kwargs = dict(res_m=self.residuals[0], res_j=self.residuals[1])
        if not self.backward:
            with torch.no_grad():
                self.fn(*self.tokens, **kwargs)
            return
        self.reset()
        torch.autograd.backward(self.fn(*self.tokens, **kwargs), self.grad_outputs)


def _timed(run: Callable[[], None], device: str) -> float:
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    begin = time.perf_counter()
    run()
    return time.perf_counter() - begin


def _release_free_heap() -> None:
    """Make the RSS follow the live tensors: glibc keeps freed memory resident in its heap (and raises
    its mmap threshold after large frees, so later tensors land there too).  Pin the threshold at
    64 KiB (larger blocks are mmap'ed and unmapped when freed) and hand free heap pages back."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _sampled_peak_rss(run: Callable[[], None]) -> int:
    """Fallback without clear_refs: RSS sampled every 0.5 ms by a thread (misses spikes while a kernel
    holds the GIL)."""
    peak = [_status_bytes("VmRSS")]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _status_bytes("VmRSS"))
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], _status_bytes("VmRSS"))


def _peak_memory(runner: Runner) -> int:
    runner.reset()
    if runner.device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        runner()
        torch.cuda.synchronize()
        return max(0, torch.cuda.max_memory_allocated() - before)
    _release_free_heap()
    before = _status_bytes("VmRSS")
    if _reset_peak_rss():
        runner()
        return max(0, _status_bytes("VmHWM") - before)
    return max(0, _sampled_peak_rss(runner) - before)


def _record(case: dict, times: list[float] | None, peak: int | None, note: str | None) -> dict:
    total = flops(case["shape"], case["pass"])
    record = {"op": OP, "variant": case["variant"], "pass": case["pass"], "backend": case["backend"],
              "baseline": case["variant"] in BASELINES, "shape": case["shape"], "dtype": case["dtype"],
              "device": case["device"], "median_s": None, "iqr_s": None, "peak_mem_bytes": peak,
              "flops": total, "tflops": None, "note": note}
    if times:
        quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
        record.update(median_s=statistics.median(times), iqr_s=quartiles[2] - quartiles[0])
        record["tflops"] = total / record["median_s"] / 1e12
    return record


def measure_group(group: list[dict], reps: int = 7, warmup: int = 2, memory: bool = True) -> list[dict]:
    """Records for cases of one (shape, pass), timed in interleaved rounds."""
    runners, notes = {}, {}
    for index, case in enumerate(group):
        if case.get("skip"):
            notes[index] = case["skip"]
            continue
        try:
            runners[index] = Runner(case)
            for _ in range(warmup):
                runners[index]()
        except RuntimeError as exc:  # out of memory and the like: report it, keep benchmarking the others
            runners.pop(index, None)
            notes[index] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    times = {index: [] for index in runners}
    for _ in range(reps):
        for index, run in runners.items():
            times[index].append(_timed(run, group[index]["device"]))
    records = []
    for index, case in enumerate(group):
        peak = _peak_memory(runners[index]) if memory and index in runners else None
        records.append(_record(case, times.get(index), peak, notes.get(index)))
    runners.clear()
    return records


def measure(case: dict, reps: int = 7, warmup: int = 2, memory: bool = True) -> dict:
    """One record (op, variant, pass, backend, baseline, shape, dtype, device, median_s, iqr_s,
    peak_mem_bytes, flops, tflops, note) for one case dict of ``cases()``."""
    return measure_group([case], reps=reps, warmup=warmup, memory=memory)[0]


def _groups(all_cases: list[dict]) -> list[list[dict]]:
    grouped: dict[tuple, list[dict]] = {}
    for case in all_cases:
        grouped.setdefault((tuple(case["shape"].items()), case["pass"]), []).append(case)
    return list(grouped.values())


def _device_peak(device: str, dtype: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    for key, (half_peak, float_peak) in DEVICE_PEAK_TFLOPS.items():
        if key in name:
            return half_peak if dtype in ("bfloat16", "float16") else float_peak
    return None


MARKDOWN_HEADER = ("| B | h | N | d | pass | variant | median ms | IQR ms | x eager | x SDPA pair | "
                   "TFLOP/s | % peak | peak MB | note |\n" + "|" + "---|" * 14)


def markdown(records: list[dict], header: bool = True) -> str:
    """A Markdown table: one row per record, with speedups against the eager reference and the SDPA pair."""
    lines = [MARKDOWN_HEADER] if header else []
    by_key = {}
    for r in records:
        by_key[(tuple(r["shape"].items()), r["pass"], r["variant"])] = r
    for r in records:
        key = (tuple(r["shape"].items()), r["pass"])
        s = r["shape"]
        name = r["variant"] if r["backend"] is None else f"{r['variant']} ({r['backend']})"

        def ratio(baseline: str) -> str:
            other = by_key.get((*key, baseline))
            if r["median_s"] is None or other is None or other["median_s"] is None:
                return ""
            return f"{other['median_s'] / r['median_s']:.2f}"

        peak = _device_peak(r["device"], r["dtype"])
        median = "" if r["median_s"] is None else f"{r['median_s'] * 1e3:.1f}"
        iqr = "" if r["iqr_s"] is None else f"{r['iqr_s'] * 1e3:.1f}"
        tflops = "" if r["tflops"] is None else f"{r['tflops']:.3f}"
        percent = "" if peak is None or r["tflops"] is None else f"{100 * r['tflops'] / peak:.1f}"
        memory = "" if r["peak_mem_bytes"] is None else f"{r['peak_mem_bytes'] / 2**20:.0f}"
        cells = [s["B"], s["h"], s["N_m"], s["d"], r["pass"], name, median, iqr, ratio("eager"),
                 ratio("sdpa_pair"), tflops, percent, memory, r["note"] or ""]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--all", action="store_true", help="also the CPU cases above --cpu-gflop")
    parser.add_argument("--cpu-gflop", type=float, default=550.0)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--shape", action="append", default=None, metavar="B,h,N,d",
                        help="benchmark this shape instead of the model shapes (repeatable)")
    parser.add_argument("--passes", nargs="+", choices=PASSES, default=list(PASSES))
    parser.add_argument("--json", default=None, help="also write the records to this file")
    args = parser.parse_args(argv)
    shapes = None
    if args.shape:
        shapes = []
        for text in args.shape:
            b, h, n, d = (int(v) for v in text.split(","))
            shapes.append(dict(B=b, h=h, N_m=n, N_j=n, d=d))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    all_cases = cases(device, include_long=args.all, cpu_gflop=args.cpu_gflop, shapes=shapes,
                      passes=tuple(args.passes))
    threads = torch.get_num_threads()
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({threads} torch threads)"
    command = " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:]))
    print(f"# {OP} on {where}, torch {torch.__version__}, command: {command}", flush=True)
    print(MARKDOWN_HEADER, flush=True)
    records = []
    for group in _groups(all_cases):  # rows appear as each (shape, pass) is measured
        group_records = measure_group(group, reps=args.reps, memory=not args.no_memory)
        records += group_records
        print(markdown(group_records, header=False), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
