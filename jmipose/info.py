"""Versions, live backends and the flags the compiled libraries were built with."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from typing import Any


def collect() -> dict[str, Any]:
    """Everything ``jmipose info`` prints, as a dict (also used by benchmark records)."""
    import torch

    import jmipose
    from jmipose.ops import _backends

    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001 - a broken triton is reported, not raised
        triton_version = None
    status = _backends.backends()
    cpu_lib = _backends.cpu_lib()
    threads = None
    if cpu_lib is not None:
        cpu_lib.jmipose_cpu_max_threads.restype = int
        threads = cpu_lib.jmipose_cpu_max_threads()
    return {
        "jmipose": jmipose.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
        "torch_threads": torch.get_num_threads(),
        "openmp_threads": threads,
        "backends": {name: {"live": s.live, "reason": s.reason or None} for name, s in status.items()},
        "build": _backends.build_info(),
        "library_dir": str(_backends.LIB_DIR),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def main(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"jmipose {info['jmipose']}  (python {info['python']}, {info['platform']})")
    print(f"torch   {info['torch']}  (CUDA {info['torch_cuda'] or 'none'}; "
          f"GPUs: {', '.join(info['cuda_devices']) or 'none'})")
    print(f"triton  {info['triton'] or 'not installed'}")
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
    return 0
