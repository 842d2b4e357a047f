"""JMI / JM-Pose: joint-motion interactive (IJCAI) and mutual (ACM MM 2024) learning for video pose
estimation, as one module tree configured by ``ModelConfig`` (``variant: jmi | jm``).

Input: frames [B, T, 3, H, W] in time order, the key frame at ``key_index``.  The HRNet backbone runs
once on all B*T frames and gives initial heatmaps H and the highest-resolution feature F^s after
each stage s (all at h, w = H/4, W/4; stage 1 per ``stage1_source``).  ``forward`` is
``backbone_features`` (per crop) followed by
``forward_head`` (per window), two public halves so that video inference can compute a frame's
backbone output once and reuse it in the five windows that hold it.  Then, per branch:

1. Feature-difference layer: the differences of neighbouring frames' features F^s_{k+1} - F^s_k,
   concatenated, then a conv block to C channels gives the motion features M^s.  With
   ``split_sides`` (JM-Pose) the differences before and after the key frame make left and right
   motion features M^l, M^r, merged by a conv block into M.
2. Context-aware joint learner (CJL): a conv block on concat(H, M) and two 3x3 convs predict the
   joint offsets JO (``offset_groups`` groups) and joint weights JW (``mask_activation``) for every
   pixel and kernel tap; the joint-region gather (op A, modulated deformable conv, ``gather_kernel``
   x ``gather_kernel`` with ``gather_dilation``) reads M there: J = ReLU(BN(gather(M; JO, JW))).  The
   heatmaps decide where and how much the motion features are read.
3. Interaction block(s): 1x1 convs project M and J to q, k, v (``heads`` heads); op B attends both
   ways with the residuals fused, A_m = M + softmax(q_m k_j^T / sqrt(d)) v_j and
   A_j = J + softmax(q_j k_m^T / sqrt(d)) v_m, over the h*w pixels (``attention_axis: pixel``, d = C
   per head) or over the C channels (``attention_axis: channel``, d = h*w); the sigmoid of
   concat(A_m, A_j) (after a 1x1 conv with ``gate_conv``) is chunked into two gates, M~ = g_m * A_m,
   J~ = g_j * A_j.  JMI has one block per stage branch; JM-Pose chains ``num_blocks`` (L) blocks,
   M^i, J^i -> M^{i+1}, J^{i+1}.
4. The branch output concat(M~, J~) -> conv block.  JMI fuses the branches of all stages by a conv
   block into S; the heatmap head (1x1 conv) maps S to the joints.

Auxiliary objective (returned as ``aux_loss``, averaged over blocks): JMI's information between M~
and J~, JM-Pose's information orthogonality I(J; M | H^), both with the ``aux_estimator`` of
``jmipose.models.losses`` (its docstring gives the estimators and the sign convention).

Ablations: ``use_cjl=False`` (a plain conv with the same weight shape instead of op A),
``use_interaction=False`` (blocks are identities), ``use_aux=False`` (aux_loss = 0).  Every built
parameter is used in every configuration (DDP needs no ``find_unused_parameters``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jmipose import ops
from jmipose.models.common import ConvBlock, PoseOutput, check_frames
from jmipose.models.config import ModelConfig
from jmipose.models.hrnet import PoseHighResolutionNet
from jmipose.models.losses import mutual_information_objective, orthogonality_objective
from jmipose.nn import JointMotionAttention, JointRegionGather
from jmipose.ops.joint_motion_attention import joint_motion_attention_reference
from jmipose.ops.joint_region_gather import joint_region_gather_reference


class FeatureDifference(nn.Module):
    """Motion features of one stage from the differences of neighbouring frames' features."""

    def __init__(self, in_channels: int, out_channels: int, num_frames: int, key_index: int,
                 split_sides: bool) -> None:
        super().__init__()
        # Difference k is F_{k+1} - F_k; left of the key frame are k < key_index.
        if split_sides:
            sides = [(0, key_index), (key_index, num_frames - 1)]
            self.sides = [(start, stop) for start, stop in sides if stop > start]
        else:
            self.sides = [(0, num_frames - 1)]
        self.encoders = nn.ModuleList(ConvBlock((stop - start) * in_channels, out_channels)
                                      for start, stop in self.sides)
        self.merge = ConvBlock(len(self.sides) * out_channels, out_channels) if len(self.sides) > 1 else None

    def forward(self, features: Tensor) -> Tensor:
        """features [B, T, C_s, h, w] -> motion features [B, C, h, w]."""
        differences = features[:, 1:] - features[:, :-1]
        sides = [encoder(differences[:, start:stop].flatten(1, 2))
                 for encoder, (start, stop) in zip(self.encoders, self.sides)]
        if self.merge is None:
            return sides[0]
        return self.merge(torch.cat(sides, dim=1))


