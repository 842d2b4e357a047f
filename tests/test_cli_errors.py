"""The command line's error contract (``jmipose.cli``): a user's mistake ends in one or two lines on
stderr that name the argument, file or field, with exit code 2 and no traceback; ``--debug`` /
``JMIPOSE_DEBUG=1`` add the traceback; a bug of ours keeps its traceback.

``PROBES`` is the table of bad inputs behind docs/RELIABILITY.md ("The command line: one line, exit
2"); ``pytest tests/test_cli_errors.py -k probe`` counts them.  Every probe runs ``jmipose.cli.main``
in-process (the same code path as the console script, without a new interpreter per probe).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from jmipose.cli import main as cli

DETECTIONS = "posetrack18/annotations/test_posetrack18_human_detections.json"
CLIP = "posetrack18/videos/000001_mpiinew_test"          # 5 real frames, 1280x720, as JPEGs and an mp4
FRAME_3418 = "posetrack18/images/val/003418_mpii_test/000000.jpg"   # 1920x1080, sequence 3418 frame 0
TINY_MODEL = {"variant": "jmi", "backbone": "tiny", "channels": 8, "num_frames": 5, "key_index": 2,
              "allow_random_backbone": True}


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models (tests/conftest.py)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight tiny JM-Pose checkpoint whose record asks for 64x64 crops (fast on a CPU)."""
    from jmipose.checkpoint import save_checkpoint
    from jmipose.models import build_model

    torch.manual_seed(0)
    model = build_model(TINY_MODEL)
    config = {"model": {**model.config.to_dict(), "backbone_weights": None}, "data": {"image_size": [64, 64]}}
    name = tmp_path_factory.mktemp("checkpoint") / "tiny"
    save_checkpoint(name, model.state_dict(), config=config)
    return name


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line(code: int, out: str, err: str, expect: str) -> None:
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2, err
    assert re.search(expect, err), (expect, err)


# ----- the probe table -----

@dataclass
class Probe:
    """``argv`` may name ``{ckpt}`` (the tiny checkpoint), ``{data}`` (../shared/data) and ``{tmp}``;
    ``setup(tmp, ckpt, data)`` writes the bad input; ``expect`` is a regex the one line must match."""

    name: str
    argv: list[str]
    expect: str
    setup: object = None
    env: dict = field(default_factory=dict)
    stdout_empty: bool = False     # nothing computed was printed before the error


def _write(relative: str, text: str):
    def setup(tmp: Path, ckpt: Path, data: Path) -> None:
        (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp / relative).write_text(textwrap.dedent(text))
    return setup


def _detections(entries) -> object:
    return _write("d.json", json.dumps(entries))


def _file(tmp: Path, ckpt: Path, data: Path) -> None:
    (tmp / "afile").write_text("not a folder")


def _checkpoint_with(section: str, key: str, value):
    def setup(tmp: Path, ckpt: Path, data: Path) -> None:
        record = json.loads(ckpt.with_suffix(".json").read_text())
        record["config"][section][key] = value
        (tmp / "bad.json").write_text(json.dumps(record))
        (tmp / record["weights"]["file"]).write_bytes(ckpt.with_name(record["weights"]["file"]).read_bytes())
    return setup


def _ground_truth_without_people(tmp: Path, ckpt: Path, data: Path) -> None:
    gt = json.loads((data / "posetrack18/annotations/val/003418_mpii_test.json").read_text())
    for folder in ("gt", "pred"):
        (tmp / folder).mkdir(exist_ok=True)
        (tmp / folder / "003418_mpii_test.json").write_text(json.dumps({**gt, "annotations": []}))


def _clip_named(name: str, frames: int = 1):
    def setup(tmp: Path, ckpt: Path, data: Path) -> None:
        folder = tmp / name
        folder.mkdir()
        for t in range(frames):
            (folder / f"{t:06d}.jpg").write_bytes((data / FRAME_3418).read_bytes())
    return setup


def _small_frames(tmp: Path, ckpt: Path, data: Path) -> None:
    (tmp / "small").mkdir()
    for t in range(3):
        cv2.imwrite(str(tmp / "small" / f"{t:06d}.png"), np.full((48, 64, 3), 40 * t, np.uint8))


