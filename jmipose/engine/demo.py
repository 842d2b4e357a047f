"""jmipose demo: the paper's recipe at small scale, on the embedded synthetic video benchmark.

1. Generate the synthetic PoseTrack18-format videos (``jmipose.data.synthetic``): articulated people,
   short blur / defocus / occlusion events on single frames, noisy detector boxes.
2. Stage 1: train the tiny HRNet as the single-frame baseline.
3. Stage 2: freeze it and train the JM-Pose head on top (5-frame windows), so the gain measured is
   exactly what temporal context adds to the same backbone.
4. Evaluate both with PoseTrack AP (poseval's algorithm) on all, hard and easy validation frames.
5. Write ``results.json``, ``report.md``, ``curves.png`` and ``predictions.mp4`` (baseline | JM-Pose).

``--quick`` is a smoke version of about a minute (used by the tests); the default plan takes about
9 minutes on 2 cores (one torch thread per core by default, see ``--threads``) or 12 on one thread.
The README gives the measured results and times of seeds 0, 1 and 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from jmipose.config import Config, EvalConfig, TrainConfig, to_dict
from jmipose.engine.distributed import mix_seed, seed_everything
from jmipose.fileio import atomic_write_json, atomic_write_text

from jmipose.joints import AP_COLUMNS as COLUMNS
DETECTIONS = "annotations/val_human_detections.json"  # the synthetic detector's boxes, relative to the data


@dataclass(frozen=True)
class DemoPlan:
    """Sizes and schedules of one demo run (the defaults take about 9 minutes on 2 cores).

    Stage 2 trains as many epochs as stage 1: with half as many the head was undertrained (seed 0,
    hard frames: +8.1 AP Total after 6 epochs, +10.3 after 12, same targets).  Targets use DARK's
    unbiased encoding, the pair of the DARK decoding of the evaluation (+3.1 AP Total for the
    baseline of seed 0).  The head's correction of the key frame's heatmaps is gated by the key
    frame's own confidence (``residual_gate``): trained from the same baselines, seed 0 gained
    81.1 -> 82.7 AP Total (hard frames 68.5 -> 73.2), seed 2 72.1 -> 73.8 (58.4 -> 63.1).
    """

    videos: int = 12                 # training videos
    val_videos: int = 4
    frames: int = 40                 # frames per video
    video_size: tuple[int, int] = (192, 144)
    people: tuple[int, int] = (1, 3)
    hard_fraction: float = 0.4
    input_size: tuple[int, int] = (64, 96)      # crop (width, height); heatmaps are a quarter of it
    sigma: float = 2.0
    batch_size: int = 16
    baseline_epochs: int = 12
    baseline_lr: float = 2e-3
    jm_epochs: int = 12
    jm_lr: float = 1e-3
    jm_model: dict = field(default_factory=lambda: {"channels": 32, "num_blocks": 2, "attention_pool": 2})
    flip_test: bool = True
    video_seconds: float = 6.0


PLANS = {
    "default": DemoPlan(),
    "quick": DemoPlan(videos=3, val_videos=1, frames=16, baseline_epochs=2, jm_epochs=1, batch_size=16,
                      jm_model={"channels": 16, "num_blocks": 1, "attention_pool": 4}, flip_test=False,
                      video_seconds=2.0),
}


def _data_config(root: Path, plan: DemoPlan, seed: int):
    from jmipose.data import AugmentConfig, DataConfig

    return DataConfig(root=str(root), version="18", train_annotations="annotations/train",
                      val_annotations="annotations/val", val_boxes=None,
                      image_size=plan.input_size, sigma=plan.sigma, frame_cache_size=100_000,
                      unbiased_targets=True,  # DARK's encoding, the pair of the DARK decoding we evaluate with
                      augment=AugmentConfig(rotation_factor=20.0, rotation_max=40.0), seed=seed)


def _run_config(name: str, out: Path, plan: DemoPlan, data, model: dict, train: TrainConfig,
                seed: int) -> Config:
    from jmipose.models import ModelConfig

    return Config(name=name, output_dir=str(out / name), seed=seed, model=ModelConfig(**model), data=data,
                  train=train, eval=EvalConfig(flip_test=plan.flip_test, batch_size=64, num_workers=0))


def _train_stage(config: Config, model, train_set):
    """Train one stage from scratch into ``config.output_dir``; returns the TrainResult."""
    from jmipose.engine.train import Trainer

    trainer = Trainer(model, train_set, config.train, config.output_dir, run_config=to_dict(config),
                      seed=config.seed, plot=False)
    return trainer.fit()


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the data generator's workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _ap(result: dict) -> dict:
    return {c: result[c] for c in COLUMNS}


def _prepare_data(out: Path, plan: DemoPlan, seed: int):
    """The synthetic dataset (reused when it was made with the same settings), train and val sets."""
    from jmipose.data import build_dataset
    from jmipose.data.synthetic import make_synthetic_posetrack

    arguments = dict(n_videos=plan.videos, val_videos=plan.val_videos, frames=plan.frames,
                     size=plan.video_size, seed=seed, people=plan.people, hard_fraction=plan.hard_fraction)
    try:
        synthetic = make_synthetic_posetrack(out / "data", **arguments)
    except FileExistsError:  # the demo's own data folder, made with other settings
        synthetic = make_synthetic_posetrack(out / "data", **arguments, overwrite=True)
    data = _data_config(out / "data", plan, seed)
    detected = dataclasses.replace(data, val_boxes=DETECTIONS)
    return (synthetic, data, build_dataset(data, "train"), build_dataset(data, "val"),
            build_dataset(detected, "val"))


def _stage_configs(out: Path, plan: DemoPlan, data, seed: int, progress: bool) -> tuple[Config, Config]:
    """Stage 1: the single-frame baseline trains the whole tiny HRNet. Stage 2: JM-Pose on top of it,
    backbone frozen; its heatmaps start from the backbone's (heatmap_residual) and learn what the
    neighbouring frames add, scaled by a gate that sees the key frame's confidence (residual_gate)."""
    common = dict(batch_size=plan.batch_size, num_workers=0, val_every=0, progress=progress, log_every=5,
                  weight_decay=1e-4, lr_factor=0.1, amp="off")
    baseline = _run_config("baseline", out, plan, data, {"variant": "baseline", "backbone": "tiny"},
                           TrainConfig(epochs=plan.baseline_epochs, lr=plan.baseline_lr,
                                       milestones=(int(plan.baseline_epochs * 0.75),), **common), seed)
    jm_model = {"variant": "jm", "backbone": "tiny", "freeze_backbone": True, "heatmap_residual": True,
                "residual_gate": True, **plan.jm_model}
    jmpose = _run_config("jmpose", out, plan, data, jm_model,
                         TrainConfig(epochs=plan.jm_epochs, lr=plan.jm_lr,
                                     milestones=(int(plan.jm_epochs * 0.75),), **common), seed)
    return baseline, jmpose


