"""Safetensors + JSON checkpoints: round trip, verification errors, strict key/shape checks, and
that nothing is ever unpickled."""

from __future__ import annotations

import hashlib
import json
import os
import pickle

import pytest
import torch

from jmipose.checkpoint import (CheckpointError, StateDictMismatchError, load_checkpoint,
                                load_state_dict_strict, save_checkpoint)
from jmipose.models import build_model, load_model, save_model


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models (tests/conftest.py)


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return build_model({"variant": "jm", "backbone": "tiny", "num_blocks": 1, "allow_random_backbone": True})


def test_model_round_trip(tmp_path, tiny_model):
    json_path = save_model(tmp_path / "run" / "best", tiny_model, metadata={"epoch": 7, "ap": 71.5})
    assert json_path.name == "best.json" and (tmp_path / "run" / "best.safetensors").is_file()
    leftovers = [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary files left
    record = json.loads(json_path.read_text())
    blob = (tmp_path / "run" / "best.safetensors").read_bytes()
    assert record["weights"]["size"] == len(blob)
    assert record["weights"]["sha256"] == hashlib.sha256(blob).hexdigest()
    assert record["metadata"] == {"epoch": 7, "ap": 71.5}
    assert record["config"]["model"]["variant"] == "jm"

    loaded = load_model(tmp_path / "run" / "best")
    assert loaded.config == tiny_model.config
    for key, value in tiny_model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    frames = torch.randn(1, 5, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(frames).heatmaps, tiny_model.eval()(frames).heatmaps)
    # any suffix names the same checkpoint
    assert load_checkpoint(tmp_path / "run" / "best.safetensors").metadata["epoch"] == 7
    assert load_model(tmp_path / "run" / "best.json", use_kernels=False).config.use_kernels is False


def test_truncated_weights_are_refused(tmp_path, tiny_model):
    save_model(tmp_path / "ck", tiny_model)
    weights = tmp_path / "ck.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "ck")


def test_corrupted_or_replaced_weights_fail_the_hash(tmp_path, tiny_model):
    save_model(tmp_path / "ck", tiny_model)
    weights = tmp_path / "ck.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path / "ck")


def test_wrong_hash_in_record(tmp_path, tiny_model):
    json_path = save_model(tmp_path / "ck", tiny_model)
    record = json.loads(json_path.read_text())
    record["weights"]["sha256"] = "0" * 64
    json_path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(tmp_path / "ck")


def test_missing_files(tmp_path, tiny_model):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nothing")
    save_model(tmp_path / "ck", tiny_model)
    os.unlink(tmp_path / "ck.safetensors")
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "bad")


def test_key_and_shape_mismatches_are_named(tmp_path, tiny_model):
    state = dict(tiny_model.state_dict())
    removed = "branches.0.interactions.0.gate.weight"
    del state[removed]
    state["extra.weight"] = torch.zeros(2)
    state["head.bias"] = torch.zeros(5)
    save_checkpoint(tmp_path / "ck", state, config={"model": tiny_model.config.to_dict()})
    with pytest.raises(StateDictMismatchError) as info:
        load_model(tmp_path / "ck")
    message = str(info.value)
    assert removed in message and "extra.weight" in message
    assert "head.bias: checkpoint [5] vs model [17]" in message
    assert info.value.missing == [removed] and info.value.unexpected == ["extra.weight"]


def test_missing_keys_only(tiny_model):
    state = dict(tiny_model.state_dict())
    del state["head.weight"]
    with pytest.raises(StateDictMismatchError, match="1 missing keys \\[head.weight\\]"):
        load_state_dict_strict(tiny_model, state)


def test_never_unpickles(tmp_path):
    """A pickle in place of the weights (with a matching hash in the record) is refused as not
    safetensors, and its payload never runs."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    blob = pickle.dumps({"w": Payload()})
    (tmp_path / "ck.safetensors").write_bytes(blob)
    record = {"format": "jmipose-checkpoint", "format_version": 1, "config": {}, "metadata": {},
              "weights": {"file": "ck.safetensors", "size": len(blob),
                          "sha256": hashlib.sha256(blob).hexdigest()}}
    (tmp_path / "ck.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(tmp_path / "ck")
    assert not marker.exists()


def test_unserialisable_metadata_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "ck", {"w": torch.zeros(2)}, metadata={"when": object()})
    assert list(tmp_path.iterdir()) == []
