"""The model builds op A's and op B's layers from jmipose.nn, with the checkpoint keys and the seeded
initialisation it had when it created those weights itself."""

from __future__ import annotations

import math

import torch
from torch import nn

from jmipose.models import build_model
from jmipose.models.common import ConvBlock
from jmipose.models.jmi import ContextAwareJointLearner, InteractionBlock
from jmipose.nn import JointMotionAttention, JointRegionGather


def test_layers_are_the_nn_modules_with_their_old_keys():
    torch.manual_seed(0)
    model = build_model({"backbone": "tiny", "variant": "jm", "num_blocks": 2, "allow_random_backbone": True})
    branch = model.branches[0]
    assert isinstance(branch.joint_learner, JointRegionGather)
    assert all(isinstance(block, JointMotionAttention) for block in branch.interactions)
    keys = set(model.state_dict())
    assert {"branches.0.joint_learner.weight", "branches.0.joint_learner.offset_conv.weight",
            "branches.0.joint_learner.mask_conv.bias", "branches.0.joint_learner.norm.running_var"} <= keys
    assert "branches.0.joint_learner.bias" not in keys  # the gather has no bias, as before
    for block in (0, 1):
        assert {f"branches.0.interactions.{block}.{name}.{p}" for name in ("motion_qkv", "joint_qkv", "gate")
                for p in ("weight", "bias")} <= keys
    assert not any(".attention." in k or ".gather." in k for k in keys)


def test_the_learner_weight_is_drawn_after_its_offset_and_mask_convs():
    """The seeded init of earlier releases: the guide, offset and mask convs first, then the gather's
    weight (Kaiming uniform, a = sqrt(5)), so a seed still builds the same model."""
    torch.manual_seed(3)
    learner = ContextAwareJointLearner(8, 17, kernel_size=3, dilation=3, offset_groups=2)
    torch.manual_seed(3)
    ConvBlock(17 + 8, 8)
    offset_conv, mask_conv = nn.Conv2d(8, 36, 3, padding=1), nn.Conv2d(8, 18, 3, padding=1)
    nn.init.normal_(offset_conv.weight, std=1e-3)
    nn.init.normal_(mask_conv.weight, std=1e-3)
    weight = torch.empty(8, 8, 3, 3)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    assert torch.equal(learner.weight, weight)
    assert torch.equal(learner.offset_conv.weight, offset_conv.weight)
    assert learner.padding == (3, 3) and learner.dilation == (3, 3) and learner.bias is None


def test_the_interaction_block_draws_as_before():
    torch.manual_seed(5)
    block = InteractionBlock(8, heads=2)
    torch.manual_seed(5)
    convs = [nn.Conv2d(8, 24, 1), nn.Conv2d(8, 24, 1), nn.Conv2d(16, 16, 1)]
    for mine, theirs in zip((block.motion_qkv, block.joint_qkv, block.gate), convs):
        assert torch.equal(mine.weight, theirs.weight) and torch.equal(mine.bias, theirs.bias)
