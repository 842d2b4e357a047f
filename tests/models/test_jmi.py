"""The temporal model and the baseline: shapes through every variant and ablation, gradients reach
every trainable parameter (and never a frozen backbone), kernel path == eager path, bad input."""

from __future__ import annotations

import copy

import pytest
import torch

import jmipose.nn.joint_motion_attention

from jmipose.models import JointMotionPose, ModelConfig, PoseOutput, SingleFramePose, build_model, pose_loss

# Tiny HRNet, frames 64x32 -> heatmaps and stage features 16x8 (N = 128 tokens).
FRAMES_SHAPE = (2, 5, 3, 64, 32)

CONFIGS = {
    "jmi": {},
    "jm": {"variant": "jm"},
    "baseline": {"variant": "baseline"},
    "jmi_no_cjl": {"use_cjl": False},
    "jmi_no_interaction": {"use_interaction": False},
    "jmi_no_aux": {"use_aux": False},
    "jm_no_cjl": {"variant": "jm", "use_cjl": False},
    "jm_no_interaction": {"variant": "jm", "use_interaction": False},
    "jm_no_aux": {"variant": "jm", "use_aux": False},
    "jmi_options": {"heads": 2, "attention_pool": 2, "offset_groups": 2, "channels": 16,
                    "heatmap_residual": True, "residual_gate": True, "aux_estimator": "neg_kl", "stages": [1, 3]},
    "jm_options": {"variant": "jm", "stages": [2, 4], "split_sides": False, "num_blocks": 2, "heads": 4,
                   "gather_dilation": 1},
    "jm_three_frames_key_first": {"variant": "jm", "num_frames": 3, "key_index": 0,
                                  "heatmap_offsets": [0, 1, 2]},
    # the choices of the shipped PoseTrack configs (the authors' code), offset groups scaled to width 32
    "jmi_authors": {"stage1_source": "transition1", "attention_axis": "channel", "gate_conv": False,
                    "offset_groups": 8, "gather_dilation": 1, "mask_activation": "none",
                    "aux_estimator": "official"},
    "jm_channel_exp_neg_kl": {"variant": "jm", "attention_axis": "channel", "attention_pool": 2, "heads": 2,
                              "aux_estimator": "exp_neg_kl", "num_blocks": 2},
}


def make(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    # a random frozen backbone on purpose (the He re-initialisation below stands in for trained weights)
    model = build_model({"backbone": "tiny", "allow_random_backbone": True, **CONFIGS[name], **overrides})
    # HRNet's N(0, 0.001) initialisation makes features ~1e-10, far below the head's conv biases; a
    # trained backbone gives O(1) features, which He initialisation imitates.
    for module in model.backbone.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model


def frames_for(model) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    shape = list(FRAMES_SHAPE)
    shape[1] = model.config.num_frames
    return torch.randn(*shape, generator=generator)


def _forward_backward(model: torch.nn.Module, frames: torch.Tensor) -> PoseOutput:
    model.train()
    output = model(frames)
    target = torch.rand_like(output.heatmaps)
    pose_loss(output, target, torch.ones(frames.shape[0], 17)).total.backward()
    return output


def _assert_every_trainable_parameter_has_a_gradient(model: torch.nn.Module) -> None:
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    no_grad = [n for n, p in trainable.items() if p.grad is None or not torch.any(p.grad != 0)]
    assert no_grad == [], f"parameters without gradient: {no_grad}"
    assert all(torch.isfinite(p.grad).all() for p in trainable.values())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_variant_and_ablation(name):
    """Shapes and output type; gradients reach every trainable parameter (no unused parameters, so
    DDP needs no find_unused_parameters) and never the frozen backbone."""
    model = make(name)
    frames = frames_for(model)
    output = _forward_backward(model, frames)
    assert isinstance(output, PoseOutput)
    assert output.heatmaps.shape == (2, 17, 16, 8)
    assert output.backbone_heatmaps.shape == (2, 17, 16, 8)
    assert output.aux_loss.shape == () and torch.isfinite(output.aux_loss)
    # the backbone alone on the key frame, in the forward's autograd mode (HRNet's CPU forward picks its
    # memory layout by it, and the layouts round float32 differently)
    key_heatmaps = model.backbone(frames[:, model.config.key_index]).detach()
    torch.testing.assert_close(output.backbone_heatmaps, key_heatmaps)
    if name == "baseline":
        assert isinstance(model, SingleFramePose)
        assert output.heatmaps is output.backbone_heatmaps and not model.backbone.frozen
        _assert_every_trainable_parameter_has_a_gradient(model)
        return
    assert isinstance(model, JointMotionPose)
    if name.endswith("no_aux"):
        assert output.aux_loss.item() == 0.0
    else:
        assert output.aux_loss.requires_grad
    _assert_every_trainable_parameter_has_a_gradient(model)
    assert model.backbone.frozen and not model.backbone.training  # eval-mode BatchNorm under model.train()
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())


