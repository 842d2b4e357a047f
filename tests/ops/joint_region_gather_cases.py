"""Shared by the joint_region_gather backend tests of this folder (Triton kernels, CUDA through the
public op, the CUDA source under CPU emulation): the cases, inputs exact in the tested dtype, the
float64 reference (output by value, the five gradients by autograd), the tolerance rule, and the
border and non-finite-offset checks each of those backends runs.

Offsets are multiples of 1/256, so a sampling coordinate is exact in float32 and a backend and the
reference take the same bilinear cell (the offset gradient has kinks at integer coordinates; on the
lines y = -1 and x = -1 it is torchvision's one-sided derivative from inside).  Tolerances
(absolute, relative to max(1, largest expected magnitude)): float32 1e-4 (float32 accumulation);
float16 1e-2 and bfloat16 4e-2 (the sampled columns are rounded to the input dtype before the
tensor-core products, as torchvision's im2col does).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from jmipose.ops.joint_region_gather import joint_region_gather_reference

TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}
GRAD_NAMES = ("input", "offset", "mask", "weight", "bias")


@dataclass(frozen=True)
class Case:
    batch: int = 2
    in_channels: int = 4
    out_channels: int = 3
    height: int = 6
    width: int = 5
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    offset_groups: int = 1
    with_mask: bool = True
    with_bias: bool = True
    offset_scale: float = 1.5

    @property
    def out_size(self) -> tuple[int, int]:
        return tuple((size + 2 * pad - dil * (k - 1) - 1) // st + 1 for size, pad, dil, k, st in
                     zip((self.height, self.width), self.padding, self.dilation, self.kernel, self.stride))

    @property
    def geometry(self) -> tuple:
        """(stride, padding, dilation, groups, offset_groups), the trailing arguments of the kernels."""
        return self.stride, self.padding, self.dilation, self.groups, self.offset_groups


CASES = {
    "3x3_pad1": Case(batch=2, in_channels=5, out_channels=3, height=7, width=6),
    "b1_odd_no_mask_no_bias": Case(batch=1, in_channels=3, out_channels=5, height=5, width=9, padding=(0, 0),
                                   with_mask=False, with_bias=False),
    "groups2_offset_groups3": Case(batch=1, in_channels=12, out_channels=4, height=5, groups=2,
                                   offset_groups=3),
    "groups3_offset_groups1": Case(batch=1, in_channels=6, out_channels=6, groups=3),
    "stride2_offset_groups2": Case(batch=1, in_channels=4, out_channels=4, height=9, width=8, stride=(2, 2),
                                   offset_groups=2),
    "dilation3": Case(batch=1, height=10, width=9, padding=(3, 3), dilation=(3, 3)),
    "1x1_offset_groups2": Case(in_channels=6, out_channels=4, height=5, width=7, kernel=(1, 1),
                               padding=(0, 0), offset_groups=2),
    "2x3_mixed_geometry": Case(batch=1, height=7, width=8, kernel=(2, 3), stride=(2, 1), padding=(1, 0),
                               dilation=(1, 2)),
}

# The model's layer: 48 channels, 96x72 heatmaps, 3x3, four offset groups (GPU only).
MODEL_CASE = Case(batch=2, in_channels=48, out_channels=48, height=96, width=72, offset_groups=4,
                  offset_scale=3.0)


def make_inputs(case: Case, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor | None]:
    """float64 CPU tensors holding values exactly representable in ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    kh, kw = case.kernel
    out_h, out_w = case.out_size
    taps = kh * kw

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype).double()

    offset = rand(case.batch, 2 * case.offset_groups * taps, out_h, out_w, scale=case.offset_scale)
    mask = torch.rand(case.batch, case.offset_groups * taps, out_h, out_w, generator=gen, dtype=torch.float64)
    return {
        "input": rand(case.batch, case.in_channels, case.height, case.width),
        "offset": torch.round(offset * 256) / 256,
        "mask": mask.to(dtype).double() if case.with_mask else None,
        "weight": rand(case.out_channels, case.in_channels // case.groups, kh, kw, scale=0.5),
        "bias": rand(case.out_channels) if case.with_bias else None,
        "grad_output": rand(case.batch, case.out_channels, out_h, out_w),
    }


def reference(case: Case, inputs: dict) -> tuple[torch.Tensor, tuple]:
    """float64 output and the five gradients (None for an absent mask or bias)."""
    leaves = {name: None if inputs[name] is None else inputs[name].clone().requires_grad_()
              for name in GRAD_NAMES}
    out = joint_region_gather_reference(leaves["input"], leaves["offset"], leaves["weight"], leaves["bias"],
                                        case.stride, case.padding, case.dilation, leaves["mask"])
    out.backward(inputs["grad_output"])
    return out.detach(), tuple(None if leaves[n] is None else leaves[n].grad for n in GRAD_NAMES)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, \
        f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    tol = TOLERANCE[dtype] * max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual.double().cpu(), expected, rtol=TOLERANCE[dtype], atol=tol,
                               msg=lambda m: f"{what}: {m}")