def _deep_json(tmp: Path, ckpt: Path, data: Path) -> None:
    (tmp / "deep.json").write_text("[" * 100_000 + "]" * 100_000)


def _deep_yaml(tmp: Path, ckpt: Path, data: Path) -> None:
    (tmp / "deep.yaml").write_text("train: " + "[" * 5_000 + "]" * 5_000 + "\n")   # past the recursion limit


MP4 = "{data}/" + CLIP + "/000001_mpiinew_test.mp4"
PREDICT = ["predict", MP4, "--checkpoint", "{ckpt}", "--no-progress", "--out", "{tmp}/out"]
NODATA = "model: {backbone: tiny, allow_random_backbone: true}\ndata: {root: %s, val_boxes: gt}\n"

PROBES = [
    # item 1: detections of other sequences
    Probe("detections-other-sequences", PREDICT + ["--detections", "{data}/" + DETECTIONS],
          r"no person box of sequence 000001; its 278 boxes belong to other sequences: 003418 \(100\), "
          r"009473 \(78\), 012834 \(100\)"),
    Probe("detections-sequence-unknown",
          ["predict", "{tmp}/clip", "--checkpoint", "{ckpt}", "--detections", "{data}/" + DETECTIONS,
           "--out", "{tmp}/out"],
          r"holds PoseTrack image ids of 3 sequences .*--sequence N", setup=_clip_named("clip")),
    Probe("detections-all-beyond-the-video",
          ["predict", "{tmp}/003418_mpii_test", "--checkpoint", "{ckpt}", "--detections", "{tmp}/d.json",
           "--out", "{tmp}/out"],
          r"1 on frames the 1-frame video does not have \(frame 7\): no box lies on a frame of this video",
          setup=lambda tmp, ckpt, data: (_clip_named("003418_mpii_test")(tmp, ckpt, data), _detections(
              [{"image_id": 10034180007, "bbox": [10, 10, 50, 80], "score": 0.9}])(tmp, ckpt, data))),
    Probe("predict-sequence-not-a-number", PREDICT + ["--sequence", "abc"], r"argument --sequence: must be a "),
    # item 2: nothing to score
    Probe("eval-ap-nothing-to-score", ["eval-ap", "{tmp}/gt", "{tmp}/pred", "--json", "{tmp}/ap.json"],
          r"nothing to score: no ground-truth frame in .*gt has an annotated person",
          setup=_ground_truth_without_people, stdout_empty=True),
    # item 3: train's config, data, resume and output-folder mistakes
    Probe("train-unknown-key", ["train", "{tmp}/c.yaml", "--output-dir", "{tmp}/run"],
          r"unknown key 'train\.bogus'", setup=_write("c.yaml", "train:\n  bogus: 1\n")),
    Probe("train-wrong-type", ["train", "{tmp}/c.yaml", "--output-dir", "{tmp}/run"],
          r"train\.epochs must be an integer, got 'ten'", setup=_write("c.yaml", "train:\n  epochs: ten\n")),
    Probe("train-lr-zero", ["train", "synthetic", "train.lr=0", "--output-dir", "{tmp}/run"], r"train\.lr must be > 0"),
    Probe("train-missing-data-root", ["train", "{tmp}/c.yaml", "--output-dir", "{tmp}/run"],
          r"data\.root .*nowhere is not a folder", setup=lambda tmp, ckpt, data: _write(
              "c.yaml", NODATA % (tmp / "nowhere"))(tmp, ckpt, data)),
    Probe("train-empty-yaml", ["train", "{tmp}/c.yaml"], r"config: .*c\.yaml is empty",
          setup=_write("c.yaml", "# nothing yet\n")),
    Probe("train-invalid-yaml", ["train", "{tmp}/c.yaml"], r"c\.yaml, line 2 column 1: not valid YAML",
          setup=_write("c.yaml", "train: [1, 2\n")),
    Probe("train-deep-yaml", ["train", "{tmp}/deep.yaml"], r"deep\.yaml is nested too deeply", setup=_deep_yaml),
    Probe("train-no-such-config", ["train", "{tmp}/missing.yaml"], r"no such file .*missing\.yaml"),
    Probe("train-no-such-shipped-config", ["train", "posetrack99"], r"no shipped config of that name"),
    Probe("train-bad-override", ["train", "synthetic", "train.nope=1"], r"unknown key 'train\.nope'"),
    Probe("train-output-dir-under-a-file", ["train", "synthetic", "--output-dir", "{tmp}/afile/run"],
          r"output_dir: cannot create the folder .*afile/run \(.*afile is a file\)", setup=_file),
    Probe("train-output-dir-is-a-file", ["train", "synthetic", "--output-dir", "{tmp}/afile"],
          r"output_dir: .*afile is a file, not a folder", setup=_file),
    Probe("train-device-tpu", ["train", "synthetic", "train.device=tpu", "--output-dir", "{tmp}/run"],
          r"train\.device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    # item 4: overrides after an option are parsed (and applied: the bad value is reported)
    Probe("train-override-after-option", ["train", "synthetic", "--output-dir", "{tmp}/run", "train.lr=-1"],
          r"train\.lr must be > 0.*got -1\.0"),
    # item 5: predict and eval-ap
    Probe("predict-out-is-a-file", PREDICT[:-1] + ["{tmp}/afile"], r"--out: .*afile is a file, not a folder",
          setup=_file),
    Probe("predict-out-under-a-file", PREDICT[:-1] + ["{tmp}/afile/x"],
          r"--out: cannot create the folder .*afile/x", setup=_file),
    Probe("eval-ap-json-under-a-file",
          ["eval-ap", "{data}/posetrack18/annotations/val", "{tmp}/pred", "--json", "{tmp}/afile/ap.json"],
          r"--json .*afile/ap\.json: .*afile is a file", setup=_file, stdout_empty=True),
    Probe("eval-ap-json-is-a-folder",
          ["eval-ap", "{data}/posetrack18/annotations/val", "{tmp}/pred", "--json", "{tmp}"],
          r"--json: .* is a folder; give a file name", stdout_empty=True),
    Probe("predict-device-tpu", PREDICT + ["--device", "tpu"], r"--device must be auto, cpu, cuda or cuda:N"),
    Probe("eval-device-tpu", ["eval", "synthetic", "--device", "tpu"], r"--device must be auto, cpu, cuda"),
    Probe("bench-device-tpu", ["bench", "--device", "tpu"], r"argument --device: invalid choice: 'tpu'"),
    Probe("bench-json-under-a-file", ["bench", "--smallest", "--json", "{tmp}/afile/r.json"],
          r"--json .*afile/r\.json: .*afile is a file", setup=_file),
    Probe("predict-max-bytes-mp4", PREDICT, r"000001_mpiinew_test\.mp4: decoding 1280x720 frames .* more than "
          r"the memory limit of 1\.0 MiB \(JMIPOSE_MAX_BYTES=1M\)", env={"JMIPOSE_MAX_BYTES": "1M"}),
    Probe("predict-deep-detections", PREDICT + ["--detections", "{tmp}/deep.json"],
          r"deep\.json: not valid JSON here: nested too deeply", setup=_deep_json),
    Probe("checkpoint-channels-1e12", ["predict", MP4, "--checkpoint", "{tmp}/bad", "--out", "{tmp}/out"],
          r"checkpoint .*bad: model config: channels must be at most 4096",
          setup=_checkpoint_with("model", "channels", 1e12)),
    Probe("checkpoint-channels-10**12", ["predict", MP4, "--checkpoint", "{tmp}/bad", "--out", "{tmp}/out"],
          r"checkpoint .*bad: model config: channels must be at most 4096",
          setup=_checkpoint_with("model", "channels", 10**12)),
    Probe("checkpoint-image-size-1e6", ["predict", MP4, "--checkpoint", "{tmp}/bad", "--out", "{tmp}/out"],
          r"checkpoint .*bad: data\.image_size must be \(width, height\), multiples of 32 in \[32, 4096\]",
          setup=_checkpoint_with("data", "image_size", [1e6, 1e6])),
    # item 6: the memory limit on frame folders and on building the model
    Probe("predict-max-bytes-frame-folder", PREDICT[:1] + ["{data}/" + CLIP] + PREDICT[2:],
          r"000001_mpiinew_test: decoding 1280x720 frames .* more than the memory limit of 2\.0 MiB",
          env={"JMIPOSE_MAX_BYTES": "2M"}),
    Probe("predict-max-bytes-model", ["predict", "{tmp}/small", "--checkpoint", "{ckpt}", "--out", "{tmp}/out"],
          r"checkpoint .*tiny: the model and its \d+ bytes of weights would need .* more than the memory "
          r"limit of 4\.0 MiB", setup=_small_frames, env={"JMIPOSE_MAX_BYTES": "4M"}),
    # item 8: one rule for numbers in detections; thresholds; duplicate YAML keys
    Probe("detections-bbox-strings", PREDICT + ["--detections", "{tmp}/d.json"],
          r"d\.json, field '\[0\]\.bbox\[0\]': expected a number, got '400'", setup=_detections(
              [{"image_id": 0, "bbox": ["400", "50", "100", "200"], "score": 0.9}])),
    Probe("detections-score-string", PREDICT + ["--detections", "{tmp}/d.json"],
          r"d\.json, field '\[0\]\.score': expected a number, got '0\.9'", setup=_detections(
              [{"image_id": 0, "bbox": [400, 50, 100, 200], "score": "0.9"}])),
    Probe("detections-score-above-1", PREDICT + ["--detections", "{tmp}/d.json"],
          r"d\.json, field '\[1\]\.score': expected a detector's score in \[0, 1\], got 1\.5", setup=_detections(
              [{"image_id": 0, "bbox": [400, 50, 100, 200], "score": 0.5},
               {"image_id": 0, "bbox": [400, 50, 100, 200], "score": 1.5}])),
    Probe("detections-score-negative", PREDICT + ["--detections", "{tmp}/d.json"],
          r"d\.json, field '\[0\]\.score': expected a detector's score in \[0, 1\], got -0\.2", setup=_detections(
              [{"image_id": 0, "bbox": [400, 50, 100, 200], "score": -0.2}])),
    Probe("det-threshold-nan", PREDICT + ["--det-threshold", "nan"],
          r"argument --det-threshold: must be a number in \[0, 1\], got 'nan'"),
    Probe("det-threshold-above-1", PREDICT + ["--det-threshold", "1.5"],
          r"argument --det-threshold: must be a number in \[0, 1\], got '1\.5'"),
    Probe("yaml-duplicate-key", ["train", "{tmp}/c.yaml"],
          r"c\.yaml, line 4 column 3: not valid YAML \(duplicate key 'lr' \(first at line 2\)\)",
          setup=_write("c.yaml", "train:\n  lr: 0.001\n  epochs: 2\n  lr: 0.01\n")),
    # inputs that were already refused with a line; kept under the one contract
    Probe("predict-missing-video", ["predict", "{tmp}/nothing.mp4", "--checkpoint", "{ckpt}", "--out", "{tmp}/o"],
          r"video file or frame folder .*nothing\.mp4 does not exist"),
    Probe("predict-corrupt-video", ["predict", "{tmp}/corrupt.mp4", "--checkpoint", "{ckpt}", "--out", "{tmp}/o"],
          r"corrupt\.mp4: cannot open the file as a video", setup=lambda tmp, ckpt, data: (tmp / "corrupt.mp4")
          .write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)),
    Probe("predict-missing-checkpoint", ["predict", MP4, "--checkpoint", "{tmp}/none", "--out", "{tmp}/o"],
          r"checkpoint: no such file .*none\.json"),
    Probe("predict-bad-box", PREDICT + ["--box", "1,2,3"], r"--box must be x,y,w,h \(four numbers\), got '1,2,3'"),
    Probe("predict-missing-detections", PREDICT + ["--detections", "{tmp}/none.json"],
          r"none\.json: does not exist"),
    Probe("predict-detections-not-json", PREDICT + ["--detections", "{tmp}/d.json"],
          r"d\.json: not valid JSON", setup=_write("d.json", "[{\"image_id\": 0,")),
    Probe("predict-unknown-option", PREDICT + ["--fast"], r"unrecognized arguments: --fast"),
    Probe("eval-ap-missing-gt", ["eval-ap", "{tmp}/nowhere", "{tmp}"], r"gt_dir: .*nowhere is not a folder"),
    Probe("info-bad-model-config", ["info", "--model", "posetrack99"], r"no shipped config of that name"),
    Probe("demo-out-is-a-file", ["demo", "--quick", "--out", "{tmp}/afile"], r"--out: .*afile is a file, not a folder",
          setup=_file),
]
if torch.cuda.is_available():
    PROBES = [p for p in PROBES if "cuda" not in p.name]
