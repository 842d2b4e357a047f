"""Public HRNet checkpoints in each naming scheme people download (built here from our own model: no
download), loaded strictly and bit for bit; and the errors a user meets with a wrong file."""

from __future__ import annotations

import pickle

import pytest
import torch

from jmipose.checkpoint import StateDictMismatchError
from jmipose.models import hrnet_tiny, hrnet_w32, hrnet_w48, load_hrnet_weights
from jmipose.models.hrnet import load_public_hrnet
from jmipose.models.weights import (WeightsFileError, default_input_size, infer_hrnet_name, input_size_from_name,
                                    read_hrnet_checkpoint)


def _random_state(model) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, value in model.state_dict().items():
        if value.dtype.is_floating_point:
            state[key] = torch.randn(value.shape, generator=generator)
            if key.endswith("running_var"):
                state[key] = state[key].abs() + 0.5
        else:
            state[key] = torch.randint(0, 100, value.shape, generator=generator)
    return state


@pytest.fixture(scope="module")
def source() -> dict[str, torch.Tensor]:
    """A tiny pose HRNet's weights, every tensor distinct (so a wrong mapping cannot go unseen)."""
    return _random_state(hrnet_tiny())


def _split(state):
    backbone = {k: v for k, v in state.items() if not k.startswith("final_layer.")}
    head = {k[len("final_layer."):]: v for k, v in state.items() if k.startswith("final_layer.")}
    return backbone, head


def _layouts(state):
    """Each public scheme's file content, the scheme we expect, and the keys left unused."""
    backbone, head = _split(state)
    meta = {"epoch": 210, "mmpose_version": "1.0.0", "dataset_meta": {"dataset_name": "coco"}}
    temporal_head = {"deformable_conv.weight": torch.ones(3, 3), "offsets.0.bias": torch.zeros(4)}
    return {
        "pose-hrnet": (dict(state), "pose-hrnet", []),
        "pose-hrnet-ddp": ({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3},
                           "pose-hrnet", []),
        "mmpose-1.x": ({"meta": meta, "state_dict": {**{"backbone." + k: v for k, v in backbone.items()},
                                                     **{"head.final_layer." + k: v for k, v in head.items()}}},
                       "mmpose-1.x", []),
        "mmpose-0.x": ({"meta": {"epoch": 210, "mmcv_version": "1.3.8"},
                        "state_dict": {**{"backbone." + k: v for k, v in backbone.items()},
                                       **{"keypoint_head.final_layer." + k: v for k, v in head.items()}}},
                       "mmpose-0.x", []),
        "dcpose": ({"state_dict": {**{"module.rough_pose_estimation_net." + k: v for k, v in state.items()},
                                   **{"module." + k: v for k, v in temporal_head.items()}},
                    "epoch": 20, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}},
                   "whole-model", sorted(temporal_head)),
        "jmi-hrnet-prefix": ({**{"hrnet." + k: v for k, v in state.items()}, **temporal_head},
                             "whole-model", sorted(temporal_head)),
    }


@pytest.mark.parametrize("layout", ["pose-hrnet", "pose-hrnet-ddp", "mmpose-1.x", "mmpose-0.x", "dcpose",
                                    "jmi-hrnet-prefix"])
def test_each_public_layout_loads_bit_identically(source, tmp_path, layout):
    content, scheme, unused = _layouts(source)[layout]
    path = tmp_path / f"{layout}.pth"
    torch.save(content, path)
    model = hrnet_tiny()
    loaded = load_public_hrnet(model, path)
    assert loaded.scheme == scheme and loaded.unused == unused
    got = model.state_dict()
    assert set(got) == set(source)
    for key, value in source.items():
        assert torch.equal(got[key], value), key
    # the same through the plain entry point, from a dict already in memory
    again = hrnet_tiny()
    load_hrnet_weights(again, content)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in source.items())


def test_safetensors_in_mmpose_naming(source, tmp_path):
    from safetensors.torch import save_file

    content, _, _ = _layouts(source)["mmpose-1.x"]
    path = tmp_path / "td-hm_hrnet-w32_8xb64-210e_coco-256x192.safetensors"
    save_file({k: v.contiguous() for k, v in content["state_dict"].items()}, str(path))
    model = hrnet_tiny()
    assert load_public_hrnet(model, path).scheme == "mmpose-1.x"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.items())


def test_width_and_joints_from_tensor_shapes(source):
    assert infer_hrnet_name(read_hrnet_checkpoint(source)) == "tiny"
    w32 = read_hrnet_checkpoint(hrnet_w32().state_dict())
    assert infer_hrnet_name(w32) == "w32" and w32.width == 32 and w32.num_joints == 17
    with torch.device("meta"):
        w48 = read_hrnet_checkpoint({"state_dict": hrnet_w48(num_joints=15).state_dict()})
    assert infer_hrnet_name(w48) == "w48" and w48.width == 48 and w48.num_joints == 15
    cut = dict(source)
    del cut["stage4.0.fuse_layers.0.1.0.weight"]
    with pytest.raises(WeightsFileError, match="closest is TINY with 1 differing tensors, e.g. stage4.0.fuse"):
        infer_hrnet_name(read_hrnet_checkpoint(cut))