def test_variants_share_one_module_tree():
    jmi, jm = make("jmi"), make("jm")
    assert type(jmi) is type(jm)
    assert len(jmi.branches) == 4 and len(jmi.branches[0].interactions) == 1
    assert len(jm.branches) == 1 and len(jm.branches[0].interactions) == 4
    assert jm.branches[0].joint_learner.guide[0].in_channels == 3 * 17 + jm.channels  # H^ of t-1, t, t+1
    assert len(jm.branches[0].motions[0].encoders) == 2  # left and right motion features


def test_unfrozen_backbone_trains_too():
    model = make("jm", freeze_backbone=False)
    _forward_backward(model, frames_for(model))
    _assert_every_trainable_parameter_has_a_gradient(model)
    assert all(p.grad is not None for p in model.backbone.parameters())


@pytest.mark.parametrize("name", ["jmi_options", "jm", "jmi_authors", "jm_channel_exp_neg_kl"])
def test_kernel_path_matches_eager_path(name):
    """use_kernels=True (jmipose.ops' default backends) against use_kernels=False (eager references),
    same weights: outputs and every gradient."""
    eager = make(name, use_kernels=False, freeze_backbone=False)
    fused = make(name, use_kernels=True, freeze_backbone=False)
    fused.load_state_dict(eager.state_dict())
    frames = frames_for(eager)
    target = torch.rand(2, 17, 16, 8, generator=torch.Generator().manual_seed(2))
    results = []
    for model in (eager, fused):
        model.train()
        output = model(frames)
        pose_loss(output, target).total.backward()
        results.append((output, {n: p.grad for n, p in model.named_parameters()}))
    (out_eager, grads_eager), (out_fused, grads_fused) = results
    for field in PoseOutput._fields:
        torch.testing.assert_close(getattr(out_fused, field), getattr(out_eager, field), rtol=1e-4, atol=1e-5)
    for key, grad in grads_eager.items():
        scale = grad.abs().max().item() + 1e-12
        torch.testing.assert_close(grads_fused[key] / scale, grad / scale, rtol=1e-3, atol=1e-4, msg=key)


def test_heatmap_residual_adds_backbone_heatmaps():
    model = make("jmi", heatmap_residual=True).eval()
    frames = frames_for(model)
    output = model(frames)
    reference = copy.deepcopy(model)
    reference.config = ModelConfig(**{**reference.config.to_dict(), "heatmap_residual": False}).resolved()
    torch.testing.assert_close(output.heatmaps, reference(frames).heatmaps + output.backbone_heatmaps)


def test_residual_gate_scales_the_correction_per_joint_and_pixel():
    """final = H_key + sigmoid(W [S, H_key, max H_key] + b) * head(S), recomputed in float64 from the
    model's fused features S (captured at the head's input) with the gate's own weights."""
    model = make("jm", heatmap_residual=True, residual_gate=True, channels=16, num_blocks=1).double().eval()
    with torch.no_grad():  # a gate far from its 0.5 start, different per joint and pixel
        torch.nn.init.normal_(model.residual_gate.weight, std=0.5)
        torch.nn.init.normal_(model.residual_gate.bias, std=1.0)
        torch.nn.init.normal_(model.head.weight, std=0.1)
    captured = {}
    model.head.register_forward_hook(lambda module, inputs, output: captured.update(fused=inputs[0]))
    frames = frames_for(model).double()
    with torch.no_grad():
        output = model(frames)
    fused, key = captured["fused"], output.backbone_heatmaps
    num_joints = key.shape[1]
    peak = key.flatten(2).max(dim=2).values[:, :, None, None].expand_as(key)
    gate_weight = model.residual_gate.weight[:, :, 0, 0]
    logits = (torch.einsum("oc,bchw->bohw", gate_weight[:, :fused.shape[1]], fused)
              + torch.einsum("oc,bchw->bohw", gate_weight[:, fused.shape[1]:-num_joints], key)
              + torch.einsum("oc,bchw->bohw", gate_weight[:, -num_joints:], peak)
              + model.residual_gate.bias[None, :, None, None])
    correction = torch.einsum("oc,bchw->bohw", model.head.weight[:, :, 0, 0], fused) \
        + model.head.bias[None, :, None, None]
    gate = 1 / (1 + torch.exp(-logits))
    torch.testing.assert_close(output.heatmaps, key + gate * correction, rtol=1e-10, atol=1e-12)
    assert gate.min() < 0.2 and gate.max() > 0.8  # the check above covered gates far from 0.5


