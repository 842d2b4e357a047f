"""HRNet for top-down pose estimation (Sun et al., "Deep High-Resolution Representation Learning for
Human Pose Estimation", CVPR 2019), laid out exactly as the public pose-HRNet models.

Module and parameter names and shapes are those of the public ``pose_hrnet_w32`` / ``pose_hrnet_w48``
checkpoints, so their state dicts load with ``strict=True``:

- stem ``conv1``/``bn1``, ``conv2``/``bn2``: two 3x3 stride-2 convs to 64 channels (1/4 resolution);
- ``layer1``: 4 Bottleneck blocks of 64 planes (256 output channels; the first has a ``downsample``);
- ``transition1``, ``stage2`` (1 module, 2 branches), ``transition2``, ``stage3`` (4 modules, 3
  branches), ``transition3``, ``stage4`` (3 modules, 4 branches; the last module fuses to the
  highest resolution only): branch i has ``width * 2**i`` channels and ``4`` BasicBlocks per module;
- ``final_layer``: 1x1 conv from the highest-resolution branch to the joints.

Parameters: W32 28.5 M, W48 63.6 M (17 joints).  ``tiny`` (2.7 M) keeps the topology and W32's branch
widths with a thin stem, one block everywhere and one module per stage, for tests and the demo.  Its
width stays at 32 because the heatmap head is a 1x1 conv: with fewer channels than joints the K
heatmaps of an image span at most that many maps, and 17 separate peaks cannot be drawn (width 8
plateaued at a 6x loss drop when overfitting a single clip; width 32 falls 1000x).

``forward(images, return_stage_features=True)`` also returns the highest-resolution feature after
each of the four stages (branch 0 of stages 2..4; for stage 1 ``layer1``'s output, or with
``stage1_source="transition1"`` the first branch of ``transition1`` made from it, ``width`` channels,
which is what the authors' ``HRNetPlus`` returns), all at 1/4 of the input resolution, from the one
pass that makes the heatmaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class HRNetSpec:
    """The layout of one HRNet (the public configs are ``width`` 32 or 48 with every other default)."""

    width: int                                  # channels of branch 0; branch i has width * 2**i
    stem_channels: int = 64
    layer1_planes: int = 64                     # Bottleneck planes; layer1 outputs 4x as many channels
    layer1_blocks: int = 4
    stage_modules: tuple[int, int, int] = (1, 4, 3)   # modules of stage 2, 3, 4
    blocks_per_branch: int = 4                  # BasicBlocks per branch in each module

    def branch_channels(self, num_branches: int) -> list[int]:
        return [self.width * 2 ** i for i in range(num_branches)]

    @property
    def stage1_channels(self) -> int:
        return self.layer1_planes * Bottleneck.expansion


HRNET_SPECS = {
    "w32": HRNetSpec(width=32),
    "w48": HRNetSpec(width=48),
    "tiny": HRNetSpec(width=32, stem_channels=16, layer1_planes=16, layer1_blocks=1, stage_modules=(1, 1, 1),
                      blocks_per_branch=1),
}


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, planes: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, planes: int) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def _fuse_path(channels: list[int], source: int, target: int) -> nn.Module:
    """Brings branch ``source`` to the resolution and width of branch ``target``."""
    if source == target:
        return nn.Identity()
    if source > target:  # lower resolution: 1x1 conv, then nearest upsampling
        return nn.Sequential(nn.Conv2d(channels[source], channels[target], kernel_size=1, bias=False),
                             nn.BatchNorm2d(channels[target]),
                             nn.Upsample(scale_factor=2 ** (source - target), mode="nearest"))
    steps = []  # higher resolution: stride-2 3x3 convs; only the last changes the width and has no ReLU
    for step in range(target - source):
        last = step == target - source - 1
        out_channels = channels[target] if last else channels[source]
        layers = [_conv3x3(channels[source], out_channels, stride=2), nn.BatchNorm2d(out_channels)]
        if not last:
            layers.append(nn.ReLU(inplace=True))
        steps.append(nn.Sequential(*layers))
    return nn.Sequential(*steps)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks, then every output branch sums all inputs brought to it."""

    def __init__(self, channels: list[int], num_blocks: int, multi_scale_output: bool = True) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(c, c) for _ in range(num_blocks))) for c in channels)
        num_outputs = len(channels) if multi_scale_output else 1
        self.fuse_layers = None
        if len(channels) > 1:
            self.fuse_layers = nn.ModuleList(
                nn.ModuleList(_fuse_path(channels, source, target) for source in range(len(channels)))
                for target in range(num_outputs))
        self.relu = nn.ReLU(inplace=False)

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        branch_outputs = [branch(x) for branch, x in zip(self.branches, inputs)]
        if self.fuse_layers is None:
            return branch_outputs
        fused = []
        for paths in self.fuse_layers:
            total = paths[0](branch_outputs[0])
            for path, x in zip(list(paths)[1:], branch_outputs[1:]):
                total = total + path(x)
            fused.append(self.relu(total))
        return fused


