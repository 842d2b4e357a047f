"""Benchmark of joint_region_gather (modulated deformable convolution) at the JM-Pose shapes.

For each shape (B in {8, 32}, Cin = Cout = 48, 96x72 and 48x36, 3x3 kernel, dilation 1 and 3,
offset groups 1 and 4) and pass (forward, forward+backward) it times every live jmipose backend of
the device against the eager reference, ``torch.compile`` of the reference and
``torchvision.ops.deform_conv2d`` (when it imports).  Repetitions are interleaved across the
implementations of one shape (so load changes on a shared machine hit them alike), after warm-up;
the median and the inter-quartile range are reported.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` around one call; on the CPU (torch keeps
no allocator statistics there), each measurement runs once more in a fresh subprocess that builds
the inputs, warms up, resets the kernel's peak-RSS counter (``/proc/self/clear_refs`` = 5), runs
one call and reports VmHWM - VmRSS: the resident memory the call adds at its peak, inputs excluded
(glibc runs with a fixed mmap threshold there, so freed blocks leave the process and are counted
again when reused).

    python benchmarks/bench_joint_region_gather.py            # every shape, Markdown table
    python benchmarks/bench_joint_region_gather.py --quick    # the target shape and the smallest one
    python benchmarks/bench_joint_region_gather.py --json results.json --repeats 7

Importable: ``cases()`` lists the case dicts, ``measure(case)`` returns one record (a dict with op,
variant, pass, backend, baseline, shape, dtype, device, median_s, iqr_s, peak_mem_bytes),
``measure_group(cases)`` measures cases of one shape and pass with interleaved repetitions.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import jmipose  # noqa: E402
from jmipose.ops.joint_region_gather import joint_region_gather_reference  # noqa: E402

OP = "joint_region_gather"
PASSES = ("forward", "forward+backward")
BASELINES = ("reference", "reference+compile", "torchvision")


def _torchvision_deform_conv2d():
    try:
        from torchvision.ops import deform_conv2d
    except Exception:  # noqa: BLE001 - not importable here: the column is left out
        return None
    return deform_conv2d


def implementations(device: str) -> list[str]:
    """jmipose backends live on ``device`` plus the baselines that can run here."""
    status = jmipose.ops.backends()
    names = [b for b in ("cpp", "cuda", "triton") if status[b].live]
    if device == "cpu":
        names = [b for b in names if b == "cpp"]  # Triton on the CPU is an interpreter: not a benchmark
    else:
        names = [b for b in names if b != "cpp"]
    names += ["reference", "reference+compile"]
    if _torchvision_deform_conv2d() is not None:
        names.append("torchvision")
    return names


def shapes(quick: bool = False) -> list[dict]:
    result = []
    for batch in (8, 32):
        for size in ((96, 72), (48, 36)):
            for dilation in (1, 3):
                for offset_groups in (1, 4):
                    result.append({"batch": batch, "channels": 48, "size": size, "kernel": 3, "dilation": dilation,
                                   "offset_groups": offset_groups})
    if quick:
        result = [s for s in result if (s["batch"], s["size"], s["dilation"], s["offset_groups"]) in
                  {(32, (96, 72), 1, 1), (8, (48, 36), 3, 4)}]
    return result


def cases(device: str = "cpu", dtype: str = "float32", quick: bool = False,
          backends: list[str] | None = None) -> list[dict]:
    """One dict per (shape, pass, implementation)."""
    names = implementations(device) if backends is None else backends
    return [{**shape, "pass": p, "backend": name, "device": device, "dtype": dtype}
            for shape in shapes(quick) for p in PASSES for name in names]


def variant_name(case: dict) -> str:
    h, w = case["size"]
    return f"B{case['batch']} {h}x{w} d{case['dilation']} G{case['offset_groups']}"


def shape_text(case: dict) -> str:
    h, w, k, c = *case["size"], case["kernel"], case["channels"]
    return (f"input [{case['batch']}, {c}, {h}, {w}], weight [{c}, {c}, {k}, {k}], padding {case['dilation']}, "
            f"dilation {case['dilation']}, offset groups {case['offset_groups']}")


def make_inputs(case: dict) -> dict:
    """Inputs of one call; offsets ~ N(0, 2^2) pixels, masks in (0, 1), like a trained CJL's."""
    gen = torch.Generator().manual_seed(0)
    b, c, k, g = case["batch"], case["channels"], case["kernel"], case["offset_groups"]
    h, w = case["size"]
    dtype, device = getattr(torch, case["dtype"]), torch.device(case["device"])

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device, dtype)

    return {
        "input": randn(b, c, h, w),
        "offset": randn(b, 2 * g * k * k, h, w, scale=2.0),
        "mask": torch.rand(b, g * k * k, h, w, generator=gen).to(device, dtype),
        "weight": randn(c, c, k, k, scale=(c * k * k) ** -0.5),
        "bias": randn(c),
        "padding": case["dilation"],
        "dilation": case["dilation"],
    }


