"""HRNet: the public pose-HRNet state-dict layout (an independent enumeration from the published
config), strict loading of public-style state dicts, parameter counts, stage features, freezing."""

from __future__ import annotations

import pytest
import torch

from jmipose.checkpoint import StateDictMismatchError
from jmipose.models import hrnet_tiny, hrnet_w32, hrnet_w48, load_hrnet_weights


def published_config(width: int) -> dict:
    """The EXTRA section of the public pose_hrnet w32_256x192 / w48_384x288 experiment configs."""
    return {
        "STEM_INPLANES": 64,
        "FINAL_CONV_KERNEL": 1,
        "STAGE1": {"NUM_MODULES": 1, "NUM_BRANCHES": 1, "BLOCK": "BOTTLENECK", "NUM_BLOCKS": [4],
                   "NUM_CHANNELS": [64]},
        "STAGE2": {"NUM_MODULES": 1, "NUM_BRANCHES": 2, "BLOCK": "BASIC", "NUM_BLOCKS": [4, 4],
                   "NUM_CHANNELS": [width, 2 * width]},
        "STAGE3": {"NUM_MODULES": 4, "NUM_BRANCHES": 3, "BLOCK": "BASIC", "NUM_BLOCKS": [4, 4, 4],
                   "NUM_CHANNELS": [width, 2 * width, 4 * width]},
        "STAGE4": {"NUM_MODULES": 3, "NUM_BRANCHES": 4, "BLOCK": "BASIC", "NUM_BLOCKS": [4, 4, 4, 4],
                   "NUM_CHANNELS": [width, 2 * width, 4 * width, 8 * width]},
    }


def expected_state_shapes(width: int, num_joints: int = 17) -> dict[str, tuple[int, ...]]:
    """Every key of a public pose-HRNet state dict and its shape, enumerated from the published
    config and the paper's description (not from our module)."""
    cfg = published_config(width)
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cin: int, cout: int, k: int, bias: bool = False) -> None:
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        if bias:
            shapes[f"{name}.bias"] = (cout,)

    def bn(name: str, c: int) -> None:
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{p}"] = (c,)
        shapes[f"{name}.num_batches_tracked"] = ()

    stem = cfg["STEM_INPLANES"]
    conv("conv1", 3, stem, 3), bn("bn1", stem), conv("conv2", stem, stem, 3), bn("bn2", stem)
    planes = cfg["STAGE1"]["NUM_CHANNELS"][0]
    for i in range(cfg["STAGE1"]["NUM_BLOCKS"][0]):  # Bottleneck, expansion 4
        cin = stem if i == 0 else planes * 4
        conv(f"layer1.{i}.conv1", cin, planes, 1), bn(f"layer1.{i}.bn1", planes)
        conv(f"layer1.{i}.conv2", planes, planes, 3), bn(f"layer1.{i}.bn2", planes)
        conv(f"layer1.{i}.conv3", planes, planes * 4, 1), bn(f"layer1.{i}.bn3", planes * 4)
        if cin != planes * 4:
            conv(f"layer1.{i}.downsample.0", cin, planes * 4, 1), bn(f"layer1.{i}.downsample.1", planes * 4)
    previous = [planes * 4]
    for stage in (2, 3, 4):
        s = cfg[f"STAGE{stage}"]
        current = s["NUM_CHANNELS"]
        t = f"transition{stage - 1}"
        for i, cout in enumerate(current):
            if i < len(previous):
                if previous[i] != cout:
                    conv(f"{t}.{i}.0", previous[i], cout, 3), bn(f"{t}.{i}.1", cout)
            else:
                for j in range(i + 1 - len(previous)):
                    out = cout if j == i - len(previous) else previous[-1]
                    conv(f"{t}.{i}.{j}.0", previous[-1], out, 3), bn(f"{t}.{i}.{j}.1", out)
        for m in range(s["NUM_MODULES"]):
            prefix = f"stage{stage}.{m}"
            for b, c in enumerate(current):
                for k in range(s["NUM_BLOCKS"][b]):
                    block = f"{prefix}.branches.{b}.{k}"
                    conv(f"{block}.conv1", c, c, 3), bn(f"{block}.bn1", c)
                    conv(f"{block}.conv2", c, c, 3), bn(f"{block}.bn2", c)
            multi_scale_output = not (stage == 4 and m == s["NUM_MODULES"] - 1)
            for i in range(len(current) if multi_scale_output else 1):
                for j in range(len(current)):
                    fuse = f"{prefix}.fuse_layers.{i}.{j}"
                    if j > i:
                        conv(f"{fuse}.0", current[j], current[i], 1), bn(f"{fuse}.1", current[i])
                    elif j < i:
                        for k in range(i - j):
                            out = current[i] if k == i - j - 1 else current[j]
                            conv(f"{fuse}.{k}.0", current[j], out, 3), bn(f"{fuse}.{k}.1", out)
        previous = current
    conv("final_layer", width, num_joints, cfg["FINAL_CONV_KERNEL"], bias=True)
    return shapes


def _param_count(shapes: dict[str, tuple[int, ...]]) -> int:
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(torch.Size(s).numel() for k, s in shapes.items() if not k.endswith(buffers))


@pytest.fixture(scope="module", params=[32, 48], ids=["w32", "w48"])
def public_model(request):
    width = request.param
    return width, (hrnet_w32() if width == 32 else hrnet_w48())


def test_state_dict_matches_public_layout(public_model):
    width, model = public_model
    expected = expected_state_shapes(width)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: ours[k] for k in expected if ours[k] != expected[k]} == {}