class ContextAwareJointLearner(JointRegionGather):
    """Joint features J from motion features M, read where the heatmaps point: op A's layer (its
    weight is this module's) with the offsets and masks predicted from the heatmaps and M."""

    def __init__(self, channels: int, heatmap_channels: int, kernel_size: int = 3, dilation: int = 3,
                 offset_groups: int = 1, use_gather: bool = True, use_kernels: bool = True,
                 mask_activation: str = "sigmoid") -> None:
        # The gather's weight is drawn after the offset and mask convs (so that a seed builds the same
        # model as before it came from JointRegionGather): on a forked RNG here, for real below.
        with torch.random.fork_rng(devices=[]):
            super().__init__(channels, channels, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                             dilation=dilation, bias=False)
        self.use_gather = use_gather
        self.mask_activation = mask_activation
        self.use_kernels = use_kernels
        taps = kernel_size * kernel_size
        if use_gather:
            self.guide = ConvBlock(heatmap_channels + channels, channels)
            self.offset_conv = nn.Conv2d(channels, 2 * offset_groups * taps, 3, padding=1)
            self.mask_conv = nn.Conv2d(channels, offset_groups * taps, 3, padding=1)
            # Start near the plain dilated grid with masks of 0.5 (as DCNv2 does), but not at exactly
            # zero weights, which would stop every gradient to the guide block at the first step.
            for conv in (self.offset_conv, self.mask_conv):
                nn.init.normal_(conv.weight, std=1e-3)
                nn.init.zeros_(conv.bias)
        # The gather's weight; the no-CJL ablation uses the same tensor as a plain dilated conv.
        self.norm = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.reset_parameters()

    def forward(self, motion: Tensor, heatmaps: Tensor) -> Tensor:
        if not self.use_gather:
            weight = self.weight.to(motion.dtype)
            joint = F.conv2d(motion, weight, padding=self.padding, dilation=self.dilation)
            return self.relu(self.norm(joint))
        guide = self.guide(torch.cat([heatmaps.to(motion.dtype), motion], dim=1))
        offsets = self.offset_conv(guide)                 # JO: (dy, dx) per offset group and tap
        masks = self.mask_conv(guide)                     # JW: sigmoid (DCNv2) or raw (authors' code)
        if self.mask_activation == "sigmoid":
            masks = torch.sigmoid(masks)
        # Under autocast the convs give the autocast dtype; op A wants one dtype for all its tensors.
        dtype = offsets.dtype
        args = (motion.to(dtype), offsets, self.weight.to(dtype), None, 1, self.padding, self.dilation,
                masks.to(dtype))
        joint = ops.joint_region_gather(*args) if self.use_kernels else joint_region_gather_reference(*args)
        return self.relu(self.norm(joint))


class InteractionBlock(JointMotionAttention):
    """Bidirectional motion <-> joint attention (op B's layer: projections, attention, residuals),
    then sigmoid gates.

    ``axis="pixel"``: the tokens are the h*w pixels, each a C/heads-vector (ours).  ``axis="channel"``:
    the tokens are the C/heads channels of each head, each an h*w-vector, scaled by 1/sqrt(h*w), as
    the authors' related code attends (docs/FIDELITY.md).  ``gate_conv`` puts a 1x1 conv before the
    gates' sigmoid (ours; the figures have none)."""

    def __init__(self, channels: int, heads: int = 1, pool: int = 1, use_kernels: bool = True,
                 axis: str = "pixel", gate_conv: bool = True) -> None:
        super().__init__(channels, heads, pool, axis=axis)
        self.use_kernels = use_kernels
        self.gate = nn.Conv2d(2 * channels, 2 * channels, 1) if gate_conv else None

    def attend(self, q_m: Tensor, k_m: Tensor, v_m: Tensor, q_j: Tensor, k_j: Tensor, v_j: Tensor,
               res_m: Tensor | None, res_j: Tensor | None, scale: float) -> tuple[Tensor, Tensor]:
        if self.use_kernels:
            return super().attend(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, scale)
        return joint_motion_attention_reference(q_m, k_m, v_m, q_j, k_j, v_j, res_m=res_m, res_j=res_j, scale=scale)

    def forward(self, motion: Tensor, joint: Tensor) -> tuple[Tensor, Tensor]:
        attended_motion, attended_joint = super().forward(motion, joint)
        both = torch.cat([attended_motion, attended_joint], dim=1)
        gates = torch.sigmoid(both if self.gate is None else self.gate(both))
        gate_motion, gate_joint = gates.chunk(2, dim=1)
        return gate_motion * attended_motion, gate_joint * attended_joint


