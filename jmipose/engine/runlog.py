"""Run logs: CSV always, TensorBoard when the ``tensorboard`` package is importable, a PNG of the
training curves at the end. A resumed run first drops the rows written after its checkpoint, so the
logs read as if the run had never stopped."""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path

from jmipose.fileio import atomic_write_bytes, atomic_write_text

log = logging.getLogger("jmipose.train")

TRAIN_FIELDS = ("epoch", "step", "loss", "heatmap_loss", "aux_loss", "lr", "samples_per_s", "seconds",
                "grad_norm_heatmap", "grad_norm_aux", "grad_ratio_aux")
VAL_FIELDS = ("epoch", "step", "Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total")


class CsvLog:
    """Rows appended to a CSV file, flushed each time (a killed run keeps what it logged)."""

    def __init__(self, path: Path, fields: tuple[str, ...], resume_step: int | None = None):
        self.path, self.fields = path, fields
        rows = []
        if resume_step is not None and path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if _as_int(r.get("step")) <= resume_step]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, buffer.getvalue())

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(
                {k: _fmt(v) for k, v in row.items()})

    def read(self) -> list[dict]:
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))


def _as_int(value) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return -1


def _fmt(value):
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return value


class TensorBoard:
    """A SummaryWriter when tensorboard is installed; otherwise nothing (said once in the log)."""

    def __init__(self, folder: Path, enabled: bool = True):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard is not installed: CSV logs only")
            return
        self.writer = SummaryWriter(str(folder))

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_curves(train_csv: Path, val_csv: Path, out: Path, title: str = "training") -> Path | None:
    """Loss against step and validation AP against epoch, as one PNG (None when nothing was logged)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    train = _read(train_csv)
    val = _read(val_csv)
    if not train and not val:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    if train:
        steps = [float(r["step"]) for r in train]
        losses = {"total": [_float(r["loss"]) for r in train]}
        if any(_float(r.get("aux_loss")) for r in train):
            losses["heatmap"] = [_float(r["heatmap_loss"]) for r in train]
            losses["auxiliary"] = [_float(r["aux_loss"]) for r in train]
        for label, values in losses.items():
            axes[0].plot(steps, values, label=label)
        if all(v > 0 for values in losses.values() for v in values):
            axes[0].set_yscale("log")  # an information objective can make the loss negative
        axes[0].set_xlabel("step")
        axes[0].set_ylabel("loss")
        axes[0].legend()
    if val:
        axes[1].plot([float(r["epoch"]) for r in val], [_float(r["Total"]) for r in val], marker="o")
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("AP Total (%)")
    axes[0].set_title(f"{title}: loss")
    axes[1].set_title(f"{title}: validation AP")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