def make_call(case: dict):
    """A zero-argument function running one pass of the case; returns it with its inputs."""
    inputs = make_inputs(case)
    backend = case["backend"]
    if backend == "torchvision":
        fn = _torchvision_deform_conv2d()
    elif backend == "reference":
        fn = joint_region_gather_reference
    elif backend == "reference+compile":
        fn = torch.compile(joint_region_gather_reference, dynamic=False)
    else:
        def fn(*args, **kwargs):
            return jmipose.ops.joint_region_gather(*args, **kwargs, backend=backend)
    leaves = [inputs[n] for n in ("input", "offset", "weight", "bias", "mask")]
    backward = case["pass"] == "forward+backward"
    for leaf in leaves:
        leaf.requires_grad_(backward)
    grad_output = None

    def call():
        nonlocal grad_output
        for leaf in leaves:
            leaf.grad = None
        with torch.set_grad_enabled(backward):
            out = fn(leaves[0], leaves[1], leaves[2], leaves[3], stride=1, padding=inputs["padding"],
                     dilation=inputs["dilation"], mask=leaves[4])
            if backward:
                if grad_output is None:
                    grad_output = torch.ones_like(out)
                out.backward(grad_output)
        return out

    def release():
        for leaf in leaves:
            leaf.grad = None

    call.release = release  # drops the gradients of the last call
    return call


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_group(group: list[dict], repeats: int = 5, warmup: int = 1, memory: bool = True) -> list[dict]:
    """Times the cases (same shape and pass, different implementations) with interleaved repetitions."""
    calls = [make_call(case) for case in group]
    for call, case in zip(calls, group):
        for _ in range(warmup):
            call()
        _sync(case["device"])
    times: list[list[float]] = [[] for _ in group]
    for _ in range(repeats):
        for i, (call, case) in enumerate(zip(calls, group)):
            _sync(case["device"])
            start = time.perf_counter()
            call()
            _sync(case["device"])
            times[i].append(time.perf_counter() - start)
    del calls
    gc.collect()
    records = []
    for case, samples in zip(group, times):
        quartiles = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
        records.append({
            "op": OP, "variant": variant_name(case), "pass": case["pass"], "backend": case["backend"],
            "baseline": case["backend"] in BASELINES, "shape": shape_text(case), "dtype": case["dtype"],
            "device": case["device"], "median_s": statistics.median(samples), "iqr_s": quartiles[2] - quartiles[0],
            "peak_mem_bytes": peak_memory(case) if memory else None, "repeats": len(samples),
        })
    return records


def measure(case: dict, repeats: int = 5, warmup: int = 1, memory: bool = True) -> dict:
    """One record for one case (see the module docstring)."""
    return measure_group([case], repeats, warmup, memory)[0]


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_memory_here(case: dict) -> int:
    call = make_call(case)
    call()  # warm-up: compilation, library loading, first-touch of lazily allocated buffers
    _sync(case["device"])
    call.release()
    gc.collect()
    if case["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = _status_kb("VmRSS")
    call()
    return (_status_kb("VmHWM") - before) * 1024


def peak_memory(case: dict) -> int | None:
    """Peak extra memory of one call, measured in a fresh process (see the module docstring)."""
    if case["device"].startswith("cuda"):
        return _peak_memory_here(case)
    # A fixed mmap threshold makes glibc return every large block to the kernel on free (the
    # default threshold grows after the first free and freed blocks would then stay resident, so
    # a call after warm-up would reuse them unseen).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]),
           "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    proc = subprocess.run([sys.executable, __file__, "--peak-memory", json.dumps(case)], capture_output=True,
                          text=True, env=env, check=False)
    if proc.returncode != 0:
        print(f"peak memory of {case} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return int(proc.stdout.strip().splitlines()[-1])


def markdown_table(records: list[dict]) -> str:
    """One row per record, with speed-ups against torchvision and the eager reference of its group."""
    index = {(r["variant"], r["pass"], r["backend"]): r for r in records}
    lines = ["| shape | pass | backend | median ms | IQR ms | peak MB | vs torchvision | vs reference |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in records:
        def ratio(other: str) -> str:
            base = index.get((r["variant"], r["pass"], other))
            return f"{base['median_s'] / r['median_s']:.2f}x" if base else "-"

        peak = f"{r['peak_mem_bytes'] / 2**20:.0f}" if r["peak_mem_bytes"] is not None else "-"
        lines.append(f"| {r['variant']} | {r['pass']} | {r['backend']} | {r['median_s'] * 1e3:.1f} | "
                     f"{r['iqr_s'] * 1e3:.1f} | {peak} | {ratio('torchvision')} | {ratio('reference')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--quick", action="store_true", help="only the target shape and the smallest one")
    parser.add_argument("--backends", help="comma-separated subset of " + ", ".join(implementations("cpu")))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--json", type=Path, help="also write the records to this file")
    parser.add_argument("--peak-memory", help=argparse.SUPPRESS)  # internal: one case, in a subprocess
    args = parser.parse_args(argv)
    if args.peak_memory:
        print(_peak_memory_here(json.loads(args.peak_memory)))
        return 0
    backends = args.backends.split(",") if args.backends else None
    all_cases = cases(args.device, args.dtype, args.quick, backends)
    records = []
    groups: dict[tuple, list[dict]] = {}
    for case in all_cases:
        groups.setdefault((variant_name(case), case["pass"]), []).append(case)
    for (variant, pass_name), group in groups.items():
        print(f"measuring {variant} {pass_name}: {', '.join(c['backend'] for c in group)}", file=sys.stderr,
              flush=True)
        records += measure_group(group, args.repeats, args.warmup, memory=not args.no_memory)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, {args.dtype}")
    print(markdown_table(records))
    if args.json:
        args.json.write_text(json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