def test_parameter_counts_match_published(public_model):
    width, model = public_model
    published_millions = {32: 28.5, 48: 63.6}[width]
    count = sum(p.numel() for p in model.parameters())
    assert count == _param_count(expected_state_shapes(width))
    assert round(count / 1e6, 1) == published_millions


def test_public_state_dict_loads_strictly(public_model):
    width, model = public_model
    # every tensor filled with its own index, so a key loaded into the wrong place shows; wrapped the
    # way the public checkpoints of DataParallel training come (under "state_dict", "module." prefix)
    state = {k: torch.full(s, i, dtype=torch.int64 if k.endswith("num_batches_tracked") else torch.float32)
             for i, (k, s) in enumerate(expected_state_shapes(width).items())}
    load_hrnet_weights(model, {"epoch": 140, "state_dict": {f"module.{k}": v for k, v in state.items()}})
    loaded = model.state_dict()
    for key in ("conv1.weight", "stage4.2.fuse_layers.0.3.0.weight", "final_layer.bias",
                "layer1.0.bn3.running_var", "stage3.3.branches.2.3.bn2.num_batches_tracked"):
        torch.testing.assert_close(loaded[key], state[key], rtol=0, atol=0)


@pytest.mark.parametrize("wrapping",
                         ["plain", "state_dict", "model", "module_prefix", "no_num_batches_tracked"])
def test_state_dict_wrappings(wrapping):
    source_model = hrnet_tiny()
    with torch.no_grad():
        for i, tensor in enumerate(source_model.state_dict().values()):
            tensor.fill_(i + 1)
    state = source_model.state_dict()
    if wrapping in ("state_dict", "model"):
        source = {"optimizer": {}, wrapping: state}
    elif wrapping == "module_prefix":
        source = {f"module.{k}": v for k, v in state.items()}
    elif wrapping == "no_num_batches_tracked":
        source = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    else:
        source = state
    target = hrnet_tiny()
    load_hrnet_weights(target, source)
    for key, value in target.state_dict().items():
        if wrapping == "no_num_batches_tracked" and key.endswith("num_batches_tracked"):
            assert value.item() == 0
        else:
            torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_loading_names_missing_unexpected_and_mismatched_keys():
    model = hrnet_tiny()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    del state["stage3.0.branches.1.0.conv1.weight"]
    state["incre_modules.0.weight"] = torch.zeros(3)
    state["final_layer.weight"] = torch.zeros(16, 32, 1, 1)
    with pytest.raises(StateDictMismatchError) as info:
        load_hrnet_weights(model, state)
    message = str(info.value)
    assert "stage3.0.branches.1.0.conv1.weight" in message
    assert "incre_modules.0.weight" in message
    assert "final_layer.weight: checkpoint [16, 32, 1, 1] vs model [17, 32, 1, 1]" in message
    assert info.value.missing == ["stage3.0.branches.1.0.conv1.weight"]


def test_loading_from_files(tmp_path):
    from safetensors.torch import save_file

    model = hrnet_tiny()
    state = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, str(tmp_path / "w.pth"))
    for name in ("w.safetensors", "w.pth"):
        target = hrnet_tiny()
        load_hrnet_weights(target, tmp_path / name)
        torch.testing.assert_close(target.state_dict()["conv2.weight"], state["conv2.weight"])
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_hrnet_weights(hrnet_tiny(), tmp_path / "nope.pth")


def test_stage_features_come_from_the_heatmap_pass():
    torch.manual_seed(0)
    model = hrnet_tiny().eval()
    images = torch.randn(2, 3, 64, 96)
    heatmaps, features = model(images, return_stage_features=True)
    assert heatmaps.shape == (2, 17, 16, 24)
    assert [tuple(f.shape) for f in features] == [(2, c, 16, 24) for c in model.stage_channels()]
    # the heatmaps are the final 1x1 conv of the last stage feature, and the same as a plain forward
    torch.testing.assert_close(heatmaps, model.final_layer(features[3]))
    torch.testing.assert_close(heatmaps, model(images))


def test_freeze_keeps_batchnorm_in_eval_and_blocks_gradients():
    model = hrnet_tiny().freeze()
    model.train()
    assert not model.training and all(not m.training for m in model.modules())
    assert all(not p.requires_grad for p in model.parameters())
    before = model.bn1.running_mean.clone()
    model(torch.randn(2, 3, 32, 32) * 5 + 3)
    torch.testing.assert_close(model.bn1.running_mean, before, rtol=0, atol=0)
    model.unfreeze().train()
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_forward_only_layout_gives_the_same_outputs_in_the_default_layout():
    """Without autograd the CPU forward runs channels-last (faster convolutions); its heatmaps and
    stage features equal the autograd forward's, in float64, and come back in the default layout."""
    torch.manual_seed(0)
    model = hrnet_tiny().double().eval()
    images = torch.randn(3, 3, 64, 96, dtype=torch.float64)
    want_heatmaps, want_features = model(images, return_stage_features=True)  # autograd on: default layout
    assert want_heatmaps.requires_grad
    for context, net in ((torch.no_grad(), model), (torch.enable_grad(), model.freeze())):
        with context:
            heatmaps, features = net(images, return_stage_features=True)
        assert not heatmaps.requires_grad
        for got, want in zip([heatmaps, *features], [want_heatmaps, *want_features]):
            assert got.is_contiguous()
            torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        hrnet_tiny()(torch.randn(1, 4, 32, 32))