def _transition(previous: list[int], current: list[int]) -> nn.ModuleList:
    """Keeps existing branches (a 3x3 conv only where the width changes) and makes each new branch
    from the lowest-resolution previous one by stride-2 3x3 convs."""
    layers: list[nn.Module] = []
    for i, out_channels in enumerate(current):
        if i < len(previous):
            if previous[i] == out_channels:
                layers.append(nn.Identity())
            else:
                layers.append(nn.Sequential(_conv3x3(previous[i], out_channels), nn.BatchNorm2d(out_channels),
                                            nn.ReLU(inplace=True)))
            continue
        steps = []
        for step in range(i + 1 - len(previous)):
            in_channels = previous[-1]
            step_out = out_channels if step == i - len(previous) else in_channels
            steps.append(nn.Sequential(_conv3x3(in_channels, step_out, stride=2), nn.BatchNorm2d(step_out),
                                       nn.ReLU(inplace=True)))
        layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


class PoseHighResolutionNet(nn.Module):
    """Pose HRNet; see the module docstring.  ``freeze()`` gives the papers' frozen backbone."""

    def __init__(self, spec: HRNetSpec, num_joints: int = 17) -> None:
        super().__init__()
        self.spec = spec
        self.num_joints = num_joints
        self.frozen = False
        self.frozen_batchnorm = True
        stem = spec.stem_channels
        self.conv1 = nn.Conv2d(3, stem, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.conv2 = nn.Conv2d(stem, stem, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(*(Bottleneck(stem if i == 0 else spec.stage1_channels, spec.layer1_planes)
                                      for i in range(spec.layer1_blocks)))
        previous = [spec.stage1_channels]
        for stage, num_modules in zip((2, 3, 4), spec.stage_modules):
            channels = spec.branch_channels(stage)
            setattr(self, f"transition{stage - 1}", _transition(previous, channels))
            modules = [HighResolutionModule(channels, spec.blocks_per_branch,
                                            multi_scale_output=not (stage == 4 and m == num_modules - 1))
                       for m in range(num_modules)]
            setattr(self, f"stage{stage}", nn.Sequential(*modules))
            previous = channels
        self.final_layer = nn.Conv2d(spec.width, num_joints, kernel_size=1)
        self._init_weights()

    def _init_weights(self) -> None:
        # The public initialisation: N(0, 0.001) convs, unit BatchNorm, zero biases.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.001)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def width(self) -> int:
        return self.spec.width

    def stage_channels(self, stage1_source: str = "layer1") -> list[int]:
        """Channels of the four stage features ``forward(..., return_stage_features=True)`` returns."""
        _check_stage1_source(stage1_source)
        stage1 = self.spec.stage1_channels if stage1_source == "layer1" else self.width
        return [stage1, self.width, self.width, self.width]

    def forward(self, images: Tensor, return_stage_features: bool = False,
                stage1_source: str = "layer1") -> Tensor | tuple[Tensor, list[Tensor]]:
        """images [N, 3, H, W] -> heatmaps [N, joints, H/4, W/4] (and the four stage features; the first
        is ``layer1``'s output or, with ``stage1_source="transition1"``, ``transition1``'s first branch)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"HRNet: images must be [N, 3, H, W], got shape {tuple(images.shape)}")
        _check_stage1_source(stage1_source)
        # Forward-only on the CPU (evaluation, video inference, a frozen backbone under a training
        # head): oneDNN's convolutions run about a quarter faster on channels-last activations.  With
        # autograd they gain nothing measurable, so training keeps the default layout.
        needs_grad = torch.is_grad_enabled() and (images.requires_grad or not self.frozen)
        channels_last = images.device.type == "cpu" and not needs_grad
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        x = self.relu(self.bn1(self.conv1(images)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        stage_features = [x]
        branches = [x]
        for stage in (2, 3, 4):
            transition = getattr(self, f"transition{stage - 1}")
            # Existing branches pass through (Identity unless the width changes); new ones grow from
            # the lowest-resolution branch.
            branches = [layer(branches[i] if i < len(branches) else branches[-1])
                        for i, layer in enumerate(transition)]
            if stage == 2 and stage1_source == "transition1":
                stage_features[0] = branches[0]
            branches = getattr(self, f"stage{stage}")(branches)
            stage_features.append(branches[0])
        heatmaps = self.final_layer(branches[0])
        if channels_last:  # hand back the default layout the callers (and the ops) expect
            heatmaps = heatmaps.contiguous()
            stage_features = [feature.contiguous() for feature in stage_features]
        if return_stage_features:
            return heatmaps, stage_features
        return heatmaps

    def freeze(self, batchnorm: bool = True) -> PoseHighResolutionNet:
        """No gradients (the papers' setting: the backbone comes pretrained and is not trained with the
        temporal head).  ``batchnorm=True`` (ours) also keeps BatchNorm in eval mode under
        ``model.train()``, so the backbone computes exactly what it computed when it was trained;
        ``batchnorm=False`` leaves BatchNorm following ``train()`` (batch statistics, running averages
        updated), which is what the authors' code does: it only turns gradients off (docs/FIDELITY.md)."""
        self.frozen = True
        self.frozen_batchnorm = batchnorm
        self.requires_grad_(False)
        self.train(self.training)
        return self

    def unfreeze(self) -> PoseHighResolutionNet:
        self.frozen = False
        self.frozen_batchnorm = True
        self.requires_grad_(True)
        return self

    def train(self, mode: bool = True) -> PoseHighResolutionNet:
        return super().train(mode and not (self.frozen and self.frozen_batchnorm))


def _check_stage1_source(stage1_source: str) -> None:
    if stage1_source not in ("layer1", "transition1"):
        raise ValueError(f"HRNet: stage1_source must be 'layer1' or 'transition1', got {stage1_source!r}")


def hrnet_w32(num_joints: int = 17) -> PoseHighResolutionNet:
    return PoseHighResolutionNet(HRNET_SPECS["w32"], num_joints)


def hrnet_w48(num_joints: int = 17) -> PoseHighResolutionNet:
    return PoseHighResolutionNet(HRNET_SPECS["w48"], num_joints)


def hrnet_tiny(num_joints: int = 17) -> PoseHighResolutionNet:
    return PoseHighResolutionNet(HRNET_SPECS["tiny"], num_joints)


def build_hrnet(name: str, num_joints: int = 17) -> PoseHighResolutionNet:
    if name not in HRNET_SPECS:
        raise ValueError(f"HRNet: name must be one of {sorted(HRNET_SPECS)}, got {name!r}")
    return PoseHighResolutionNet(HRNET_SPECS[name], num_joints)


def unwrap_state_dict(checkpoint: Any) -> dict[str, Tensor]:
    """The tensors of a public checkpoint: a plain state dict or one under ``state_dict`` (or
    ``model``), with any ``module.`` prefix (DataParallel/DDP) removed."""
    from jmipose.models.weights import _state_dict_of

    return _state_dict_of(checkpoint, "HRNet weights")


def load_hrnet_weights(model: PoseHighResolutionNet,
                       source: str | Path | dict[str, Any]) -> PoseHighResolutionNet:
    """Loads public pose-HRNet weights strictly (every key, every shape), else raises
    ``jmipose.checkpoint.StateDictMismatchError`` naming missing/unexpected keys and shape mismatches
    (with the names the file uses).

    ``source``: a state dict (or a checkpoint dict holding one), a ``.safetensors`` file, or a ``.pth``
    file (read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
    containers).  The pose-HRNet, mmpose 1.x / 0.x top-down and whole-model (DCPose-style)
    layouts are recognised, see ``jmipose.models.weights``; use ``load_public_hrnet`` to learn which
    one and which keys of a whole-model file were left unused.  BatchNorm ``num_batches_tracked``
    counters, absent from old checkpoints, may be missing; they are then left as they are.
    """
    load_public_hrnet(model, source)
    return model


def load_public_hrnet(model: PoseHighResolutionNet, source):
    """``load_hrnet_weights`` returning the ``jmipose.models.weights.HRNetCheckpoint`` it read
    (scheme, prefix, the unused keys of a whole-model checkpoint)."""
    from jmipose.checkpoint import StateDictMismatchError, load_state_dict_strict
    from jmipose.models.weights import read_hrnet_checkpoint

    checkpoint = read_hrnet_checkpoint(source)
    try:
        load_state_dict_strict(model, checkpoint.state_dict, optional_suffixes=("num_batches_tracked",),
                               what=checkpoint.source)
    except StateDictMismatchError as error:
        named = checkpoint.file_name
        what = checkpoint.source
        if checkpoint.width != model.width:
            what += (f" (an HRNet-W{checkpoint.width}: its heatmap layer reads {checkpoint.width} channels; "
                     f"the model is HRNet-W{model.width})")
        elif checkpoint.num_joints != model.num_joints:
            what += f" ({checkpoint.num_joints} joints; the model has {model.num_joints})"
        raise StateDictMismatchError(what, [named(k) for k in error.missing], [named(k) for k in error.unexpected],
                                     [(named(k), got, want) for k, got, want in error.mismatched]) from None
    return checkpoint
