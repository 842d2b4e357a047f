"""Models: the pose HRNet backbone, the JMI / JM-Pose temporal model and the single-frame baseline.

    from jmipose.models import ModelConfig, build_model
    model = build_model(ModelConfig(variant="jm", backbone="w48"))     # or build_model({"variant": "jm"})
    output = model(frames)   # [B, T, 3, H, W] -> PoseOutput(heatmaps, backbone_heatmaps, aux_loss)
    loss = pose_loss(output, target_heatmaps, target_weight).total
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from jmipose.models.baseline import SingleFramePose
from jmipose.models.common import PoseOutput
from jmipose.models.config import ModelConfig
from jmipose.models.hrnet import (HRNET_SPECS, PoseHighResolutionNet, build_hrnet, hrnet_tiny, hrnet_w32,
                                  hrnet_w48, load_hrnet_weights)
from jmipose.models.jmi import JointMotionPose
from jmipose.models.losses import AUX_LOSS_WEIGHT, PoseLoss, joint_mse_loss, pose_loss
from jmipose.models.summary import describe

__all__ = ["AUX_LOSS_WEIGHT", "JointMotionPose", "ModelConfig", "PoseHighResolutionNet", "PoseLoss",
           "PoseOutput", "SingleFramePose", "build_hrnet", "build_model", "check_backbone_source", "describe",
           "hrnet_tiny", "hrnet_w32", "hrnet_w48",
           "joint_mse_loss", "load_hrnet_weights", "load_model", "pose_loss", "save_model"]


def as_model_config(config: ModelConfig | dict[str, Any]) -> ModelConfig:
    """A resolved (defaults filled, validated) ``ModelConfig`` from a ModelConfig or a plain dict."""
    if isinstance(config, ModelConfig):
        return config.resolved()
    return ModelConfig.from_dict(config).resolved()


def check_backbone_source(config: ModelConfig | dict[str, Any],
                          backbone: PoseHighResolutionNet | None = None) -> None:
    """Where the backbone's weights come from (``build_model``'s docstring); a frozen backbone needs one.
    Cheap (nothing is built): ``train`` calls it before it touches the output folder."""
    config = as_model_config(config)
    if backbone is not None:
        if config.backbone_weights:
            raise ValueError("build_model: give the backbone either as model.backbone_weights or as the "
                             "backbone argument, not both")
        if not isinstance(backbone, PoseHighResolutionNet):
            raise TypeError(f"build_model: backbone must be a PoseHighResolutionNet, got {type(backbone).__name__}")
        if backbone.spec != HRNET_SPECS[config.backbone] or backbone.num_joints != config.num_joints:
            raise ValueError(f"build_model: the backbone given is not a {config.backbone!r} HRNet with "
                             f"{config.num_joints} joints (model.backbone, model.num_joints)")
    elif not config.backbone_weights and config.freeze_backbone and not config.allow_random_backbone:
        raise ValueError(
            "model config: freeze_backbone is true but backbone_weights is not set: a frozen backbone "
            "keeps its random initialisation and the model cannot learn poses.  Set "
            "model.backbone_weights to a pose-HRNet checkpoint (the papers freeze a PoseTrack-trained "
            "HRNet-W48), or model.freeze_backbone=false to train it, or model.allow_random_backbone=true "
            "to freeze a random backbone on purpose (tests, speed and gradient measurements)")


def _construct(config: ModelConfig, backbone: PoseHighResolutionNet | None = None,
               load_weights: bool = False) -> tuple[nn.Module, nn.Module]:
    if backbone is None:
        backbone = build_hrnet(config.backbone, config.num_joints)
        if load_weights and config.backbone_weights:
            load_hrnet_weights(backbone, config.backbone_weights)
    if config.variant == "baseline":
        return SingleFramePose(config, backbone), backbone
    return JointMotionPose(config, backbone), backbone


def model_bytes(config: ModelConfig | dict[str, Any]) -> int:
    """Bytes of the parameters and buffers of the model ``config`` describes, counted on torch's
    ``meta`` device (nothing is allocated)."""
    import torch

    with torch.device("meta"):
        model, _ = _construct(as_model_config(config))
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def build_model(config: ModelConfig | dict[str, Any], *,
                backbone: PoseHighResolutionNet | None = None) -> nn.Module:
    """The model a config describes (temporal ``jmi``/``jm`` or the ``baseline``); its resolved config is
    ``model.config``.  Its size is checked against the memory limit (:mod:`jmipose.resources`) before
    anything is allocated.

    The backbone's weights come from one of three places, and a frozen backbone must get them from one:
    ``backbone_weights`` (a public pose-HRNet checkpoint, loaded strictly); ``backbone``, a
    ``PoseHighResolutionNet`` of the config's layout whose weights the caller provides (the demo's
    stage 2 freezes the backbone its stage 1 trained; ``load_model`` loads a whole checkpoint into the
    model right after building it); or, on purpose, none: ``allow_random_backbone: true``.  A frozen
    backbone with none of them raises ``ValueError`` naming ``backbone_weights``."""
    from jmipose.resources import check_bytes

    config = as_model_config(config)
    check_backbone_source(config, backbone)
    check_bytes(f"building the {config.variant} model on HRNet-{config.backbone} (channels={config.channels}, "
                f"{config.num_joints} joints)", model_bytes(config))
    return _construct(config, backbone, load_weights=True)[0]


def save_model(name: str | os.PathLike, model: nn.Module,
               metadata: dict[str, Any] | None = None) -> os.PathLike:
    """``<name>.safetensors`` + ``<name>.json`` holding the weights and ``{"model": model.config}``."""
    from jmipose.checkpoint import save_checkpoint

    config = model.config.to_dict()
    config["backbone_weights"] = None  # the weights are in the checkpoint itself
    return save_checkpoint(name, model.state_dict(), config={"model": config}, metadata=metadata)


def load_model(name: str | os.PathLike, map_location: str = "cpu", **overrides: Any) -> nn.Module:
    """Rebuilds a model from a checkpoint written by ``save_model`` (or by the trainer, whose JSON
    has a ``model`` section) and loads its weights strictly.  ``overrides`` change config fields
    that do not alter the weights (``use_kernels``, ``freeze_backbone``...)."""
    from jmipose.checkpoint import CheckpointError, load_checkpoint, load_state_dict_strict, read_checkpoint_record
    from jmipose.resources import check_bytes

    # the record first: sane sizes and the memory limit are checked before the weights are read
    record = read_checkpoint_record(name)
    model_config = record.get("config", {}).get("model")
    if not isinstance(model_config, dict):
        raise CheckpointError(f"checkpoint {name}: its JSON config has no 'model' section")
    if overrides.get("backbone_weights"):
        raise ValueError(f"load_model: backbone_weights cannot be overridden, the checkpoint {name} holds the "
                         f"backbone's weights; load others into it with load_hrnet_weights(model.backbone, path)")
    try:
        model_config = as_model_config({**model_config, **overrides, "backbone_weights": None})
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {name}: {error}") from None
    size = record["weights"]["size"]
    if isinstance(size, int) and not isinstance(size, bool):
        check_bytes(f"checkpoint {name}: the model and its {size} bytes of weights",
                    model_bytes(model_config) + size)
    checkpoint = load_checkpoint(name, map_location="cpu")
    # the checkpoint holds the backbone's weights too: they are loaded into the whole model just below
    model = build_model(model_config, backbone=build_hrnet(model_config.backbone, model_config.num_joints))
    load_state_dict_strict(model, checkpoint.state_dict, what=f"checkpoint {name} weights")
    return model.to(map_location)
