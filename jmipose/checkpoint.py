"""Checkpoints as ``<name>.safetensors`` (weights) + ``<name>.json`` (config, metadata, the weights
file's size and sha256).  Nothing is ever unpickled: safetensors stores raw tensors and the JSON is
plain data.

    save_checkpoint("runs/x/best", model.state_dict(), config={"model": {...}}, metadata={"epoch": 3})
    checkpoint = load_checkpoint("runs/x/best")          # verifies size and sha256 first
    load_state_dict_strict(model, checkpoint.state_dict)  # every key and shape, or a clear error

Both files are written atomically (temporary file, fsync, rename); the JSON is written last, so a
checkpoint whose JSON exists is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from jmipose.fileio import atomic_write_bytes

FORMAT = "jmipose-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not verify (missing file, size or hash mismatch)."""


class StateDictMismatchError(ValueError):
    """Weights that do not fit a model: names the missing and unexpected keys and shape mismatches."""

    def __init__(self, what: str, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys {_preview(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys {_preview(unexpected)}")
        if mismatched:
            shapes = [f"{k}: checkpoint {list(got)} vs model {list(want)}" for k, got, want in mismatched]
            parts.append(f"{len(mismatched)} shape mismatches [{'; '.join(shapes[:10])}"
                         f"{'; ...' if len(shapes) > 10 else ''}]")
        super().__init__(f"{what} do not fit the model: " + ", ".join(parts))


def _preview(keys: list[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}]"


@dataclass
class Checkpoint:
    state_dict: dict[str, Tensor]
    config: dict[str, Any]
    metadata: dict[str, Any]


def _paths(name: str | os.PathLike) -> tuple[Path, Path]:
    """``<name>.safetensors`` and ``<name>.json`` for a name given with or without either suffix."""
    path = Path(name)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(name: str | os.PathLike, state_dict: Mapping[str, Tensor] | nn.Module,
                    config: Mapping[str, Any] | None = None,
                    metadata: Mapping[str, Any] | None = None) -> Path:
    """Writes ``<name>.safetensors`` and ``<name>.json``; returns the JSON path.  ``config`` and
    ``metadata`` must be JSON-serialisable."""
    from safetensors.torch import save

    if isinstance(state_dict, nn.Module):
        state_dict = state_dict.state_dict()
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"save_checkpoint: state_dict[{key!r}] must be a tensor, "
                            f"got {type(value).__name__}")
        # safetensors needs contiguous, unshared CPU storage
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    weights_path, json_path = _paths(name)
    blob = save(tensors)
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights": {"file": weights_path.name, "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
                    "tensors": len(tensors)},
        "config": dict(config or {}),
        "metadata": dict(metadata or {}),
    }
    text = json.dumps(record, indent=2, sort_keys=True)  # fails here, before anything is written
    atomic_write_bytes(weights_path, blob)
    atomic_write_bytes(json_path, (text + "\n").encode())
    return json_path


def read_checkpoint_record(name: str | os.PathLike) -> dict[str, Any]:
    """The JSON record of a checkpoint (config, metadata, weights' size and hash), unverified."""
    _, json_path = _paths(name)
    if not json_path.is_file():
        raise CheckpointError(f"checkpoint: no such file {json_path} "
                              f"(expected <name>.json beside <name>.safetensors)")
    try:
        record = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"checkpoint: {json_path} is not valid JSON ({error})") from error
    except RecursionError:
        raise CheckpointError(f"checkpoint: {json_path} is nested too deeply to be a checkpoint record") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint: {json_path} is not a {FORMAT} record")
    if record.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint: {json_path} has format_version {record.get('format_version')!r}, "
                              f"this jmipose reads {FORMAT_VERSION}")
    weights = record.get("weights")
    if not isinstance(weights, dict) or not {"file", "size", "sha256"} <= set(weights):
        raise CheckpointError(f"checkpoint: {json_path} lacks weights.file/size/sha256")
    for key in ("config", "metadata"):
        if not isinstance(record.get(key, {}), dict):
            raise CheckpointError(f"checkpoint: {json_path}: '{key}' must be an object, "
                                  f"got {type(record[key]).__name__}")
    return record


def load_checkpoint(name: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Reads and verifies a checkpoint: the weights file must have the recorded size and sha256."""
    from safetensors.torch import load

    record = read_checkpoint_record(name)
    weights_path = _paths(name)[1].with_name(record["weights"]["file"])
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint: weights file {weights_path} is missing")
    size = weights_path.stat().st_size
    if size != record["weights"]["size"]:
        raise CheckpointError(f"checkpoint: {weights_path} has {size} bytes, the record says "
                              f"{record['weights']['size']} (truncated or replaced)")
    blob = weights_path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != record["weights"]["sha256"]:
        raise CheckpointError(f"checkpoint: sha256 of {weights_path} is {digest}, the record says "
                              f"{record['weights']['sha256']} (corrupted or replaced)")
    try:
        state_dict = load(blob)
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"checkpoint: {weights_path} is not a valid safetensors file "
                              f"({error})") from error
    if str(map_location) != "cpu":
        state_dict = {k: v.to(map_location) for k, v in state_dict.items()}
    return Checkpoint(state_dict=state_dict, config=record.get("config", {}),
                      metadata=record.get("metadata", {}))


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Tensor],
                           optional_suffixes: tuple[str, ...] = (), what: str = "weights") -> None:
    """``model.load_state_dict(state_dict, strict=True)`` after checking every key and shape, so a
    mismatch raises ``StateDictMismatchError`` listing all problems at once.  Model keys ending in
    one of ``optional_suffixes`` may be absent (they keep their current values)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith(optional_suffixes)]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state_dict.items()
                  if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        raise StateDictMismatchError(what, missing, unexpected, mismatched)
    complete = dict(state_dict)
    for key in expected:
        complete.setdefault(key, expected[key])
    model.load_state_dict(complete, strict=True)
