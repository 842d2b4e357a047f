"""``JointRegionGather``: a module holding the weight and bias of ``jmipose.ops.joint_region_gather``,
interchangeable with ``torchvision.ops.DeformConv2d`` (same arguments, parameters, init, and it
compiles under ``torch.jit.script``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from jmipose.ops.joint_region_gather import _pair, joint_region_gather


class JointRegionGather(nn.Module):
    """Modulated deformable convolution (DCNv2) with learnable weight and bias.

    ``forward(input, offset, mask=None)`` takes the offsets [B, 2*G*kh*kw, Hout, Wout] and the
    optional modulation mask [B, G*kh*kw, Hout, Wout] (predicted by other layers, as in the JM-Pose
    context-aware joint learner); G, the offset groups, is read from ``offset``.  Weights are
    initialised like ``nn.Conv2d`` (Kaiming uniform with a = sqrt(5), bias uniform in +-1/sqrt(fan_in)).
    ``backend`` is passed to the op (None: the fastest live backend for the input's device).
    Differentiable once (see ``jmipose.ops.joint_region_gather``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True, *,
                 backend: str | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"JointRegionGather: {name} must be a positive int, got {value!r}")
        if in_channels % groups != 0:
            raise ValueError(f"JointRegionGather: in_channels ({in_channels}) must be divisible by groups ({groups})")
        if out_channels % groups != 0:
            raise ValueError(f"JointRegionGather: out_channels ({out_channels}) must be divisible by groups ({groups})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        if min(self.kernel_size) <= 0:
            raise ValueError(f"JointRegionGather: kernel_size must be positive, got {kernel_size!r}")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = groups
        self.backend = backend
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        return joint_region_gather(input, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
                                   dilation=self.dilation, mask=mask, backend=self.backend)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}")
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.backend is not None:
            text += f", backend={self.backend!r}"
        return text
