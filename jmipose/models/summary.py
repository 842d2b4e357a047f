"""Parameter counts and FLOPs of a model configuration (``jmipose info --model CONFIG``).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-accumulate of
convolutions and matrix products; element-wise work, softmax and bilinear sampling are not counted,
as usual) on the *eager-reference* path of the model, built on the ``meta`` device (no memory, no
compute).  The references express op A's reduction as an einsum and op B's two products per
direction as matmuls, so the counter sees them; a fused kernel (a custom op the counter cannot see)
does the same arithmetic, so the count is the same whatever backend runs.  ``op_flops`` gives the
two ops' share from their formulas:

- joint_region_gather: 2 * B * C_out * (C_in / groups) * k^2 * h * w per call;
- joint_motion_attention: 2 directions x 2 products x 2 * B * heads * N_m * N_j * d = 8 * B * N^2 * C
  per call (N = tokens after ``attention_pool``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def _count(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


def op_flops(config, input_size: tuple[int, int], batch_size: int = 1) -> dict[str, int]:
    """The formula FLOPs of the two custom ops in one forward pass (a resolved ModelConfig)."""
    from jmipose.models.hrnet import HRNET_SPECS

    if not config.is_temporal:
        return {"joint_region_gather": 0, "joint_motion_attention": 0}
    height, width = input_size[0] // 4, input_size[1] // 4
    channels = config.channels or HRNET_SPECS[config.backbone].width
    num_branches = len(config.stages) if config.variant == "jmi" else 1
    gather = 0
    if config.use_cjl:
        taps = config.gather_kernel ** 2
        gather = num_branches * 2 * batch_size * channels * channels * taps * height * width
    attention = 0
    if config.use_interaction:
        pixels = math.ceil(height / config.attention_pool) * math.ceil(width / config.attention_pool)
        if config.attention_axis == "channel":  # per head: C/heads tokens of dimension h*w
            per_block = 8 * batch_size * channels * (channels // config.heads) * pixels
        else:                                   # per head: h*w tokens of dimension C/heads
            per_block = 8 * batch_size * pixels * pixels * channels
        attention = num_branches * config.num_blocks * per_block
    return {"joint_region_gather": gather, "joint_motion_attention": attention}


def describe(config, input_size: tuple[int, int] = (384, 288), batch_size: int = 1) -> dict[str, Any]:
    """Parameters (total, trainable, backbone) and forward FLOPs of ``config`` (a ModelConfig or dict)
    for ``batch_size`` windows of frames of ``input_size`` = (height, width)."""
    from jmipose.models import as_model_config, build_model

    config = as_model_config(config)
    height, width = int(input_size[0]), int(input_size[1])
    # counted on the meta device: no weights are read or needed
    counted = dataclasses.replace(config, use_kernels=False, backbone_weights=None, allow_random_backbone=True)
    with torch.device("meta"):
        model = build_model(counted)
    model.eval()
    frames = torch.empty(batch_size, config.num_frames, 3, height, width, device="meta")
    total_flops = _count(model, frames)
    backbone_frames = batch_size * (config.num_frames if config.is_temporal else 1)
    backbone_flops = _count(model.backbone, torch.empty(backbone_frames, 3, height, width, device="meta"))
    params = sum(p.numel() for p in model.parameters())
    backbone_params = sum(p.numel() for p in model.backbone.parameters())
    return {
        "variant": config.variant,
        "backbone": config.backbone,
        "input": [batch_size, config.num_frames, 3, height, width],
        "params": params,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "backbone_params": backbone_params,
        "head_params": params - backbone_params,
        "flops": total_flops,
        "backbone_flops": backbone_flops,
        "head_flops": total_flops - backbone_flops,
        "op_flops": op_flops(config, (height, width), batch_size),
    }
