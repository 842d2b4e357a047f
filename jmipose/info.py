"""Versions, the machine, live backends and the flags the compiled libraries were built with: what
``jmipose info`` prints and the one source of the environment block of every benchmark record."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _version(module: str) -> str | None:
    """``module.__version__``, or None where it does not import (a missing or broken install is
    reported, not raised)."""
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001
        return None


def collect() -> dict[str, Any]:
    """Everything ``jmipose info`` prints, as a dict (``environment`` takes the benchmark block from it)."""
    import torch

    import jmipose
    from jmipose.ops import _backends

    status = _backends.backends()
    threads = None
    if status["cpp"].live:
        threads = _backends.c_functions("cpu")["jmipose_cpu_max_threads"]()
    return {
        "jmipose": jmipose.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": available_cores(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _version("triton"),
        "torchvision": _version("torchvision"),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
        "torch_threads": torch.get_num_threads(),
        "openmp_threads": threads,
        "backends": {name: {"live": s.live, "reason": s.reason or None} for name, s in status.items()},
        "build": _backends.build_info(),
        "library_dir": str(_backends.LIB_DIR),
    }


def environment(device: str = "cpu") -> dict[str, Any]:
    """Where a benchmark ran, stored in each of its records: versions, the CPU and its cores, torch's
    and the C++ library's OpenMP threads, and the GPU of ``device`` (None on the CPU); from
    ``collect``."""
    import torch

    info = collect()
    env = {key: info[key] for key in ("jmipose", "torch", "triton", "torchvision", "python", "cpu", "cores")}
    env.update(threads=info["torch_threads"], openmp_threads=info["openmp_threads"], gpu=None,
               cuda=info["torch_cuda"])
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def describe_model(config: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Parameters and forward FLOPs of the model of a run config (a YAML path or a shipped config's
    name) at its input size, for one window; counted on the meta device (nothing is allocated)."""
    from jmipose.config import load_config
    from jmipose.models.summary import describe

    cfg = load_config(config, overrides or [])
    width, height = cfg.data.image_size
    return describe(cfg.model, input_size=(height, width))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--model", metavar="CONFIG",
                        help="also describe the model of a run config (YAML path or shipped name, e.g. "
                             "posetrack17): parameters and GFLOPs at its input size")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value for --model (repeatable), e.g. model.variant=jm")
    parser.add_argument("--no-loss-balance", dest="loss_balance", action="store_false",
                        help="with --model, skip the loss balance at initialisation (the gradient norm of "
                             "each loss term on the trainable parameters, one forward and two backward "
                             "passes on 2 random windows at the config's input size: about a minute for "
                             "HRNet-W48 on a CPU)")


def main(args: argparse.Namespace) -> int:
    info = collect()
    if args.model:
        info["model"] = describe_model(args.model, args.overrides)
        if args.loss_balance:
            from jmipose.engine.train import loss_balance

            info["model"]["loss_balance"] = loss_balance(args.model, args.overrides)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"jmipose {info['jmipose']}  (python {info['python']}, {info['platform']})")
    print(f"torch   {info['torch']}  (CUDA {info['torch_cuda'] or 'none'}; "
          f"GPUs: {', '.join(info['cuda_devices']) or 'none'})")
    print(f"triton  {info['triton'] or 'not installed'}")
    print(f"torchvision {info['torchvision'] or 'not installed'}")
    print(f"cpu     {info['cpu']} ({info['cores']} cores available)")
    print(f"threads torch={info['torch_threads']} openmp={info['openmp_threads']}")
    print("backends:")
    for name, s in info["backends"].items():
        print(f"  {name:<10} {'live' if s['live'] else 'not live: ' + s['reason']}")
    build = info["build"]
    if build:
        print("build:")
        print(f"  C++    {build.get('cxx')}  {' '.join(build.get('cxxflags', []))}")
        if build.get("cuda"):
            print(f"  CUDA   {build.get('nvcc')}  archs {build.get('cuda_arch')}  {' '.join(build.get('gencode', []))}")
        else:
            print(f"  CUDA   not built ({build.get('cuda_skipped_reason')})")
        print(f"  sanitizers {'on' if build.get('sanitize') else 'off'}; built {build.get('built_at')}")
    else:
        print(f"build:  no compiled libraries in {info['library_dir']} (pure-PyTorch reference only)")
    if "model" in info:
        m = info["model"]
        print(f"model {args.model}: {m['variant']} on {m['backbone']}, input {m['input']}")
        print(f"  parameters {m['params']:,} (trainable {m['trainable_params']:,}; backbone "
              f"{m['backbone_params']:,}, head {m['head_params']:,})")
        print(f"  forward {m['flops'] / 1e9:.1f} GFLOPs per window")
        if "loss_balance" in m:
            b = m["loss_balance"]
            width, height = b["input"]
            print(f"  loss balance at initialisation ({b['windows']} random windows at {width}x{height}; backbone "
                  f"{b['backbone']}):")
            print(f"    gradient norm on the trainable parameters: heatmap MSE {b['grad_norm_heatmap']:.3g}, "
                  f"{b['aux_weight']:g} x auxiliary term ({b['aux_estimator']} estimator) {b['grad_norm_aux']:.3g}; "
                  f"ratio {b['grad_ratio_aux']:.3g}")
    return 0
