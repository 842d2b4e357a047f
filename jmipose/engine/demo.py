"""jmipose demo: the paper's recipe at small scale, on the embedded synthetic video benchmark.

1. Generate the synthetic PoseTrack18-format videos (``jmipose.data.synthetic``): articulated people,
   short blur / defocus / occlusion events on single frames, noisy detector boxes.
2. Stage 1: train the tiny HRNet as the single-frame baseline.
3. Stage 2: freeze it and train the JM-Pose head on top (5-frame windows), so the gain measured is
   exactly what temporal context adds to the same backbone.
4. Evaluate both with PoseTrack AP (poseval's algorithm) on all, hard and easy validation frames.
5. Write ``results.json``, ``report.md``, ``curves.png`` and ``predictions.mp4`` (baseline | JM-Pose).

The JM-Pose head of step 3 is "our recipe" (``DemoPlan.jm_model``: no information objective, heatmap
residual with its gate, pooled pixel attention; docs/FIDELITY.md lists every choice that is not the
paper's).  Two opt-in additions train more heads on the same frozen
stage-1 backbone, data, epochs and seed:

- ``--paper-recipe``: the head and loss of the shipped PoseTrack config (``posetrack18``: the
  authors' estimator and weight, no ``heatmap_residual``, no ``residual_gate``) at the demo's size,
  reported as ``"paper_recipe"`` in ``results.json``.
- ``--ablation``: the paper's ablation on one seed, each row removing one more component from the
  paper recipe: full, no objective, no interaction, no CJL; the single-frame baseline is the last row.

``--quick`` is a smoke version of about a minute (used by the tests); the default plan takes about
4 minutes on an idle 2-core machine (one torch thread per core by default, see ``--threads``;
seed 0: 3 min 51 s, 420 CPU seconds); ``--paper-recipe`` adds one stage-2 training (about 8 minutes of one core)
and ``--ablation`` three or four (about 20 more); the README gives the measured results.
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
    """Sizes and schedules of one demo run (the defaults take about 4 minutes on an idle 2-core machine).

    Stage 2 trains as many epochs as stage 1: with half as many the head was undertrained (seed 0,
    hard frames: +8.1 AP Total after 6 epochs, +10.3 after 12, same targets).  Targets use DARK's
    unbiased encoding, the pair of the DARK decoding of the evaluation (+3.1 AP Total for the
    baseline of seed 0).  The head's correction of the key frame's heatmaps is gated by the key
    frame's own confidence (``residual_gate``): trained from the same baselines, seed 0 gained
    81.1 -> 82.7 AP Total (hard frames 68.5 -> 73.2), seed 2 72.1 -> 73.8 (58.4 -> 63.1).

    Our recipe's head trains without the information objective (``use_aux: False``).  Measured on seed
    0 with one thread, same baseline (75.8 AP Total, hard frames 52.0): without it 87.9 (85.6); with
    the authors' estimator at their weight 2, 78.8 (63.0); our earlier ``exp_neg_kl`` estimator at
    weight 2 had cost 5-6 AP Total on seeds 0 and 2.  In this head (pixel attention, heatmap residual)
    the authors' objective's gradient is 44x the heatmap loss's at the first step (the trainer's log)
    and steers the head away from the heatmaps; skipping it also saves its computation.
    ``--paper-recipe`` trains the paper's head with the objective; ``--ablation`` measures what the
    objective does there.
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
    jm_model: dict = field(default_factory=lambda: {"channels": 32, "num_blocks": 2, "attention_pool": 2,
                                                    "use_aux": False})
    # The paper recipe's departures from the posetrack18 config that the tiny backbone forces: 12 offset
    # groups do not divide its width of 32; 8 keep the 4 channels per group that 12 give at width 48.
    paper_overrides: dict = field(default_factory=lambda: {"offset_groups": 8})
    flip_test: bool = True
    video_seconds: float = 6.0


PLANS = {
    "default": DemoPlan(),
    "quick": DemoPlan(videos=3, val_videos=1, frames=16, baseline_epochs=2, jm_epochs=1, batch_size=16,
                      jm_model={"channels": 16, "num_blocks": 1, "attention_pool": 4, "use_aux": False},
                      flip_test=False,
                      video_seconds=2.0, paper_overrides={"offset_groups": 4, "channels": 16}),
}
PAPER_CONFIG = "posetrack18"   # the shipped config whose head and loss the paper recipe takes
ABLATION = (("full", {}), ("no objective", {"use_aux": False}), ("no interaction", {"use_interaction": False}),
            ("no CJL", {"use_cjl": False}))


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
    baseline = _run_config("baseline", out, plan, data, {"variant": "baseline", "backbone": "tiny"},
                           _train_config(plan, plan.baseline_epochs, plan.baseline_lr, progress), seed)
    jm_model = {"variant": "jm", "backbone": "tiny", "freeze_backbone": True, "heatmap_residual": True,
                "residual_gate": True, **plan.jm_model}
    return baseline, _head_config("jmpose", out, plan, data, jm_model, progress, seed)


