"""Files from elsewhere are data, never code: a training run writes only safetensors + JSON, and a
malicious pickle placed where weights are expected is refused without running its payload, by every
loader (model checkpoints, training checkpoints, public HRNet .pth weights)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle

import pytest
import torch

from jmipose.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from jmipose.models import load_model
from jmipose.models.hrnet import load_hrnet_weights
from tests.engine.toy import make_trainer


class _Payload:
    """Unpickling this runs ``os.system("touch <marker>")``."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def _malicious(tmp_path) -> bytes:
    _Payload.marker = str(tmp_path / "pwned")
    return pickle.dumps({"weight": torch.zeros(2), "boom": _Payload()})


@pytest.mark.usefixtures("single_thread")
def test_a_training_run_writes_only_safetensors_and_json_checkpoints(tmp_path):
    make_trainer(tmp_path / "run", epochs=1).fit()
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    checkpoint_files = [p.name for p in written if p.parent.name == "checkpoints"]
    assert checkpoint_files and all(n.endswith((".safetensors", ".json")) for n in checkpoint_files), checkpoint_files
    assert not [p for p in written if p.suffix in (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")]
    from safetensors import safe_open

    for path in written:  # and each checkpoint file is what its name says
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as f:
                assert list(f.keys())


def test_a_pickle_passed_as_a_model_checkpoint_is_refused_not_run(tmp_path):
    evil = tmp_path / "model.pth"
    evil.write_bytes(_malicious(tmp_path))
    for name in (evil, tmp_path / "model"):
        with pytest.raises(CheckpointError, match="no such file"):
            load_model(name)
    # named like a checkpoint, with a record whose size and hash match the pickle
    blob = evil.read_bytes()
    save_checkpoint(tmp_path / "ckpt", {"w": torch.zeros(1)}, config={"model": {}})
    (tmp_path / "ckpt.safetensors").write_bytes(blob)
    record = json.loads((tmp_path / "ckpt.json").read_text())
    record["weights"].update(size=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    (tmp_path / "ckpt.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_checkpoint(tmp_path / "ckpt")
    assert not (tmp_path / "pwned").exists()


def test_a_pickle_passed_as_hrnet_weights_is_refused_not_run(tmp_path):
    from jmipose.models.hrnet import PoseHighResolutionNet

    evil = tmp_path / "pose_hrnet_w32.pth"
    evil.write_bytes(_malicious(tmp_path))
    model = PoseHighResolutionNet.__new__(PoseHighResolutionNet)  # never reached: the file is refused first
    with pytest.raises(ValueError, match=r"pose_hrnet_w32\.pth is not a plain tensor file \(it was not unpickled"):
        load_hrnet_weights(model, evil)
    assert not (tmp_path / "pwned").exists()
    # the control: the same payload does run when unpickled, so the checks above mean something
    pickle.loads(evil.read_bytes())
    assert (tmp_path / "pwned").exists()
