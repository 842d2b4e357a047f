"""The temporal model and the baseline: shapes through every variant and ablation, gradients reach
every trainable parameter (and never a frozen backbone), kernel path == eager path, bad input."""

from __future__ import annotations

import copy

import pytest
import torch

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
                    "heatmap_residual": True, "residual_gate": True, "mi_proxy": "neg_kl", "stages": [1, 3]},
    "jm_options": {"variant": "jm", "stages": [2, 4], "split_sides": False, "num_blocks": 2, "heads": 4,
                   "gather_dilation": 1},
    "jm_three_frames_key_first": {"variant": "jm", "num_frames": 3, "key_index": 0,
                                  "heatmap_offsets": [0, 1, 2]},
}


def make(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model({"backbone": "tiny", **CONFIGS[name], **overrides})
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


@pytest.mark.parametrize("name", ["jmi_options", "jm"])
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
])
def test_bad_config_is_named(values, message):
    with pytest.raises(ValueError, match=message):
        build_model({"backbone": "tiny", **values})


def test_config_round_trip_and_variant_defaults():
    config = ModelConfig(variant="jm", backbone="tiny").resolved()
    assert config.stages == [4] and config.heatmap_offsets == [-1, 0, 1] and config.num_blocks == 4
    assert config.aux_objective == "orthogonality" and config.freeze_backbone
    again = ModelConfig.from_dict(config.to_dict()).resolved()
    assert again == config
    assert ModelConfig(variant="baseline").resolved().freeze_backbone is False
    assert ModelConfig().resolved().stages == [1, 2, 3, 4]