def _train_config(plan: DemoPlan, epochs: int, lr: float, progress: bool, aux_weight: float = 2.0) -> TrainConfig:
    # the loss terms' gradient norms cost a backward pass per term: measured about every other epoch
    return TrainConfig(epochs=epochs, lr=lr, milestones=(int(epochs * 0.75),), batch_size=plan.batch_size,
                       num_workers=0, val_every=0, progress=progress, log_every=5, grad_norm_every=60,
                       weight_decay=1e-4, lr_factor=0.1, amp="off", aux_weight=aux_weight)


def _head_config(name: str, out: Path, plan: DemoPlan, data, model: dict, progress: bool, seed: int,
                 aux_weight: float = 2.0) -> Config:
    """A stage-2 run: a temporal head on the frozen stage-1 backbone, the demo's stage-2 schedule."""
    return _run_config(name, out, plan, data, model,
                       _train_config(plan, plan.jm_epochs, plan.jm_lr, progress, aux_weight), seed)


def paper_recipe_config(out: Path, plan: DemoPlan, data, seed: int, progress: bool, name: str = "paper_recipe",
                        **changes) -> Config:
    """The paper recipe's stage 2: the model section, ``aux_weight`` and joint weights (on or off) of the
    shipped PoseTrack config (``PAPER_CONFIG``) on the tiny backbone, with the overrides the tiny width
    forces (``plan.paper_overrides``) and ``changes`` (the ablation's).  The optimizer, schedule and
    epochs are the demo's stage-2 ones, as for our recipe."""
    from jmipose.config import load_config

    paper = load_config(PAPER_CONFIG)
    model = {**paper.model.to_dict(), "backbone": "tiny", "backbone_weights": None, "freeze_backbone": True,
             "channels": None, **plan.paper_overrides, **changes}
    data = dataclasses.replace(data, use_joint_weights=paper.data.use_joint_weights)
    return _head_config(name, out, plan, data, model, progress, seed, aux_weight=paper.train.aux_weight)


def _train_set_for(config: Config, data, train_set):
    """The stage's training set: the demo's, or one with the stage's own joint weights."""
    from jmipose.data import build_dataset

    return train_set if config.data == data else build_dataset(config.data, "train")


def _train_head(config: Config, baseline, train_set, stream: int):
    """Build a stage-2 model on a copy of the stage-1 backbone (frozen by the model) and train it."""
    from jmipose.models import build_hrnet, build_model

    seed_everything(mix_seed(config.seed, stream))
    backbone = build_hrnet(config.model.backbone, config.model.num_joints)
    backbone.load_state_dict(baseline.backbone.state_dict())
    model = build_model(config.model, backbone=backbone)
    return model, _train_stage(config, model, train_set).global_step


