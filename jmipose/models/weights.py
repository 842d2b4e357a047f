"""Public HRNet checkpoints: read them without unpickling, recognise their naming scheme, load strictly.

The pose HRNets people can download come in a few layouts; all hold the same tensors under other
names (module and parameter names below the prefix are those of ``jmipose.models.hrnet``):

============================  ===============================================  ==========================
scheme                        where the tensors are                            heatmap layer
============================  ===============================================  ==========================
``pose-hrnet``                the file is the state dict (``conv1.weight``...) ``final_layer.*``
                              (a ``state_dict``/``model`` wrapper and a
                              ``module.`` prefix are accepted)
``mmpose-1.x``                ``state_dict`` -> ``backbone.*`` (``meta`` and   ``head.final_layer.*``
                              the other top-level entries are ignored)
``mmpose-0.x``                ``state_dict`` -> ``backbone.*``                 ``keypoint_head.final_layer.*``
``whole-model``               a video model's state dict with the HRNet        ``<prefix>final_layer.*``
                              under one prefix (DCPose:
                              ``rough_pose_estimation_net.``; others:
                              ``hrnet.``, ``backbone.``...)
============================  ===============================================  ==========================

The first three are loaded strictly: every tensor of the file must be a tensor of the model (an
mmpose head with deconvolution layers, for instance, is refused, naming the keys).  A whole-model
checkpoint's other tensors (its temporal head) are not used: ``read_hrnet_checkpoint`` returns their
names so that callers can say so.

Files: ``.safetensors``, or a PyTorch ``.pth``/``.pt``/``.tar`` read with
``torch.load(weights_only=True)`` (tensors and plain containers only; nothing is ever unpickled).
A truncated download, a file that is not a checkpoint and a file that would need unpickling each get
their own message.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

SCHEMES = ("pose-hrnet", "mmpose-1.x", "mmpose-0.x", "whole-model")
# Keys every pose HRNet has (below its prefix): how a backbone is found inside a bigger state dict.
_ANCHORS = ("conv1.weight", "bn1.running_mean", "conv2.weight", "layer1.0.conv1.weight", "transition1.0.0.weight")
_MMPOSE_HEADS = {"head.final_layer.": "mmpose-1.x", "keypoint_head.final_layer.": "mmpose-0.x"}
# Public input sizes in file names: height x width ("..._256x192...", "...-384x288-...").
_SIZE_IN_NAME = re.compile(r"(?<![0-9])(\d{2,4})x(\d{2,4})(?![0-9])")


class WeightsFileError(ValueError):
    """A weights file that cannot be read as a checkpoint (missing, truncated, not a checkpoint, or
    one that would need unpickling)."""


@dataclass
class HRNetCheckpoint:
    """The HRNet tensors of a public checkpoint, renamed to ``jmipose.models.hrnet``'s names."""

    state_dict: dict[str, Tensor]      # our names -> tensors (backbone + final_layer)
    scheme: str                        # one of SCHEMES
    prefix: str = ""                   # the backbone's prefix in the file ("backbone.", ...)
    names: dict[str, str] = field(default_factory=dict)   # our name -> the name in the file
    unused: list[str] = field(default_factory=list)       # whole-model keys that are not the HRNet
    source: str = "HRNet weights"      # the file (for messages)
    head_prefix: str = ""              # where final_layer.* is in the file (mmpose: "head.", ...)
    model_name: str | None = None      # the HRNET_SPECS layout it was found to be, once known

    def file_name(self, key: str) -> str:
        """The name our key ``key`` has (or would have) in the file."""
        if key in self.names:
            return self.names[key]
        if key.startswith("final_layer.") and self.head_prefix != self.prefix:
            return self.head_prefix.removesuffix("final_layer.") + key
        return self.prefix + key

    @property
    def width(self) -> int:
        """Channels of the highest-resolution branch (32 for W32, 48 for W48)."""
        return int(self.state_dict["final_layer.weight"].shape[1])

    @property
    def num_joints(self) -> int:
        return int(self.state_dict["final_layer.weight"].shape[0])


