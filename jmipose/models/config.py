"""``ModelConfig``: every choice the model makes, as one flat dataclass of plain types.

``build_model(config)`` accepts a ``ModelConfig`` or a plain dict with the same keys (the YAML
``model:`` section).  Fields left ``None`` take the default of the chosen ``variant`` (see
``VARIANT_DEFAULTS``), so one config file can switch between the IJCAI version (``jmi``), the ACM MM
version (``jm``) and the single-frame ``baseline`` by one key.

Each field says which value the papers' figures or the authors' code use and which is ours; the
defaults keep the layout of earlier jmipose checkpoints, and the shipped PoseTrack configs set the
authors' choices wherever their code settles them.  docs/FIDELITY.md is the full table, with
citations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jmipose._configbase import ConfigSection

VARIANTS = ("jmi", "jm", "baseline")
BACKBONES = ("w48", "w32", "tiny")
AUX_OBJECTIVES = ("mi", "orthogonality", "none")
AUX_ESTIMATORS = ("official", "exp_neg_kl", "neg_kl")
ATTENTION_AXES = ("pixel", "channel")
STAGE1_SOURCES = ("layer1", "transition1")
MASK_ACTIVATIONS = ("sigmoid", "none")
# Upper bounds of the sizes that multiply memory, far above any real setting (W48: 48 channels), so
# that an absurd value (``channels: 1000000000000`` in a checkpoint's JSON) is refused before
# anything is allocated; build_model then checks the parameters' bytes against JMIPOSE_MAX_BYTES.
SIZE_LIMITS = {"num_joints": 1024, "num_frames": 64, "channels": 4096, "num_blocks": 64, "heads": 256,
               "attention_pool": 64, "gather_kernel": 31, "gather_dilation": 64, "offset_groups": 256}

# Per-variant values of the fields that are None in a config.
VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    # IJCAI: one branch per backbone stage (feature difference -> CJL -> one interaction block), all
    # stages fused; the key frame's heatmaps guide the gather; MI objective between M~ and J~.
    "jmi": {"stages": [1, 2, 3, 4], "heatmap_offsets": [0], "num_blocks": 1, "split_sides": False,
            "aux_objective": "mi", "freeze_backbone": True},
    # ACM MM: one branch, left/right motion features merged, heatmaps of t-1, t, t+1 (H^), L = 4
    # progressive interaction blocks, information-orthogonality objective at every block.  Which
    # stage features feed the motion branch is not stated: we use the last stage (the feature the
    # heatmap head reads); list more stages to merge them.
    "jm": {"stages": [4], "heatmap_offsets": [-1, 0, 1], "num_blocks": 4, "split_sides": True,
           "aux_objective": "orthogonality", "freeze_backbone": True},
    # The single-frame baseline trains its backbone (demo stage 1).
    "baseline": {"stages": [], "heatmap_offsets": [0], "num_blocks": 0, "split_sides": False,
                 "aux_objective": "none", "freeze_backbone": False},
}


@dataclass
class ModelConfig(ConfigSection):
    """The model section of a jmipose config.

    Fields (defaults: HRNet-W48, JMI, 5-frame window, frozen backbone; docs/FIDELITY.md says for each
    field what the papers and the authors' code do):

    - ``variant``: ``"jmi"`` (IJCAI), ``"jm"`` (ACM MM JM-Pose) or ``"baseline"`` (key frame only).
    - ``backbone``: ``"w48"``, ``"w32"`` (public pose-HRNet layouts) or ``"tiny"`` (tests, demo).
    - ``num_joints``: heatmap channels (17, PoseTrack order).
    - ``num_frames``, ``key_index``: the window length T and the key frame's index in it (frames come
      in time order; the default window -2, -1, +1, +2 puts the key frame at index 2).
    - ``freeze_backbone``: frozen HRNet with eval-mode BatchNorm (None: True for jmi/jm, as in the
      authors' configs, False for the baseline).  A frozen backbone needs ``backbone_weights`` (or a
      backbone handed to ``build_model``); ``allow_random_backbone`` opts out on purpose.
    - ``freeze_batchnorm``: with a frozen backbone, True (ours) keeps its BatchNorm in eval mode under
      ``model.train()`` (the statistics it was trained with); False leaves BatchNorm in training mode
      (batch statistics, running averages updated), as the authors' code does, which only turns the
      backbone's gradients off.
    - ``backbone_weights``: a public pose-HRNet state dict (``.safetensors``, or ``.pth`` read with
      ``torch.load(weights_only=True)``) loaded strictly into the backbone at build time; None: none.
    - ``allow_random_backbone``: True lets a frozen backbone keep its random initialisation (tests,
      speed and gradient measurements); False (default) makes that an error naming
      ``backbone_weights``, since a frozen random backbone gives a model that cannot learn poses.
    - ``channels``: width C of the temporal head (motion, joint features, attention); None: the
      backbone width (48 for W48, the width of its highest-resolution branch, as in the authors' code).
    - ``stages``: backbone stages (1..4) whose highest-resolution features feed motion branches
      (None: jmi [1, 2, 3, 4], one branch each; jm [4], one branch).
    - ``stage1_source``: the stage-1 feature: ``"transition1"`` (the 48-channel output of
      ``transition1``'s first branch, as the authors' ``HRNetPlus`` returns it) or ``"layer1"`` (ours:
      the 256-channel ``layer1`` output before it; the default of earlier checkpoints).
    - ``heatmap_offsets``: which frames' initial heatmaps guide the gather, as window-index offsets
      from the key frame (None: jmi [0]; jm [-1, 0, 1], the paper's H^ of t-1, t, t+1).
    - ``num_blocks``: interaction blocks chained in each branch (None: jmi 1 per stage; jm L = 4, not
      stated in the paper).
    - ``split_sides``: feature-difference layer builds left (frames up to the key) and right (from
      the key) motion features separately and merges them, as JM-Pose does (None: jm True, jmi False).
    - ``aux_objective``: ``"mi"`` (JMI: information between M~ and J~), ``"orthogonality"`` (JM-Pose:
      I(J;M|H^)) or ``"none"`` (None: variant default).  See ``jmipose.models.losses``.
    - ``aux_estimator``: how each information term is estimated: ``"official"`` (the authors'
      estimator, exactly: ``kl_div`` of per-channel spatial softmaxes, mean reduction, tau 0.05, no
      side detached), ``"exp_neg_kl"`` (ours: bounded exp(-symmetric KL)) or ``"neg_kl"`` (ours:
      -symmetric KL).  See ``jmipose.models.losses``.
    - ``heads``: attention heads (the paper does not say; 1 head by default).
    - ``attention_axis``: what the interaction block's tokens are: ``"pixel"`` (ours: the h*w pixels,
      each a C-vector; the flash-style kernel never writes the N x N scores) or ``"channel"`` (the C
      channels, each an h*w-vector, as the authors' related code attends in
      ``ChannelAttentionModule``; scale 1/sqrt(h*w)).  Both run through ``jmipose.ops``' op B.
    - ``attention_pool``: > 1 average-pools the token maps by this factor before attention and
      upsamples the attention output (ours, a CPU-speed option; 1 = full resolution).
    - ``gate_conv``: True (ours) puts a 1x1 conv between concat(A_m, A_j) and the sigmoid of the
      gates; False follows the papers' figures: concat -> sigmoid -> chunk, no conv.
    - ``gather_kernel``, ``gather_dilation``, ``offset_groups``: the joint-region gather (DCNv2) of
      the context-aware joint learner (not stated in the paper).  The authors' related code gathers
      motion features with a 3x3 DCN of dilation 1 and 12 offset groups (its appearance DCNs use
      dilation 3); the defaults here (3x3, dilation 3, 1 group) are ours.
    - ``mask_activation``: the modulation masks JW: ``"sigmoid"`` (ours, as DCNv2 defines them) or
      ``"none"`` (the raw conv output, as the authors' related code passes it to its DCN).
    - ``use_cjl``: False replaces the heatmap-guided gather by a plain conv of the same shape (ablation).
    - ``use_interaction``: False makes the interaction blocks identities (ablation).
    - ``use_aux``: False drops the auxiliary objective (ablation; aux_loss is 0).
    - ``mi_temperature``: temperature of the per-channel spatial softmax of the information estimator
      (0.05, as in the authors' code).
    - ``heatmap_residual``: final heatmaps = head output + the key frame's backbone heatmaps (ours,
      not in the paper; off by default; helps a head trained on a frozen backbone start from its
      quality).
    - ``residual_gate``: with ``heatmap_residual``, the head's correction is scaled per joint and pixel
      by a sigmoid gate computed from the fused features, the key frame's heatmaps and each joint's
      peak value there, so a confident key frame can keep its own heatmaps (ours, not in the paper).
    - ``use_kernels``: True runs ``jmipose.ops``' default backends, False the eager references.
    """

    variant: str = "jmi"
    backbone: str = "w48"
    num_joints: int = 17
    num_frames: int = 5
    key_index: int = 2
    freeze_backbone: bool | None = None
    freeze_batchnorm: bool = True
    backbone_weights: str | None = None
    allow_random_backbone: bool = False
    channels: int | None = None
    stages: list[int] | None = None
    stage1_source: str = "layer1"
    heatmap_offsets: list[int] | None = None
    num_blocks: int | None = None
    split_sides: bool | None = None
    aux_objective: str | None = None
    aux_estimator: str = "official"
    heads: int = 1
    attention_axis: str = "pixel"
    attention_pool: int = 1
    gate_conv: bool = True
    gather_kernel: int = 3
    gather_dilation: int = 3
    offset_groups: int = 1
    mask_activation: str = "sigmoid"
    use_cjl: bool = True
    use_interaction: bool = True
    use_aux: bool = True
    mi_temperature: float = 0.05
    heatmap_residual: bool = False
    residual_gate: bool = False
    use_kernels: bool = True

    error_label = "model config: "

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """A config from a plain dict (old keys upgraded, see ``_upgrade``); unknown keys are an error that
        names them.  Absurd sizes are refused before the types are read, so that a checkpoint's
        ``channels: 1e12`` is named as a size."""
        if isinstance(values, Mapping):
            values = _upgrade(values)
            _check_sizes(values)
        return super().from_dict(values)

    def resolved(self) -> ModelConfig:
        """A copy with every None field set to its variant default (validated, as every ModelConfig)."""
        if self.variant not in VARIANTS:  # a field set after construction
            raise ValueError(f"model config: variant must be one of {VARIANTS}, got {self.variant!r}")
        values = self.to_dict()
        for name, default in VARIANT_DEFAULTS[self.variant].items():
            if values[name] is None:
                values[name] = list(default) if isinstance(default, list) else default
        values["stages"] = [int(s) for s in values["stages"]]
        values["heatmap_offsets"] = [int(o) for o in values["heatmap_offsets"]]
        return ModelConfig(**values)

    @property
    def is_resolved(self) -> bool:
        """True when no field is left to a variant default (``resolved()`` returns such configs)."""
        return all(getattr(self, name) is not None for name in VARIANT_DEFAULTS.get(self.variant, {}))

    @property
    def is_temporal(self) -> bool:
        return self.variant != "baseline"

    def validate(self) -> None:
        """Raises ValueError naming the field, what was expected and what came (``__post_init__`` calls
        it, so every ModelConfig is valid); the fields left to the variant defaults are checked with
        those defaults filled in."""
        def fail(name: str, expected: str) -> None:
            raise ValueError(f"model config: {name} must be {expected}, got {getattr(self, name)!r}")

        if self.variant not in VARIANTS:
            fail("variant", f"one of {VARIANTS}")
        if not self.is_resolved:
            self.resolved()  # a resolved copy validates itself, every check included
        if self.backbone not in BACKBONES:
            fail("backbone", f"one of {BACKBONES}")
        _check_sizes(vars(self))
        if not isinstance(self.num_joints, int) or self.num_joints < 1:
            fail("num_joints", "a positive int")
        if not isinstance(self.num_frames, int) or self.num_frames < 1:
            fail("num_frames", "a positive int")
        if not isinstance(self.key_index, int) or not 0 <= self.key_index < self.num_frames:
            fail("key_index", f"an int in [0, num_frames={self.num_frames})")
        if self.channels is not None and (not isinstance(self.channels, int) or self.channels < 1):
            fail("channels", "a positive int or None")
        if self.aux_objective is not None and self.aux_objective not in AUX_OBJECTIVES:
            fail("aux_objective", f"one of {AUX_OBJECTIVES} or None")
        if self.aux_estimator not in AUX_ESTIMATORS:
            fail("aux_estimator", f"one of {AUX_ESTIMATORS}")
        if self.attention_axis not in ATTENTION_AXES:
            fail("attention_axis", f"one of {ATTENTION_AXES}")
        if self.stage1_source not in STAGE1_SOURCES:
            fail("stage1_source", f"one of {STAGE1_SOURCES}")
        if self.mask_activation not in MASK_ACTIVATIONS:
            fail("mask_activation", f"one of {MASK_ACTIVATIONS}")
        for name in ("allow_random_backbone", "gate_conv", "freeze_batchnorm"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "true or false")
        if not self.mi_temperature > 0:
            fail("mi_temperature", "a positive number")
        if self.residual_gate and not self.heatmap_residual:
            fail("residual_gate", "False unless heatmap_residual is True (it gates the residual's correction)")
        if not self.is_temporal or not self.is_resolved:
            return
        if self.num_frames < 2:
            fail("num_frames", "at least 2 for a temporal variant (motion features are frame differences)")
        distinct = len(set(self.stages)) == len(self.stages)
        if not self.stages or not distinct or not all(1 <= s <= 4 for s in self.stages):
            fail("stages", "a non-empty list of distinct backbone stages in 1..4")
        offsets_ok = all(0 <= self.key_index + o < self.num_frames for o in self.heatmap_offsets)
        if not self.heatmap_offsets or not offsets_ok:
            fail("heatmap_offsets", f"a non-empty list of offsets from key_index={self.key_index} inside the "
                                    f"{self.num_frames}-frame window")
        if not isinstance(self.num_blocks, int) or self.num_blocks < 1:
            fail("num_blocks", "a positive int")
        if not isinstance(self.heads, int) or self.heads < 1:
            fail("heads", "a positive int")
        if not isinstance(self.attention_pool, int) or self.attention_pool < 1:
            fail("attention_pool", "a positive int")
        if not isinstance(self.gather_kernel, int) or self.gather_kernel < 1 or self.gather_kernel % 2 == 0:
            fail("gather_kernel", "a positive odd int")
        if not isinstance(self.gather_dilation, int) or self.gather_dilation < 1:
            fail("gather_dilation", "a positive int")
        if not isinstance(self.offset_groups, int) or self.offset_groups < 1:
            fail("offset_groups", "a positive int")


def _check_sizes(values: Mapping[str, Any]) -> None:
    """Refuses a size above ``SIZE_LIMITS`` (a ValueError naming the field), whatever its type."""
    for name, top in SIZE_LIMITS.items():
        value = values.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > top:
            raise ValueError(f"model config: {name} must be at most {top} (a sane size), got {value!r}")


def _upgrade(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """Configs written before ``aux_estimator`` existed name the estimator ``mi_proxy`` (its two
    values, ``exp_neg_kl`` and ``neg_kl``, are estimators of the same name)."""
    if "mi_proxy" not in values:
        return values
    values = dict(values)
    proxy = values.pop("mi_proxy")
    values.setdefault("aux_estimator", proxy)
    return values