def run_demo(out: str | os.PathLike = "demo_out", *, quick: bool = False, seed: int = 0,
             progress: bool = True, plan: DemoPlan | None = None, paper_recipe: bool = False,
             ablation: bool = False) -> dict:
    """The whole demo; returns the ``results.json`` content (with ``paper_recipe`` and ``ablation``
    entries when asked for, see the module docstring)."""
    from jmipose.data.synthetic import hard_image_ids
    from jmipose.engine.demo_report import plot_stage_curves, write_prediction_video
    from jmipose.engine.evaluate import evaluate_model
    from jmipose.fileio import check_output_dir
    from jmipose.models import build_model

    started = time.perf_counter()
    plan = plan or PLANS["quick" if quick else "default"]
    out = check_output_dir(out, "out")   # a file, or a path under a file, fails before the work
    for stale in ("baseline", "jmpose", "paper_recipe", "ablation", "eval", "eval_detector_boxes"):
        if (out / stale).is_dir():  # a demo run always starts afresh
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
    jmpose, steps["jmpose"] = _train_head(jm_cfg, baseline, train_set, 2)
    timings["jmpose_training"], tick = time.perf_counter() - tick, time.perf_counter()
    models = [("baseline", baseline, baseline_cfg), ("jmpose", jmpose, jm_cfg)]
    if paper_recipe:
        say(f"3/5 stage 2, paper recipe: the {PAPER_CONFIG} config's head and loss, {plan.jm_epochs} epochs")
        paper_cfg = paper_recipe_config(out, plan, data, seed, progress)
        paper, steps["paper_recipe"] = _train_head(paper_cfg, baseline, _train_set_for(paper_cfg, data, train_set), 3)
        models.append(("paper_recipe", paper, paper_cfg))
        timings["paper_recipe_training"], tick = time.perf_counter() - tick, time.perf_counter()
    ablation_models = []
    if ablation:
        changes: dict = {}
        for index, (row, change) in enumerate(ABLATION):
            changes = {**changes, **change}
            say(f"3/5 ablation {index + 1}/{len(ABLATION)}: {row}, {plan.jm_epochs} epochs")
            config = paper_recipe_config(out / "ablation", plan, data, seed, progress,
                                         name=row.replace(" ", "_"), **changes)
            if index == 0 and paper_recipe:  # the full model is the paper recipe, trained above
                ablation_models.append((row, paper, paper_cfg))
                continue
            # the full model trains as the paper recipe does (stream 3); each removal on its own stream
            model, steps[f"ablation/{row}"] = _train_head(config, baseline, _train_set_for(config, data, train_set),
                                                          3 if index == 0 else 10 + index)
            ablation_models.append((row, model, config))
        timings["ablation_training"], tick = time.perf_counter() - tick, time.perf_counter()

    say("4/5 PoseTrack AP of the models on the validation videos (all, hard and easy frames)")
    hard = hard_image_ids(out / "data", "val")
    gt_files = list(val_set.annotation_files)
    scores = {name: evaluate_model(model, val_set, gt_files, out / "eval" / name, config.eval,
                                   progress=progress, hard_frames=hard) for name, model, config in models}
    detected = {name: evaluate_model(model, val_detected, gt_files, out / "eval_detector_boxes" / name,
                                     config.eval, progress=progress, hard_frames=hard)
                for name, model, config in models}
    ablation_scores = {row: scores["paper_recipe"] if model is models[-1][1] and paper_recipe else
                       evaluate_model(model, val_set, gt_files, out / "eval" / "ablation" / config.name,
                                      config.eval, progress=progress, hard_frames=hard)
                       for row, model, config in ablation_models}
    timings["evaluation"], tick = time.perf_counter() - tick, time.perf_counter()

    say("5/5 report, training curves and the annotated video")
    plot_stage_curves({"baseline (stage 1)": out / "baseline" / "train_log.csv",
                       "JM-Pose (stage 2)": out / "jmpose" / "train_log.csv"}, out / "curves.png")
    video = write_prediction_video(out / "data", val_set, out / "eval", out / "predictions.mp4",
                                   seconds=plan.video_seconds)
    timings["report"] = time.perf_counter() - tick
    names = [name for name, _, _ in models]
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
        "models": {name: config.model.to_dict() for name, _, config in models + ablation_models},
    }
    extra = {}
    if ablation:
        rows = {row: {**_ap(ablation_scores[row]["all"]), "hard_frames": _ap(ablation_scores[row]["hard"])}
                for row in ablation_scores}
        rows["single frame"] = {**_ap(scores["baseline"]["all"]), "hard_frames": _ap(scores["baseline"]["hard"])}
        extra["ablation"] = rows
    return _write_results(out, scores, details, time.perf_counter() - started, names, extra)


def _write_results(out: Path, scores: dict, details: dict, seconds: float,
                   names: list[str] | None = None, extra: dict | None = None) -> dict:
    from jmipose.engine.demo_report import write_report

    names = names or ["baseline", "jmpose"]
    results = {
        "baseline": _ap(scores["baseline"]["all"]),
        "jmpose": _ap(scores["jmpose"]["all"]),
        "hard_frames": {name: _ap(scores[name]["hard"]) for name in names},
        "seconds": round(seconds, 1),
    }
    if "paper_recipe" in names:
        results["paper_recipe"] = {**_ap(scores["paper_recipe"]["all"]),
                                   "hard_frames": _ap(scores["paper_recipe"]["hard"])}
    results.update(extra or {})
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
    parser.add_argument("--paper-recipe", action="store_true",
                        help="also train the posetrack18 config's head and loss (the authors' estimator and "
                             "weight, no heatmap residual) on the same backbone, data, epochs and seed: "
                             "'paper_recipe' in results.json (one more stage-2 training, about 5 minutes)")
    parser.add_argument("--ablation", action="store_true",
                        help="also run the paper's ablation on this seed (full paper recipe, no objective, "
                             "no interaction, no CJL, single frame): 'ablation' in results.json (four more "
                             "stage-2 trainings, about 20 minutes)")


def main(args: argparse.Namespace) -> int:
    from jmipose.fileio import check_output_dir

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    check_output_dir(args.out, "--out")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or threads)
    try:
        results = run_demo(args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress,
                           paper_recipe=args.paper_recipe, ablation=args.ablation)
    finally:
        torch.set_num_threads(threads)
    print(Path(args.out, "report.md").read_text())
    gain = results["jmpose"]["Total"] - results["baseline"]["Total"]
    print(f"JM-Pose vs baseline: {gain:+.1f} AP Total in {results['seconds']:.0f} s; results in {args.out}")
    return 0


def load_results(out: str | os.PathLike) -> dict:
    return json.loads(Path(out, "results.json").read_text())
