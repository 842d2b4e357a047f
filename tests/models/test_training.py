"""The model in training: a tiny model overfits one synthetic clip, torch.compile, DDP with no unused
parameters, bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from jmipose.models import build_model, pose_loss


def moving_blobs_clip(size: int = 32, num_frames: int = 5, key_index: int = 2, joints: int = 17,
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip of ``joints`` coloured Gaussian blobs moving in straight lines, and Gaussian target
    heatmaps (sigma 1 at 1/4 resolution) at the blobs' key-frame positions: frames [1, T, 3, S, S],
    target [1, joints, S/4, S/4]."""
    generator = torch.Generator().manual_seed(seed)
    position = torch.rand(joints, 2, generator=generator) * (size - 16) + 8        # (x, y) at the key frame
    velocity = (torch.rand(joints, 2, generator=generator) - 0.5) * 4
    # every colour channel of magnitude 0.5..1 on the zero background, so no blob is invisible
    sign = torch.sign(torch.rand(joints, 3, generator=generator) - 0.5)
    colour = (torch.rand(joints, 3, generator=generator) * 0.5 + 0.5) * sign
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    frames = torch.zeros(num_frames, 3, size, size)
    for t in range(num_frames):
        p = position + velocity * (t - key_index)
        blobs = torch.exp(-((ys - p[:, 1, None, None]) ** 2 + (xs - p[:, 0, None, None]) ** 2) / 8.0)
        frames[t] = torch.einsum("jc,jhw->chw", colour, blobs)
    hy, hx = torch.meshgrid(torch.arange(size // 4).float(), torch.arange(size // 4).float(), indexing="ij")
    peak_y, peak_x = position[:, 1, None, None] / 4, position[:, 0, None, None] / 4
    target = torch.exp(-((hy - peak_y) ** 2 + (hx - peak_x) ** 2) / 2)
    return frames[None], target[None]


def _overfit(config: dict, size: int, steps: int, lr: float) -> tuple[float, float, torch.nn.Module]:
    torch.manual_seed(0)
    frames, target = moving_blobs_clip(size)
    model = build_model({"backbone": "tiny", "freeze_backbone": False, **config})
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    weight = torch.ones(1, 17)
    first = last = None
    for _ in range(steps):
        loss = pose_loss(model(frames), target, weight)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        first = loss.heatmap.item() if first is None else first
        last = loss.heatmap.item()
    return first, last, model


def test_tiny_model_overfits_one_clip():
    first, last, _ = _overfit({"variant": "jm", "num_blocks": 1}, size=32, steps=100, lr=3e-3)
    assert last < first / 10, (first, last)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["jmi", "jm"])
def test_default_tiny_variants_overfit_one_clip(variant):
    first, last, model = _overfit({"variant": variant}, size=64, steps=150, lr=3e-3)
    assert last < first / 10, (first, last)
    frames, target = moving_blobs_clip(64)
    heatmaps = model.eval()(frames).heatmaps
    # every joint's peak lands within one heatmap pixel of the target peak
    predicted = heatmaps.flatten(2).argmax(-1)
    wanted = target.flatten(2).argmax(-1)
    width = target.shape[-1]
    distance = torch.maximum((predicted // width - wanted // width).abs(),
                             (predicted % width - wanted % width).abs())
    assert distance.max().item() <= 1


def _compiled_matches_eager(backend: str, variant: str, backward: bool) -> None:
    torch.manual_seed(0)
    model = build_model({"variant": variant, "backbone": "tiny", "num_blocks": 1, "allow_random_backbone": True})
    frames = torch.randn(1, 5, 3, 32, 32)
    eager = model(frames)
    compiled = torch.compile(model, backend=backend, fullgraph=True)(frames)
    for name in ("heatmaps", "backbone_heatmaps", "aux_loss"):
        torch.testing.assert_close(getattr(compiled, name), getattr(eager, name), rtol=1e-4, atol=1e-6)
    if backward:
        (compiled.heatmaps.square().mean() + compiled.aux_loss).backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_torch_compile_traces_the_whole_model():
    """fullgraph=True: dynamo captures the model in one graph (no graph breaks)."""
    _compiled_matches_eager("eager", "jm", backward=False)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("variant", ["jmi", "jm"])
def test_torch_compile_backends(backend, variant):
    _compiled_matches_eager(backend, variant, backward=True)


def test_ddp_without_find_unused_parameters(tmp_path):
    """Two DDP steps (gloo, one process): DDP raises if a parameter got no gradient in a step."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = DistributedDataParallel(build_model({"variant": "jmi", "backbone": "tiny", "stages": [1, 4],
                                                     "allow_random_backbone": True}),
                                        find_unused_parameters=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        frames, target = moving_blobs_clip(32)
        for _ in range(2):
            loss = pose_loss(model(frames), target).total
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        dist.destroy_process_group()


def _autocast_run(device: str, variant: str) -> None:
    torch.manual_seed(0)
    model = build_model({"variant": variant, "backbone": "tiny", "num_blocks": 1,
                         "allow_random_backbone": True}).to(device)
    for module in model.backbone.modules():  # O(1) features, as from a trained backbone
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    frames, target = (t.to(device) for t in moving_blobs_clip(32))
    reference = model(frames)
    with torch.autocast(device, dtype=torch.bfloat16):
        output = model(frames)
        loss = pose_loss(output, target).total
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    scale = reference.heatmaps.abs().max()
    assert (output.heatmaps.float() - reference.heatmaps).abs().max() <= 0.1 * scale


@pytest.mark.parametrize("variant", ["jmi", "jm"])
def test_bf16_autocast_cpu(variant):
    _autocast_run("cpu", variant)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["jmi", "jm"])
def test_bf16_autocast_cuda(variant):
    _autocast_run("cuda", variant)
