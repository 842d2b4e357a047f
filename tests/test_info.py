"""`jmipose.ops.backends()` and `jmipose info`: every backend named, a reason for each one that is not
live, versions and build flags, and the model description of a config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

import jmipose
from jmipose.info import describe_model
from jmipose.models import build_model
from jmipose.config import load_config

BACKENDS = ("reference", "cpp", "cuda", "triton")


def test_backends_name_every_backend_and_say_why_not():
    status = jmipose.ops.backends()
    assert tuple(status) == BACKENDS
    assert status["reference"].live
    for name, s in status.items():
        assert isinstance(s.live, bool)
        assert s.live or (isinstance(s.reason, str) and len(s.reason) > 10), (name, s)
    if not torch.cuda.is_available():
        assert not status["cuda"].live and "GPU" in status["cuda"].reason


def _info_json(tmp_path, *extra: str) -> dict:
    # The child must import the jmipose this process imported: the same environment (PYTHONPATH made
    # absolute), run from an empty folder (``python -m`` puts the working directory first on sys.path,
    # and a source checkout there has no compiled libraries).
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    proc = subprocess.run([sys.executable, "-m", "jmipose", "info", "--json", *extra], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_info_json_reports_versions_backends_and_build(tmp_path):
    info = _info_json(tmp_path)
    assert os.path.dirname(info["library_dir"]) == os.path.dirname(os.path.abspath(jmipose.__file__))
    assert info["jmipose"] == jmipose.__version__
    assert info["torch"] == torch.__version__
    assert set(info["backends"]) == set(BACKENDS)
    live = jmipose.ops.backends()
    for name, entry in info["backends"].items():
        # the subprocess has the same environment, so it sees the same backends
        assert entry["live"] == live[name].live, (name, entry)
        assert entry["live"] or entry["reason"]
    if live["cpp"].live:
        build = info["build"]
        assert "-O3" in build["cxxflags"] and "-fopenmp" in build["cxxflags"]
        assert build["cxx"]


def test_info_model_matches_the_built_model():
    overrides = ["model.backbone=tiny", "model.variant=jm"]
    described = describe_model("synthetic", overrides)
    cfg = load_config("synthetic", overrides)
    model = build_model(cfg.model)
    assert described["params"] == sum(p.numel() for p in model.parameters())
    assert described["backbone_params"] == sum(p.numel() for p in model.backbone.parameters())
    width, height = cfg.data.image_size
    assert described["input"] == [1, cfg.model.num_frames, 3, height, width]
    assert described["flops"] > described["backbone_flops"] > 0


def test_benchmark_environment_comes_from_info():
    """Every benchmark record's environment block is a view of ``collect()`` (one source)."""
    from jmipose.bench.records import ENVIRONMENT_KEYS
    from jmipose.info import available_cores, collect, environment

    info, env = collect(), environment("cpu")
    assert set(ENVIRONMENT_KEYS) <= set(env)
    for key in ("jmipose", "torch", "triton", "torchvision", "python", "cpu", "cores"):
        assert env[key] == info[key], key
    assert env["threads"] == info["torch_threads"] == torch.get_num_threads()
    assert env["openmp_threads"] == info["openmp_threads"]
    assert env["gpu"] is None and env["cuda"] == torch.version.cuda
    assert 1 <= info["cores"] == available_cores() <= (os.cpu_count() or 1)
    assert info["cpu"] and isinstance(info["cpu"], str)
