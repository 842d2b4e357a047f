"""Side-by-side timing and peak memory of benchmark cases.

The implementations of one shape and pass (a *group*: our backends and the baselines) are built
first (inputs allocated outside the timed calls), warmed up (``torch.compile`` compiles then), and
timed in interleaved rounds: each round runs every implementation once, so a noisy neighbour on a
shared machine slows all of them alike.  Rounds continue past ``min_repeats`` until every inter-
quartile range is under ``target_iqr`` of its median, or ``max_repeats`` rounds or ``group_budget_s``
seconds have passed (then the record keeps the larger IQR and the report flags it).

Peak memory (taken in the first timed round) is the growth during one call over what was allocated
before it (inputs excluded, outputs and gradients included): on a GPU
``torch.cuda.max_memory_allocated``; on the CPU, where torch keeps no allocator statistics, the
kernel's resident-set high-water mark (VmHWM, reset through ``/proc/self/clear_refs``) minus the RSS
before the call.  For the RSS to follow the live tensors, ``configure_allocator()`` pins glibc's mmap
threshold at 64 KiB (large blocks are unmapped when freed instead of staying resident in the heap)
once per process, before anything is measured.

What ``torch.utils.benchmark`` does here, and why the rest is ours:

- Thread settings: ``runner.run`` measures inside ``torch.utils.benchmark.set_torch_threads`` (the
  caller's thread count comes back after it), as its ``Timer(num_threads=...)`` would.
- Timing stays ours.  Each of ``Timer``'s entry points runs calls we cannot spend: ``timeit(1)``
  makes two warm-up calls before the timed one, ``blocked_autorange`` one call to size its blocks,
  and both time one statement back to back.  A round of one timed call per implementation (the
  interleaving) would cost two to three times the calls, some of which take minutes here (the
  eager reference at B=32 on two cores), and would time each implementation right after calls of
  its own, its data hot in the caches, where the interleaved rounds time it after the others'.  We
  also record the process CPU time of every call, and on a GPU time it with CUDA events (device
  time between the two events), where ``Timer``'s clock synchronises the device and reads the host's.
- Statistics stay ours: median and quartiles by Python's ``statistics`` module (the exclusive
  method).  ``torch.utils.benchmark.Measurement`` interpolates its quartiles linearly, which with the
  3 to 15 rounds a group gets narrows the IQR (to half the range at 3 rounds, where the exclusive
  method gives the whole range): the stop rule (IQR under ``target_iqr`` of the median) would stop
  groups after three rounds twice as far apart, and the report would flag fewer noisy figures.
  The medians are the same.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

PASSES = ("fwd", "fwd+bwd")
BASELINES = ("none", "eager", "compile", "torchvision", "sdpa")


class Runner(Protocol):
    """One pass of a case on inputs built once: ``runner()`` runs it, ``runner.reset()`` drops what
    the previous call left (gradients), so memory accounting starts from the inputs alone."""

    def __call__(self) -> Any: ...

    def reset(self) -> None: ...


@dataclass
class Case:
    """One implementation at one shape and pass; ``make`` builds its runner (None when skipped)."""

    op: str
    variant: str
    pass_: str
    backend: str
    baseline: str
    shape: dict[str, Any]
    dtype: str
    device: str
    make: Callable[[], Runner] | None
    skip: str | None = None
    flops: float | None = None
    bytes_moved: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pass_ not in PASSES:
            raise ValueError(f"Case.pass_ must be one of {PASSES}, got {self.pass_!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"Case.baseline must be one of {BASELINES}, got {self.baseline!r}")
        if self.make is None and self.skip is None:
            raise ValueError(f"Case {self.op}/{self.backend}: make is None but no skip reason was given")

    @property
    def group_key(self) -> tuple:
        return (self.op, self.variant, self.pass_, tuple(sorted(self.shape.items())))


@dataclass
class Settings:
    """How hard to measure: rounds, warm-up calls, the IQR goal, a time budget per group."""

    min_repeats: int = 5
    max_repeats: int = 15
    warmup: int = 1
    target_iqr: float = 0.10
    group_budget_s: float = 60.0
    memory: bool = True


def op_implementation(op: Callable, reference: Callable, backend: str, baseline: str) -> Callable:
    """What one benchmark row calls: the eager reference, ``torch.compile`` of it, or the public op on
    ``backend`` (the op-specific baselines, torchvision and SDPA, are resolved by the op's module)."""
    if baseline == "eager":
        return reference
    if baseline == "compile":
        torch._dynamo.reset()  # one compiled shape per group: never hit dynamo's recompile limit
        return torch.compile(reference, dynamic=False)

    def ours(*args, **kwargs):
        return op(*args, **kwargs, backend=backend)

    return ours


def our_implementations(device: str) -> list[tuple[str, str, str | None]]:
    """(backend, baseline, skip reason) rows of our backends on ``device`` and the eager / compiled
    reference.  Triton on the CPU runs in its interpreter (a test tool, not a benchmark): GPU only."""
    import jmipose

    status = jmipose.ops.backends()
    ours = ["cpp"] if device == "cpu" else ["cuda", "triton"]
    rows = [(b, "none", None if status[b].live else f"backend {b} not live: {status[b].reason}") for b in ours]
    return rows + [("reference", "eager", None), ("reference", "compile", None)]


def quartiles(samples: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile); statistics.quantiles' exclusive method."""
    if not samples:
        raise ValueError("quartiles: no samples")
    if len(samples) == 1:
        return samples[0], samples[0], samples[0]
    q1, q2, q3 = statistics.quantiles(samples, n=4)
    return q1, statistics.median(samples), q3


def iqr_ok(samples: list[float], target: float) -> bool:
    q1, median, q3 = quartiles(samples)
    return (q3 - q1) <= target * median


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_call(runner: Runner, device: str) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call; CUDA wall time by events."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        cpu_start = time.process_time()
        start.record()
        runner()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, time.process_time() - cpu_start
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    runner()
    return time.perf_counter() - wall_start, time.process_time() - cpu_start


_ALLOCATOR_CONFIGURED = False


def configure_allocator() -> None:
    """Pin glibc's mmap threshold (see the module docstring); a no-op where libc is not glibc."""
    global _ALLOCATOR_CONFIGURED
    if _ALLOCATOR_CONFIGURED:
        return
    _ALLOCATOR_CONFIGURED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD; also turns off glibc's dynamic threshold
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_bytes(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field_name} in /proc/self/status")


def _prepare_peak(runner: Runner, device: str) -> int | None:
    """Drop what the last call left, reset the peak counter; returns the baseline (None: no counter)."""
    runner.reset()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    configure_allocator()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        before = _status_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
    except OSError:
        return None
    return before


def _read_peak(before: int, device: str) -> int:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return max(0, torch.cuda.max_memory_allocated() - before)
    return max(0, _status_bytes("VmHWM") - before)


def _build(group: list[Case], settings: Settings) -> tuple[dict[int, Runner], dict[int, str]]:
    runners, failures = {}, {}
    for index, case in enumerate(group):
        if case.skip is not None:
            continue
        try:
            runner = case.make()
            for _ in range(settings.warmup):
                runner()
            _sync(case.device)
            runners[index] = runner
        except Exception as exc:  # noqa: BLE001
            # out of memory, a compiler failure, an unsupported dtype: record it, measure the others
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            failures[index] = f"failed: {type(exc).__name__}: {first_line}"
            if case.device.startswith("cuda"):
                torch.cuda.empty_cache()  # what the failed case held must not crowd the next ones
    return runners, failures


def measure_group(group: list[Case], settings: Settings | None = None,
                  environment: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One record per case (see ``jmipose.bench.records``), repetitions interleaved across the group."""
    from jmipose.bench.records import make_record

    settings = settings or Settings()
    runners, failures = _build(group, settings)
    walls: dict[int, list[float]] = {i: [] for i in runners}
    cpus: dict[int, list[float]] = {i: [] for i in runners}
    memory: dict[int, int | None] = {}
    started = time.perf_counter()
    rounds = 0
    while runners:
        for index, runner in runners.items():
            device = group[index].device
            # the first round also measures peak memory (the counter is reset outside the timed call)
            before = _prepare_peak(runner, device) if settings.memory and rounds == 0 else None
            wall, cpu = timed_call(runner, device)
            if before is not None:
                memory[index] = _read_peak(before, device)
            walls[index].append(wall)
            cpus[index].append(cpu)
        rounds += 1
        if rounds >= settings.max_repeats:
            break
        if rounds >= settings.min_repeats:
            if all(iqr_ok(s, settings.target_iqr) for s in walls.values()):
                break
            if time.perf_counter() - started > settings.group_budget_s:
                break
    records = []
    for index, case in enumerate(group):
        memory_note = None
        if settings.memory and index in runners and memory.get(index) is None:
            memory_note = "peak memory not measured: no peak-RSS reset here (/proc/self/clear_refs)"
        records.append(make_record(case, walls.get(index), cpus.get(index), memory.get(index),
                                   case.skip or failures.get(index), memory_note, environment))
    runners.clear()
    gc.collect()
    return records


def measure(cases: list[Case], settings: Settings | None = None, environment: dict[str, Any] | None = None,
            progress: Callable[[str], None] | None = None,
            after_group: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Records for any list of cases, grouped by (op, variant, pass, shape) in first-seen order;
    ``after_group(records so far)`` runs after each group (partial results survive a timeout)."""
    groups: dict[tuple, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.group_key, []).append(case)
    records = []
    for group in groups.values():
        if progress is not None:
            first = group[0]
            shape = " ".join(f"{k}={v}" for k, v in first.shape.items())
            progress(f"{first.op} {first.variant} {first.pass_} [{shape}]: "
                     + ", ".join(f"{c.backend}/{c.baseline}" for c in group))
        records += measure_group(group, settings, environment)
        if after_group is not None:
            after_group(records)
    return records