else:
    PROBES += [
        Probe("predict-device-cuda-without-gpu", PREDICT + ["--device", "cuda"],
              r"--device is 'cuda' but torch sees no CUDA device"),
        Probe("train-device-cuda-without-gpu", ["train", "synthetic", "train.device=cuda", "--output-dir",
                                                "{tmp}/run"], r"train\.device is 'cuda' but torch sees no CUDA"),
    ]


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.name)
def test_probe_ends_in_one_line_and_exit_2(probe, shared_data, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    for key, value in probe.env.items():
        monkeypatch.setenv(key, value)
    if probe.setup is not None:
        probe.setup(tmp_path, tiny_checkpoint, shared_data)
    (tmp_path / "pred").mkdir(exist_ok=True)
    argv = [a.format(ckpt=tiny_checkpoint, data=shared_data, tmp=tmp_path) for a in probe.argv]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = _run(argv, capsys)
    _assert_one_line(code, out, err, probe.expect)
    if probe.stdout_empty:
        assert out == "", out
    after = sorted(p.name for p in tmp_path.iterdir())
    assert "ap.json" not in set(after) - set(before)   # nothing half-computed was written


# ----- --debug, JMIPOSE_DEBUG and real bugs -----

def test_debug_flag_and_variable_show_the_traceback(capsys, monkeypatch, tmp_path):
    for argv in (["train", "synthetic", "train.lr=0", "--debug"], ["--debug", "train", "synthetic", "train.lr=0"]):
        code, _, err = _run(argv, capsys)
        assert code == 2 and "Traceback" in err and "ConfigError" in err
        assert err.strip().splitlines()[-1].startswith("jmipose train: config: train.lr must be > 0")
    monkeypatch.setenv("JMIPOSE_DEBUG", "1")
    code, _, err = _run(["train", "synthetic", "train.lr=0"], capsys)
    assert code == 2 and "Traceback" in err
    monkeypatch.setenv("JMIPOSE_DEBUG", "0")
    code, _, err = _run(["train", "synthetic", "train.lr=0"], capsys)
    assert code == 2 and "Traceback" not in err


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Errors that are not a user's mistake propagate: a KeyError of ours, and a ValueError raised
    inside numpy (an input no check of ours caught)."""
    import jmipose.info

    def key_error(args):
        return {}["missing"]

    def numpy_error(args):
        return np.zeros(2).reshape(3)

    for function, error in ((key_error, KeyError), (numpy_error, ValueError)):
        monkeypatch.setattr(jmipose.info, "main", function)
        with pytest.raises(error):
            cli(["info"])


def test_ctrl_c_is_one_line_and_130(monkeypatch, capsys):
    import jmipose.info

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(jmipose.info, "main", interrupted)
    assert cli(["info"]) == 130
    assert capsys.readouterr().err == "jmipose info: interrupted\n"


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path):
    """`jmipose ... | head`: a broken pipe on stdout is exit 141 (128 + SIGPIPE) with nothing on
    stderr, not a BrokenPipeError traceback (the command prints 4 MB, far past a pipe's buffer)."""
    script = ("import sys, jmipose.info\n"
              "from jmipose.cli import main\n"
              "jmipose.info.main = lambda args: print('x' * (1 << 22))\n"
              "sys.exit(main(['info']))\n")
    reader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=tmp_path)
    assert reader.stdout.read(10) == b"xxxxxxxxxx"
    reader.stdout.close()              # the reader leaves, as `head -c 10` does
    code = reader.wait(timeout=120)
    err = reader.stderr.read().decode()
    assert code == 141 and err == "", (code, err)


# ----- item 1: detections matched to the video's sequence -----

def _boxes_of(path: Path, image_id: int, threshold: float) -> list[list[float]]:
    return sorted(d["bbox"] for d in json.loads(path.read_text())
                  if d["image_id"] == image_id and d["score"] >= threshold)


def test_detections_are_matched_to_the_videos_sequence(shared_data, tiny_checkpoint, tmp_path, capsys):
    """The real PoseTrack detections file (three sequences) on one real frame of sequence 003418: only
    that sequence's boxes are used, named as a PoseTrack video or through --sequence, and the summary
    says how many were left out and why (counts from the file itself)."""
    detections = shared_data / DETECTIONS
    want = _boxes_of(detections, 10034180000, 0.9)
    assert len(want) == 2
    _clip_named("003418_mpii_test")(tmp_path, tiny_checkpoint, shared_data)
    _clip_named("my_clip")(tmp_path, tiny_checkpoint, shared_data)
    for video, extra in (("003418_mpii_test", []), ("my_clip", ["--sequence", "3418"])):
        code, out, err = _run(["predict", tmp_path / video, "--checkpoint", tiny_checkpoint, "--detections",
                               detections, "--det-threshold", "0.9", "--out", tmp_path / "out", "--no-video",
                               "--no-progress", *extra], capsys)
        assert code == 0, err
        assert (f"detections: used 2 of the 278 boxes in {detections} (sequence 003418); ignored 178 of other "
                f"sequences (009473 (78), 012834 (100)), 98 scored below 0.9") in out
        result = json.loads((tmp_path / "out" / f"{video}.json").read_text())
        assert [image["id"] for image in result["images"]] == [10034180000]
        np.testing.assert_allclose(sorted(a["person_box"] for a in result["annotations"]), want, rtol=1e-6)


def test_a_detection_on_a_frame_the_video_lacks_is_reported(shared_data, tiny_checkpoint, tmp_path, capsys,
                                                           caplog):
    _clip_named("003418_mpii_test", frames=2)(tmp_path, tiny_checkpoint, shared_data)
    entries = [{"image_id": 10034180000 + frame, "bbox": [100, 100, 200, 400], "score": 0.9} for frame in (0, 1, 7)]
    (tmp_path / "d.json").write_text(json.dumps(entries))
    code, out, err = _run(["predict", tmp_path / "003418_mpii_test", "--checkpoint", tiny_checkpoint, "--detections",
                           tmp_path / "d.json", "--out", tmp_path / "out", "--no-video", "--no-progress"], capsys)
    assert code == 0, err
    assert "used 2 of the 3 boxes" in out and "ignored 1 on frames the 2-frame video does not have (frame 7)" in out
    assert "detections: 1 boxes are on frames [7], which the 2-frame video does not have" in caplog.text
    assert len(json.loads((tmp_path / "out" / "003418_mpii_test.json").read_text())["annotations"]) == 2


def test_load_detections_rules():
    from jmipose.engine.boxes import load_detections, posetrack_sequence

    assert posetrack_sequence("003418_mpii_test") == 3418 and posetrack_sequence("000001_mpiinew_test") == 1
    assert posetrack_sequence("clip_003418") is None and posetrack_sequence("12_clip") is None
    entries = [{"image_id": 10034180004, "bbox": [1, 2, 3, 4], "score": 0.5},
               {"image_id": 10094730004, "bbox": [1, 2, 3, 4], "score": 0.5},
               {"frame_index": 2, "bbox": [1, 2, 3, 4], "score": 0.1}]
    found = load_detections(entries, 0.2, sequence=3418)
    assert sorted(found) == [4] and found.other_sequences == {9473: 1} and found.below_threshold == 1
    assert load_detections(entries[:1]).sequence == 3418   # one sequence in the file: no ambiguity
    with pytest.raises(ValueError, match="2 sequences"):
        load_detections(entries)
    with pytest.raises(ValueError, match="neither a frame number nor a PoseTrack id"):
        load_detections([{"image_id": 3 * 10**10, "bbox": [1, 2, 3, 4]}])
    for threshold in (float("nan"), -0.1, 1.01, "0.5", True):
        with pytest.raises(ValueError, match="detection_threshold must be a number in \\[0, 1\\]"):
            load_detections(entries[:1], threshold)
    with pytest.raises(ValueError, match=r"field '\[0\]\.bbox\[3\]': expected a number, got True"):
        load_detections([{"image_id": 0, "bbox": [1, 2, 3, True]}])


# ----- item 2: nothing to score is NaN in the library -----

def test_nothing_to_score_is_nan_not_zero(shared_data, tmp_path):
    from jmipose.metrics.posetrack_ap import COLUMNS, posetrack_ap

    _ground_truth_without_people(tmp_path, tmp_path, shared_data)
    result = posetrack_ap(tmp_path / "gt", tmp_path / "pred")
    assert result["frames"] == 0
    assert all(np.isnan(result[c]) for c in COLUMNS) and all(np.isnan(v) for v in result["per_joint"].values())


# ----- item 8: the run lock of an output folder -----

# jmipose/fileio.py imports nothing of jmipose (nor torch): the holder loads just that module, fast
_HOLD = ("import importlib.util, sys, time\n"
         "spec = importlib.util.spec_from_file_location('fileio', sys.argv[2])\n"
         "fileio = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(fileio)\n"
         "fileio.RunLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(120)\n")


def _holder(folder: Path) -> subprocess.Popen:
    import jmipose.fileio

    process = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), jmipose.fileio.__file__],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_run_into_a_locked_output_folder_refuses(shared_data, tmp_path, capsys):
    import yaml

    config = {"model": TINY_MODEL | {"num_frames": 3}, "output_dir": str(tmp_path / "run"),
              "data": {"root": str(shared_data / "posetrack18"), "train_annotations": "annotations/val",
                       "val_annotations": "annotations/val", "val_boxes": "gt", "window": [-2, -1],
                       "image_size": [64, 64]},
              "train": {"epochs": 1, "num_workers": 0, "progress": False}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    holder = _holder(tmp_path / "run")
    try:
        code, out, err = _run(["train", tmp_path / "c.yaml"], capsys)
        _assert_one_line(code, out, err, rf"output_dir .*run is in use by another run \(pid {holder.pid} on host ")
        assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "train_log.csv").exists()
    finally:
        holder.kill()   # SIGKILL: the lock file stays behind, naming a dead process
        holder.wait()
    assert json.loads((tmp_path / "run" / "train.lock").read_text())["pid"] == holder.pid
    from jmipose.fileio import RunLock

    with RunLock(tmp_path / "run"):   # the stale lock is no obstacle
        assert json.loads((tmp_path / "run" / "train.lock").read_text().strip())["pid"] == os.getpid()


def test_run_lock_without_file_locks_decides_by_pid(tmp_path, monkeypatch):
    """On a file system that refuses locks, a recorded live pid on this host refuses, a dead one is
    stale and taken over."""
    import errno
    import fcntl
    import socket

    from jmipose.fileio import RunLock, RunLockedError

    def no_locks(fd, flags):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    folder = tmp_path / "run"
    folder.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (folder / "train.lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(RunLockedError, match=f"in use by another run \\(pid {sleeper.pid}"):
            RunLock(folder).acquire()
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
    lock = RunLock(folder).acquire()   # the same record, its process gone: stale
    try:
        assert json.loads((folder / "train.lock").read_text())["pid"] == os.getpid()
    finally:
        lock.release()


# ----- item 8: a 0x0 frame -----

def test_an_empty_frame_is_named_as_a_frame(tiny_checkpoint):
    from jmipose.engine.inferencer import Inferencer

    infer = Inferencer(tiny_checkpoint)
    frames = [np.zeros((64, 64, 3), np.uint8), np.zeros((0, 0, 3), np.uint8)]
    with pytest.raises(ValueError, match=r"frames: frame 1 is 0x0 \(an empty image\)"):
        list(infer(frames))
