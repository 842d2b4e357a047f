"""PNG charts of benchmark records: speed-up of our backends over each baseline, per shape."""

from __future__ import annotations

import os
from typing import Any

from jmipose.bench.markdown import BASELINE_ORDER, _index
from jmipose.bench.records import shape_label

Record = dict[str, Any]


def speedups(records: list[Record], op: str) -> dict[str, dict[str, float]]:
    """{'backend vs baseline': {'shape pass': speed-up}} of one op (ok records only)."""
    series: dict[str, dict[str, float]] = {}
    for group in _index([r for r in records if r["op"] == op]).values():
        for ours in (r for r in group.values() if r["baseline"] == "none" and r["status"] == "ok"):
            for baseline in BASELINE_ORDER:
                other = group.get(baseline)
                if other is None or other["status"] != "ok":
                    continue
                part = ours["variant"] if op == "model" else ""
                label = f"{shape_label(ours['shape'])}\n{part} {ours['pass']}"
                series.setdefault(f"{ours['backend']} vs {baseline}", {})[label.strip()] = (
                    other["median_s"] / ours["median_s"])
    return series


def write_png(path: str | os.PathLike, records: list[Record]) -> list[str]:
    """One horizontal bar chart per op (speed-up, a line at 1x; log scale where the values span more
    than 20x); returns the ops drawn."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ops = [op for op in dict.fromkeys(r["op"] for r in records) if speedups(records, op)]
    if not ops:
        raise ValueError("write_png: no op has both a backend of ours and a baseline measured")
    heights = []
    for op in ops:
        labels = {label for values in speedups(records, op).values() for label in values}
        heights.append(max(2.5, 0.45 * len(labels) * max(1, len(speedups(records, op))) ** 0.5 + 1.2))
    figure, axes = plt.subplots(len(ops), 1, figsize=(10, sum(heights)), squeeze=False,
                                gridspec_kw={"height_ratios": heights})
    env = records[0]["environment"]
    figure.suptitle(f"jmipose speed-up over baselines — {env.get('gpu') or env.get('cpu')}, "
                    f"{env.get('threads')} threads, torch {env.get('torch')}", fontsize=10)
    for axis, op in zip(axes[:, 0], ops):
        series = speedups(records, op)
        labels = list(dict.fromkeys(label for values in series.values() for label in values))
        width = 0.8 / len(series)
        for i, (name, values) in enumerate(series.items()):
            positions = [labels.index(label) + i * width for label in values]
            bars = axis.barh(positions, list(values.values()), height=width, label=name)
            axis.bar_label(bars, labels=[f"{v:.2f}x" for v in values.values()], fontsize=6, padding=2)
        axis.set_yticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, fontsize=7)
        axis.invert_yaxis()
        values = [v for series_values in series.values() for v in series_values.values()]
        wide = max(values) / min(values) > 20  # log scale only where linear would squash the small bars
        if wide:
            axis.set_xscale("log")
            axis.xaxis.set_minor_formatter(NullFormatter())
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
        axis.axvline(1.0, color="black", linewidth=0.8)
        scale = "log scale; " if wide else ""
        axis.set_xlabel(f"speed-up (baseline time / our time; {scale}> 1x = ours faster)", fontsize=8)
        axis.set_title(op, fontsize=9)
        axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return ops
