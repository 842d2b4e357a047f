"""The model's two public halves: ``forward`` == ``forward_head(backbone_features(...))``, also when a
clip's per-frame backbone outputs are computed once and reused by every window that holds the frame
(what video inference does)."""

from __future__ import annotations

import pytest
import torch

from tests.models.test_jmi import make

NAMES = ("jmi", "jm", "baseline", "jmi_options", "jm_three_frames_key_first")


def _clip(num_frames: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    return torch.randn(num_frames, 3, 64, 32, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_backbone_then_head(name):
    model = make(name).double().eval()
    frames = _clip(2 * model.config.num_frames).reshape(2, model.config.num_frames, 3, 64, 32)
    with torch.no_grad():
        expected = model(frames)
        heatmaps, features = model.backbone_features(frames.flatten(0, 1))
        assert [s for s, f in enumerate(features, 1) if f is not None] == model.feature_stages

        def windows(x):
            return None if x is None else x.unflatten(0, (2, model.config.num_frames))

        split = model.forward_head(windows(heatmaps), [windows(f) for f in features])
    for got, want in zip(split, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_reused_frame_features_give_the_windows_outputs(name):
    """Backbone once per frame of a 7-frame clip, one crop at a time; the windows of every key frame
    (clamped at the ends) gathered from those outputs == the model run on the stacked windows."""
    model = make(name).double().eval()
    clip = _clip(7)
    config = model.config
    offsets = [i - config.key_index for i in range(config.num_frames)]
    windows = [[min(max(key + o, 0), len(clip) - 1) for o in offsets] for key in range(len(clip))]
    with torch.no_grad():
        per_frame = [model.backbone_features(clip[i:i + 1]) for i in range(len(clip))]

        def gather(select):
            return torch.stack([torch.cat([select(per_frame[i]) for i in window]) for window in windows])

        heatmaps = gather(lambda out: out[0])
        features = [None if per_frame[0][1][s] is None else gather(lambda out, s=s: out[1][s])
                    for s in range(4)]
        reused = model.forward_head(heatmaps, features)
        naive = model(torch.stack([clip[window] for window in windows]))
    torch.testing.assert_close(reused.heatmaps, naive.heatmaps, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(reused.backbone_heatmaps, naive.backbone_heatmaps, rtol=1e-9, atol=1e-12)


def test_head_rejects_missing_stage_features():
    model = make("jmi").eval()
    heatmaps, features = model.backbone_features(torch.randn(5, 3, 64, 32))
    with pytest.raises(ValueError, match="stage_features must list the 4 stages"):
        model.forward_head(heatmaps.unsqueeze(0), [None] * 4)
    with pytest.raises(ValueError, match=r"heatmaps must be \[B, T=5"):
        model.forward_head(heatmaps, [f.unsqueeze(0) if f is not None else None for f in features])


def test_training_forward_keeps_gradients_through_the_split():
    model = make("jm", freeze_backbone=False)
    model.train()
    frames = _clip(5).float().unsqueeze(0)
    model(frames).heatmaps.sum().backward()
    assert model.backbone.conv1.weight.grad is not None and model.head.weight.grad is not None