def run_demo(out: str | os.PathLike = "demo_out", *, quick: bool = False, seed: int = 0,
             progress: bool = True, plan: DemoPlan | None = None) -> dict:
    """The whole demo; returns the ``results.json`` content."""
    from jmipose.data.synthetic import hard_image_ids
    from jmipose.engine.demo_report import plot_stage_curves, write_prediction_video
    from jmipose.engine.evaluate import evaluate_model
    from jmipose.models import build_model

    started = time.perf_counter()
    plan = plan or PLANS["quick" if quick else "default"]
    from jmipose.fileio import check_output_dir

    out = check_output_dir(out, "out")   # a file, or a path under a file, fails before the work
    for stale in ("baseline", "jmpose", "eval", "eval_detector_boxes"):  # a demo run always starts afresh
        if (out / stale).is_dir():
            shutil.rmtree(out / stale)
    def say(text: str) -> None:
        if progress:
            print(f"[jmipose demo] {text}", file=sys.stderr, flush=True)

    timings, tick = {}, time.perf_counter()
    say(f"1/5 synthetic videos ({plan.videos} train, {plan.val_videos} val, {plan.frames} frames each)")
    synthetic, data, train_set, val_set, val_detected = _prepare_data(out, plan, seed)
    timings["data"], tick = time.perf_counter() - tick, time.perf_counter()
    baseline_cfg, jm_cfg = _stage_configs(out, plan, data, seed, progress)

    say(f"2/5 stage 1: the single-frame baseline (tiny HRNet), {plan.baseline_epochs} epochs of "
        f"{len(train_set)} samples")
    seed_everything(mix_seed(seed, 1))
    baseline = build_model(baseline_cfg.model)
    steps = {"baseline": _train_stage(baseline_cfg, baseline, train_set).global_step}
    timings["baseline_training"], tick = time.perf_counter() - tick, time.perf_counter()

    say(f"3/5 stage 2: JM-Pose on the frozen baseline backbone, {plan.jm_epochs} epochs")
    seed_everything(mix_seed(seed, 2))
    jmpose = build_model(jm_cfg.model)
    jmpose.backbone.load_state_dict(baseline.backbone.state_dict())
    steps["jmpose"] = _train_stage(jm_cfg, jmpose, train_set).global_step
    timings["jmpose_training"], tick = time.perf_counter() - tick, time.perf_counter()

    say("4/5 PoseTrack AP of both models on the validation videos (all, hard and easy frames)")
    hard = hard_image_ids(out / "data", "val")
    gt_files = list(val_set.annotation_files)
    models = (("baseline", baseline, baseline_cfg), ("jmpose", jmpose, jm_cfg))
    scores = {name: evaluate_model(model, val_set, gt_files, out / "eval" / name, config.eval,
                                   progress=progress, hard_frames=hard) for name, model, config in models}
    detected = {name: evaluate_model(model, val_detected, gt_files, out / "eval_detector_boxes" / name,
                                     config.eval, progress=progress, hard_frames=hard)
                for name, model, config in models}
    timings["evaluation"], tick = time.perf_counter() - tick, time.perf_counter()

    say("5/5 report, training curves and the annotated video")
    plot_stage_curves({"baseline (stage 1)": out / "baseline" / "train_log.csv",
                       "JM-Pose (stage 2)": out / "jmpose" / "train_log.csv"}, out / "curves.png")
    video = write_prediction_video(out / "data", val_set, out / "eval", out / "predictions.mp4",
                                   seconds=plan.video_seconds)
    timings["report"] = time.perf_counter() - tick
    details = {
        "seed": seed, "plan": dataclasses.asdict(plan), "timings": timings, "steps": steps,
        "easy_frames": {name: _ap(scores[name]["easy"]) for name in scores},
        "detector_boxes": {part: {name: _ap(detected[name][part]) for name in detected}
                           for part in ("all", "hard", "easy")},
        "frames": {part: scores["jmpose"][part]["frames"] for part in ("all", "hard", "easy")},
        "data": {name: {"frames": s.frames, "labelled": s.labelled_frames, "hard": s.hard_frames}
                 for name, s in synthetic.splits.items()},
        "train_samples": len(train_set), "val_people": len(val_set), "threads": torch.get_num_threads(),
        "video": str(video) if video else None,
    }
    return _write_results(out, scores, details, time.perf_counter() - started)


