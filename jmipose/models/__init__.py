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
from jmipose.models.hrnet import (PoseHighResolutionNet, build_hrnet, hrnet_tiny, hrnet_w32, hrnet_w48,
                                  load_hrnet_weights)
from jmipose.models.jmi import JointMotionPose
from jmipose.models.losses import AUX_LOSS_WEIGHT, PoseLoss, joint_mse_loss, pose_loss
from jmipose.models.summary import describe

__all__ = ["AUX_LOSS_WEIGHT", "JointMotionPose", "ModelConfig", "PoseHighResolutionNet", "PoseLoss",
           "PoseOutput", "SingleFramePose", "build_hrnet", "build_model", "describe", "hrnet_tiny",
           "hrnet_w32", "hrnet_w48",
           "joint_mse_loss", "load_hrnet_weights", "load_model", "pose_loss", "save_model"]


def as_model_config(config: ModelConfig | dict[str, Any]) -> ModelConfig:
    """A resolved (defaults filled, validated) ``ModelConfig`` from a ModelConfig or a plain dict."""
    if isinstance(config, ModelConfig):
        return config.resolved()
    return ModelConfig.from_dict(config).resolved()


def _construct(config: ModelConfig, load_weights: bool = False) -> tuple[nn.Module, nn.Module]:
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


def build_model(config: ModelConfig | dict[str, Any]) -> nn.Module:
    """The model a config describes (temporal ``jmi``/``jm`` or the ``baseline``); its resolved config is
    ``model.config``.  ``backbone_weights``, when set, are loaded strictly into the backbone.  Its size
    is checked against the memory limit (:mod:`jmipose.resources`) before anything is allocated."""
    from jmipose.resources import check_bytes

    config = as_model_config(config)
    check_bytes(f"building the {config.variant} model on HRNet-{config.backbone} (channels={config.channels}, "
                f"{config.num_joints} joints)", model_bytes(config))
    return _construct(config, load_weights=True)[0]


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
    model_config = {**model_config, "backbone_weights": None, **overrides}
    try:
        model_config = as_model_config(model_config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {name}: {error}") from None
    size = record["weights"]["size"]
    if isinstance(size, int) and not isinstance(size, bool):
        check_bytes(f"checkpoint {name}: the model and its {size} bytes of weights",
                    model_bytes(model_config) + size)
    checkpoint = load_checkpoint(name, map_location="cpu")
    model = build_model(model_config)
    load_state_dict_strict(model, checkpoint.state_dict, what=f"checkpoint {name} weights")
    return model.to(map_location)