class JointMotionBranch(nn.Module):
    """Motion features of some stages -> CJL -> chained interaction blocks -> one fused map."""

    def __init__(self, stage_channels: list[int], heatmap_channels: int, config: ModelConfig,
                 channels: int) -> None:
        super().__init__()
        self.motions = nn.ModuleList(FeatureDifference(c, channels, config.num_frames, config.key_index,
                                                       config.split_sides) for c in stage_channels)
        self.motion_merge = None
        if len(stage_channels) > 1:
            self.motion_merge = ConvBlock(len(stage_channels) * channels, channels)
        self.joint_learner = ContextAwareJointLearner(
            channels, heatmap_channels, config.gather_kernel, config.gather_dilation, config.offset_groups,
            use_gather=config.use_cjl, use_kernels=config.use_kernels, mask_activation=config.mask_activation)
        num_blocks = config.num_blocks if config.use_interaction else 0
        self.interactions = nn.ModuleList(
            InteractionBlock(channels, config.heads, config.attention_pool, config.use_kernels,
                             axis=config.attention_axis, gate_conv=config.gate_conv)
            for _ in range(num_blocks))
        self.fuse = ConvBlock(2 * channels, channels)
        self.aux_objective = config.aux_objective if config.use_aux else "none"
        self.temperature = config.mi_temperature
        self.estimator = config.aux_estimator

    def _aux(self, motion: Tensor, joint: Tensor, heatmaps: Tensor) -> Tensor:
        if self.aux_objective == "mi":
            return mutual_information_objective(motion, joint, self.temperature, self.estimator)
        return orthogonality_objective(joint, motion, heatmaps, self.temperature, self.estimator)

    def forward(self, stage_features: list[Tensor], heatmaps: Tensor) -> tuple[Tensor, list[Tensor]]:
        """stage_features: [B, T, C_s, h, w] per stage; heatmaps [B, K', h, w] (the guide).
        Returns the branch output [B, C, h, w] and the auxiliary terms (one per block)."""
        motions = [encoder(features) for encoder, features in zip(self.motions, stage_features)]
        motion = motions[0] if self.motion_merge is None else self.motion_merge(torch.cat(motions, dim=1))
        joint = self.joint_learner(motion, heatmaps)
        aux_terms = []
        for block in self.interactions:
            motion, joint = block(motion, joint)
            if self.aux_objective != "none":
                aux_terms.append(self._aux(motion, joint, heatmaps))
        if not self.interactions and self.aux_objective != "none":
            aux_terms.append(self._aux(motion, joint, heatmaps))
        return self.fuse(torch.cat([motion, joint.to(motion.dtype)], dim=1)), aux_terms


