"""Model-level benchmark: parameters, FLOPs and forward / forward+backward time of one configuration,
eager references (use_kernels=False) and default backends (use_kernels=True) side by side.

    python benchmarks/bench_model.py --variant jmi --backbone w48 --size 384 288 --batch 1 --threads 2
    python benchmarks/bench_model.py --variant jm --device cuda --dtype bfloat16 --json out.json

The training step timed is the official one: frozen backbone (no_grad), head forward + backward of
the heatmap MSE plus 2 x the auxiliary loss.  Times are medians over ``--repeats`` after
``--warmup`` runs; on a shared machine they are provisional (the process CPU seconds, reported
beside them, suffer less from other jobs than the wall-clock time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from jmipose.models import build_model, describe, pose_loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_model(config: dict, frames: torch.Tensor, backward: bool, warmup: int, repeats: int,
               dtype: torch.dtype | None) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds (all threads) of each timed step."""
    torch.manual_seed(0)
    model = build_model(config).to(frames.device).train()
    heatmap_size = (frames.shape[-2] // 4, frames.shape[-1] // 4)
    target = torch.rand(frames.shape[0], model.config.num_joints, *heatmap_size, device=frames.device)
    times, cpu_times = [], []
    for step in range(warmup + repeats):
        _sync(frames.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.autocast(frames.device.type, dtype=dtype, enabled=dtype is not None), \
                torch.set_grad_enabled(backward):
            output = model(frames)
            loss = pose_loss(output, target).total
        if backward:
            loss.backward()
            model.zero_grad(set_to_none=True)
        _sync(frames.device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    return times, cpu_times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="jmi", choices=["jmi", "jm", "baseline"])
    parser.add_argument("--backbone", default="w48", choices=["w48", "w32", "tiny"])
    parser.add_argument("--size", type=int, nargs=2, default=(384, 288), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, choices=[None, "bfloat16", "float16"], help="autocast dtype")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paths", default="reference,kernels", help="reference, kernels or both")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="extra model config field, e.g. --set attention_pool=2")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = {"variant": args.variant, "backbone": args.backbone}
    for item in args.set:
        key, _, value = item.partition("=")
        config[key] = json.loads(value)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    frames = torch.randn(args.batch, config.get("num_frames", 5), 3, *args.size, device=device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {"config": config, "device": device_name,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "dtype": args.dtype,
              **describe(config, tuple(args.size), args.batch), "timings": {}}
    for path in args.paths.split(","):
        use_kernels = path == "kernels"
        for backward in (False, True):
            times, cpu_times = time_model({**config, "use_kernels": use_kernels}, frames, backward, args.warmup,
                               args.repeats, dtype)
            name = f"{path}_{'forward_backward' if backward else 'forward'}"
            result["timings"][name] = {"median_s": statistics.median(times), "all_s": times,
                                       "median_cpu_s": statistics.median(cpu_times)}
            listed = ", ".join(f"{t:.3f}" for t in times)
            print(f"{name:<32} median {statistics.median(times):8.3f} s  ({listed}); "
                  f"CPU {statistics.median(cpu_times):.1f} s", flush=True)
    print(json.dumps({k: v for k, v in result.items() if k != "timings"}, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
