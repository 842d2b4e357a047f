"""``jmipose demo --quick``: every output is there and well formed (the accuracy claim is checked by
the full demo, whose numbers are in the engine's report)."""

from __future__ import annotations

import json

import cv2


COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total")


def test_results_json_has_the_issue_schema(quick_demo):
    results = json.loads((quick_demo / "results.json").read_text())
    assert set(results) == {"baseline", "jmpose", "hard_frames", "seconds"}
    for ap in (results["baseline"], results["jmpose"], results["hard_frames"]["baseline"],
               results["hard_frames"]["jmpose"]):
        assert tuple(ap) == COLUMNS and all(0 <= v <= 100 for v in ap.values())
    assert results["seconds"] > 0


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