def read_tensor_file(path: str | os.PathLike, what: str = "HRNet weights") -> Any:
    """The content of a ``.safetensors`` file or of a PyTorch file read with ``weights_only=True``;
    ``WeightsFileError`` saying which of the usual problems it is otherwise."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file {path}")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(16)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise WeightsFileError(f"{what}: {path} ({size} bytes) is not a complete safetensors file "
                                   f"(truncated download or another format: {error})") from None
    if head.startswith(b"PK\x03\x04"):
        kind = "zip"        # torch.save's format since PyTorch 1.6
    elif head[:1] == b"\x80" and size > 2:
        kind = "legacy"     # the older format: pickle protocol 2 with tensor storages appended
    else:
        shown = head[:8].hex(" ")
        raise WeightsFileError(f"{what}: {path} is not a PyTorch checkpoint (a zip archive written by torch.save, "
                               f"or the legacy pickle format): it starts with bytes {shown}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        first = text.splitlines()[0][:200] if text else type(error).__name__
        if "Unsupported global" in text or "Unsupported operand" in text or "GLOBAL" in text:
            raise WeightsFileError(f"{what}: {path} is not a plain tensor file (it was not unpickled: it would "
                                   f"need unpickling arbitrary objects, which jmipose never does; save a plain "
                                   f"state dict or safetensors instead; torch.load(weights_only=True) refused "
                                   f"it)") from None
        raise WeightsFileError(f"{what}: {path} ({size} bytes) is truncated or corrupt: torch.load could not "
                               f"read its {kind} data ({first})") from None
    except Exception as error:  # noqa: BLE001 - zip, struct, EOF, storage errors: all a damaged file
        text = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise WeightsFileError(f"{what}: {path} ({size} bytes) is truncated or corrupt: torch.load could not "
                               f"read its {kind} data ({text}); download it again") from None


def _state_dict_of(content: Any, what: str) -> dict[str, Tensor]:
    """The state dict inside a checkpoint's content: the content itself, or its ``state_dict`` /
    ``model`` / ``state_dict_ema``-free wrapper (mmpose and most trainers keep ``meta``, ``optimizer``,
    ``epoch`` beside it; those are ignored)."""
    state = content
    if isinstance(state, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in state and isinstance(state[wrapper], Mapping):
                state = state[wrapper]
                break
    if not isinstance(state, Mapping) or not state:
        got = type(state).__name__ if not isinstance(state, Mapping) else "an empty dict"
        raise WeightsFileError(f"{what}: expected a state dict (a dict of tensors, possibly under "
                               f"'state_dict'), got {got}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise WeightsFileError(f"{what}: expected a state dict of tensors; {len(bad)} entries are not "
                               f"tensors, e.g. {bad[:3]!r}")
    state = dict(state)
    if all(k.startswith("module.") for k in state):   # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _backbone_prefixes(keys) -> list[str]:
    keys = set(keys)
    found = []
    for key in keys:
        if key.endswith("conv1.weight"):
            prefix = key[: -len("conv1.weight")]
            if prefix and not prefix.endswith("."):
                continue
            if all(prefix + anchor in keys for anchor in _ANCHORS):
                found.append(prefix)
    return sorted(found, key=len)


def split_hrnet_state_dict(state: Mapping[str, Tensor], what: str = "HRNet weights") -> HRNetCheckpoint:
    """Find the pose HRNet inside a state dict in any of the SCHEMES and rename it to our names."""
    prefixes = _backbone_prefixes(state)
    if not prefixes:
        sample = ", ".join(list(state)[:6])
        raise WeightsFileError(f"{what}: no pose HRNet found: none of its keys ({sample}, ...) hold an HRNet stem "
                               f"({', '.join(_ANCHORS)}) under any prefix; expected a pose-HRNet, mmpose "
                               f"top-down HRNet or DCPose-style checkpoint")
    prefix = prefixes[0]
    backbone = {k: v for k, v in state.items() if k.startswith(prefix)}
    rest = [k for k in state if not k.startswith(prefix)]
    if prefix == "":
        scheme, head_prefix = "pose-hrnet", ""
    elif prefix == "backbone." and any(k.startswith(tuple(_MMPOSE_HEADS)) for k in rest):
        head_prefix = next(h for h in _MMPOSE_HEADS if any(k.startswith(h) for k in rest))
        scheme = _MMPOSE_HEADS[head_prefix]
    else:
        scheme, head_prefix = "whole-model", prefix
    names = {k[len(prefix):]: k for k in backbone}
    if scheme.startswith("mmpose"):
        head = {k: v for k, v in state.items() if k.startswith(head_prefix)}
        names.update({"final_layer." + k[len(head_prefix):]: k for k in head})
        # strict: an mmpose head with deconvolution or extra conv layers is a different model
        unexpected = [k for k in rest if not k.startswith(head_prefix)]
        unused: list[str] = []
        if unexpected:
            from jmipose.checkpoint import StateDictMismatchError

            raise StateDictMismatchError(f"{what} ({scheme}: backbone.* + {head_prefix}*)", [], unexpected, [])
    else:
        unused = sorted(rest) if scheme == "whole-model" else []
    ours = {name: state[original] for name, original in names.items()}
    checkpoint = HRNetCheckpoint(ours, scheme, prefix, names, unused, what, head_prefix)
    if "final_layer.weight" not in ours:
        raise WeightsFileError(f"{what}: the HRNet under prefix {prefix!r} has no heatmap layer "
                               f"({checkpoint.file_name('final_layer.weight')}); jmipose needs the whole pose HRNet")
    return checkpoint


def read_hrnet_checkpoint(source, what: str | None = None) -> HRNetCheckpoint:
    """The pose HRNet of a public checkpoint (a path, or an already loaded dict) in any of SCHEMES."""
    if isinstance(source, HRNetCheckpoint):
        return source
    if isinstance(source, (str, os.PathLike)):
        what = what or f"HRNet weights {Path(source).name}"
        content = read_tensor_file(source, what)
    else:
        what = what or "HRNet weights"
        content = source
    return split_hrnet_state_dict(_state_dict_of(content, what), what)


@functools.lru_cache(maxsize=8)
def _shapes(name: str, num_joints: int) -> dict[str, tuple[int, ...]]:
    """Every tensor shape of HRNET_SPECS[name] (built on the meta device: no memory, no init cost)."""
    from jmipose.models.hrnet import HRNET_SPECS, PoseHighResolutionNet

    with torch.device("meta"):
        model = PoseHighResolutionNet(HRNET_SPECS[name], num_joints)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def infer_hrnet_name(checkpoint: HRNetCheckpoint) -> str:
    """Which of ``jmipose.models.hrnet.HRNET_SPECS`` (``w32``, ``w48``, ``tiny``) the tensors' shapes
    are; ``WeightsFileError`` naming the first differing tensor when none is."""
    from jmipose.models.hrnet import HRNET_SPECS

    got = {k: tuple(v.shape) for k, v in checkpoint.state_dict.items() if not k.endswith("num_batches_tracked")}
    stem = got.get("conv1.weight", (0,))[0]
    # the widths and the stem tell the layouts apart: compare the full shapes of the likely ones first
    names = sorted(HRNET_SPECS, key=lambda n: (HRNET_SPECS[n].width != checkpoint.width,
                                                HRNET_SPECS[n].stem_channels != stem))
    closest = None
    for name in names:
        wanted = _shapes(name, checkpoint.num_joints)
        if wanted == got:
            return name
        differing = sorted(set(wanted) ^ set(got)) or [k for k in wanted if wanted[k] != got[k]]
        if closest is None or len(differing) < closest[1]:
            closest = (name, len(differing), differing[0])
    name, count, first = closest
    raise WeightsFileError(f"{checkpoint.source}: not a pose HRNet layout jmipose builds (W32, W48, tiny): "
                           f"closest is {name.upper()} with {count} differing tensors, e.g. "
                           f"{checkpoint.file_name(first)}")


def input_size_from_name(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from a public file name's ``HEIGHTxWIDTH`` (``pose_hrnet_w48_384x288.pth`` ->
    (288, 384)); None when the name has none."""
    matches = list(_SIZE_IN_NAME.finditer(Path(path).name))
    if not matches:
        return None
    height, width = int(matches[-1].group(1)), int(matches[-1].group(2))
    return (width, height)


def default_input_size(width: int) -> tuple[int, int]:
    """The public files' input size (width, height) for an HRNet width: W48 384x288, else 256x192."""
    return (288, 384) if width == 48 else (192, 256)
