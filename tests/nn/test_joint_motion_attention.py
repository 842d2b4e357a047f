"""jmipose.nn.JointMotionAttention: op B's layer (q/k/v projections, attention both ways, residuals)
against an independent float64 computation, scripting, init and argument errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from jmipose.nn import JointMotionAttention
from tests.backends import require_backend


def _attend(query, key, value):
    """softmax(q k^T / sqrt(d)) v in float64, written out."""
    scores = torch.einsum("bhqd,bhkd->bhqk", query, key) / math.sqrt(query.shape[-1])
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    return torch.einsum("bhqk,bhkd->bhqd", weights / weights.sum(-1, keepdim=True), value)


def expected(layer: JointMotionAttention, motion: torch.Tensor, joint: torch.Tensor):
    """The layer's output from its parameters: 1x1 convs as matrix products, pixel tokens per head."""
    batch, channels, height, width = motion.shape
    heads, pool = layer.heads, layer.pool

    def project(conv, maps):
        weight, bias = conv.weight.detach().double()[:, :, 0, 0], conv.bias.detach().double()
        projected = torch.einsum("oc,bchw->bohw", weight, maps) + bias[None, :, None, None]
        return [p.reshape(batch, heads, channels // heads, -1).transpose(-1, -2) for p in projected.chunk(3, 1)]

    sources = [F.avg_pool2d(x, pool, ceil_mode=True) if pool > 1 else x for x in (motion, joint)]
    q_m, k_m, v_m = project(layer.motion_qkv, sources[0])
    q_j, k_j, v_j = project(layer.joint_qkv, sources[1])
    pooled = sources[0].shape[2:]
    results = []
    for maps, attended in ((motion, _attend(q_m, k_j, v_j)), (joint, _attend(q_j, k_m, v_m))):
        attended = attended.transpose(-1, -2).reshape(batch, channels, *pooled)
        if pool > 1:
            attended = F.interpolate(attended, size=(height, width), mode="bilinear", align_corners=False)
        results.append(maps + attended)
    return results


@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("heads,pool", [(1, 1), (2, 1), (4, 2)])
def test_matches_an_independent_computation(backend, heads, pool):
    require_backend(backend)
    torch.manual_seed(0)
    layer = JointMotionAttention(8, heads, pool, backend=backend, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    motion, joint = (torch.randn(2, 8, 7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
                     for _ in range(2))
    out_m, out_j = layer(motion, joint)
    want_m, want_j = expected(layer, motion.detach(), joint.detach())
    torch.testing.assert_close(out_m, want_m, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out_j, want_j, rtol=1e-9, atol=1e-9)
    (out_m.sum() + 2 * out_j.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    assert motion.grad is not None and joint.grad is not None


@pytest.mark.parametrize("backend", [None, "cpp"])
def test_scripts_and_matches_eager(backend):
    if backend is not None:
        require_backend(backend)
    torch.manual_seed(0)
    for pool in (1, 2):
        layer = JointMotionAttention(8, 2, pool, backend=backend)
        scripted = torch.jit.script(layer)
        motion, joint = torch.randn(2, 8, 5, 6), torch.randn(2, 8, 5, 6)
        for got, want in zip(scripted(motion, joint), layer(motion, joint)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_inits_like_conv2d_and_names_its_arguments():
    torch.manual_seed(0)
    layer = JointMotionAttention(16, heads=4)
    bound = 1 / math.sqrt(16)  # nn.Conv2d's default: fan_in = 16 input channels x 1 x 1
    for conv in (layer.motion_qkv, layer.joint_qkv):
        assert conv.weight.shape == (48, 16, 1, 1) and conv.weight.abs().max() <= bound
        assert conv.bias.abs().max() <= bound and conv.weight.std() > bound / 4
    assert "JointMotionAttention(\n  16, heads=4\n" in repr(layer)
    with pytest.raises(ValueError, match=r"JointMotionAttention: channels \(16\) must be divisible by heads \(3\)"):
        JointMotionAttention(16, heads=3)
    with pytest.raises(ValueError, match="pool must be a positive int, got 0"):
        JointMotionAttention(16, pool=0)
