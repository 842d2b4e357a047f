"""jmipose train: train a model from a YAML config, resumable bit for bit, DDP through torchrun.

    jmipose train posetrack18 train.lr=2e-4 --resume
    torchrun --nproc_per_node 2 -m jmipose train synthetic

AdamW and a multi-step schedule (the shipped PoseTrack configs set what the authors' code runs: lr 1e-4
at torch's default weight decay, constant for 20 epochs; docs/FIDELITY.md), loss = (joint-weighted)
heatmap MSE + ``aux_weight`` (2, the authors' weight) x the auxiliary objective, with AMP on GPU,
optional gradient clipping, validation by PoseTrack AP every ``train.val_every`` epochs, and
crash-safe checkpoints (``last`` and ``best``, see :mod:`jmipose.engine.state`).

Loss balance: at the first step and then every ``train.grad_norm_every`` steps (default: each log
step) the trainer measures the gradient norm of each loss term on the trainable parameters (the
terms the loss function returns, e.g. the heatmap MSE and ``aux_weight`` x the auxiliary objective)
and logs them with their ratio (``grad_norm_heatmap``, ``grad_norm_aux``, ``grad_ratio_aux``) to the
CSV log and TensorBoard.

Exact resume: each step reseeds every RNG from (seed, epoch, step, rank), samples are augmented from
(seed, epoch, index), the sampler restarts at the saved position inside the epoch, and the optimizer,
scheduler and scaler states are restored from the checkpoint, so a run killed at any point and
resumed ends with the same weights as one that never stopped (same world size, same device type).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from jmipose.config import TrainConfig
from jmipose.data.workers import batches, make_loader
from jmipose.engine.distributed import (
    DistInfo, EpochSampler, SeededSamples, accepts_epoch_index, barrier, mix_seed, pick_device,
    seed_everything,
)
from jmipose.engine.runlog import TRAIN_FIELDS, VAL_FIELDS, CsvLog, TensorBoard, plot_curves
from jmipose.engine.state import (
    capture_rng, flatten_optimizer, has_checkpoint, load_generation, restore_rng, save_generation,
    state_from_json, state_to_json, unflatten_optimizer,
)
from jmipose.fileio import atomic_write_json

log = logging.getLogger("jmipose.train")

# (output, batch) -> (loss, parts for the log) or (loss, parts, terms): ``terms`` are the weighted
# summands of ``loss`` (with their graphs) whose gradient norms the trainer measures.
LossFn = Callable[[Any, dict], tuple]
ValidateFn = Callable[[nn.Module, int], dict]  # (model, epochs done) -> AP dict with "Total"


def default_loss(aux_weight: float = 2.0) -> LossFn:
    """Joint-weighted heatmap MSE of the final heatmaps + ``aux_weight`` x the model's aux loss; the two
    summands are the terms whose gradient norms the trainer logs."""
    from jmipose.models.losses import pose_loss

    def loss_fn(output, batch: dict) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        parts = pose_loss(output, batch["heatmaps"], batch["target_weight"], aux_weight)
        logged = {"heatmap_loss": parts.heatmap.detach(), "aux_loss": parts.aux.detach()}
        return parts.total, logged, {"heatmap": parts.heatmap, "aux": aux_weight * parts.aux}

    return loss_fn


def term_grad_norms(terms: dict[str, Tensor], params: list[Tensor], scale: float = 1.0) -> dict[str, float]:
    """The L2 norm of the gradient of each loss term over ``params`` (float64 sums), leaving the graph
    for the training step's backward.  ``scale`` is the AMP loss scale: terms are differentiated scaled
    (no float16 underflow) and the norms divided by it.  A term without a graph has norm 0."""
    norms = {}
    for name, term in terms.items():
        if not (isinstance(term, Tensor) and term.requires_grad):
            norms[name] = 0.0
            continue
        grads = torch.autograd.grad(term * scale if scale != 1.0 else term, params, retain_graph=True,
                                    allow_unused=True)
        total = sum((g.detach().double().pow(2).sum() for g in grads if g is not None),
                    torch.zeros((), dtype=torch.float64))
        norms[name] = float(total.sqrt()) / scale
    return norms


@dataclass
class Position:
    epoch: int = 0           # the epoch in progress (0-based)
    step_in_epoch: int = 0   # optimizer steps done in it
    global_step: int = 0


@dataclass
class TrainResult:
    output_dir: Path
    epochs_done: int
    global_step: int
    best_ap: float | None
    best_epoch: int | None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    curves: Path | None = None

    @property
    def last_checkpoint(self) -> Path:
        return self.output_dir / "checkpoints" / "last"

    @property
    def best_checkpoint(self) -> Path | None:
        path = self.output_dir / "checkpoints" / "best"
        return path if path.with_suffix(".json").is_file() else None


def configure_determinism(device: torch.device) -> None:
    """Deterministic kernels where torch has them (a warning, not an error, where it has not)."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or setting == "off":
        return None
    if setting == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[setting]