def assert_matches_reference(case: Case, inputs: dict, out: torch.Tensor, grads, dtype: torch.dtype) -> None:
    """``out`` and ``grads`` (input, offset, mask, weight, bias; None where absent) against the reference."""
    expected_out, expected_grads = reference(case, inputs)
    assert_close(out, expected_out, dtype, "output")
    for name, grad, expected in zip(GRAD_NAMES, grads, expected_grads):
        if expected is None:
            assert grad is None, f"grad {name} must be None when {name} is None"
        else:
            assert_close(grad, expected, dtype, f"grad {name}")


BORDER_CASE = Case(batch=1, in_channels=3, out_channels=2, height=5, width=6, kernel=(1, 1), padding=(0, 0))


def border_offsets(case: Case) -> torch.Tensor:
    """Offsets (1x1 kernel) that put samples exactly on, just inside and just outside every border."""
    h, w = case.height, case.width
    eps = 2.0 ** -8
    ys = [-1 - eps, -1.0, -1 + eps, -0.5, 0.0, 1.5, h - 1.0, h - 1 + eps, h - eps, float(h), h + eps]
    xs = [-1 - eps, -1.0, -1 + eps, 0.0, 2.25, w - 1.0, w - 1 + eps, w - eps, float(w), w + eps]
    targets = list(itertools.product(ys, xs))
    out_h, out_w = case.out_size
    offset = torch.zeros(case.batch, 2, out_h, out_w, dtype=torch.float64)
    for p in range(out_h * out_w):
        y, x = targets[(p * 7) % len(targets)]
        offset[:, 0, p // out_w, p % out_w] = y - p // out_w
        offset[:, 1, p // out_w, p % out_w] = x - p % out_w
    return offset


def assert_outside_samples_read_nothing(case: Case, inputs: dict, out: torch.Tensor) -> None:
    """Independently of the reference (1x1 kernel, no padding): an output pixel whose sample lies at or
    beyond one pixel outside the image is exactly the bias."""
    out_h, out_w = case.out_size
    y = inputs["offset"][0, 0] + torch.arange(out_h, dtype=torch.float64).view(-1, 1)
    x = inputs["offset"][0, 1] + torch.arange(out_w, dtype=torch.float64).view(1, -1)
    outside = (y <= -1) | (y >= case.height) | (x <= -1) | (x >= case.width)
    assert 0 < outside.sum() < outside.numel()
    for o in range(case.out_channels):
        assert (out[0, o].cpu()[outside] == inputs["bias"][o].float()).all()


NON_FINITE = (float("nan"), float("inf"), float("-inf"), 1e30, -1e30, 3e9)


def put_non_finite(offset: torch.Tensor) -> torch.Tensor:
    """Writes NaN, +-inf and huge values into ``offset`` (spread over images, groups, taps, both
    components and pixels) and returns the mask of the entries written."""
    bad = torch.zeros_like(offset, dtype=torch.bool)
    for i, value in enumerate(NON_FINITE):
        batch, channels, height, width = offset.shape
        index = (i % batch, (5 * i + 2) % channels, i % height, (2 * i) % width)
        offset[index] = value
        bad[index] = True
    return bad


# The checks every backend's tests run, through ``run(case, inputs, dtype) -> (output, the five
# gradients)``: the Triton host functions, the emulated CUDA library, the CUDA backend on a GPU.

def check_borders(run, seed: int) -> None:
    """Samples exactly on, just inside and just outside every border (BORDER_CASE, float32): output and
    gradients match the reference, and the samples outside the image read nothing."""
    inputs = make_inputs(BORDER_CASE, seed, torch.float32)
    inputs["offset"] = border_offsets(BORDER_CASE)
    out, grads = run(BORDER_CASE, inputs, torch.float32)
    assert_matches_reference(BORDER_CASE, inputs, out, grads, torch.float32)
    assert_outside_samples_read_nothing(BORDER_CASE, inputs, out)


def check_non_finite_offsets(run, case: Case, seed: int) -> None:
    """NaN, +-inf and huge offsets (``put_non_finite``, float32): every output and gradient finite and
    equal to the reference's (those taps read zero), and those offsets get a zero gradient."""
    inputs = make_inputs(case, seed, torch.float32)
    bad = put_non_finite(inputs["offset"])
    out, grads = run(case, inputs, torch.float32)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    assert_matches_reference(case, inputs, out, grads, torch.float32)
    assert (grads[1].cpu()[bad] == 0).all()