def test_only_the_key_frame_matters_to_the_baseline():
    model = make("baseline").eval()
    frames = frames_for(model)
    changed = frames.clone()
    changed[:, [0, 1, 3, 4]] = torch.randn_like(changed[:, [0, 1, 3, 4]])
    torch.testing.assert_close(model(changed).heatmaps, model(frames).heatmaps)
    changed[:, 2] += 1
    assert not torch.equal(model(changed).heatmaps, model(frames).heatmaps)


def test_supporting_frames_matter_to_the_temporal_model():
    model = make("jm").eval()
    frames = frames_for(model)
    changed = frames.clone()
    changed[:, 0] = torch.randn_like(changed[:, 0])
    output = model(changed)
    torch.testing.assert_close(output.backbone_heatmaps, model(frames).backbone_heatmaps)
    assert not torch.equal(output.heatmaps, model(frames).heatmaps)


@pytest.mark.parametrize("frames, message", [
    (torch.randn(2, 4, 3, 64, 32), r"T=5"),
    (torch.randn(2, 5, 1, 64, 32), r"\[B, T=5, 3, H, W\]"),
    (torch.randn(5, 3, 64, 32), r"\[B, T=5, 3, H, W\]"),
    (torch.randn(2, 5, 3, 60, 32), "multiples of 32"),
    (torch.zeros(2, 5, 3, 64, 32, dtype=torch.uint8), "floating"),
    ("frames", "torch.Tensor"),
])
@pytest.mark.parametrize("name", ["jmi", "baseline"])
def test_bad_frames_are_named(name, frames, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make(name)(frames)


@pytest.mark.parametrize("values, message", [
    ({"variant": "jmx"}, "variant"),
    ({"backbone": "w64"}, "backbone"),
    ({"key_index": 5}, "key_index"),
    ({"stages": [0, 2]}, "stages"),
    ({"heatmap_offsets": [-3]}, "heatmap_offsets"),
    ({"gather_kernel": 4}, "gather_kernel"),
    ({"heads": 3}, "divisible by heads"),
    ({"offset_groups": 3}, "divisible by offset_groups"),
    ({"aux_objective": "kl"}, "aux_objective"),
    ({"mi_temperature": 0}, "mi_temperature"),
    ({"residual_gate": True}, "residual_gate"),
    ({"num_frames": 1, "key_index": 0}, "at least 2"),
    ({"colour": "blue"}, "unknown keys"),
    ({"aux_estimator": "kl"}, "aux_estimator"),
    ({"attention_axis": "time"}, "attention_axis"),
    ({"stage1_source": "stem"}, "stage1_source"),
    ({"mask_activation": "relu"}, "mask_activation"),
    ({"gate_conv": "no"}, "gate_conv"),
    ({"offset_groups": 12}, "divisible by offset_groups"),   # the authors' 12 groups need width 48
])
def test_bad_config_is_named(values, message):
    with pytest.raises(ValueError, match=message):
        build_model({"backbone": "tiny", "allow_random_backbone": True, **values})


def test_config_round_trip_and_variant_defaults():
    config = ModelConfig(variant="jm", backbone="tiny").resolved()
    assert config.stages == [4] and config.heatmap_offsets == [-1, 0, 1] and config.num_blocks == 4
    assert config.aux_objective == "orthogonality" and config.freeze_backbone
    again = ModelConfig.from_dict(config.to_dict()).resolved()
    assert again == config
    # configs written before aux_estimator named the estimator mi_proxy (checkpoints keep loading)
    legacy = {k: v for k, v in config.to_dict().items() if k != "aux_estimator"}
    assert ModelConfig.from_dict({**legacy, "mi_proxy": "neg_kl"}).aux_estimator == "neg_kl"
    assert ModelConfig(variant="baseline").resolved().freeze_backbone is False
    assert ModelConfig().resolved().stages == [1, 2, 3, 4]


# ----- the interaction block's and the CJL's options, each through its op -----

def _float64_block_reference(block, motion, joint):
    """The interaction block recomputed in float64 with plain torch: 1x1 projections, tokens per
    ``block.axis``, both softmax attentions with the residuals, gates (sigmoid of the concatenation,
    after the gate conv when there is one)."""
    def project(conv, x):
        weight, bias = conv.weight[:, :, 0, 0].double(), conv.bias.double()
        return torch.einsum("oc,bchw->bohw", weight, x) + bias[None, :, None, None]

    def tokens(x):
        b, c = x.shape[:2]
        t = x.reshape(b, block.heads, c // block.heads, -1)
        return t if block.axis == "channel" else t.transpose(-1, -2)

    def maps(t, like):
        if block.axis == "pixel":
            t = t.transpose(-1, -2)
        return t.reshape(like.shape)

    q_m, k_m, v_m = (tokens(t) for t in project(block.motion_qkv, motion).chunk(3, dim=1))
    q_j, k_j, v_j = (tokens(t) for t in project(block.joint_qkv, joint).chunk(3, dim=1))
    scale = q_m.shape[-1] ** -0.5
    a_m = maps(tokens(motion) + torch.softmax(q_m @ k_j.transpose(-1, -2) * scale, -1) @ v_j, motion)
    a_j = maps(tokens(joint) + torch.softmax(q_j @ k_m.transpose(-1, -2) * scale, -1) @ v_m, joint)
    both = torch.cat([a_m, a_j], dim=1)
    gates = torch.sigmoid(both if block.gate is None else project(block.gate, both))
    g_m, g_j = gates.chunk(2, dim=1)
    return g_m * a_m, g_j * a_j


@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("axis, gate_conv", [("channel", False), ("channel", True), ("pixel", False)])
def test_interaction_block_options_through_op_b(monkeypatch, backend, axis, gate_conv):
    """attention_axis and gate_conv: the block calls jmipose.ops.joint_motion_attention (forced to one
    backend) with tokens of the right axis, and matches a float64 recomputation."""
    from jmipose import ops
    from jmipose.models.jmi import InteractionBlock

    if backend == "cpp" and not ops.backends()["cpp"].live:
        pytest.skip("the cpp backend is not built here")
    calls = []
    real = ops.joint_motion_attention

    def spy(*args, **kwargs):
        calls.append((args[0].shape, kwargs["scale"]))
        return real(*args, **{**kwargs, "backend": backend})

    # the layer reaches the op through jmipose.nn.JointMotionAttention, which imports the public op
    monkeypatch.setattr(jmipose.nn.joint_motion_attention, "joint_motion_attention", spy)
    torch.manual_seed(0)
    block = InteractionBlock(8, heads=2, axis=axis, gate_conv=gate_conv).double()
    for conv in (block.motion_qkv, block.joint_qkv):  # attention far from uniform
        torch.nn.init.normal_(conv.weight, std=0.7)
    motion, joint = torch.randn(2, 8, 4, 3, dtype=torch.float64), torch.randn(2, 8, 4, 3, dtype=torch.float64)
    out_m, out_j = block(motion, joint)
    expected_shape = (2, 2, 4, 12) if axis == "channel" else (2, 2, 12, 4)  # [B, heads, tokens, d]
    assert calls == [(expected_shape, expected_shape[-1] ** -0.5)]
    ref_m, ref_j = _float64_block_reference(block, motion, joint)
    torch.testing.assert_close(out_m, ref_m, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out_j, ref_j, rtol=1e-10, atol=1e-12)
    assert (block.gate is not None) == gate_conv
    assert sum(p.numel() for p in block.parameters()) == 2 * (8 * 24 + 24) + gate_conv * (16 * 16 + 16)


def test_channel_attention_runs_the_authors_head_dimension_through_op_b():
    """The W48 shape: 48 channel tokens of dimension 96*72 = 6912, past the GPU kernels' head dims; the
    C++ backend takes it directly (checked against the reference)."""
    from jmipose import ops

    if not ops.backends()["cpp"].live:
        pytest.skip("the cpp backend is not built here")
    generator = torch.Generator().manual_seed(3)
    args = [torch.randn(1, 1, 48, 96 * 72, generator=generator) for _ in range(6)]
    cpp = ops.joint_motion_attention(*args, scale=(96 * 72) ** -0.5, backend="cpp")
    reference = ops.joint_motion_attention(*args, scale=(96 * 72) ** -0.5, backend="reference")
    for got, want in zip(cpp, reference):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_cjl_offset_groups_and_raw_masks_through_op_a(monkeypatch):
    """offset_groups and mask_activation reach op A: 2 * groups * taps offset channels, groups * taps
    mask channels, masks the raw conv output (the authors' related code) or its sigmoid (DCNv2)."""
    from jmipose import ops

    seen = []
    real = ops.joint_region_gather

    def spy(*args, **kwargs):
        seen.append((args[1], args[7]))
        return real(*args, **kwargs)

    monkeypatch.setattr(ops, "joint_region_gather", spy)
    for activation in ("none", "sigmoid"):
        model = make("jmi", offset_groups=8, mask_activation=activation, gather_dilation=1, stages=[4]).eval()
        learner = model.branches[0].joint_learner
        guide = {}
        learner.mask_conv.register_forward_hook(lambda module, inputs, output: guide.update(masks=output))
        seen.clear()
        with torch.no_grad():
            model(frames_for(model))
        offsets, masks = seen[0]
        assert offsets.shape[1] == 2 * 8 * 9 and masks.shape[1] == 8 * 9
        expected = guide["masks"] if activation == "none" else torch.sigmoid(guide["masks"])
        torch.testing.assert_close(masks, expected)
        assert learner.dilation == (1, 1)  # JointRegionGather keeps (dh, dw)


def test_stage1_source_transition1_is_the_authors_48_channel_feature():
    torch.manual_seed(0)
    model = make("jmi", stage1_source="transition1", stages=[1]).eval()
    backbone = model.backbone
    frames = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        _, features = model.backbone_features(frames)
        layer1 = backbone.layer1(backbone.relu(backbone.bn2(backbone.conv2(backbone.relu(backbone.bn1(
            backbone.conv1(frames)))))))
        expected = backbone.transition1[0](layer1)
    assert features[0].shape[1] == backbone.width == backbone.stage_channels("transition1")[0]
    torch.testing.assert_close(features[0], expected)
    assert backbone.stage_channels("layer1")[0] == 64  # the tiny HRNet's layer1: 16 planes x 4
    assert model.branches[0].motions[0].encoders[0][0].in_channels == 4 * backbone.width


# ----- the frozen backbone must come with weights -----

def test_a_frozen_backbone_needs_weights(tmp_path):
    from jmipose.models import build_hrnet, load_model, save_model

    with pytest.raises(ValueError, match="backbone_weights is not set") as error:
        build_model({"variant": "jm", "backbone": "tiny"})
    assert "allow_random_backbone" in str(error.value)
    assert build_model({"variant": "jm", "backbone": "tiny", "freeze_backbone": False})  # trained: fine
    assert build_model({"variant": "baseline", "backbone": "tiny"})                     # trains its own
    # the explicit path: a backbone whose weights the caller provides (the demo's stage 2)
    torch.manual_seed(0)
    trained = build_hrnet("tiny")
    model = build_model({"variant": "jm", "backbone": "tiny"}, backbone=trained)
    assert model.backbone is trained and trained.frozen
    with pytest.raises(ValueError, match="not a 'w32' HRNet"):
        build_model({"variant": "jm", "backbone": "w32"}, backbone=build_hrnet("tiny"))
    with pytest.raises(TypeError, match="PoseHighResolutionNet"):
        build_model({"variant": "jm", "backbone": "tiny"}, backbone=torch.nn.Conv2d(1, 1, 1))
    # a checkpoint holds its backbone: loading one needs no backbone_weights (and takes none)
    save_model(tmp_path / "frozen", model)
    with pytest.raises(ValueError, match="backbone_weights cannot be overridden"):
        load_model(tmp_path / "frozen", backbone_weights=str(tmp_path / "other.safetensors"))
    again = load_model(tmp_path / "frozen")
    assert again.backbone.frozen and again.config.backbone_weights is None
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value)


def test_freeze_batchnorm_false_keeps_the_authors_training_mode_batchnorm():
    """freeze_batchnorm=False: no gradients reach the backbone, but its BatchNorm follows model.train()
    (batch statistics, running averages updated), as in the authors' code; True keeps eval mode."""
    frames = frames_for(make("jmi"))
    for keep_eval in (True, False):
        model = make("jmi", freeze_batchnorm=keep_eval, stages=[4])
        norm = model.backbone.bn1
        before = norm.running_mean.clone()
        model.train()
        assert model.backbone.training is not keep_eval and norm.training is not keep_eval
        _forward_backward(model, frames)
        assert torch.equal(norm.running_mean, before) is keep_eval
        assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
        model.eval()
        assert not norm.training
