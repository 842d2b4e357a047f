"""Predicted times of the GPU benchmark (``jmipose bench --device cuda``) on A100, H100 and H200, before
any of our kernels has run on one, and the one-look comparison once they have.

    python -m jmipose.bench.gpu_predicted --compile-report aot.json --out benchmarks/results/gpu-predicted
    python -m jmipose.bench.gpu_predicted --compare bench-gpu.json      # measured vs predicted

For every shape and pass the benchmark runs on a GPU (``region_gather.shapes`` and
``motion_attention.shapes`` with ``all_shapes``; float32 for op A, bfloat16 for op B, as the benchmark
runs them) and for each of our GPU backends:

* ``bound``: the roofline lower bound, max(useful FLOPs / peak, compulsory bytes / peak bandwidth),
  with the FLOPs and bytes the benchmark itself reports (``jmipose.bench.roofline``) and the dense peak of
  the arithmetic the backend uses: op B bfloat16 tensor cores; op A float32, CUDA-core FMAs (CUDA
  backend) or three TF32 tensor-core products per term (Triton, ``tf32x3``: a third of the TF32 peak).
* ``expected``: the occupancy-limited expectation.  Per kernel of the pass: the work it executes
  (padding: 48 output channels in a 64-channel tile, d = 48 in a 64-wide head; the backward's
  recomputation: 3.5 forward products for dQ and dK/dV where the roofline counts 2.5) at the same peaks,
  divided by (a) the wave efficiency of its grid on the GPU's SMs with the resident blocks per SM of the
  compile-only report and (b) a latency-hiding factor min(1, resident warps per SM / 16) (assumption:
  each of an SM's four schedulers needs about four resident warps to hide memory and pipeline latency).
  It ignores caches, the gathers' L1/L2 traffic of op A and instruction overheads, so a measured time
  well above it points at those, one below the bound at a measurement or model error.
* anchors measured elsewhere where public (``ANCHORS``): FlashAttention-2 on H100 for op B (the SDPA
  pair the benchmark compares with runs FlashAttention-2 kernels); for torchvision's deform_conv2d no
  public CUDA timing at these shapes was found, so its row is the lower bound of its documented
  algorithm (an im2col buffer written and read by a GEMM).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jmipose.bench import roofline

SCHEMA_VERSION = 1
KIND = "gpu-predicted"


@dataclass(frozen=True)
class GPU:
    name: str
    arch: int
    sms: int
    bandwidth_gbs: float
    bf16_tflops: float   # dense tensor-core bfloat16/float16
    tf32_tflops: float   # dense tensor-core TF32
    fp32_tflops: float   # CUDA cores
    source: str


GPUS = [
    GPU("A100", 80, 108, 2039.0, 312.0, 156.0, 19.5,
        "NVIDIA A100 Tensor Core GPU datasheet, A100 80GB SXM (https://www.nvidia.com/content/dam/en-zz/Solutions/"
        "Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf): 2,039 GB/s, BF16 312 TFLOPS, "
        "TF32 156 TFLOPS (dense: half the sparsity figures), FP32 19.5 TFLOPS; 108 SMs (NVIDIA A100 Tensor "
        "Core GPU Architecture whitepaper)"),
    GPU("H100", 90, 132, 3350.0, 989.0, 494.5, 67.0,
        "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM (https://resources.nvidia.com/en-us-tensor-core/"
        "nvidia-tensor-core-gpu-datasheet): 3.35 TB/s, BF16 1,979 and TF32 989 TFLOPS with sparsity (dense: "
        "989 and 494.5), FP32 67 TFLOPS; 132 SMs (NVIDIA H100 Tensor Core GPU Architecture whitepaper)"),
    GPU("H200", 90, 132, 4800.0, 989.0, 494.5, 67.0,
        "NVIDIA H200 Tensor Core GPU product page and datasheet, H200 SXM (https://www.nvidia.com/en-us/"
        "data-center/h200/): 4.8 TB/s, BF16 1,979 and TF32 989 TFLOPS with sparsity (dense: 989 and "
        "494.5), FP32 67 TFLOPS; the H100's GH100 compute (132 SMs)"),
]
SATURATING_WARPS = 16  # resident warps per SM assumed to hide latency (4 per scheduler)

# FlashAttention-2 on an H100 80GB SXM5, FP16, no causal mask, head dim 64, forward and backward
# TFLOP/s per sequence length, read from the bar labels of Figures 5 and 6 of Shah et al.,
# "FlashAttention-3: Fast and Accurate Attention with Asynchrony and Low-precision" (2024,
# https://arxiv.org/abs/2407.08608); FLOPs counted as 4 N^2 d h forward and 2.5x that backward.
FA2_H100 = {"forward": {512: 282, 1024: 306, 2048: 318, 4096: 321, 8192: 322, 16384: 324},
            "backward": {512: 198, 1024: 238, 2048: 264, 4096: 279, 8192: 287, 16384: 291}}
ANCHORS = [
    {"op": "joint_motion_attention", "name": "FlashAttention-2 (H100)", "gpu": "H100",
     "source": "Shah et al. 2024, FlashAttention-3, arXiv:2407.08608, Figures 5 and 6 (FlashAttention-2 bars, "
               "FP16, head dim 64, no causal mask, H100 80GB SXM5)",
     "note": "FlashAttention-2 runs d = 48 with its 64-wide kernel and d = 16 with its 32-wide one: the rate at "
             "d = 64 is scaled by d / padded d (optimistic for d = 16); sequence lengths between two bars take "
             "the lower; the SDPA pair is two such calls"},
    {"op": "joint_region_gather", "name": "torchvision deform_conv2d (model)", "gpu": None,
     "source": "no public CUDA timing of torchvision.ops.deform_conv2d at these shapes found (searched GitHub "
               "issues of pytorch/vision, mmcv, DCNv2 and DCNv4 and the DCNv4 paper's operator tables)",
     "note": "lower bound of its documented algorithm: columns [C k^2, B HW] float32 written by im2col and "
             "read by a float32 GEMM (TF32 off, torch's default for matmuls) forward; backward writes and "
             "reads columns twice more (col2im and the weight GEMM)"},
]


def _pow2(n: int, low: int, high: int) -> int:
    return max(low, min(high, 1 << max(0, (max(n, 1) - 1).bit_length())))


def bench_shapes() -> list[tuple[str, dict[str, int], tuple[str, ...], str]]:
    """(op, shape, passes, dtype) of every shape ``jmipose bench --device cuda`` runs for the two ops."""
    from jmipose.bench import motion_attention, region_gather

    rows = [("joint_region_gather", shape, passes, "float32")
            for shape, passes in region_gather.shapes(all_shapes=True)]
    rows += [("joint_motion_attention", shape, passes, "bfloat16") for shape, passes in motion_attention.shapes()]
    return rows


def _find(report: list[dict], **want) -> dict | None:
    """The compile-only record with these fields whose flags are all on (the launch's resources)."""
    matches = [r for r in report if all(r.get(k) == v for k, v in want.items() if k != "config_has")
               and want.get("config_has", "") in r["config"] and r["status"] == "ok"]
    matches.sort(key=lambda r: (r["flags"].count("=0"), "int64" in r["flags"]))
    return matches[0] if matches else None


def _config_value(config: str, key: str) -> int:
    return int(next(part.split("=")[1] for part in config.split() if part.startswith(key + "=")))


@dataclass
class Kernel:
    name: str
    grid: int
    flops: float      # executed, in the peak's units (already x3 for tf32x3)
    bytes: float
    record: dict | None


def _kernels(op: str, backend: str, shape: dict[str, int], pass_: str, report: list[dict], arch: str,
             gpu: GPU) -> list[Kernel]:
    """The kernels one pass launches, with grid sizes, executed FLOPs and bytes."""
    kernels: list[Kernel] = []
    if op == "joint_region_gather":
        rshape = _region_shape(shape)
        flops = roofline.region_gather_flops(rshape, "fwd")
        fwd_bytes = roofline.region_gather_bytes(rshape, "fwd", "float32")
        bwd_bytes = roofline.region_gather_bytes(rshape, "fwd+bwd", "float32") - fwd_bytes
        b, pixels, g = shape["batch"], shape["height"] * shape["width"], shape["offset_groups"]
        pad = 64 / 48  # 48 output channels in a 64-channel tile (both backends)
        if backend == "triton":
            factor = 3.0  # tf32x3
            forward = _find(report, op=op, backend="triton", kernel="forward", dtype="float32", arch=arch, model=True)
            data = _find(report, op=op, backend="triton", kernel="backward_data", dtype="float32", arch=arch,
                         model=True)
            weight = _find(report, op=op, backend="triton", kernel="backward_weight", dtype="float32", arch=arch,
                           model=True)
            p_fwd = _config_value(forward["config"], "BLOCK_P") if forward else 64
            p_data = _config_value(data["config"], "BLOCK_P") if data else 32
            kernels.append(Kernel("forward", math.ceil(pixels / p_fwd) * b, flops * pad * factor, fwd_bytes, forward))
            if pass_ == "fwd+bwd":
                kernels.append(Kernel("backward_data", math.ceil(pixels / p_data) * b * g, flops * pad * factor,
                                      bwd_bytes / 2, data))
                kernels.append(Kernel("backward_weight", 4 * gpu.sms, flops * pad * factor, bwd_bytes / 2, weight))
        else:
            forward = _find(report, op=op, backend="cuda", kernel="forward_kernel", dtype="float32", arch=arch,
                            config_has="64>")
            data = _find(report, op=op, backend="cuda", kernel="backward_data_kernel", dtype="float32", arch=arch)
            weight = _find(report, op=op, backend="cuda", kernel="backward_weight_kernel", dtype="float32", arch=arch)
            tiles = math.ceil(pixels / 64)  # kTileP of csrc/joint_region_gather/cuda_kernels.cuh
            kernels.append(Kernel("forward_kernel", tiles * b, flops * pad, fwd_bytes, forward))
            if pass_ == "fwd+bwd":
                kernels.append(Kernel("backward_data_kernel", tiles * b * g, flops * pad, bwd_bytes / 2, data))
                kernels.append(Kernel("backward_weight_kernel", 4 * gpu.sms, flops * pad, bwd_bytes / 2, weight))
        return kernels
    # joint_motion_attention, bfloat16
    d, bh, n = shape["d"], shape["B"] * shape["h"], max(shape["N_m"], shape["N_j"])
    unit = roofline.motion_attention_flops(shape, "fwd")
    fwd_bytes = roofline.motion_attention_bytes(shape, "fwd", "bfloat16")
    bwd_bytes = roofline.motion_attention_bytes(shape, "fwd+bwd", "bfloat16") - fwd_bytes
    padded = _pow2(d, 16, 128)
    pad = padded / d
    if backend == "triton":
        names = ("forward", "backward_dq", "backward_dkdv")
        records = [_find(report, op=op, backend="triton", kernel=k, dtype="bfloat16", arch=arch,
                         config_has=f"d={d} ") for k in names]
        rows = [(_config_value(r["config"], "BLOCK_N" if k == "backward_dkdv" else "BLOCK_M") if r else 64)
                for k, r in zip(names, records)]
    else:
        names = ("forward_kernel", "dq_kernel", "dkdv_kernel")
        records = [_find(report, op=op, backend="cuda", kernel=k, dtype="bfloat16", arch=arch,
                         config_has=f", {padded}>") for k in names]
        rows = [(r["threads"] // 2 if r else 64) for r in records]  # 16 rows per warp (cuda_tiles.cuh)
    shares = (1.0, 1.5, 2.0)  # forward products: forward 2, dQ pass 3 (S, dP, dQ), dK/dV pass 4 (S, dV, dP, dK)
    for i, (name, record, block) in enumerate(zip(names, records, rows)):
        if i > 0 and pass_ != "fwd+bwd":
            break
        kernels.append(Kernel(name, bh * math.ceil(n / block) * 2, unit * shares[i] * pad,
                              fwd_bytes if i == 0 else bwd_bytes / 2, record))
    return kernels


def _region_shape(shape: dict[str, int]) -> dict[str, int]:
    from jmipose.bench.region_gather import _roofline_shape

    return _roofline_shape(shape)


def _peak_tflops(op: str, backend: str, gpu: GPU) -> float:
    if op == "joint_motion_attention":
        return gpu.bf16_tflops
    return gpu.tf32_tflops if backend == "triton" else gpu.fp32_tflops


def predict_backend(op: str, backend: str, shape: dict[str, int], pass_: str, gpu: GPU,
                    report: list[dict]) -> dict[str, Any]:
    """Bound and occupancy-limited expectation of one of our backends at one shape, pass and GPU."""
    arch = f"sm_{gpu.arch}"
    dtype = "float32" if op == "joint_region_gather" else "bfloat16"
    if op == "joint_region_gather":
        rshape = _region_shape(shape)
        flops, moved = roofline.region_gather_flops(rshape, pass_), roofline.region_gather_bytes(rshape, pass_, dtype)
    else:
        flops, moved = roofline.motion_attention_flops(shape, pass_), roofline.motion_attention_bytes(shape, pass_,
                                                                                                      dtype)
    peak = _peak_tflops(op, backend, gpu) * 1e12 / (3.0 if op == "joint_region_gather" and backend == "triton"
                                                    else 1.0)
    bandwidth = gpu.bandwidth_gbs * 1e9
    bound = max(flops / peak, moved / bandwidth)
    expected, parts = 0.0, []
    for kernel in _kernels(op, backend, shape, pass_, report, arch, gpu):
        ideal = max(kernel.flops / (_peak_tflops(op, backend, gpu) * 1e12), kernel.bytes / bandwidth)
        if kernel.record is None:
            parts.append(f"{kernel.name}: not in the compile-only report")
            expected = math.nan
            continue
        slots = gpu.sms * kernel.record["blocks_per_sm"]
        waves = math.ceil(kernel.grid / slots)
        wave_efficiency = kernel.grid / (waves * slots)
        latency = min(1.0, kernel.record["occupancy"] / SATURATING_WARPS)
        expected += ideal / (wave_efficiency * latency)
        parts.append(f"{kernel.name}: {kernel.grid} programs, {kernel.record['blocks_per_sm']}/SM "
                     f"({kernel.record['occupancy']} warps), waves {waves} at {wave_efficiency:.0%}, "
                     f"latency factor {latency:.2f}")
    return {"op": op, "shape": dict(shape), "pass": pass_, "dtype": dtype, "gpu": gpu.name, "backend": backend,
            "kind": "ours", "flops": flops, "bytes": moved, "bound_s": bound,
            "expected_s": None if math.isnan(expected) else expected, "anchor_s": None,
            "how": "; ".join(parts)}


def _fa2_rate(kind: str, n: int) -> float:
    lengths = sorted(FA2_H100[kind])
    below = [length for length in lengths if length <= n] or lengths[:1]
    return FA2_H100[kind][below[-1]]


def anchor_rows(op: str, shape: dict[str, int], pass_: str, gpu: GPU) -> list[dict[str, Any]]:
    rows = []
    if op == "joint_motion_attention" and gpu.name == "H100":
        d, n = shape["d"], max(shape["N_m"], shape["N_j"])
        padded = 64 if d > 32 else 32
        useful = d / padded
        forward = roofline.motion_attention_flops(shape, "fwd")  # both directions = the SDPA pair
        seconds = forward / (_fa2_rate("forward", n) * 1e12 * useful)
        if pass_ == "fwd+bwd":
            seconds += 2.5 * forward / (_fa2_rate("backward", n) * 1e12 * useful)
        rows.append({"op": op, "shape": dict(shape), "pass": pass_, "dtype": "bfloat16", "gpu": gpu.name,
                     "backend": "sdpa", "kind": "anchor", "flops": None, "bytes": None, "bound_s": None,
                     "expected_s": None, "anchor_s": seconds, "how": ANCHORS[0]["name"]})
    if op == "joint_region_gather":
        rshape = _region_shape(shape)
        columns = 4.0 * rshape["batch"] * rshape["in_channels"] * rshape["kernel"] ** 2 * rshape["out_h"] \
            * rshape["out_w"]
        moved = roofline.region_gather_bytes(rshape, pass_, "float32") + columns * (2 if pass_ == "fwd" else 6)
        flops = roofline.region_gather_flops(rshape, pass_)
        seconds = max(flops / (gpu.fp32_tflops * 1e12), moved / (gpu.bandwidth_gbs * 1e9))
        rows.append({"op": op, "shape": dict(shape), "pass": pass_, "dtype": "float32", "gpu": gpu.name,
                     "backend": "torchvision", "kind": "anchor (model)", "flops": flops, "bytes": moved,
                     "bound_s": seconds, "expected_s": None, "anchor_s": None, "how": ANCHORS[1]["name"]})
    return rows


def predict(report: list[dict]) -> list[dict[str, Any]]:
    rows = []
    for op, shape, passes, _dtype in bench_shapes():
        for pass_ in passes:
            for gpu in GPUS:
                for backend in ("cuda", "triton"):
                    rows.append(predict_backend(op, backend, shape, pass_, gpu, report))
                rows += anchor_rows(op, shape, pass_, gpu)
    return rows


def _shape_key(shape: dict[str, Any]) -> str:
    return json.dumps(dict(sorted(shape.items())))


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:.3f}"


def render(rows: list[dict[str, Any]], source: str) -> str:
    from jmipose.bench.records import shape_label

    lines = ["# Predicted GPU times of the benchmark shapes", "",
             "Milliseconds per call. bound = roofline lower bound (useful FLOPs and compulsory bytes at the "
             "published dense peaks); expected = occupancy-limited expectation (executed work, wave efficiency "
             "and latency hiding from the compile-only report); anchor = measured elsewhere. How each is made: "
             "`jmipose/bench/gpu_predicted.py`. Compile-only report: " + source + ".", "",
             "The expectation is what occupancy and the grid allow at the dense peaks; it leaves out the "
             "efficiency of the instruction mix (FlashAttention-2 reaches about a third of an H100's dense "
             "BF16 peak, the anchor rows), caches and op A's gathers through L1/L2.  Read a measurement "
             "against all three: below the bound means a measuring error; near the expectation, the kernel "
             "runs as its resources allow; near the anchor, as well as the reference implementation.", "",
             "| op | shape | pass | GPU | backend | bound ms | expected ms | anchor ms |",
             "|---|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['op']} | {shape_label(r['shape'])} | {r['pass']} | {r['gpu']} | {r['backend']}"
                     f"{' (' + r['kind'] + ')' if r['kind'] != 'ours' else ''} | {_ms(r['bound_s'])} | "
                     f"{_ms(r['expected_s'])} | {_ms(r['anchor_s'])} |")
    lines += ["", "## GPUs", "", "| GPU | arch | SMs | GB/s | BF16 TFLOP/s | TF32 TFLOP/s | FP32 TFLOP/s |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for gpu in GPUS:
        lines.append(f"| {gpu.name} | sm_{gpu.arch} | {gpu.sms} | {gpu.bandwidth_gbs:.0f} | {gpu.bf16_tflops:.0f} | "
                     f"{gpu.tf32_tflops:.1f} | {gpu.fp32_tflops:.1f} |")
    lines += ["", "Sources:", ""] + [f"- {gpu.name}: {gpu.source}" for gpu in GPUS]
    lines += ["", "## Anchors", ""] + [f"- {a['name']}: {a['source']}. {a['note']}." for a in ANCHORS]
    return "\n".join(lines) + "\n"


def compare(measured: list[dict[str, Any]], predicted: list[dict[str, Any]]) -> str:
    """One line per measured GPU record of our backends (and the baselines with an anchor): measured
    vs bound, expected and anchor on the matching GPU."""
    index = {(r["op"], r["pass"], r["backend"], _shape_key(r["shape"]), r["gpu"]): r for r in predicted}
    lines = [f"{'op':<22} {'shape':<28} {'pass':<8} {'backend':<12} {'gpu':<5} {'measured':>10} {'bound':>9} "
             f"{'expected':>9} {'anchor':>9}  measured/expected"]
    for m in measured:
        if not str(m.get("device", "")).startswith("cuda") or m.get("status") != "ok":
            continue
        name = (m.get("environment") or {}).get("gpu") or ""
        gpu = next((g.name for g in GPUS if g.name in name), None)
        backend = m["backend"] if m["baseline"] in ("none", "sdpa", "torchvision") else None
        if gpu is None or backend is None:
            continue
        p = index.get((m["op"], m["pass"], backend, _shape_key(m["shape"]), gpu))
        if p is None:
            continue
        from jmipose.bench.records import shape_label

        ratio = f"{m['median_s'] / p['expected_s']:.2f}x" if p.get("expected_s") else "–"
        lines.append(f"{m['op']:<22} {shape_label(m['shape']):<28} {m['pass']:<8} {backend:<12} {gpu:<5} "
                     f"{m['median_s'] * 1e3:>8.3f}ms {_ms(p['bound_s']):>9} {_ms(p['expected_s']):>9} "
                     f"{_ms(p['anchor_s']):>9}  {ratio}")
    if len(lines) == 1:
        lines.append("(no measured GPU record matches a predicted A100/H100/H200 row)")
    return "\n".join(lines)


def merge_reports(documents: list[dict], names: list[str]) -> tuple[list[dict], list[str]]:
    """Records of several compile-only documents, each backend's from the last document that has it, and
    a line per document naming what it gave."""
    chosen: dict[str, int] = {}
    for index, document in enumerate(documents):
        for record in document["records"]:
            chosen[record["backend"]] = index
    records, sources = [], []
    for index, (document, name) in enumerate(zip(documents, names)):
        backends = sorted(b for b, i in chosen.items() if i == index)
        records += [r for r in document["records"] if r["backend"] in backends]
        settings = document.get("settings", {})
        versions = ", ".join(f"{k} {settings[k]}" for k in ("triton", "nvcc") if settings.get(k))
        if backends:
            sources.append(f"{'/'.join(backends)} from {name} ({versions})")
    return records, sources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jmipose.bench.gpu_predicted", description=__doc__.splitlines()[0])
    parser.add_argument("--compile-report", type=Path, nargs="+",
                        help="`jmipose bench --compile-only --json` files; a backend's records come from the last "
                             "file that has it (e.g. the CUDA library from CI's, Triton from a triton 3.6 run)")
    parser.add_argument("--out", type=Path, help="write predicted.json and predicted.md here")
    parser.add_argument("--compare", type=Path, nargs="+", help="`jmipose bench --device cuda --json` files")
    parser.add_argument("--predicted", type=Path, default=Path("benchmarks/results/gpu-predicted/predicted.json"),
                        help="--compare: the predictions (default: the committed ones)")
    args = parser.parse_args(argv)
    if args.compare:
        try:
            predicted = json.loads(args.predicted.read_text())["rows"]
            measured = [r for path in args.compare for r in json.loads(path.read_text())["records"]]
        except (OSError, ValueError, KeyError) as exc:
            print(f"gpu_predicted: {exc}", file=sys.stderr)
            return 2
        print(compare(measured, predicted))
        return 0
    if not args.compile_report or not args.out:
        parser.error("give --compile-report and --out (or --compare)")
    report, sources = merge_reports([json.loads(path.read_text()) for path in args.compile_report],
                                    [path.name for path in args.compile_report])
    rows = predict(report)
    args.out.mkdir(parents=True, exist_ok=True)
    source = "; ".join(sources)
    (args.out / "predicted.json").write_text(json.dumps({
        "schema_version": SCHEMA_VERSION, "kind": KIND, "gpus": [asdict(g) for g in GPUS], "anchors": ANCHORS,
        "fa2_h100_tflops": FA2_H100, "saturating_warps": SATURATING_WARPS, "rows": rows}, indent=1) + "\n")
    (args.out / "predicted.md").write_text(render(rows, source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
