"""train() / evaluate() from a config and the train, eval and eval-ap command lines, on the real
PoseTrack18 excerpts with the tiny HRNet (one labelled frame per sequence: mechanics, not accuracy)."""

from __future__ import annotations

import json

import pytest
import yaml

from jmipose.cli import main as cli
from jmipose.engine.evaluate import evaluate
from jmipose.engine.train import train


@pytest.fixture()
def tiny_config(shared_data, tmp_path):
    # Only frame 0 of each sequence is on disk: a window of earlier frames clamps to the key frame.
    return {
        "name": "tiny", "output_dir": str(tmp_path / "run"),
        "model": {"variant": "jmi", "backbone": "tiny", "num_frames": 3, "key_index": 2, "channels": 8,
                  "allow_random_backbone": True},
        "data": {"root": str(shared_data / "posetrack18"), "train_annotations": "annotations/val",
                 "val_annotations": "annotations/val", "val_boxes": "gt", "window": [-2, -1],
                 "image_size": [64, 64]},
        "train": {"epochs": 1, "batch_size": 8, "num_workers": 0, "progress": False, "lr": 1e-3},
        "eval": {"batch_size": 8, "num_workers": 0},
    }


def test_train_then_evaluate_a_checkpoint(tiny_config, tmp_path, shared_data):
    result = train(tiny_config)
    assert result.epochs_done == 1 and result.global_step == 2  # 14 people, batch 8
    assert result.best_ap is not None and result.best_checkpoint is not None
    validation = tmp_path / "run" / "val" / "epoch_001" / "predictions"
    assert sorted(p.name for p in validation.iterdir()) == ["003418_mpii_test.json", "009473_mpii_test.json",
                                                           "012834_mpii_test.json"]
    scores = evaluate(tiny_config, tmp_path / "run" / "checkpoints" / "best", out_dir=tmp_path / "eval",
                      progress=False)
    assert scores["all"]["Total"] == pytest.approx(result.best_ap)  # the same model, the same numbers
    # the evaluator's command line agrees on the written predictions
    out = tmp_path / "ap.json"
    gt = shared_data / "posetrack18" / "annotations" / "val"
    assert cli(["eval-ap", str(gt), str(tmp_path / "eval" / "predictions"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["Total"] == pytest.approx(scores["all"]["Total"])


def test_train_and_eval_command_lines(tiny_config, tmp_path, capsys):
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(tiny_config))
    # a dotted override after an option (argparse's intermixed parsing)
    assert cli(["train", str(config_file), "--output-dir", str(tmp_path / "cli"), "train.lr=5e-4"]) == 0
    assert "trained 1 epochs" in capsys.readouterr().out
    stored = json.loads((tmp_path / "cli" / "checkpoints" / "last.json").read_text())
    assert stored["config"]["train"]["lr"] == 5e-4 and stored["config"]["model"]["variant"] == "jmi"
    # a second run needs --resume (one line, exit 2); a resume with another model is refused the same
    # way; with --resume, the finished run has nothing left to do
    assert cli(["train", str(config_file), "--output-dir", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a checkpoint; pass resume=True (--resume)" in err
    assert cli(["train", str(config_file), "--output-dir", str(tmp_path / "cli"), "--resume",
                "model.channels=16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume: the model config differs from the checkpoint's in ['channels']" in err
    assert cli(["train", str(config_file), "--output-dir", str(tmp_path / "cli"), "--resume"]) == 0
    assert cli(["eval", str(config_file), "--checkpoint", str(tmp_path / "cli" / "checkpoints" / "last"),
                "--out", str(tmp_path / "cli-eval")]) == 0
    out = capsys.readouterr().out
    assert "| Head | Shoulder |" in out
    assert "person boxes: ground-truth person boxes (data.val_boxes: gt): not comparable" in out
    assert json.loads((tmp_path / "cli-eval" / "ap.json").read_text())["boxes"].startswith("ground-truth")


def test_evaluation_needs_the_boxes_named(tiny_config, tmp_path, shared_data):
    config = {**tiny_config, "data": {**tiny_config["data"], "val_boxes": None}}
    with pytest.raises(ValueError, match="data.val_boxes is not set"):
        train(config)
    assert not (tmp_path / "run").exists()  # refused before any training
    train({**config, "train": {**config["train"], "val_every": 0}})  # no validation: no boxes needed
    with pytest.raises(ValueError, match="data.val_boxes is not set"):
        evaluate(config, tmp_path / "run" / "checkpoints" / "last", progress=False)
    detections = shared_data / "posetrack18" / "annotations" / "test_posetrack18_human_detections.json"
    detected = {**config, "data": {**config["data"], "val_boxes": str(detections)}}
    scores = evaluate(detected, tmp_path / "run" / "checkpoints" / "last", out_dir=tmp_path / "det",
                      progress=False)
    assert scores["boxes"] == f"detector boxes from {detections}"


def test_eval_without_weights_is_refused(tiny_config):
    with pytest.raises(ValueError, match="give a checkpoint"):
        evaluate(tiny_config, None)


def test_eval_ap_command_line_reports_problems(tmp_path, shared_data, capsys):
    gt = shared_data / "posetrack18" / "annotations" / "val"
    (tmp_path / "pred").mkdir()
    assert cli(["eval-ap", str(gt), str(tmp_path / "pred")]) == 2
    assert "no prediction file for sequence 003418_mpii_test" in capsys.readouterr().err
