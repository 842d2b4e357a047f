"""Benchmark cases of op A, ``joint_region_gather`` (modulated deformable convolution).

Shapes are the model's (issue: B in {8, 32}, Cin = Cout = 48, 96x72 and 48x36, 3x3, dilation 1 and
3, offset groups 1 and 4; on the CPU B=32 only at the target shape unless ``all_shapes``); each is
run by our backends of the device, the eager reference, ``torch.compile`` of it and
``torchvision.ops.deform_conv2d`` (skipped with the reason when torchvision does not import).
Offsets ~ N(0, 2^2) pixels and masks in (0, 1), like a trained context-aware joint learner's.
"""

from __future__ import annotations

from typing import Any

import torch

from jmipose.bench import roofline
from jmipose.bench.timing import PASSES, Case, op_implementation, our_implementations

OP = "joint_region_gather"
VARIANT = "modulated"
TARGET_SHAPE = {"batch": 32, "channels": 48, "height": 96, "width": 72, "kernel": 3, "dilation": 1,
                "offset_groups": 1}
SMALLEST_SHAPE = {"batch": 1, "channels": 8, "height": 12, "width": 9, "kernel": 3, "dilation": 1,
                  "offset_groups": 1}


# --quick measures the targets at B=2 (every implementation's work is linear in B): at B=32
# torchvision and the eager reference take tens of seconds per call on 2 cores.
QUICK_SHAPE = {**TARGET_SHAPE, "batch": 2}


def shapes(quick: bool = False, smallest: bool = False,
           all_shapes: bool = False) -> list[tuple[dict[str, int], tuple[str, ...]]]:
    """(shape, passes) pairs.  Full: B=8 at every model shape, B=32 at the target shape (all B=32
    shapes with ``all_shapes``); quick: the target shape at B=2, forward+backward; smallest: a tiny
    shape (tests of the benchmark machinery)."""
    if smallest:
        return [(dict(SMALLEST_SHAPE), PASSES)]
    if quick:
        return [(dict(QUICK_SHAPE), ("fwd+bwd",))]
    result = [{"batch": b, "channels": 48, "height": h, "width": w, "kernel": 3, "dilation": d,
               "offset_groups": g}
              for b in (8, 32) for h, w in ((96, 72), (48, 36)) for d in (1, 3) for g in (1, 4)]
    if not all_shapes:
        result = [s for s in result if s["batch"] == 8 or s == TARGET_SHAPE]
    result.sort(key=lambda s: s != TARGET_SHAPE)  # the target first: a run cut short still has it
    return [(s, PASSES[::-1] if s == TARGET_SHAPE else PASSES) for s in result]


def torchvision_deform_conv2d() -> tuple[Any, str | None]:
    """(the function, None) or (None, why it is unavailable)."""
    try:
        from torchvision.ops import deform_conv2d
    except Exception as exc:  # noqa: BLE001 - any import failure means: no torchvision baseline
        return None, f"torchvision not importable ({type(exc).__name__}: {str(exc)[:100]})"
    return deform_conv2d, None


def _roofline_shape(shape: dict[str, int]) -> dict[str, int]:
    # 'same' padding = dilation for a 3x3 kernel at stride 1: the output has the input's size
    return {"batch": shape["batch"], "in_channels": shape["channels"], "out_channels": shape["channels"],
            "groups": 1, "kernel": shape["kernel"], "offset_groups": shape["offset_groups"],
            "height": shape["height"], "width": shape["width"],
            "out_h": shape["height"], "out_w": shape["width"]}


class GatherRunner:
    """One pass of one implementation on inputs built once (``jmipose.bench.timing.Runner``)."""

    def __init__(self, fn, shape: dict[str, int], pass_: str, dtype: str, device: str) -> None:
        gen = torch.Generator().manual_seed(0)
        b, c, k, g = shape["batch"], shape["channels"], shape["kernel"], shape["offset_groups"]
        h, w = shape["height"], shape["width"]
        dt, dev = getattr(torch, dtype), torch.device(device)
        self.backward = pass_ == "fwd+bwd"

        def tensor(values: torch.Tensor) -> torch.Tensor:
            return values.to(dev, dt).requires_grad_(self.backward)

        self.leaves = [tensor(torch.randn(b, c, h, w, generator=gen)),
                       tensor(2.0 * torch.randn(b, 2 * g * k * k, h, w, generator=gen)),
                       tensor(torch.randn(c, c, k, k, generator=gen) * (c * k * k) ** -0.5),
                       tensor(torch.randn(c, generator=gen)),
                       tensor(torch.rand(b, g * k * k, h, w, generator=gen))]
        self.grad_output = torch.randn(b, c, h, w, generator=gen).to(dev, dt)
        self.fn = fn
        self.padding = self.dilation = shape["dilation"]

    def reset(self) -> None:
        for leaf in self.leaves:
            leaf.grad = None

    def __call__(self) -> torch.Tensor:
        input, offset, weight, bias, mask = self.leaves
        if not self.backward:
            with torch.no_grad():
                return self.fn(input, offset, weight, bias, stride=1, padding=self.padding,
                               dilation=self.dilation, mask=mask)
        self.reset()
        out = self.fn(input, offset, weight, bias, stride=1, padding=self.padding, dilation=self.dilation,
                      mask=mask)
        out.backward(self.grad_output)
        return out


def _implementation(backend: str, baseline: str):
    from jmipose.ops import joint_region_gather
    from jmipose.ops.joint_region_gather import joint_region_gather_reference

    if baseline == "torchvision":
        return torchvision_deform_conv2d()[0]
    return op_implementation(joint_region_gather, joint_region_gather_reference, backend, baseline)


def implementations(device: str) -> list[tuple[str, str, str | None]]:
    """(backend, baseline, skip reason) of every implementation benchmarked on ``device``."""
    result = our_implementations(device)
    result.append(("torchvision", "torchvision", torchvision_deform_conv2d()[1]))
    return result


def cases(device: str = "cpu", dtype: str = "float32", quick: bool = False, smallest: bool = False,
          compile_baseline: bool = True, all_shapes: bool = False) -> list[Case]:
    """One Case per (shape, pass, implementation)."""
    result = []
    for shape, passes in shapes(quick, smallest, all_shapes or device != "cpu"):
        for pass_ in passes:
            for backend, baseline, skip in implementations(device):
                if baseline == "compile" and not compile_baseline:
                    skip = "torch.compile baseline not requested (--no-compile)"

                def make(backend=backend, baseline=baseline, shape=shape, pass_=pass_):
                    return GatherRunner(_implementation(backend, baseline), shape, pass_, dtype, device)

                rshape = _roofline_shape(shape)
                result.append(Case(OP, VARIANT, pass_, backend, baseline, dict(shape), dtype, device,
                                   make=None if skip else make, skip=skip,
                                   flops=roofline.region_gather_flops(rshape, pass_),
                                   bytes_moved=roofline.region_gather_bytes(rshape, pass_, dtype)))
    return result
