"""Parameter counts and FLOPs per configuration (``describe``)."""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode

from jmipose.models import build_model, describe
from jmipose.models.config import ModelConfig
from jmipose.models.summary import op_flops
from jmipose.ops.joint_motion_attention import joint_motion_attention_reference
from jmipose.ops.joint_region_gather import joint_region_gather_reference


def _flops(fn, *args, **kwargs) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


def test_op_formulas_agree_with_the_counter_on_the_references():
    """The counter sees the references' products, and the formulas give the same number."""
    b, c, h, w, k = 2, 8, 6, 5, 3
    x = torch.randn(b, c, h, w)
    offset = torch.randn(b, 2 * k * k, h, w)
    mask = torch.rand(b, k * k, h, w)
    weight = torch.randn(c, c, k, k)
    counted = _flops(joint_region_gather_reference, x, offset, weight, None, 1, 3, 3, mask)
    assert counted == 2 * b * c * c * k * k * h * w
    heads, n_m, n_j, d = 2, 30, 30, 4
    q = torch.randn(b, heads, n_m, d)
    flops = _flops(joint_motion_attention_reference, q, q, q, q, q, q, res_m=q, res_j=q)
    assert flops == 8 * b * heads * n_m * n_j * d

    config = ModelConfig(variant="jm", backbone="tiny", num_blocks=3, attention_pool=2).resolved()
    formula = op_flops(config, (64, 32), batch_size=2)
    tokens = (16 // 2) * (8 // 2)
    channels = 32  # the tiny HRNet's width
    assert formula == {"joint_region_gather": 2 * 2 * channels * channels * 9 * 16 * 8,
                       "joint_motion_attention": 3 * 8 * 2 * tokens * tokens * channels}
    # channel attention: per head, C/heads tokens of dimension h*w
    config = ModelConfig(variant="jm", backbone="tiny", num_blocks=3, attention_pool=2, attention_axis="channel",
                         heads=2).resolved()
    assert op_flops(config, (64, 32), batch_size=2)["joint_motion_attention"] == \
        3 * 8 * 2 * 2 * (channels // 2) * (channels // 2) * tokens


def test_describe_counts_parameters_and_flops():
    config = {"variant": "jmi", "backbone": "tiny", "allow_random_backbone": True}
    info = describe(config, input_size=(64, 32), batch_size=2)
    model = build_model(config)
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert info["backbone_params"] == sum(p.numel() for p in model.backbone.parameters())
    assert info["trainable_params"] == info["head_params"]  # frozen backbone
    assert info["input"] == [2, 5, 3, 64, 32]
    # the meta-device count equals a count on real tensors of the eager-reference model
    reference = build_model({**config, "use_kernels": False}).eval()
    assert info["flops"] == _flops(reference, torch.randn(2, 5, 3, 64, 32))
    assert info["backbone_flops"] == _flops(reference.backbone, torch.randn(10, 3, 64, 32))
    assert info["head_flops"] > sum(info["op_flops"].values()) > 0


def test_describe_baseline_runs_one_frame():
    info = describe({"variant": "baseline", "backbone": "tiny"}, input_size=(64, 64))
    assert info["flops"] == info["backbone_flops"] > 0
    assert info["op_flops"] == {"joint_region_gather": 0, "joint_motion_attention": 0}
    assert info["trainable_params"] == info["params"] == info["backbone_params"]


def test_describe_does_not_touch_the_config():
    config = ModelConfig(variant="jm", backbone="tiny")
    before = dataclasses.asdict(config)
    describe(config, input_size=(32, 32))
    assert dataclasses.asdict(config) == before