def _to_device(batch: dict, device: torch.device) -> dict:
    moved = dict(batch)
    for key in ("frames", "heatmaps", "target_weight"):
        if key in moved:
            moved[key] = moved[key].to(device, non_blocking=True)
    return moved


def _collate(samples: list) -> dict:
    return torch.utils.data.default_collate(samples)


class Trainer:
    """The training loop of any model that maps ``batch["frames"]`` to an output ``loss_fn`` scores.

    ``run_config`` (a plain dict, with a ``model`` section for real models) is stored in every
    checkpoint; ``validate(model, epochs_done)`` returns an AP dict (``Total`` decides the best).
    """

    def __init__(self, model: nn.Module, train_set, cfg: TrainConfig, output_dir: str | os.PathLike, *,
                 run_config: dict | None = None, validate: ValidateFn | None = None,
                 loss_fn: LossFn | None = None, seed: int = 0, collate_fn=None,
                 dist_info: DistInfo | None = None, plot: bool = True):
        self.model, self.train_set, self.cfg = model, train_set, cfg
        self.output_dir = Path(output_dir)
        self.ckpt_dir = self.output_dir / "checkpoints"
        self.run_config = dict(run_config or {})
        self.validate, self.seed, self.plot = validate, seed, plot
        self.loss_fn = loss_fn or default_loss(cfg.aux_weight)
        self.collate_fn = collate_fn or _collate
        self.dist = dist_info or DistInfo(device=pick_device(cfg.device))
        self.position = Position()
        self.best_ap: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict] = []

    # ----- setup -----

    def _build(self) -> None:
        device = self.dist.device
        self.model.to(device)
        if self.cfg.deterministic:
            configure_determinism(device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters (is everything frozen?)")
        self.optimizer = torch.optim.AdamW(self.params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(self.cfg.milestones),
                                                              gamma=self.cfg.lr_factor)
        self.amp_dtype = amp_dtype(self.cfg.amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.train_model = self.model
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.train_model = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True)
        dataset = self.train_set
        if not accepts_epoch_index(dataset):
            dataset = SeededSamples(dataset, self.seed)
        self.sampler = EpochSampler(len(self.train_set), seed=self.seed, rank=self.dist.rank,
                                    world_size=self.dist.world_size)
        # workers record the sample they load: a worker that dies is reported with that sample
        self.loader, self.sample_tracker = make_loader(
            dataset, batch_size=self.cfg.batch_size, sampler=self.sampler, num_workers=self.cfg.num_workers,
            collate_fn=self.collate_fn, pin_memory=device.type == "cuda", drop_last=False)

    def _state(self) -> tuple[dict[str, Tensor], dict]:
        tensors, optimizer_meta = flatten_optimizer(self.optimizer.state_dict())
        rng_tensors, rng_meta = capture_rng()
        tensors.update(rng_tensors)
        training = {
            "epoch": self.position.epoch, "step_in_epoch": self.position.step_in_epoch,
            "global_step": self.position.global_step, "best_ap": self.best_ap, "best_epoch": self.best_epoch,
            "history": self.history, "optimizer": optimizer_meta,
            "scheduler": state_to_json(self.scheduler.state_dict()),
            "scaler": state_to_json(self.scaler.state_dict()) if self.scaler.is_enabled() else None,
            "rng": rng_meta, "seed": self.seed, "world_size": self.dist.world_size,
            "batch_size": self.cfg.batch_size, "train_samples": len(self.train_set),
            "torch_version": torch.__version__,
        }
        return tensors, training

    def save(self, best: bool = False) -> None:
        if not self.dist.is_main:
            return
        tensors, training = self._state()
        save_generation(self.ckpt_dir, epoch=self.position.epoch, global_step=self.position.global_step,
                        model_state=self.model.state_dict(), config=self.run_config, training=training,
                        state_tensors=tensors, pointers=("last", "best") if best else ("last",))

    def restore(self) -> None:
        from jmipose.checkpoint import load_state_dict_strict

        checkpoint, training, tensors = load_generation(self.ckpt_dir, "last")
        stored, current = checkpoint.config.get("model"), self.run_config.get("model")
        if stored != current:
            keys = sorted(k for k in set(stored or {}) | set(current or {})
                          if (stored or {}).get(k) != (current or {}).get(k))
            raise ValueError(f"--resume: the model config differs from the checkpoint's in {keys}; "
                             f"resume with the same model or train into another output_dir")
        for name in ("world_size", "batch_size", "train_samples"):
            now = {"world_size": self.dist.world_size, "batch_size": self.cfg.batch_size,
                   "train_samples": len(self.train_set)}[name]
            if training.get(name) != now:
                log.warning("resuming with %s=%s, the checkpoint was written with %s: the run continues but "
                            "will not reproduce an uninterrupted one", name, now, training.get(name))
        weights = {k: v.to(self.dist.device) for k, v in checkpoint.state_dict.items()}
        load_state_dict_strict(self.model, weights, what="checkpoint weights")
        self.optimizer.load_state_dict(unflatten_optimizer(tensors, training["optimizer"]))
        self.scheduler.load_state_dict(state_from_json(training["scheduler"]))
        if training.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state_from_json(training["scaler"]))
        restore_rng(tensors, training["rng"])
        self.position = Position(training["epoch"], training["step_in_epoch"], training["global_step"])
        self.best_ap, self.best_epoch = training.get("best_ap"), training.get("best_epoch")
        self.history = list(training.get("history", []))
        log.info("resumed from %s at epoch %d, step %d", self.ckpt_dir / "last", self.position.epoch + 1,
                 self.position.global_step)

    # ----- the loop -----

    def fit(self, resume: bool = False) -> TrainResult:
        """Train (from the last checkpoint with ``resume``); the main process holds the output folder's
        lock (:class:`jmipose.fileio.RunLock`) throughout, so a second run into it refuses at once."""
        from jmipose.fileio import RunLock

        if not self.dist.is_main:
            return self._fit(resume)
        with RunLock(self.output_dir):
            return self._fit(resume)

    def _fit(self, resume: bool) -> TrainResult:
        started = time.perf_counter()
        self._build()
        if has_checkpoint(self.ckpt_dir):
            if not resume:
                raise FileExistsError(f"{self.ckpt_dir} already holds a checkpoint; pass resume=True "
                                      f"(--resume) to continue it, or choose another output_dir")
            self.restore()
        elif resume:
            log.info("no checkpoint in %s yet: starting from scratch", self.ckpt_dir)
        keep_until = self.position.global_step if resume else -1  # log rows a resumed run keeps
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.train_log = CsvLog(self.output_dir / "train_log.csv", TRAIN_FIELDS, keep_until)
            self.val_log = CsvLog(self.output_dir / "val_log.csv", VAL_FIELDS, keep_until)
            self.tensorboard = TensorBoard(self.output_dir / "tensorboard")
        stopped = False
        try:
            while self.position.epoch < self.cfg.epochs and not stopped:
                stopped = self._run_epoch()
                if not stopped:
                    self._end_epoch()
        finally:
            if self.dist.is_main:
                self.tensorboard.close()
            self._release_ddp()
        curves = None
        if self.dist.is_main and self.plot:
            curves = plot_curves(self.output_dir / "train_log.csv", self.output_dir / "val_log.csv",
                                 self.output_dir / "curves.png", self.output_dir.name)
        result = TrainResult(self.output_dir, self.position.epoch, self.position.global_step, self.best_ap,
                             self.best_epoch, self.history, time.perf_counter() - started, curves)
        if self.dist.is_main:
            atomic_write_json(self.output_dir / "summary.json", {
                "epochs_done": result.epochs_done, "global_step": result.global_step,
                "best_ap": result.best_ap, "best_epoch": result.best_epoch, "history": result.history,
                "seconds": result.seconds})
        return result

    def _run_epoch(self) -> bool:
        """Train the rest of the current epoch; True when ``max_steps`` stopped the run."""
        epoch, cfg = self.position.epoch, self.cfg
        if callable(getattr(self.train_set, "set_epoch", None)):
            self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch, start=self.position.step_in_epoch * cfg.batch_size)
        self.model.train()
        total = self.position.step_in_epoch + len(self.loader)
        bar = _progress(cfg.progress and self.dist.is_main, total, self.position.step_in_epoch,
                        f"epoch {epoch + 1}/{cfg.epochs}")
        window = {"loss": 0.0, "heatmap_loss": 0.0, "aux_loss": 0.0, "steps": 0, "samples": 0,
                  "time": time.perf_counter(), "grad_norms": {}}
        join = contextlib.nullcontext()
        if self.dist.distributed:
            from torch.distributed.algorithms.join import Join

            join = Join([self.train_model])
        with join:
            for batch in batches(self.loader, self.sample_tracker):
                loss, parts, size, norms = self._step(batch)
                self.position.step_in_epoch += 1
                self.position.global_step += 1
                if norms:
                    window["grad_norms"] = norms
                window["loss"] += loss
                window["heatmap_loss"] += parts.get("heatmap_loss", loss)
                window["aux_loss"] += parts.get("aux_loss", 0.0)
                window["steps"] += 1
                window["samples"] += size
                if bar is not None:
                    rate = window["samples"] / max(time.perf_counter() - window["time"], 1e-9)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3g}", samples_s=f"{rate:.1f}")
                if cfg.log_every and (self.position.global_step % cfg.log_every == 0
                                      or self.position.global_step == 1):
                    self._log_window(window)
                if cfg.checkpoint_every and self.position.global_step % cfg.checkpoint_every == 0:
                    self.save()
                if cfg.max_steps is not None and self.position.global_step >= cfg.max_steps:
                    if window["steps"]:
                        self._log_window(window)
                    self.save()
                    if bar is not None:
                        bar.close()
                    return True
        if window["steps"]:
            self._log_window(window)
        if bar is not None:
            bar.close()
        return False

    def _release_ddp(self) -> None:
        """Free the DDP wrapper now, while the process group is alive.

        Its reducer holds a reference to the gloo process group.  Were that the last one (the group
        destroyed first, the trainer freed later), the group's C++ destructor would run inside the
        reducer's, holding the GIL while it joins gloo's worker threads, and a worker still freeing a
        finished collective that holds Python tensors waits for the GIL: the process never exits (seen
        in about 1 of 6 two-process CPU runs).  Freed here, the group's last reference is its Python
        handle, which ``destroy_process_group`` drops with the GIL released."""
        if self.train_model is self.model:
            return
        self.train_model = self.model
        gc.collect()  # DDP's hooks may form reference cycles; free the reducer before the group goes

    def _grad_norm_due(self) -> bool:
        """The step about to run measures the loss terms' gradient norms: the first step of the run,
        then every ``grad_norm_every`` steps (None: ``log_every``; 0: the first step only)."""
        step = self.position.global_step + 1
        every = self.cfg.log_every if self.cfg.grad_norm_every is None else self.cfg.grad_norm_every
        return step == 1 or bool(every) and step % every == 0

    def _step(self, batch: dict) -> tuple[float, dict[str, float], int, dict[str, float]]:
        cfg, device = self.cfg, self.dist.device
        seed_everything(mix_seed(self.seed, self.position.epoch, self.position.step_in_epoch, self.dist.rank))
        batch = _to_device(batch, device)
        autocast = (torch.autocast(device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            output = self.train_model(batch["frames"])
            loss, parts, *rest = self.loss_fn(output, batch)
        terms = rest[0] if rest else {}
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss is {loss.item()} at epoch {self.position.epoch + 1}, "
                                     f"step {self.position.global_step + 1}; lower train.lr or set "
                                     f"train.grad_clip")
        self.optimizer.zero_grad(set_to_none=True)
        norms = {}
        if terms and self.dist.is_main and self._grad_norm_due():
            scale = float(self.scaler.get_scale()) if self.scaler.is_enabled() else 1.0
            norms = {f"grad_norm_{name}": value
                     for name, value in term_grad_norms(terms, self.params, scale).items()}
            if "grad_norm_heatmap" in norms and "grad_norm_aux" in norms:
                base = norms["grad_norm_heatmap"]
                norms["grad_ratio_aux"] = norms["grad_norm_aux"] / base if base > 0 else float("nan")
        self.scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return (float(loss.detach()), {k: float(v) for k, v in parts.items()}, int(batch["frames"].shape[0]),
                norms)

    def _log_window(self, window: dict) -> None:
        if not self.dist.is_main or not window["steps"]:
            return
        steps, elapsed = window["steps"], time.perf_counter() - window["time"]
        row = {"epoch": self.position.epoch + 1, "step": self.position.global_step,
               "loss": window["loss"] / steps, "heatmap_loss": window["heatmap_loss"] / steps,
               "aux_loss": window["aux_loss"] / steps, "lr": self.optimizer.param_groups[0]["lr"],
               "samples_per_s": window["samples"] / max(elapsed, 1e-9), "seconds": elapsed,
               **window["grad_norms"]}
        self.train_log.write(row)
        self.tensorboard.scalars("train", row, self.position.global_step)
        window.update(loss=0.0, heatmap_loss=0.0, aux_loss=0.0, steps=0, samples=0, time=time.perf_counter(),
                      grad_norms={})

    def _end_epoch(self) -> None:
        epochs_done = self.position.epoch + 1
        self.scheduler.step()
        improved = False
        if self.validate is not None and self.cfg.val_every and (
                epochs_done % self.cfg.val_every == 0 or epochs_done == self.cfg.epochs):
            if self.dist.is_main:
                improved = self._validate(epochs_done)
            barrier(self.dist)
        self.position = Position(epochs_done, 0, self.position.global_step)
        self.save(best=improved)

    def _validate(self, epochs_done: int) -> bool:
        self.model.eval()
        with torch.no_grad():
            result = self.validate(self.model, epochs_done)
        self.model.train()
        total = result.get("Total")
        row = {"epoch": epochs_done, "step": self.position.global_step,
               **{k: result.get(k) for k in VAL_FIELDS[2:]}}
        self.history.append({k: None if isinstance(v, float) and math.isnan(v) else v
                             for k, v in row.items()})
        self.val_log.write(row)
        self.tensorboard.scalars("val", {k: v for k, v in row.items() if k not in ("epoch", "step")},
                                 self.position.global_step)
        log.info("epoch %d: AP Total %.2f", epochs_done, total if total is not None else float("nan"))
        if total is not None and not math.isnan(total) and (self.best_ap is None or total > self.best_ap):
            self.best_ap, self.best_epoch = float(total), epochs_done
            return True
        return False


def _progress(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="batch", dynamic_ncols=True, leave=False)


# ----- from a config: jmipose.engine.train.train("posetrack18", ["train.lr=2e-4"]) -----

def train(config, overrides=(), *, resume: bool = False, progress: bool | None = None) -> TrainResult:
    """Train the model a config describes (a :class:`jmipose.config.Config`, a YAML path or a shipped
    config name, plus dotted overrides) on ``data`` split ``train``, validating on ``val``."""
    from jmipose.config import load_config, to_dict
    from jmipose.data import build_dataset
    from jmipose.engine.distributed import cleanup, init_distributed
    from jmipose.fileio import check_output_dir
    from jmipose.models import build_model, check_backbone_source

    config = load_config(config, overrides)
    if progress is not None:
        config.train.progress = progress
    # the config's own mistakes are refused before the output folder is touched
    check_backbone_source(config.model)
    if config.train.val_every:
        config.data.require_boxes("val")
    if int(os.environ.get("RANK", "0")) == 0:
        check_output_dir(config.output_dir, "output_dir")  # a file, or a path under a file, fails now
    info = init_distributed(config.train.device)
    try:
        seed_everything(config.seed)
        model = build_model(config.model)
        train_set = build_dataset(config.data, "train", seed=mix_seed(config.seed, config.data.seed))
        validate = make_validator(config, info.device) if config.train.val_every else None
        trainer = Trainer(model, train_set, config.train, config.output_dir, run_config=to_dict(config),
                          validate=validate, seed=config.seed, dist_info=info)
        return trainer.fit(resume=resume)
    finally:
        cleanup(info)


def loss_balance(config, overrides=(), *, batch_size: int = 2, seed: int = 0) -> dict:
    """The gradient norm of each loss term on the trainable parameters at initialisation, as the trainer
    measures it at its first step: the model of ``config`` (a Config, YAML path or shipped name, plus
    dotted overrides) in training mode on ``batch_size`` random windows at the config's input size,
    Gaussian targets at random joint positions (the config's sigma and joint weights), seeded.

    Returns ``{"grad_norm_heatmap", "grad_norm_aux", "grad_ratio_aux", "heatmap_loss", "aux_loss",
    "aux_weight", "backbone"}``; ``backbone`` says whether the backbone weights were loaded or random
    (a frozen backbone without ``backbone_weights`` is measured random, on purpose)."""
    from jmipose.config import load_config
    from jmipose.joints import JOINT_WEIGHTS
    from jmipose.models import build_model

    config = load_config(config, overrides)
    model_config = config.model
    random_backbone = not model_config.backbone_weights
    if random_backbone:
        model_config = dataclasses.replace(model_config, allow_random_backbone=True)
    torch.manual_seed(seed)
    model = build_model(model_config)
    model.train()
    width, height = config.data.image_size
    heat_width, heat_height = config.data.heatmap_size
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(batch_size, model.config.num_frames, 3, height, width, generator=generator)
    joints = model.config.num_joints
    ys = torch.arange(heat_height, dtype=torch.float32)[:, None]
    xs = torch.arange(heat_width, dtype=torch.float32)[None, :]
    cy = torch.rand(batch_size, joints, 1, 1, generator=generator) * (heat_height - 1)
    cx = torch.rand(batch_size, joints, 1, 1, generator=generator) * (heat_width - 1)
    target = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * config.data.sigma ** 2))
    weight = torch.ones(batch_size, joints)
    if config.data.use_joint_weights and joints == len(JOINT_WEIGHTS):
        weight = weight * torch.tensor(JOINT_WEIGHTS, dtype=torch.float32)
    output = model(frames)
    loss, logged, terms = default_loss(config.train.aux_weight)(output, {"heatmaps": target,
                                                                         "target_weight": weight})
    params = [p for p in model.parameters() if p.requires_grad]
    norms = term_grad_norms(terms, params)
    base = norms["heatmap"]
    return {"grad_norm_heatmap": base, "grad_norm_aux": norms["aux"],
            "grad_ratio_aux": norms["aux"] / base if base > 0 else float("nan"),
            "heatmap_loss": float(logged["heatmap_loss"]), "aux_loss": float(logged["aux_loss"]),
            "aux_weight": config.train.aux_weight, "aux_estimator": model.config.aux_estimator,
            "backbone": "random (backbone_weights not set)" if random_backbone
            else f"loaded from {model_config.backbone_weights}",
            "windows": batch_size, "input": [width, height]}