class JointMotionPose(nn.Module):
    """The temporal model (module docstring); build it with ``jmipose.models.build_model``."""

    def __init__(self, config: ModelConfig, backbone: PoseHighResolutionNet) -> None:
        super().__init__()
        if not config.is_temporal:
            raise ValueError(f"JointMotionPose: variant must be 'jmi' or 'jm', got {config.variant!r}")
        config = config.resolved()
        self.config = config
        self.backbone = backbone
        channels = config.channels or backbone.width
        if channels % config.heads:
            raise ValueError(f"model config: channels ({channels}) must be divisible by heads "
                             f"({config.heads})")
        if channels % config.offset_groups:
            raise ValueError(f"model config: channels ({channels}) must be divisible by offset_groups "
                             f"({config.offset_groups})")
        self.channels = channels
        self.guide_frames = [config.key_index + offset for offset in config.heatmap_offsets]
        heatmap_channels = len(self.guide_frames) * config.num_joints
        # JMI: one branch per stage; JM-Pose: one branch over all its stages (motion merged).
        if config.variant == "jmi":
            self.branch_stages = [[s] for s in config.stages]
        else:
            self.branch_stages = [list(config.stages)]
        stage_channels = backbone.stage_channels(config.stage1_source)
        self.branches = nn.ModuleList(
            JointMotionBranch([stage_channels[s - 1] for s in stages], heatmap_channels, config, channels)
            for stages in self.branch_stages)
        self.stage_fuse = None
        if len(self.branches) > 1:
            self.stage_fuse = ConvBlock(len(self.branches) * channels, channels)
        self.head = nn.Conv2d(channels, config.num_joints, kernel_size=1)
        nn.init.normal_(self.head.weight, std=0.001)
        nn.init.zeros_(self.head.bias)
        self.residual_gate = None
        if config.residual_gate:  # validated: only together with heatmap_residual
            # Inputs: fused features, the key heatmaps and each joint's peak; starts at a gate of 0.5.
            self.residual_gate = nn.Conv2d(channels + 2 * config.num_joints, config.num_joints, 1)
            nn.init.normal_(self.residual_gate.weight, std=1e-3)
            nn.init.zeros_(self.residual_gate.bias)
        if config.freeze_backbone:
            backbone.freeze(batchnorm=config.freeze_batchnorm)

    @property
    def feature_stages(self) -> list[int]:
        """The backbone stages (1..4) whose features the head reads."""
        return sorted({stage for stages in self.branch_stages for stage in stages})

    def backbone_features(self, frames: Tensor) -> tuple[Tensor, list[Tensor | None]]:
        """The per-frame half of the model: the backbone on single crops.

        frames [N, 3, H, W] (crops of any frames and people) -> initial heatmaps [N, K, h, w] and the
        four stage features [N, C_s, h, w], None for the stages the head does not read.  A frame's
        output depends on its crop alone, so video inference computes it once and reuses it in every
        window that holds the same crop (``jmipose.engine.predict``).
        """
        # A frozen backbone keeps no activations for backward.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone.frozen):
            heatmaps, stage_features = self.backbone(frames, return_stage_features=True,
                                                     stage1_source=self.config.stage1_source)
        read = set(self.feature_stages)
        return heatmaps, [f if stage in read else None for stage, f in enumerate(stage_features, 1)]

    def forward_head(self, heatmaps: Tensor, stage_features: list[Tensor | None]) -> PoseOutput:
        """The temporal half: heatmaps [B, T, K, h, w] and stage features (per stage s = 1..4,
        [B, T, C_s, h, w] or None where unread) of windows in time order -> ``PoseOutput``."""
        config = self.config
        if heatmaps.dim() != 5 or heatmaps.shape[1] != config.num_frames:
            raise ValueError(f"JointMotionPose.forward_head: heatmaps must be "
                             f"[B, T={config.num_frames}, K, h, w], got shape {tuple(heatmaps.shape)}")
        if len(stage_features) != 4 or any(stage_features[s - 1] is None for s in self.feature_stages):
            raise ValueError(f"JointMotionPose.forward_head: stage_features must list the 4 stages, with "
                             f"tensors for stages {self.feature_stages}")
        key_heatmaps = heatmaps[:, config.key_index]
        guide = heatmaps[:, self.guide_frames].flatten(1, 2)
        outputs, aux_terms = [], []
        for branch, stages in zip(self.branches, self.branch_stages):
            output, terms = branch([stage_features[s - 1] for s in stages], guide)
            outputs.append(output)
            aux_terms.extend(terms)
        fused = outputs[0] if self.stage_fuse is None else self.stage_fuse(torch.cat(outputs, dim=1))
        final = self.head(fused)
        if config.heatmap_residual:
            key = key_heatmaps.to(final.dtype)
            if self.residual_gate is not None:
                peak = key.amax(dim=(2, 3), keepdim=True).expand_as(key)
                final = final * torch.sigmoid(self.residual_gate(torch.cat([fused, key, peak], dim=1)))
            final = final + key
        aux = torch.stack(aux_terms).mean() if aux_terms else final.new_zeros((), dtype=torch.float32)
        return PoseOutput(final, key_heatmaps, aux)

    def forward(self, frames: Tensor) -> PoseOutput:
        check_frames(frames, self.config.num_frames, "JointMotionPose")
        batch, num_frames = frames.shape[:2]
        heatmaps, stage_features = self.backbone_features(frames.flatten(0, 1))

        def windows(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.unflatten(0, (batch, num_frames))

        return self.forward_head(windows(heatmaps), [windows(f) for f in stage_features])