@pytest.mark.parametrize("name, size", [
    ("pose_hrnet_w32_256x192.pth", (192, 256)),
    ("pose_hrnet_w48_384x288.pth", (288, 384)),
    ("td-hm_hrnet-w48_8xb32-210e_coco-384x288-c161b7de_20220915.pth", (288, 384)),
    ("hrnet_w32_coco_256x192-c78dce93_20200708.pth", (192, 256)),
    ("model_best.pth", None),
])
def test_input_size_from_public_file_names(name, size):
    assert input_size_from_name(name) == size


def test_default_input_sizes():
    assert default_input_size(32) == (192, 256) and default_input_size(48) == (288, 384)


# ----- the errors -----

def test_w32_weights_into_w48(tmp_path):
    content = {"meta": {}, "state_dict": {("head." if k.startswith("final_layer.") else "backbone.") + k: v
                                          for k, v in hrnet_w32().state_dict().items()}}
    path = tmp_path / "td-hm_hrnet-w32_coco-256x192.pth"
    torch.save(content, path)
    with torch.device("meta"):
        w48 = hrnet_w48()
    with pytest.raises(StateDictMismatchError) as caught:
        load_hrnet_weights(w48, path)
    message = str(caught.value)
    assert "an HRNet-W32" in message and "the model is HRNet-W48" in message
    # every mismatch counted, the first ones shown with the file's names (not ours)
    assert "shape mismatches [backbone.transition1.0.0.weight: checkpoint [32, 256, 3, 3] vs model [48, 256, 3, 3]" \
        in message


def test_truncated_download(source, tmp_path):
    whole = tmp_path / "pose_hrnet.pth"
    torch.save(source, whole)
    data = whole.read_bytes()
    truncated = tmp_path / "pose_hrnet_truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsFileError, match=r"truncated or corrupt: torch.load could not read its zip data"):
        load_hrnet_weights(hrnet_tiny(), truncated)
    legacy = tmp_path / "legacy.pth"
    torch.save(source, legacy, _use_new_zipfile_serialization=False)
    cut = tmp_path / "legacy_truncated.pth"
    cut.write_bytes(legacy.read_bytes()[:5000])
    with pytest.raises(WeightsFileError, match=r"truncated or corrupt: torch.load could not read its legacy data"):
        load_hrnet_weights(hrnet_tiny(), cut)
    from safetensors.torch import save_file

    safe = tmp_path / "w.safetensors"
    save_file(source, str(safe))
    safe.write_bytes(safe.read_bytes()[:-100])
    with pytest.raises(WeightsFileError, match="not a complete safetensors file"):
        load_hrnet_weights(hrnet_tiny(), safe)


def test_files_that_are_not_checkpoints(tmp_path):
    jpeg = tmp_path / "photo.pth"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(200))
    with pytest.raises(WeightsFileError, match="is not a PyTorch checkpoint .* starts with bytes ff d8 ff e0"):
        load_hrnet_weights(hrnet_tiny(), jpeg)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_hrnet_weights(hrnet_tiny(), tmp_path / "missing.pth")
    resnet = tmp_path / "resnet50.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048)}, resnet)
    with pytest.raises(WeightsFileError, match="no pose HRNet found"):
        load_hrnet_weights(hrnet_tiny(), resnet)
    numbers = tmp_path / "numbers.pth"
    torch.save([1, 2, 3], numbers)
    with pytest.raises(WeightsFileError, match="expected a state dict .* got list"):
        load_hrnet_weights(hrnet_tiny(), numbers)
    objects = tmp_path / "whole_model.pth"
    objects.write_bytes(pickle.dumps({"state_dict": _NotATensor()}, protocol=2))
    with pytest.raises(WeightsFileError, match="would need unpickling arbitrary objects"):
        load_hrnet_weights(hrnet_tiny(), objects)


def test_mmpose_heads_other_than_a_final_conv_are_refused(source, tmp_path):
    content, _, _ = _layouts(source)["mmpose-1.x"]
    content["state_dict"]["head.deconv_layers.0.weight"] = torch.zeros(32, 32, 4, 4)
    path = tmp_path / "simplebaseline_head.pth"
    torch.save(content, path)
    with pytest.raises(StateDictMismatchError, match=r"unexpected keys \[head.deconv_layers.0.weight\]"):
        load_hrnet_weights(hrnet_tiny(), path)


def test_missing_tensors_are_named_as_in_the_file(source):
    content, _, _ = _layouts(source)["mmpose-0.x"]
    del content["state_dict"]["keypoint_head.final_layer.bias"]
    del content["state_dict"]["backbone.layer1.0.bn2.running_var"]
    with pytest.raises(StateDictMismatchError,
                       match=r"2 missing keys \[backbone.layer1.0.bn2.running_var, keypoint_head.final_layer.bias\]"):
        load_hrnet_weights(hrnet_tiny(), content)


class _NotATensor:
    pass
