"""A toy pose model and an in-memory dataset with the project's sample contract, for trainer tests.

Also a script: ``python tests/engine/toy.py OUT [--resume] [--epochs N] ...`` trains the toy config
(used by the kill -9 and torchrun tests); ``JMIPOSE_TOY_KILL=<n>`` makes it SIGKILL itself inside its
n-th file write (after the temporary file is written, before the rename), a crash during checkpoint
writing at a known point.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from jmipose.config import TrainConfig  # noqa: E402
from jmipose.engine.distributed import mix_seed  # noqa: E402
from jmipose.engine.train import Trainer  # noqa: E402

JOINTS, SIZE, FRAMES = 3, 16, 3


class ToyOutput(NamedTuple):
    heatmaps: torch.Tensor
    backbone_heatmaps: torch.Tensor
    aux_loss: torch.Tensor


class ToyPose(nn.Module):
    """Conv + BatchNorm + dropout over the frame mean: enough state to catch a resume that is not exact."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.norm = nn.BatchNorm2d(width)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Conv2d(width, JOINTS, 1)

    def forward(self, frames: torch.Tensor) -> ToyOutput:
        x = torch.relu(self.norm(self.stem(frames.mean(1))))
        heatmaps = self.head(self.drop(x))
        return ToyOutput(heatmaps, heatmaps.detach(), 1e-3 * self.head.weight.pow(2).sum())


class ToySet(torch.utils.data.Dataset):
    """``n`` samples; augmentation noise drawn from (seed, epoch, index), as the real datasets do."""

    def __init__(self, n: int = 20, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, item):
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        base = np.random.default_rng(index)
        frames = base.normal(0, 1, (FRAMES, 3, SIZE, SIZE)).astype(np.float32)
        augment = np.random.default_rng(mix_seed(self.seed, epoch, index))
        frames += augment.normal(0, 0.1, frames.shape).astype(np.float32)
        heatmaps = np.zeros((JOINTS, SIZE, SIZE), np.float32)
        for j in range(JOINTS):
            heatmaps[j, (index + 3 * j) % SIZE, (2 * index + j) % SIZE] = 1.0
        return {"frames": torch.from_numpy(frames), "heatmaps": torch.from_numpy(heatmaps),
                "target_weight": torch.ones(JOINTS), "meta": {"image_id": index}}


def toy_loss(output, batch):
    """The real loss's shape: total, logged parts, and the weighted terms whose gradient norms are logged."""
    mse = ((output.heatmaps - batch["heatmaps"]) ** 2).mean()
    aux = 2 * output.aux_loss
    return mse + aux, {"heatmap_loss": mse.detach(), "aux_loss": output.aux_loss.detach()}, \
        {"heatmap": mse, "aux": aux}


def toy_config(**overrides) -> TrainConfig:
    values = dict(epochs=2, batch_size=4, lr=1e-2, milestones=(1,), num_workers=0, progress=False,
                  log_every=1, checkpoint_every=1, val_every=1)
    values.update(overrides)
    return TrainConfig(**values)


def toy_validate(model, epochs_done):
    """A deterministic 'AP' from the weights, so best-checkpoint bookkeeping has something to track."""
    total = float(100 / (1 + model.head.weight.abs().sum()))
    return {"Head": total, "Shoulder": total, "Elbow": total, "Wrist": total, "Hip": total, "Knee": total,
            "Ankle": total, "Total": total}


def make_trainer(out, *, seed: int = 0, model_seed: int = 0, width: int = 8, plot: bool = False,
                 samples: int = 20, dist_info=None, **cfg) -> Trainer:
    torch.manual_seed(model_seed)
    return Trainer(ToyPose(width), ToySet(samples), toy_config(**cfg), out,
                   run_config={"model": {"toy": width}}, validate=toy_validate, loss_fn=toy_loss, seed=seed,
                   plot=plot, dist_info=dist_info)


def weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def install_kill_switch(count: int) -> None:
    """SIGKILL this process inside its ``count``-th atomic write, after the data, before the rename."""
    calls = {"n": 0}
    real_replace = os.replace

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == count:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)

    os.replace = replace  # every checkpoint file is renamed into place through os.replace


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--digest-file", default=None)
    args = parser.parse_args(argv)
    if os.environ.get("JMIPOSE_TOY_KILL"):
        install_kill_switch(int(os.environ["JMIPOSE_TOY_KILL"]))
    from jmipose.engine.distributed import cleanup, init_distributed

    info = init_distributed("cpu")
    torch.set_num_threads(1)
    extra = dict(samples=21, batch_size=5) if info.distributed else {}
    trainer = make_trainer(args.out, width=args.width, epochs=args.epochs, num_workers=args.workers,
                           dist_info=info, **extra)
    trainer.fit(resume=args.resume)
    # fit() frees its DDP wrapper before the process group goes (else exit can deadlock in gloo)
    assert trainer.train_model is trainer.model, "Trainer.fit left its DDP wrapper alive"
    if args.digest_file:
        with open(f"{args.digest_file}.{info.rank}", "w") as f:
            f.write(weights_digest(trainer.model))
    cleanup(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