def _write_results(out: Path, scores: dict, details: dict, seconds: float) -> dict:
    from jmipose.engine.demo_report import write_report

    results = {
        "baseline": _ap(scores["baseline"]["all"]),
        "jmpose": _ap(scores["jmpose"]["all"]),
        "hard_frames": {name: _ap(scores[name]["hard"]) for name in ("baseline", "jmpose")},
        "seconds": round(seconds, 1),
    }
    details["cpu_seconds"] = round(_cpu_seconds(), 1)
    atomic_write_json(out / "results.json", results)
    atomic_write_json(out / "details.json", details)
    atomic_write_text(out / "report.md", write_report(results, details))
    return results


# ----- command line -----

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke version")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own choice, one per core; use 1 when the "
                             "cores are busy with other work)")


def main(args: argparse.Namespace) -> int:
    from jmipose.fileio import check_output_dir

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    check_output_dir(args.out, "--out")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or threads)
    try:
        results = run_demo(args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress)
    finally:
        torch.set_num_threads(threads)
    print(Path(args.out, "report.md").read_text())
    gain = results["jmpose"]["Total"] - results["baseline"]["Total"]
    print(f"JM-Pose vs baseline: {gain:+.1f} AP Total in {results['seconds']:.0f} s; results in {args.out}")
    return 0


def load_results(out: str | os.PathLike) -> dict:
    return json.loads(Path(out, "results.json").read_text())
