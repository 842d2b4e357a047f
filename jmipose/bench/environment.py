"""Where a benchmark ran: versions, CPU model or GPU name, thread counts (stored in every record)."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Any

import torch


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


def set_threads(threads: int) -> None:
    """A fixed thread count for torch and, through OMP_NUM_THREADS, for the C++ backend's OpenMP
    pool (read when the OpenMP runtime starts, so call this before the first kernel runs)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def _openmp_threads() -> int | None:
    from jmipose.ops import _backends

    lib = _backends.cpu_lib()
    if lib is None:
        return None
    lib.jmipose_cpu_max_threads.restype = int
    return lib.jmipose_cpu_max_threads()


@lru_cache(maxsize=4)
def environment(device: str = "cpu") -> dict[str, Any]:
    """torch, triton, jmipose versions, the device's name, threads: the context of every record."""
    import jmipose

    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001 - a missing or broken triton is recorded, not raised
        triton_version = None
    try:
        import torchvision

        torchvision_version = torchvision.__version__
    except Exception:  # noqa: BLE001
        torchvision_version = None
    env = {
        "jmipose": jmipose.__version__,
        "torch": torch.__version__,
        "triton": triton_version,
        "torchvision": torchvision_version,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": available_cores(),
        "threads": torch.get_num_threads(),
        "openmp_threads": _openmp_threads(),
        "gpu": None,
        "cuda": torch.version.cuda,
    }
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env
