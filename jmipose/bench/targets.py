"""The speed and memory targets of the op issues, checked against benchmark records.

Each target names the records it compares (op, pass, shape, device, which implementations) and a
threshold; ``evaluate(records)`` gives per target ``pass``, ``fail`` or ``not measured`` (the
records it needs are absent, skipped or failed: a CPU run cannot check a GPU target) and the
measured value, for the report's table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jmipose.bench import motion_attention, region_gather
from jmipose.bench.records import shape_label

OURS = {"cpu": ("cpp",), "cuda": ("cuda", "triton")}
Record = dict[str, Any]


@dataclass(frozen=True)
class Result:
    status: str  # "pass", "fail" or "not measured"
    measured: str  # the value(s) compared, or why nothing was


@dataclass(frozen=True)
class Target:
    key: str
    op: str
    device: str
    text: str  # the target as the issue states it
    check: Callable[[list[Record]], Result]

    def evaluate(self, records: list[Record]) -> Result:
        mine = [r for r in records if r["op"] == self.op and r["device"].split(":")[0] == self.device
                and r["status"] == "ok"]
        return self.check(mine)


def _find(records: list[Record], pass_: str, shape: dict[str, Any], baseline: str,
          backends: tuple[str, ...] | None = None) -> list[Record]:
    return [r for r in records if r["pass"] == pass_ and r["baseline"] == baseline
            and all(r["shape"].get(k) == v for k, v in shape.items())
            and (backends is None or r["backend"] in backends)]


def _best(records: list[Record]) -> Record | None:
    return min(records, key=lambda r: r["median_s"]) if records else None


def _fallback_note(shapes: list[dict[str, Any]], used: int) -> str:
    """Says when a target was checked at a stand-in shape (``--quick``) rather than its own."""
    if used == 0:
        return ""
    changed = {k: v for k, v in shapes[used].items() if shapes[0].get(k) != v}
    return " at " + ", ".join(f"{k}={v}" for k, v in changed.items()) + " (quick stand-in)"


def speedup_target(pass_: str, shapes: list[dict[str, Any]], device: str, baseline: str, at_least: float,
                   baseline_backends: tuple[str, ...] | None = None) -> Callable[[list[Record]], Result]:
    """Our fastest backend on ``device`` is >= ``at_least`` times faster than ``baseline``, at the
    first of ``shapes`` where both were measured (the target's shape, then stand-ins)."""
    def check(records: list[Record]) -> Result:
        missing = "our backend"
        for used, shape in enumerate(shapes):
            ours = _best(_find(records, pass_, shape, "none", OURS[device]))
            other = _best(_find(records, pass_, shape, baseline, baseline_backends))
            if ours is None or other is None:
                if used == 0:
                    missing = "our backend" if ours is None else f"the {baseline} baseline"
                continue
            ratio = other["median_s"] / ours["median_s"]
            # on a loaded shared machine the ratio of CPU seconds is the steadier witness
            cpu_ratio = ""
            if device == "cpu" and ours.get("cpu_s") and other.get("cpu_s"):
                cpu_ratio = f"; CPU-time ratio {other['cpu_s'] / ours['cpu_s']:.2f}x"
            return Result("pass" if ratio >= at_least else "fail",
                          f"{ratio:.2f}x ({ours['backend']}){_fallback_note(shapes, used)}{cpu_ratio}")
        return Result("not measured", f"no record of {missing}")
    return check


def memory_ratio_target(pass_: str, shapes: list[dict[str, Any]], device: str, baseline: str,
                        at_most: float) -> Callable[[list[Record]], Result]:
    """Our backend's peak memory is <= ``at_most`` times the baseline's (first shape measured)."""
    def check(records: list[Record]) -> Result:
        for used, shape in enumerate(shapes):
            ours = [r for r in _find(records, pass_, shape, "none", OURS[device])
                    if r["peak_mem_bytes"] is not None]
            other = [r for r in _find(records, pass_, shape, baseline) if r["peak_mem_bytes"]]
            if not ours or not other:
                continue
            mine = min(r["peak_mem_bytes"] for r in ours)
            theirs = other[0]["peak_mem_bytes"]
            return Result("pass" if mine <= at_most * theirs else "fail",
                          f"{mine / theirs:.2f} ({mine / 2**20:.0f} MB vs {theirs / 2**20:.0f} MB)"
                          f"{_fallback_note(shapes, used)}")
        return Result("not measured", f"no peak memory of both our backend and {baseline}")
    return check


def never_slower_target(device: str, baseline: str) -> Callable[[list[Record]], Result]:
    """At every shape and pass measured, our fastest backend is at least as fast as ``baseline``."""
    def check(records: list[Record]) -> Result:
        worst = None
        for other in (r for r in records if r["baseline"] == baseline):
            ours = _best(_find(records, other["pass"], other["shape"], "none", OURS[device]))
            if ours is None:
                continue
            ratio = other["median_s"] / ours["median_s"]
            if worst is None or ratio < worst[0]:
                worst = (ratio, other)
        if worst is None:
            return Result("not measured", f"no shape with both our backend and {baseline}")
        ratio, where = worst
        shape = shape_label(where["shape"])
        return Result("pass" if ratio >= 1.0 else "fail", f"min {ratio:.2f}x ({shape}, {where['pass']})")
    return check


def linear_memory_target(device: str, slack: float = 2.0) -> Callable[[list[Record]], Result]:
    """For every backend of ours and every (B, h, d, pass) measured at two N, peak memory grows at
    most ``slack`` times as fast as N.  For N x4, linear growth is x4 and quadratic x16: a bound of
    x8 separates them with room for allocator granularity at the small sizes --quick uses (a few MB)."""
    def check(records: list[Record]) -> Result:
        series: dict[tuple, list[Record]] = {}
        for r in records:
            square = r["shape"]["N_m"] == r["shape"]["N_j"]
            if r["baseline"] != "none" or r["peak_mem_bytes"] is None or not square:
                continue
            s = r["shape"]
            series.setdefault((r["backend"], r["pass"], s["B"], s["h"], s["d"]), []).append(r)
        worst = None
        for group in series.values():
            group.sort(key=lambda r: r["shape"]["N_m"])
            small, large = group[0], group[-1]
            if large["shape"]["N_m"] == small["shape"]["N_m"] or small["peak_mem_bytes"] <= 0:
                continue
            growth = large["peak_mem_bytes"] / small["peak_mem_bytes"]
            allowed = slack * large["shape"]["N_m"] / small["shape"]["N_m"]
            if worst is None or growth / allowed > worst[0] / worst[1]:
                worst = (growth, allowed, small, large)
        if worst is None:
            return Result("not measured", "no backend measured at two N")
        growth, allowed, small, large = worst
        return Result("pass" if growth <= allowed else "fail",
                      f"worst: {large['backend']} {large['pass']} "
                      f"N {small['shape']['N_m']}->{large['shape']['N_m']}: memory x{growth:.1f} "
                      f"(linear bound x{allowed:.1f})")
    return check


def reported_target(pass_: str, shape: dict[str, Any], device: str) -> Callable[[list[Record]], Result]:
    """Achieved TFLOP/s reported against the device's peak."""
    def check(records: list[Record]) -> Result:
        ours = _best(_find(records, pass_, shape, "none", OURS[device]))
        if ours is None or ours.get("tflops") is None:
            return Result("not measured", "no record of our backend")
        if ours.get("tflops_fraction") is None:
            return Result("fail", f"{ours['tflops']:.1f} TFLOP/s; device peak unknown "
                                  f"({ours['environment'].get('gpu')})")
        return Result("pass", f"{ours['tflops']:.1f} TFLOP/s = {100 * ours['tflops_fraction']:.1f}% of peak")
    return check


A_SHAPE = [dict(region_gather.TARGET_SHAPE), dict(region_gather.QUICK_SHAPE)]
B_SHAPE = [dict(motion_attention.TARGET_SHAPE)]
B_GPU_SHAPE = [dict(motion_attention.GPU_TARGET_SHAPE)]
A_OP, B_OP = region_gather.OP, motion_attention.OP

TARGETS: list[Target] = [
    Target("A-cpu-tv", A_OP, "cpu", "CPU fwd+bwd B=32, 48 ch, 96x72, 3x3: >= 2x torchvision",
           speedup_target("fwd+bwd", A_SHAPE, "cpu", "torchvision", 2.0)),
    Target("A-cpu-eager", A_OP, "cpu", "CPU fwd+bwd B=32, 48 ch, 96x72, 3x3: >= 3x eager reference",
           speedup_target("fwd+bwd", A_SHAPE, "cpu", "eager", 3.0)),
    Target("A-cpu-mem", A_OP, "cpu",
           "CPU fwd+bwd B=32, 48 ch, 96x72, 3x3: peak memory <= 1/3 of torchvision's",
           memory_ratio_target("fwd+bwd", A_SHAPE, "cpu", "torchvision", 1 / 3)),
    Target("A-cpu-never-slower", A_OP, "cpu", "CPU: never slower than torchvision at any benchmarked shape",
           never_slower_target("cpu", "torchvision")),
    Target("A-gpu-tv", A_OP, "cuda", "GPU fwd+bwd B=32, 48 ch, 96x72, 3x3: >= 2x torchvision's CUDA op",
           speedup_target("fwd+bwd", A_SHAPE, "cuda", "torchvision", 2.0)),
    Target("A-gpu-never-slower", A_OP, "cuda", "GPU: never slower than torchvision at any benchmarked shape",
           never_slower_target("cuda", "torchvision")),
    Target("B-cpu-eager", B_OP, "cpu", "CPU fwd+bwd B=8, h=1, d=48, N=1728: >= 3x eager",
           speedup_target("fwd+bwd", B_SHAPE, "cpu", "eager", 3.0)),
    Target("B-cpu-sdpa", B_OP, "cpu", "CPU fwd+bwd B=8, h=1, d=48, N=1728: >= 1.0x the SDPA pair",
           speedup_target("fwd+bwd", B_SHAPE, "cpu", "sdpa", 1.0)),
    Target("B-cpu-linear", B_OP, "cpu", "CPU: peak memory linear in N on every backend",
           linear_memory_target("cpu")),
    Target("B-gpu-sdpa", B_OP, "cuda", "GPU bf16 fwd+bwd B=32, N=6912 (h=1, d=48): >= 1.0x the SDPA pair",
           speedup_target("fwd+bwd", B_GPU_SHAPE, "cuda", "sdpa", 1.0)),
    Target("B-gpu-eager", B_OP, "cuda", "GPU bf16 fwd+bwd B=32, N=6912 (h=1, d=48): >= 5x eager",
           speedup_target("fwd+bwd", B_GPU_SHAPE, "cuda", "eager", 5.0)),
    Target("B-gpu-tflops", B_OP, "cuda", "GPU bf16 fwd+bwd B=32, N=6912: achieved TFLOP/s vs device peak",
           reported_target("fwd+bwd", B_GPU_SHAPE[0], "cuda")),
    Target("B-gpu-linear", B_OP, "cuda", "GPU: peak memory linear in N on every backend",
           linear_memory_target("cuda")),
]


def evaluate(records: list[Record], op: str | None = None) -> list[tuple[Target, Result]]:
    """Every target (of ``op``, or all) with its result on these records."""
    return [(t, t.evaluate(records)) for t in TARGETS if op is None or t.op == op]
