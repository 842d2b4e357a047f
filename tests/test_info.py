"""`jmipose.ops.backends()` and `jmipose info`: every backend named, a reason for each one that is not
live, versions and build flags, and the model description of a config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
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
    overrides = ["model.backbone=tiny", "model.variant=jm", "model.allow_random_backbone=true"]
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


def test_info_model_prints_the_loss_balance_at_initialisation(tmp_path):
    """The gradient norms of the heatmap MSE and of aux_weight x the auxiliary term on the trainable
    parameters, as a direct autograd computation on the same model and inputs gives them."""
    from jmipose.engine.train import loss_balance

    overrides = ["model.backbone=tiny", "model.offset_groups=8", "data.image_size=[64,96]"]
    info = _info_json(tmp_path, "--model", "posetrack18", *(a for o in overrides for a in ("--set", o)))
    balance = info["model"]["loss_balance"]
    assert balance["backbone"] == "random (backbone_weights not set)"
    assert balance["aux_estimator"] == "official" and balance["aux_weight"] == 2.0
    assert balance["grad_norm_heatmap"] > 0 and balance["grad_norm_aux"] > 0
    assert balance["grad_ratio_aux"] == balance["grad_norm_aux"] / balance["grad_norm_heatmap"]
    assert loss_balance("posetrack18", overrides) == balance  # seeded: the same numbers in process

    # a direct computation: same seed, same model, same inputs
    cfg = load_config("posetrack18", overrides + ["model.allow_random_backbone=true"])
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(2, 5, 3, 96, 64, generator=generator)
    cy = torch.rand(2, 17, 1, 1, generator=generator) * 23
    cx = torch.rand(2, 17, 1, 1, generator=generator) * 15
    ys, xs = torch.arange(24.0)[:, None], torch.arange(16.0)[None, :]
    target = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * 3.0 ** 2))
    output = model(frames)
    params = [p for p in model.parameters() if p.requires_grad]
    mse = 0.5 * ((output.heatmaps - target) ** 2).mean()
    grads = torch.autograd.grad(mse, params, retain_graph=True, allow_unused=True)
    direct = float(torch.sqrt(sum(g.double().pow(2).sum() for g in grads if g is not None)))
    assert balance["grad_norm_heatmap"] == pytest.approx(direct, rel=1e-6)
    grads = torch.autograd.grad(2.0 * output.aux_loss, params, allow_unused=True)
    direct = float(torch.sqrt(sum(g.double().pow(2).sum() for g in grads if g is not None)))
    assert balance["grad_norm_aux"] == pytest.approx(direct, rel=1e-6)
