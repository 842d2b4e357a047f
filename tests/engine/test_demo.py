"""``jmipose demo --quick``: every output is there and well formed (the accuracy claim is checked by
the full demo, whose numbers are in the engine's report)."""

from __future__ import annotations

import json

import cv2


COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total")


def test_results_json_has_the_issue_schema(quick_demo):
    results = json.loads((quick_demo / "results.json").read_text())
    # the default run writes the first four; --paper-recipe and --ablation add theirs
    assert set(results) == {"baseline", "jmpose", "hard_frames", "seconds", "paper_recipe", "ablation"}
    for ap in (results["baseline"], results["jmpose"], results["hard_frames"]["baseline"],
               results["hard_frames"]["jmpose"], results["hard_frames"]["paper_recipe"]):
        assert tuple(ap) == COLUMNS and all(0 <= v <= 100 for v in ap.values())
    assert results["seconds"] > 0
    paper = results["paper_recipe"]
    assert tuple(paper) == (*COLUMNS, "hard_frames") and paper["hard_frames"] == results["hard_frames"]["paper_recipe"]
    assert list(results["ablation"]) == ["full", "no objective", "no interaction", "no CJL", "single frame"]
    assert results["ablation"]["full"] == paper  # the full model of the ablation is the paper recipe
    baseline = {**results["baseline"], "hard_frames": results["hard_frames"]["baseline"]}
    assert results["ablation"]["single frame"] == baseline


def test_paper_recipe_takes_the_posetrack_configs_head_and_loss(quick_demo):
    """The paper recipe: posetrack18's model section and aux_weight at the demo's size, on the same frozen
    backbone as our recipe; each ablation row removes one more component."""
    from jmipose.config import load_config
    from jmipose.checkpoint import load_checkpoint

    paper = load_config("posetrack18")
    stored = json.loads((quick_demo / "paper_recipe" / "checkpoints" / "last.json").read_text())["config"]
    model, train = stored["model"], stored["train"]
    for key in ("variant", "stage1_source", "attention_axis", "gate_conv", "gather_dilation", "mask_activation",
                "aux_estimator", "freeze_batchnorm", "heatmap_residual", "residual_gate"):
        assert model[key] == getattr(paper.model, key), key
    assert model["backbone"] == "tiny" and model["freeze_backbone"] is True
    assert train["aux_weight"] == paper.train.aux_weight == 2.0
    assert stored["data"]["use_joint_weights"] is paper.data.use_joint_weights is False
    ours = json.loads((quick_demo / "jmpose" / "checkpoints" / "last.json").read_text())["config"]
    assert ours["train"]["epochs"] == train["epochs"] and ours["seed"] == stored["seed"]
    # the same stage-1 weights under both heads (the paper recipe's BatchNorm statistics move: its
    # frozen backbone keeps training-mode BatchNorm, as the authors' code does)
    base = load_checkpoint(quick_demo / "baseline" / "checkpoints" / "last").state_dict
    head = load_checkpoint(quick_demo / "paper_recipe" / "checkpoints" / "last").state_dict
    weights = [k for k in base if k.startswith("backbone.") and k.endswith((".weight", ".bias"))]
    assert weights and all((base[k] == head[k]).all() for k in weights)
    details = json.loads((quick_demo / "details.json").read_text())["models"]
    flags = [(m["use_aux"], m["use_interaction"], m["use_cjl"]) for m in
             (details[name] for name in ("paper_recipe", "no objective", "no interaction", "no CJL"))]
    assert flags == [(True, True, True), (False, True, True), (False, False, True), (False, False, False)]
    report = (quick_demo / "report.md").read_text()
    assert "| JM-Pose, paper recipe |" in report and "## Ablation" in report


def test_report_curves_video_and_checkpoints(quick_demo):
    report = (quick_demo / "report.md").read_text()
    assert "## Hard frames" in report and "| baseline (tiny HRNet) |" in report
    assert (quick_demo / "curves.png").read_bytes()[:4] == b"\x89PNG"
    video = cv2.VideoCapture(str(quick_demo / "predictions.mp4"))
    ok, frame = video.read()
    assert ok and frame.shape[1] == 2 * frame.shape[0] * 192 // 144  # baseline | JM-Pose side by side
    video.release()
    details = json.loads((quick_demo / "details.json").read_text())
    assert details["frames"]["hard"] + details["frames"]["easy"] == details["frames"]["all"] > 0
    # stage 2 keeps the stage-1 backbone frozen: the JM-Pose checkpoint holds the same backbone weights
    from jmipose.checkpoint import load_checkpoint

    base = load_checkpoint(quick_demo / "baseline" / "checkpoints" / "last").state_dict
    jm = load_checkpoint(quick_demo / "jmpose" / "checkpoints" / "last").state_dict
    shared = [k for k in base if k.startswith("backbone.") and not k.endswith("num_batches_tracked")]
    assert shared and all((base[k] == jm[k]).all() for k in shared)
    assert json.loads((quick_demo / "jmpose" / "checkpoints" / "last.json").read_text())["config"]["model"][
        "freeze_backbone"] is True
