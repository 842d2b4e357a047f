"""``JointMotionAttention``: the projections of ``jmipose.ops.joint_motion_attention`` and the op,
between two feature maps (JM-Pose's interaction block without its gates); compiles under
``torch.jit.script``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jmipose.ops.joint_motion_attention import joint_motion_attention


class JointMotionAttention(nn.Module):
    """Bidirectional attention between motion and joint feature maps, residuals included.

    ``forward(motion, joint)`` with both [B, C, H, W] returns ``(attended_motion, attended_joint)``:

        q_m, k_m, v_m = motion_qkv(motion),  q_j, k_j, v_j = joint_qkv(joint)     (1x1 convs, C -> 3C)
        attended_motion = motion + softmax(q_m k_j^T / sqrt(d)) v_j
        attended_joint  = joint  + softmax(q_j k_m^T / sqrt(d)) v_m

    over tokens that are the H*W pixels, in ``heads`` heads of d = C / heads channels (``axis="pixel"``),
    or, with ``axis="channel"``, over tokens that are the C / heads channels of each head, each an
    H*W-vector (d = H*W, scaled by 1/sqrt(H*W)): the channel attention of the JM-Pose authors' related
    code (docs/FIDELITY.md); the op's GPU kernels take d <= 128 and larger d falls back to a backend
    that supports it (see the op).  ``pool`` > 1
    attends between the average-pooled maps (``pool`` x ``pool``, ceil mode) and adds the attention
    output, upsampled bilinearly, to the full-size maps (an option for speed on the CPU).  The
    projections are initialised like ``nn.Conv2d``; ``backend`` is passed to the op (None: the fastest
    live backend for the device, dtype and head dim).  Differentiable once (see the op).
    """

    def __init__(self, channels: int, heads: int = 1, pool: int = 1, *, axis: str = "pixel",
                 backend: str | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        for what, value in (("channels", channels), ("heads", heads), ("pool", pool)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}: {what} must be a positive int, got {value!r}")
        if channels % heads:
            raise ValueError(f"{name}: channels ({channels}) must be divisible by heads ({heads})")
        if axis not in ("pixel", "channel"):
            raise ValueError(f"{name}: axis must be 'pixel' or 'channel', got {axis!r}")
        self.channels = channels
        self.axis = axis
        self.heads = heads
        self.pool = pool
        self.backend = backend
        factory = {"device": device, "dtype": dtype}
        self.motion_qkv = nn.Conv2d(channels, 3 * channels, 1, **factory)
        self.joint_qkv = nn.Conv2d(channels, 3 * channels, 1, **factory)

    def _tokens(self, maps: Tensor) -> Tensor:
        """[B, C, h, w] -> pixel tokens [B, heads, h*w, C/heads] or channel tokens [B, heads, C/heads, h*w]."""
        batch, channels = maps.shape[0], maps.shape[1]
        tokens = maps.reshape(batch, self.heads, channels // self.heads, -1)
        if self.axis == "channel":
            return tokens
        return tokens.transpose(-1, -2)

    def _maps(self, tokens: Tensor, height: int, width: int) -> Tensor:
        if self.axis == "pixel":
            tokens = tokens.transpose(-1, -2)
        batch, heads, dim = tokens.shape[0], tokens.shape[1], tokens.shape[2]
        return tokens.reshape(batch, heads * dim, height, width)

    def attend(self, q_m: Tensor, k_m: Tensor, v_m: Tensor, q_j: Tensor, k_j: Tensor, v_j: Tensor,
               res_m: Tensor | None, res_j: Tensor | None, scale: float) -> tuple[Tensor, Tensor]:
        """The op on the tokens (the one place this module calls it)."""
        return joint_motion_attention(q_m, k_m, v_m, q_j, k_j, v_j, res_m=res_m, res_j=res_j, scale=scale,
                                      backend=self.backend)

    def forward(self, motion: Tensor, joint: Tensor) -> tuple[Tensor, Tensor]:
        height, width = motion.shape[2], motion.shape[3]
        if self.pool > 1:
            motion_source = F.avg_pool2d(motion, self.pool, ceil_mode=True)
            joint_source = F.avg_pool2d(joint, self.pool, ceil_mode=True)
        else:
            motion_source, joint_source = motion, joint
        q_m, k_m, v_m = self.motion_qkv(motion_source).chunk(3, dim=1)
        q_j, k_j, v_j = self.joint_qkv(joint_source).chunk(3, dim=1)
        q_m, k_m, v_m = self._tokens(q_m), self._tokens(k_m), self._tokens(v_m)
        q_j, k_j, v_j = self._tokens(q_j), self._tokens(k_j), self._tokens(v_j)
        dtype = q_m.dtype
        scale = q_m.shape[-1] ** -0.5
        if self.pool == 1:
            out_m, out_j = self.attend(q_m, k_m, v_m, q_j, k_j, v_j, self._tokens(motion.to(dtype)),
                                       self._tokens(joint.to(dtype)), scale)
            return self._maps(out_m, height, width), self._maps(out_j, height, width)
        out_m, out_j = self.attend(q_m, k_m, v_m, q_j, k_j, v_j, None, None, scale)
        pooled_h, pooled_w = motion_source.shape[2], motion_source.shape[3]
        attended_motion = motion.to(dtype) + F.interpolate(
            self._maps(out_m, pooled_h, pooled_w), size=(height, width), mode="bilinear", align_corners=False)
        attended_joint = joint.to(dtype) + F.interpolate(
            self._maps(out_j, pooled_h, pooled_w), size=(height, width), mode="bilinear", align_corners=False)
        return attended_motion, attended_joint

    def extra_repr(self) -> str:
        text = f"{self.channels}, heads={self.heads}"
        if self.axis != "pixel":
            text += f", axis={self.axis!r}"
        if self.pool != 1:
            text += f", pool={self.pool}"
        if self.backend is not None:
            text += f", backend={self.backend!r}"
        return text
