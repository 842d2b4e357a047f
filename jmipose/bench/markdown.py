"""The Markdown report of benchmark records: per op its targets with their status and a table of
median times and speed-ups over each baseline; then the model table."""

from __future__ import annotations

from typing import Any

from jmipose.bench.records import shape_label
from jmipose.bench.targets import evaluate

Record = dict[str, Any]
BASELINE_ORDER = ("eager", "compile", "torchvision", "sdpa")
MARK = {"pass": "✔", "fail": "✘", "not measured": "–"}
NOISY = "†"


def noisy(record: Record, tolerance: float = 0.10) -> bool:
    """IQR above ``tolerance`` of the median: the figure is flagged in the tables."""
    return record["iqr_s"] is not None and record["iqr_s"] > tolerance * record["median_s"]


def milliseconds(record: Record | None) -> str:
    if record is None or record["status"] != "ok":
        return "–"
    return f"{record['median_s'] * 1e3:.2f}{NOISY if noisy(record) else ''}"


def megabytes(record: Record | None) -> str:
    if record is None or record.get("peak_mem_bytes") is None:
        return "–"
    return f"{record['peak_mem_bytes'] / 2**20:.0f}"


def speedup(ours: Record, other: Record | None) -> str:
    if other is None or other["status"] != "ok" or ours["status"] != "ok":
        return "–"
    return f"{other['median_s'] / ours['median_s']:.2f}x"


def _key(record: Record) -> tuple:
    return (record["op"], record["variant"], record["pass"], tuple(sorted(record["shape"].items())))


def _index(records: list[Record]) -> dict[tuple, dict[str, Record]]:
    """(op, variant, pass, shape) -> {baseline: record} (ours under the backend's name)."""
    index: dict[tuple, dict[str, Record]] = {}
    for r in records:
        name = r["backend"] if r["baseline"] == "none" else r["baseline"]
        index.setdefault(_key(r), {})[name] = r
    return index


def environment_line(records: list[Record]) -> str:
    env = records[0]["environment"]
    where = env.get("gpu") or f"{env.get('cpu')} ({env.get('cores')} cores)"
    return (f"{where}; torch {env.get('torch')}, triton {env.get('triton') or 'absent'}, torchvision "
            f"{env.get('torchvision') or 'absent'}; {env.get('threads')} torch threads, "
            f"{env.get('openmp_threads')} OpenMP threads")


def targets_table(records: list[Record], op: str | None = None) -> list[str]:
    lines = ["| op | target | measured | status |", "|---|---|---|:---:|"]
    for target, result in evaluate(records, op):
        status = f"{MARK[result.status]} {result.status}"
        lines.append(f"| {target.op} | {target.text} | {result.measured} | {status} |")
    return lines


def op_table(records: list[Record], op: str) -> list[str]:
    mine = [r for r in records if r["op"] == op]
    baselines = [b for b in BASELINE_ORDER if any(r["baseline"] == b for r in mine)]
    gpu = any(r["device"].startswith("cuda") for r in mine)
    header = ["shape", "pass", "backend", "median ms", "peak MB"]
    header += ["TFLOP/s", "% peak", "GB/s"] if gpu else ["GFLOP/s"]
    for b in baselines:
        header += [f"{b} ms", f"x {b}", f"{b} MB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---:|" * (len(header) - 3)]
    index = _index(mine)
    for group in index.values():
        ours = [r for name, r in group.items() if r["baseline"] == "none"]
        for r in ours:
            cells = [shape_label(r["shape"]), r["pass"], r["backend"], milliseconds(r), megabytes(r)]
            if gpu:
                cells += [_fmt(r.get("tflops"), "{:.1f}"), _fmt(r.get("tflops_fraction"), "{:.1%}"),
                          _fmt(r.get("bandwidth_gbs"), "{:.0f}")]
            else:
                cells.append(_fmt(r.get("tflops") and r["tflops"] * 1e3, "{:.1f}"))
            for b in baselines:
                other = group.get(b)
                cells += [milliseconds(other), speedup(r, other), megabytes(other)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else spec.format(value)


def model_table(records: list[Record]) -> list[str]:
    mine = [r for r in records if r["op"] == "model"]
    lines = ["| model | part | pass | kernels ms | kernels fps | kernels MB | eager ms | x eager | "
             "eager MB | compile ms | x compile | compile MB |", "|---|---|---|" + "---:|" * 9]
    for group in _index(mine).values():
        ours = group.get("kernels")
        if ours is None:
            continue
        eager, compiled = group.get("eager"), group.get("compile")
        fps = "–" if ours.get("fps") is None else f"{ours['fps']:.2f}"
        part = ours["variant"] if ours["pass"] == "fwd" else f"{ours['variant']} (training step)"
        cells = [shape_label(ours["shape"]), part, ours["pass"], milliseconds(ours), fps, megabytes(ours)]
        for other in (eager, compiled):
            cells += [milliseconds(other), speedup(ours, other), megabytes(other)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def not_measured(records: list[Record], op: str) -> list[str]:
    """One line per distinct reason a record of ``op`` was skipped or failed, with how many."""
    reasons: dict[str, list[str]] = {}
    for r in records:
        if r["op"] == op and r["status"] != "ok":
            plain = r["baseline"] in ("none", r["backend"])
            name = r["backend"] if plain else f"{r['backend']}/{r['baseline']}"
            where = f"{name} {shape_label(r['shape'])} {r['pass']}"
            reasons.setdefault(f"{r['status']}: {r['reason']}", []).append(where)
    return [f"- {reason} ({len(where)}: {'; '.join(where[:3])}{'; ...' if len(where) > 3 else ''})"
            for reason, where in reasons.items()]


def render(records: list[Record], settings: dict[str, Any] | None = None, charts: str | None = None) -> str:
    """The whole report."""
    if not records:
        return "# jmipose benchmark\n\nNo records.\n"
    lines = ["# jmipose benchmark", "", environment_line(records)]
    if settings:
        lines += ["", "Settings: " + ", ".join(f"{k} = {v}" for k, v in settings.items())]
    lines += ["", f"Times are medians of interleaved repetitions; {NOISY} marks an inter-quartile range "
              "above 10% of the median (noisy). Speed-up `x B` = time of baseline B / time of ours; "
              "peak MB is the memory one call adds at its peak (inputs excluded)."]
    ops = list(dict.fromkeys(r["op"] for r in records))
    for op in ops:
        lines += ["", f"## {op}", ""]
        if op != "model":
            lines += ["Targets (from the op's issue; GPU targets need a `--device cuda` run):", ""]
            lines += targets_table(records, op) + [""]
        lines += model_table(records) if op == "model" else op_table(records, op)
        skipped = not_measured(records, op)
        if skipped:
            lines += ["", "Not measured:", ""] + skipped
    if charts:
        lines += ["", f"![speed-up per shape and backend]({charts})"]
    return "\n".join(lines) + "\n"