def make_validator(config, device: torch.device, split: str = "val") -> ValidateFn:
    """``validate(model, epochs_done)``: PoseTrack AP on ``split`` (predictions under output_dir/val).
    ``data.<split>_boxes`` must say which person boxes: a detections JSON or ``gt`` (logged as such)."""
    from jmipose.data import build_dataset
    from jmipose.engine.evaluate import describe_boxes, evaluate_model

    boxes = describe_boxes(config.data.require_boxes(split), split)
    dataset = build_dataset(config.data, split)
    gt_files = list(dataset.annotation_files)

    def validate(model: nn.Module, epochs_done: int) -> dict:
        out = Path(config.output_dir) / split / f"epoch_{epochs_done:03d}"
        log.info("validation on %s with %s", split, boxes)
        return evaluate_model(model, dataset, gt_files, out, config.eval, device)["all"]

    return validate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a YAML config file or the name of a shipped one (posetrack18, ...)")
    parser.add_argument("overrides", nargs="*",
                        help="dotted overrides, e.g. train.lr=2e-4 model.backbone=w32")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in output_dir from its last checkpoint")
    parser.add_argument("--output-dir", default=None,
                        help="where checkpoints and logs go (default: the config's)")


def main(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
    result = train(args.config, overrides, resume=args.resume)
    best = "n/a" if result.best_ap is None else f"{result.best_ap:.2f}"
    print(f"trained {result.epochs_done} epochs ({result.global_step} steps) in {result.seconds:.0f} s; "
          f"best AP Total {best}; checkpoints in {result.output_dir / 'checkpoints'}")
    return 0
