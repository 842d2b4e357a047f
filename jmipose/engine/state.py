"""Crash-safe training checkpoints: model weights, optimizer, scheduler, scaler and RNG, never pickled.

A checkpoint generation ``ckpt-e<epoch>-s<step>-<nonce>`` is three files in ``<output>/checkpoints``:

- ``<gen>.safetensors`` + ``<gen>.json``: the model's weights and their record (size, sha256, the run
  config with its ``model`` section, the training metadata), written by :mod:`jmipose.checkpoint`, so
  ``jmipose.models.load_model`` and ``jmipose eval`` read it like any model checkpoint;
- ``<gen>.state.safetensors``: every optimizer / RNG tensor, flattened under dotted names; its size and
  sha256 are in the metadata of ``<gen>.json``. Everything that is not a tensor is JSON in that
  metadata.

``last.json`` and ``best.json`` are copies of a generation's record (their ``weights.file`` names the
generation's weights); each is replaced atomically after the generation's files are complete, so a
run killed at any instant leaves ``last.json`` pointing at a complete, verifiable generation.
Generations no pointer references are deleted afterwards (and at the next save after a crash).
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jmipose.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_record, save_checkpoint
from jmipose.fileio import atomic_write_bytes

POINTERS = ("last", "best")
GENERATION_PREFIX = "ckpt-"


# ----- flattening states into (tensors, JSON) -----

def _json_value(value: Any) -> Any:
    if isinstance(value, Counter):
        return {"__counter__": [[_json_value(k), v] for k, v in value.items()]}
    if isinstance(value, dict):
        return {"__dict__": [[_json_value(k), _json_value(v)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_json_value(v) for v in value]}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return {"__scalar_tensor__": value.item(), "dtype": str(value.dtype).replace("torch.", "")}
    raise TypeError(f"cannot store {type(value).__name__} {value!r} in a checkpoint's JSON")


def _from_json_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json_value(v) for v in value]
    if isinstance(value, dict):
        if "__counter__" in value:
            return Counter({_from_json_value(k): v for k, v in value["__counter__"]})
        if "__dict__" in value:
            return {_from_json_value(k): _from_json_value(v) for k, v in value["__dict__"]}
        if "__tuple__" in value:
            return tuple(_from_json_value(v) for v in value["__tuple__"])
        if "__scalar_tensor__" in value:
            return torch.tensor(value["__scalar_tensor__"], dtype=getattr(torch, value["dtype"]))
        raise CheckpointError(f"checkpoint: unexpected JSON object {sorted(value)} in a training state")
    return value


def flatten_optimizer(state: dict, prefix: str = "optimizer") -> tuple[dict[str, torch.Tensor], dict]:
    """``optimizer.state_dict()`` -> tensors named ``optimizer.<param>.<key>`` and JSON for the rest."""
    tensors, scalars = {}, {}
    for param_id, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = _json_value(value)
    meta = {"param_groups": _json_value(state["param_groups"]), "scalars": scalars,
            "tensor_names": sorted(tensors)}
    return tensors, meta


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict, prefix: str = "optimizer") -> dict:
    state: dict[int, dict] = {}
    for name in meta["tensor_names"]:
        _, param_id, key = name.split(".", 2)
        if name not in tensors:
            raise CheckpointError(f"checkpoint: the training state lacks tensor {name}")
        state.setdefault(int(param_id), {})[key] = tensors[name]
    for param_id, values in meta["scalars"].items():
        for key, value in values.items():
            state.setdefault(int(param_id), {})[key] = _from_json_value(value)
    return {"state": state, "param_groups": _from_json_value(meta["param_groups"])}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    """Python, NumPy, torch CPU and CUDA generator states as tensors + JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss_next = random.getstate()
    tensors["rng.python"] = torch.tensor(internal, dtype=torch.int64)
    meta = {"numpy": [int(pos), int(has_gauss), float(gauss)], "python": [version, gauss_next]}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])
    pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state(("MT19937", tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, gauss_next = meta["python"]
    random.setstate((version, tuple(int(v) for v in tensors["rng.python"].tolist()), gauss_next))


def state_to_json(state: dict) -> dict:
    """A scheduler's or scaler's ``state_dict()`` (no tensors but scalars) as JSON."""
    return _json_value(dict(state))


def state_from_json(value: dict) -> dict:
    return _from_json_value(value)


# ----- writing and reading generations -----

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_generation(folder: Path, *, epoch: int, global_step: int, model_state: dict[str, torch.Tensor],
                    config: dict, training: dict, state_tensors: dict[str, torch.Tensor],
                    pointers: tuple[str, ...] = ("last",)) -> str:
    """Write one generation, then repoint ``pointers`` at it and delete unreferenced generations."""
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    name = f"{GENERATION_PREFIX}e{epoch:04d}-s{global_step:09d}-{secrets.token_hex(4)}"
    blob = save({k: v.detach().to("cpu").contiguous().clone() for k, v in state_tensors.items()})
    state_file = f"{name}.state.safetensors"
    atomic_write_bytes(folder / state_file, blob)
    training = {**training, "state_file": {"file": state_file, "size": len(blob), "sha256": _sha256(blob)}}
    record_path = save_checkpoint(folder / name, model_state, config=config, metadata={"training": training})
    record = Path(record_path).read_bytes()
    for pointer in pointers:
        atomic_write_bytes(folder / f"{pointer}.json", record)
    collect_garbage(folder)
    return name


def _referenced(folder: Path) -> set[str]:
    names = set()
    for pointer in POINTERS:
        if (folder / f"{pointer}.json").is_file():
            try:
                record = read_checkpoint_record(folder / pointer)
            except CheckpointError:
                continue
            names.add(Path(record["weights"]["file"]).name.removesuffix(".safetensors"))
    return names


def collect_garbage(folder: Path) -> None:
    """Delete generations neither ``last`` nor ``best`` points to, and temporary files of torn writes."""
    keep = _referenced(folder)
    for path in folder.iterdir():
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)
        elif path.name.startswith(GENERATION_PREFIX):
            generation = path.name.split(".", 1)[0]
            if generation not in keep:
                path.unlink(missing_ok=True)


def has_checkpoint(folder: Path, pointer: str = "last") -> bool:
    return (folder / f"{pointer}.json").is_file()


def load_generation(folder: Path, pointer: str = "last"):
    """(Checkpoint with verified weights, training metadata, verified state tensors) of a pointer."""
    from safetensors.torch import load

    checkpoint = load_checkpoint(folder / pointer)
    training = checkpoint.metadata.get("training")
    if not isinstance(training, dict) or "state_file" not in training:
        raise CheckpointError(f"checkpoint {folder / pointer}: not a training checkpoint (no training state)")
    info = training["state_file"]
    path = folder / Path(info["file"]).name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {folder / pointer}: its training state {path} is missing")
    blob = path.read_bytes()
    if len(blob) != info["size"]:
        raise CheckpointError(f"checkpoint: {path} has {len(blob)} bytes, the record says {info['size']} "
                              f"(truncated or replaced)")
    if _sha256(blob) != info["sha256"]:
        raise CheckpointError(f"checkpoint: sha256 of {path} does not match its record "
                              f"(corrupted or replaced)")
    try:
        tensors = load(blob)
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"checkpoint: {path} is not a valid safetensors file ({error})") from error
    return checkpoint, training, tensors
