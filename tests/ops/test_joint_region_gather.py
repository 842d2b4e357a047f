"""joint_region_gather (modulated deformable convolution) through every backend.

Truth is ``joint_region_gather_reference`` evaluated in float64 with autograd (plus, where a case
has a closed form, ``torch.nn.functional.conv2d`` in float64, a loop-by-loop scalar transcription of
torchvision's per-sample rules, and ``torchvision.ops.deform_conv2d`` itself when it imports).

Tolerances (``_assert_close``): |actual - expected| <= tol * max(1, max|expected|) elementwise, with
tol = 1e-9 for float64, 2e-4 for float32, 2e-2 for float16 and 6e-2 for bfloat16 (those two
accumulate in float32; the error is the rounding of the inputs and the output).  The same tol is used
as rtol.  Offsets are drawn on a 1/256 grid so a sampling coordinate is exact in every dtype: a
float32 coordinate can never fall on the other side of an integer than the float64 one, where the
bilinear gradient jumps.

The triton backend runs on the CPU under TRITON_INTERPRET=1 (slow: it gets the small cases); cuda
tests carry the ``gpu`` marker.  ``pytest -k torchvision`` with a Python where torchvision imports
runs the comparison against torchvision (skipped with the reason otherwise).
"""

from __future__ import annotations

import collections
import math
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.library import opcheck

import jmipose
from jmipose.ops import _backends
from jmipose.ops.joint_region_gather import joint_region_gather_reference, joint_region_gather_reference_backward
from tests.backends import backend_params, require_backend

TOLERANCE = {torch.float64: 1e-9, torch.float32: 2e-4, torch.float16: 2e-2, torch.bfloat16: 6e-2}
GRAD_NAMES = ("input", "offset", "mask", "weight", "bias")
# 200 hypothesis examples per backend by default, in CI too, except the Triton interpreter on the CPU:
# it runs every program of the three kernels' grids in Python (about 1 s per example on an idle
# 2-core machine, 3 s under load), so the default job gives it 20 small examples (that still cross
# the image border: test_property_matches_reference checks it) and the opt-in fuzz job
# (`.ci/run fuzz-full`, JMIPOSE_FUZZ_EXAMPLES=1000) the full budget.  JMIPOSE_FUZZ_EXAMPLES sets both.
FUZZ_EXAMPLES = int(os.environ.get("JMIPOSE_FUZZ_EXAMPLES", "200"))
INTERPRETER_FUZZ_EXAMPLES = int(os.environ.get("JMIPOSE_FUZZ_EXAMPLES", "20"))


def _dtypes(backend: str) -> list[torch.dtype]:
    if backend in ("reference", "cpp"):
        return [torch.float32, torch.float64]
    if backend == "triton" and not torch.cuda.is_available():
        return [torch.float32]  # the interpreter is slow; half precision is covered on a GPU
    return [torch.float32, torch.float16, torch.bfloat16]


def make_case(batch=2, in_channels=4, out_channels=6, size=(7, 6), kernel=(3, 3), stride=(1, 1), padding=(1, 1),
              dilation=(1, 1), groups=1, offset_groups=1, *, mask=True, bias=True, offset_scale=2.0, seed=0,
              on_grid=True):
    """float64 CPU arguments of one call; offsets on a 1/256 grid (see the module docstring), or, with
    on_grid=False, generic reals (no coordinate on an integer: finite differences see no kink)."""
    gen = torch.Generator().manual_seed(seed)
    kh, kw = kernel
    out_h = (size[0] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (size[1] + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    taps = kh * kw
    offset = torch.randn(batch, 2 * offset_groups * taps, out_h, out_w, generator=gen, dtype=torch.float64)
    case = {
        "input": torch.randn(batch, in_channels, *size, generator=gen, dtype=torch.float64),
        "offset": torch.round(offset * offset_scale * 256) / 256 if on_grid else offset * offset_scale,
        "weight": torch.randn(out_channels, in_channels // groups, kh, kw, generator=gen, dtype=torch.float64),
        "bias": torch.randn(out_channels, generator=gen, dtype=torch.float64) if bias else None,
        "mask": torch.rand(batch, offset_groups * taps, out_h, out_w, generator=gen, dtype=torch.float64)
        if mask else None,
        "stride": stride, "padding": padding, "dilation": dilation,
    }
    return case


def _tensors(case):
    return {name: case[name] for name in GRAD_NAMES}


def run(case, backend, device, dtype, grad_output=None, reference=False):
    """Output and gradients {name: grad} of one call (through the public op, or the reference)."""
    leaves = {name: (t.detach().to(device, dtype, copy=True).requires_grad_() if t is not None else None)
              for name, t in _tensors(case).items()}
    args = (leaves["input"], leaves["offset"], leaves["weight"], leaves["bias"], case["stride"], case["padding"],
            case["dilation"], leaves["mask"])
    output = joint_region_gather_reference(*args) if reference else jmipose.ops.joint_region_gather(
        *args, backend=backend)
    if grad_output is None:
        return output.detach(), {}
    output.backward(grad_output.to(device, dtype))
    return output.detach(), {name: t.grad for name, t in leaves.items() if t is not None}


def rounded_to(case, dtype):
    """The case with every tensor rounded to ``dtype`` (and back to float64): what a kernel sees."""
    return {n: (v.to(dtype).double() if isinstance(v, torch.Tensor) else v) for n, v in case.items()}


def expected_results(case, with_grads=True):
    output = joint_region_gather_reference(case["input"], case["offset"], case["weight"], case["bias"],
                                           case["stride"], case["padding"], case["dilation"], case["mask"])
    grad_output = torch.randn(output.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    if not with_grads:
        return output, grad_output, {}
    out, grads = run(case, "reference", "cpu", torch.float64, grad_output, reference=True)
    return out, grad_output, grads


def _assert_close(actual, expected, dtype, what=""):
    tol = TOLERANCE[dtype]
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual.detach().double().cpu(), expected, rtol=tol, atol=tol * scale,
                               msg=lambda m: f"{what}: {m}")


def check_against_reference(case, backend, device, dtypes, with_grads=True):
    for dtype in dtypes:
        # The truth for inputs rounded to dtype: a float16/bfloat16 offset off the 1/256 grid may
        # move a coordinate across an integer, where the offset gradient jumps.
        expected, grad_output, expected_grads = expected_results(rounded_to(case, dtype), with_grads)
        out, grads = run(case, backend, device, dtype, grad_output)
        assert out.dtype == dtype and out.device.type == device.type and out.is_contiguous()
        _assert_close(out, expected, dtype, f"{backend} {dtype} output")
        for name, grad in grads.items():
            assert grad.dtype == dtype, name
            _assert_close(grad, expected_grads[name], dtype, f"{backend} {dtype} grad {name}")


# ---------------------------------------------------------------------------------------------
# Fixed cases

FIXED_CASES = {
    "3x3": {},
    "1x1": {"kernel": (1, 1), "padding": (0, 0)},
    "stride2": {"stride": (2, 2), "size": (9, 8)},
    "dilation3": {"dilation": (3, 3), "padding": (3, 3), "size": (9, 10)},
    "groups2_offset_groups2": {"in_channels": 4, "out_channels": 6, "groups": 2, "offset_groups": 2},
    "offset_groups_cut_conv_groups": {"in_channels": 6, "out_channels": 4, "groups": 2, "offset_groups": 3},
    "batch1_odd": {"batch": 1, "size": (5, 9), "in_channels": 3, "out_channels": 5, "kernel": (3, 2)},
    "no_mask_no_bias": {"mask": False, "bias": False},
    "asymmetric": {"kernel": (2, 3), "stride": (1, 2), "padding": (0, 2), "dilation": (2, 1), "size": (8, 7)},
    "large_offsets": {"offset_scale": 6.0},
}


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("name", list(FIXED_CASES))
def test_fixed_cases_match_reference(backend, name):
    device = require_backend(backend)
    check_against_reference(make_case(**FIXED_CASES[name]), backend, device, _dtypes(backend))


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("kernel,stride,padding,dilation,groups", [
    ((3, 3), (1, 1), (1, 1), (1, 1), 1), ((1, 1), (2, 2), (0, 0), (1, 1), 2), ((3, 3), (2, 1), (3, 2), (3, 2), 1)])
def test_zero_offsets_is_conv2d(backend, kernel, stride, padding, dilation, groups):
    device = require_backend(backend)
    case = make_case(in_channels=4, out_channels=4, size=(9, 8), kernel=kernel, stride=stride, padding=padding,
                     dilation=dilation, groups=groups, mask=False)
    case["offset"].zero_()
    expected = F.conv2d(case["input"], case["weight"], case["bias"], stride, padding, dilation, groups)
    for dtype in _dtypes(backend):
        out, _ = run(case, backend, device, dtype)
        _assert_close(out, expected, dtype, f"{backend} {dtype}")


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("shift", [(1, 0), (0, -2), (-1, 3), (2, 2)])
def test_integer_offsets_are_a_shifted_conv2d(backend, shift):
    device = require_backend(backend)
    case = make_case(batch=1, in_channels=3, out_channels=2, size=(6, 7), mask=False)
    dy, dx = shift
    case["offset"] = torch.tensor([float(dy), float(dx)], dtype=torch.float64).repeat(9).view(1, 18, 1, 1).expand(
        1, 18, 6, 7).contiguous()
    # input shifted by (dy, dx) with zeros coming in: shifted[y, x] = input[y + dy, x + dx]
    # Tap (i, j) of pixel (y, x) reads input[y - 1 + i + dy, x - 1 + j + dx] (zero outside): a valid
    # convolution of the zero-padded input, shifted by (dy, dx).
    padded = F.pad(case["input"], (4, 4, 4, 4))
    window = padded[:, :, 3 + dy:3 + dy + 8, 3 + dx:3 + dx + 9]
    expected = F.conv2d(window, case["weight"], case["bias"])
    for dtype in _dtypes(backend):
        out, _ = run(case, backend, device, dtype)
        _assert_close(out, expected, dtype, f"{backend} {dtype} shift {shift}")


def _torchvision_sample(image, y, x):
    """torchvision's bilinear_interpolate, transcribed loop by loop (scalar float64)."""
    height, width = image.shape
    if y <= -1 or height <= y or x <= -1 or width <= x:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    value = 0.0
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < height and 0 <= xx < width:
                value += wy * wx * float(image[yy, xx])
    return value


def _torchvision_coordinate_gradient(image, y, x):
    """torchvision's get_coordinate_weight for both directions (scalar float64)."""
    height, width = image.shape
    y0, x0 = math.floor(y), math.floor(x)

    def at(yy, xx):
        return float(image[yy, xx]) if 0 <= yy < height and 0 <= xx < width else 0.0

    v00, v01, v10, v11 = at(y0, x0), at(y0, x0 + 1), at(y0 + 1, x0), at(y0 + 1, x0 + 1)
    ly, lx = y - y0, x - x0
    return lx * (v11 - v01) + (1 - lx) * (v10 - v00), ly * (v11 - v10) + (1 - ly) * (v01 - v00)


@pytest.mark.parametrize("backend", backend_params())
def test_samples_on_and_just_outside_each_border(backend):
    """1x1 kernel, one channel, weight 1: out[p] is the bilinear sample at p's target coordinate."""
    device = require_backend(backend)
    height, width, eps = 5, 7, 1.0 / 256
    ys = [-1 - eps, -1.0, -1 + eps, -0.5, 0.0, 2.25, height - 1.0, height - 0.5, height - eps, float(height),
          height + eps]
    xs = [-1 - eps, -1.0, -1 + eps, 0.0, width - 1.0, width - eps, float(width), width + eps, 3.5]
    targets = [(y, x) for y in ys for x in xs]
    out_h, out_w = 9, 11  # any grid holds 99 targets; the input is 5x6, the kernel 1x1 with padding
    assert len(targets) == out_h * out_w
    padding = ((out_h - height) // 2, (out_w - width) // 2)
    case = make_case(batch=1, in_channels=1, out_channels=1, size=(height, width), kernel=(1, 1), padding=padding,
                     mask=False, bias=False)
    case["weight"] = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    target = torch.tensor(targets, dtype=torch.float64).view(out_h, out_w, 2).permute(2, 0, 1)
    base_y = torch.arange(out_h, dtype=torch.float64).view(-1, 1) - padding[0]
    base_x = torch.arange(out_w, dtype=torch.float64).view(1, -1) - padding[1]
    case["offset"] = torch.stack([target[0] - base_y, target[1] - base_x]).unsqueeze(0)
    for dtype in _dtypes(backend):
        # The coordinates and pixels the kernel sees (float16/bfloat16 round some targets).
        seen = rounded_to(case, dtype)
        image = seen["input"][0, 0]
        coordinates = torch.stack([seen["offset"][0, 0] + base_y, seen["offset"][0, 1] + base_x], -1).view(-1, 2)
        expected = torch.tensor([_torchvision_sample(image, y, x) for y, x in coordinates.tolist()],
                                dtype=torch.float64)
        grad_expected = torch.tensor([_torchvision_coordinate_gradient(image, y, x) for y, x in coordinates.tolist()],
                                     dtype=torch.float64)
        out, grads = run(case, backend, device, dtype, torch.ones(1, 1, out_h, out_w, dtype=torch.float64))
        _assert_close(out.flatten(), expected, dtype, f"{backend} {dtype} border samples")
        _assert_close(grads["offset"][0].reshape(2, -1).t(), grad_expected, dtype, f"{backend} {dtype} border grads")
    check_against_reference(case, backend, device, _dtypes(backend))


@pytest.mark.parametrize("backend", backend_params())
def test_mask_zero_gives_bias_and_mask_one_equals_no_mask(backend):
    device = require_backend(backend)
    case = make_case()
    for dtype in _dtypes(backend):
        case["mask"] = torch.zeros_like(case["mask"])
        out, _ = run(case, backend, device, dtype)
        _assert_close(out, case["bias"].view(1, -1, 1, 1).expand(out.shape), dtype, "mask 0")
        case["mask"] = torch.ones_like(case["mask"])
        with_ones, _ = run(case, backend, device, dtype)
        without, _ = run({**case, "mask": None}, backend, device, dtype)
        _assert_close(with_ones, without.double().cpu(), dtype, "mask 1")


@pytest.mark.parametrize("backend", backend_params())
def test_only_some_gradients(backend):
    """Each input alone requiring grad (the kernels skip the others' work)."""
    device = require_backend(backend)
    case = make_case(batch=1, size=(5, 4), groups=2, offset_groups=2)
    _, grad_output, expected = expected_results(case)
    dtype = torch.float32
    for only in GRAD_NAMES:
        leaves = {n: case[n].to(device, dtype).requires_grad_(n == only) for n in GRAD_NAMES}
        out = jmipose.ops.joint_region_gather(leaves["input"], leaves["offset"], leaves["weight"], leaves["bias"],
                                              1, 1, 1, leaves["mask"], backend=backend)
        (grad,) = torch.autograd.grad(out, leaves[only], grad_output.to(device, dtype))
        _assert_close(grad, expected[only], dtype, f"only {only}")


@pytest.mark.parametrize("backend", backend_params())
def test_non_finite_offsets_read_zero_with_zero_gradient(backend):
    device = require_backend(backend)
    case = make_case(batch=1, size=(6, 5))
    poisoned = case["offset"].clone()
    values = [float("nan"), float("inf"), float("-inf"), 1e30, -1e30, 3e38]
    flat = poisoned.view(-1)
    picks = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(3))[:40]
    for i, index in enumerate(picks.tolist()):
        flat[index] = values[i % len(values)]
    case["offset"] = poisoned
    # Expected: those taps contribute nothing, i.e. the reference with their mask set to zero.
    dead = (~torch.isfinite(poisoned) | (poisoned.abs() > 1e6)).view(1, 9, 2, 6, 5).any(dim=2)
    clean = {**case, "offset": torch.where(torch.isfinite(poisoned) & (poisoned.abs() < 1e6), poisoned, 0.0),
             "mask": case["mask"] * ~dead}
    expected = joint_region_gather_reference(clean["input"], clean["offset"], clean["weight"], clean["bias"], 1, 1,
                                             1, clean["mask"])
    for dtype in _dtypes(backend)[:1]:
        out, grads = run(case, backend, device, dtype, torch.ones_like(expected))
        assert torch.isfinite(out).all()
        _assert_close(out, expected, dtype, "non-finite offsets")
        for name, grad in grads.items():
            assert torch.isfinite(grad).all(), name
        dead_pairs = dead.view(1, 9, 1, 6, 5).expand(1, 9, 2, 6, 5).reshape(poisoned.shape)
        assert (grads["offset"][dead_pairs.to(device)] == 0).all()
        assert (grads["mask"][dead.view(case["mask"].shape).to(device)] == 0).all()


@pytest.mark.parametrize("backend", backend_params())
def test_empty_batch(backend):
    device = require_backend(backend)
    case = make_case(batch=0)
    out, grads = run(case, backend, device, torch.float32, torch.zeros(0, 6, 7, 6))
    assert out.shape == (0, 6, 7, 6)
    assert grads["input"].shape == (0, 4, 7, 6) and (grads["weight"] == 0).all() and (grads["bias"] == 0).all()


@pytest.mark.parametrize("backend", backend_params())
def test_non_contiguous_inputs(backend):
    device = require_backend(backend)
    case = make_case(batch=1, in_channels=6, out_channels=4, size=(5, 6), groups=2, offset_groups=3)
    expected, grad_output, expected_grads = expected_results(case)
    leaves = {n: case[n].to(device, torch.float32).requires_grad_() for n in GRAD_NAMES}
    views = {n: (t.transpose(-1, -2).contiguous().transpose(-1, -2) if t.dim() == 4 else t[::1])
             for n, t in leaves.items()}
    views["input"] = leaves["input"].contiguous(memory_format=torch.channels_last)
    assert not views["offset"].is_contiguous() and not views["input"].is_contiguous()
    out = jmipose.ops.joint_region_gather(views["input"], views["offset"], views["weight"], views["bias"], 1, 1, 1,
                                          views["mask"], backend=backend)
    out.backward(grad_output.to(device, torch.float32))
    _assert_close(out, expected, torch.float32, "permuted output")
    for name in GRAD_NAMES:
        _assert_close(leaves[name].grad, expected_grads[name], torch.float32, f"permuted grad {name}")


# ---------------------------------------------------------------------------------------------
# Property tests


@st.composite
def cases(draw, max_size=7, max_channels=3, max_kernel=3, max_batch=2):
    groups = draw(st.sampled_from([1, 2]))
    offset_groups = draw(st.sampled_from([1, 2, 3]))
    per = draw(st.integers(1, max_channels))
    in_channels = per * math.lcm(groups, offset_groups)
    out_channels = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    size = (draw(st.integers(1, max_size)), draw(st.integers(1, max_size)))
    span = [dilation[i] * (kernel[i] - 1) + 1 for i in range(2)]
    if any(size[i] + 2 * padding[i] < span[i] for i in range(2)):
        padding = tuple(max(padding[i], (span[i] - size[i] + 1) // 2) for i in range(2))
    return make_case(batch=draw(st.integers(1, max_batch)), in_channels=in_channels, out_channels=out_channels,
                     size=size, kernel=kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     offset_groups=offset_groups, mask=draw(st.booleans()), bias=draw(st.booleans()),
                     offset_scale=draw(st.sampled_from([0.0, 0.5, 2.0, 5.0])), seed=draw(st.integers(0, 2**16)))


def border_crossings(case) -> set[str]:
    """How a case's samples meet the image border: "partly outside" where a sampling coordinate lies
    less than one pixel outside (some bilinear corners in, some out), "outside" where it lies at least
    one pixel out (it reads zero)."""
    batch, _, height, width = case["input"].shape
    kh, kw = case["weight"].shape[2:]
    out_h, out_w = case["offset"].shape[2:]
    offset = case["offset"].view(batch, -1, kh, kw, 2, out_h, out_w)
    found = set()
    for axis, (size, kernel, out) in enumerate(((height, kh, out_h), (width, kw, out_w))):
        base = (torch.arange(out, dtype=torch.float64).view(-1, 1) * case["stride"][axis] - case["padding"][axis]
                + torch.arange(kernel, dtype=torch.float64).view(1, -1) * case["dilation"][axis])
        # base[o, k] is the coordinate of tap k of output o along this axis before its offset
        if axis == 0:
            coordinate = offset[:, :, :, :, 0] + base.t().reshape(1, 1, kernel, 1, out, 1)
        else:
            coordinate = offset[:, :, :, :, 1] + base.t().reshape(1, 1, 1, kernel, 1, out)
        if (((coordinate > -1) & (coordinate < 0)) | ((coordinate > size - 1) & (coordinate < size))).any():
            found.add("partly outside")
        if ((coordinate <= -1) | (coordinate >= size)).any():
            found.add("outside")
    return found


@pytest.mark.fuzz
@pytest.mark.parametrize("backend", backend_params())
def test_property_matches_reference(backend):
    device = require_backend(backend)
    interpreted = backend == "triton" and device.type == "cpu"
    dtype = torch.float64 if backend in ("reference", "cpp") else torch.float32
    crossings = collections.Counter()

    @settings(max_examples=INTERPRETER_FUZZ_EXAMPLES if interpreted else FUZZ_EXAMPLES, deadline=None)
    @given(cases(max_size=4, max_channels=1, max_kernel=2, max_batch=1) if interpreted else cases())
    def check(case):
        check_against_reference(case, backend, device, [dtype])
        crossings.update(["examples", *border_crossings(case)])

    check()
    # A budget of ten or more examples must have sampled across the border, where DCN is hardest.
    if crossings["examples"] >= 10:
        assert crossings["partly outside"] and crossings["outside"], crossings


# ---------------------------------------------------------------------------------------------
# Gradients, opcheck, torch.compile


def test_explicit_reference_backward_matches_autograd():
    for name in ("3x3", "groups2_offset_groups2", "asymmetric", "offset_groups_cut_conv_groups"):
        case = make_case(**FIXED_CASES[name])
        _, grad_output, expected = expected_results(case)
        grads = joint_region_gather_reference_backward(grad_output, case["input"], case["offset"], case["mask"],
                                                       case["weight"], case["stride"], case["padding"],
                                                       case["dilation"])
        for grad_name, grad in zip(GRAD_NAMES, grads):
            torch.testing.assert_close(grad, expected[grad_name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", backend_params("reference", "cpp"))
def test_gradcheck_float64(backend):
    require_backend(backend)
    # cpp: full Jacobians on a tiny case, a fast-mode (random projection) check on a grouped one.  The
    # reference's backward is also compared exactly with autograd of its forward (test below), so
    # fast mode is enough there and keeps the eager forward's many small ops off the clock.
    for name, size, fast in (("3x3", (3, 4), backend == "reference"), ("groups2_offset_groups2", (4, 5), True)):
        case = make_case(**{**FIXED_CASES[name], "batch": 1, "size": size}, on_grid=False)
        leaves = [case[n].clone().requires_grad_() for n in ("input", "offset", "weight", "bias", "mask")]

        def f(x, offset, weight, bias, mask):
            return jmipose.ops.joint_region_gather(x, offset, weight, bias, 1, 1, 1, mask, backend=backend)

        assert torch.autograd.gradcheck(f, leaves, fast_mode=fast)


def test_cpp_backward_is_deterministic():
    require_backend("cpp")
    case = make_case(batch=3, in_channels=8, out_channels=8, size=(12, 11), offset_groups=2)
    _, grad_output, _ = expected_results(case, with_grads=False)
    first = run(case, "cpp", "cpu", torch.float32, grad_output)
    second = run(case, "cpp", "cpu", torch.float32, grad_output)
    for name in GRAD_NAMES:
        assert torch.equal(first[1][name], second[1][name]), name


def _op_args(case, device, dtype, layout, requires_grad=True):
    tensors = {n: case[n].detach().to(device, dtype, copy=True) for n in GRAD_NAMES}
    if layout == "permuted":
        tensors = {n: t.transpose(-1, -2).contiguous().transpose(-1, -2) if t.dim() == 4 else t
                   for n, t in tensors.items()}
    tensors = {n: t.requires_grad_(requires_grad) for n, t in tensors.items()}
    return tensors


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("layout", ["contiguous", "permuted"])
def test_opcheck(backend, layout):
    device = require_backend(backend)
    case = make_case(batch=1, in_channels=2, out_channels=2, size=(3, 3), kernel=(2, 1), padding=(0, 0),
                     offset_groups=2)
    t = _op_args(case, device, torch.float32, layout)
    geometry = (1, 1, 0, 0, 1, 1)
    opcheck(torch.ops.jmipose.joint_region_gather.default,
            (t["input"], t["offset"], t["mask"], t["weight"], t["bias"], *geometry, backend))
    t = _op_args(case, device, torch.float32, layout, requires_grad=False)
    grad_output = torch.randn(1, 2, 2, 3, device=device)
    opcheck(torch.ops.jmipose.joint_region_gather_backward.default,
            (grad_output, t["input"], t["offset"], t["mask"], t["weight"], *geometry, [True, True, True, False, True],
             backend), test_utils=("test_schema", "test_faketensor"))


class _GatherBlock(torch.nn.Module):
    """Offsets and mask predicted from the features, then the gather: the CJL's pattern."""

    def __init__(self, channels: int, backend: str):
        super().__init__()
        self.predict = torch.nn.Conv2d(channels, 27, 3, padding=1, dtype=torch.float64)
        self.gather = jmipose.nn.JointRegionGather(channels, channels, 3, padding=1, backend=backend,
                                                   dtype=torch.float64)

    def forward(self, x):
        predicted = self.predict(x)
        return self.gather(x, predicted[:, :18], predicted[:, 18:].sigmoid()).relu()


@pytest.mark.parametrize("backend", backend_params("reference", "cpp", "triton", "cuda"))
def test_torch_compile_fullgraph(backend):
    device = require_backend(backend)
    dtype = torch.float64 if backend in ("reference", "cpp") else torch.float32
    torch._dynamo.reset()
    torch.manual_seed(0)
    block = _GatherBlock(4, backend).to(device, dtype)
    x = torch.randn(1, 4, 5, 4, device=device, dtype=dtype, requires_grad=True)
    eager_out = block(x)
    eager_grads = torch.autograd.grad(eager_out.sum(), [x, *block.parameters()])
    compiled = torch.compile(block, fullgraph=True, backend="inductor" if backend == "cpp" else "aot_eager")
    out = compiled(x)
    grads = torch.autograd.grad(out.sum(), [x, *block.parameters()])
    _assert_close(out, eager_out.double().cpu(), dtype, "compiled output")
    for grad, eager in zip(grads, eager_grads):
        _assert_close(grad, eager.double().cpu(), dtype, "compiled grad")


# ---------------------------------------------------------------------------------------------
# Errors


def _bad_calls():
    x, off, w = torch.randn(1, 4, 5, 5), torch.zeros(1, 18, 5, 5), torch.randn(6, 4, 3, 3)
    m, b = torch.ones(1, 9, 5, 5), torch.zeros(6)
    ok = {"input": x, "offset": off, "weight": w, "bias": b, "padding": 1, "mask": m}
    return [
        ("input rank", {**ok, "input": x[0]}, ValueError, r"input must be a 4-D tensor, got 3-D"),
        ("offset rank", {**ok, "offset": off[0]}, ValueError, r"offset must be a 4-D tensor"),
        ("weight rank", {**ok, "weight": w[0]}, ValueError, r"weight must be a 4-D tensor"),
        ("mask rank", {**ok, "mask": m[0]}, ValueError, r"mask must be a 4-D tensor"),
        ("bias rank", {**ok, "bias": b[None]}, ValueError, r"bias must be a 1-D tensor"),
        ("not a tensor", {**ok, "offset": off.tolist()}, TypeError, r"offset must be a torch.Tensor, got list"),
        ("integer input", {**ok, "input": x.long()}, TypeError, r"input must have a floating dtype .* got torch.int64"),
        ("integer mask", {**ok, "mask": m.int()}, TypeError, r"mask must have a floating dtype"),
        ("mixed dtypes", {**ok, "weight": w.double()}, TypeError, r"one dtype; input is torch.float32, weight is "),
        ("channels", {**ok, "weight": torch.randn(6, 3, 3, 3)}, ValueError,
         r"input channels \(4\) must be a multiple of weight.shape\[1\]"),
        ("out channels", {**ok, "weight": torch.randn(5, 2, 3, 3), "bias": None}, ValueError,
         r"out_channels = 5\) must be divisible by the groups \(2"),
        ("offset channels", {**ok, "offset": torch.zeros(1, 16, 5, 5)}, ValueError,
         r"offset.shape\[1\] must be a positive multiple of 2\*kh\*kw = 18 .* got 16"),
        ("offset groups", {**ok, "offset": torch.zeros(1, 54, 5, 5), "mask": None}, ValueError,
         r"input channels \(4\) must be divisible by the offset groups \(3"),
        ("offset size", {**ok, "offset": torch.zeros(1, 18, 4, 5)}, ValueError,
         r"offset must have shape \(1, 18, 5, 5\) .* got \(1, 18, 4, 5\)"),
        ("offset batch", {**ok, "offset": torch.zeros(2, 18, 5, 5)}, ValueError, r"offset must have shape"),
        ("mask channels", {**ok, "mask": torch.ones(1, 18, 5, 5)}, ValueError,
         r"mask must have shape \(1, 9, 5, 5\) .* got \(1, 18, 5, 5\)"),
        ("bias size", {**ok, "bias": torch.zeros(5)}, ValueError, r"bias must have shape \(6,\), got \(5,\)"),
        ("output size", {**ok, "padding": 0, "input": torch.randn(1, 4, 2, 5)}, ValueError,
         r"output size must be positive, got \(0, 3\)"),
        ("stride", {**ok, "stride": 0}, ValueError, r"stride must be >= 1, got \(0, 0\)"),
        ("padding", {**ok, "padding": (-1, 1)}, ValueError, r"padding must be >= 0, got \(-1, 1\)"),
        ("dilation", {**ok, "dilation": (1, 0)}, ValueError, r"dilation must be >= 1"),
        ("stride type", {**ok, "stride": 1.5}, TypeError, r"stride must be an int or a pair of ints, got 1.5"),
        ("stride triple", {**ok, "stride": (1, 1, 1)}, TypeError, r"stride must be an int or a pair of ints"),
        ("empty weight", {**ok, "weight": torch.randn(0, 4, 3, 3), "bias": None}, ValueError, r"no zero size"),
        ("backend name", {**ok, "backend": "fast"}, ValueError, r"backend must be one of"),
        ("cuda backend on cpu tensors", {**ok, "backend": "cuda"}, jmipose.ops.BackendUnavailableError, r"cuda"),
    ]


@pytest.mark.parametrize("name,kwargs,error,pattern", [pytest.param(*c, id=c[0]) for c in _bad_calls()])
def test_errors_name_the_argument(name, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        jmipose.ops.joint_region_gather(**kwargs)


def test_mixed_devices_are_rejected():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device to mix devices")
    case = make_case()
    with pytest.raises(ValueError, match="one device"):
        jmipose.ops.joint_region_gather(case["input"].float(), case["offset"].float().cuda(), case["weight"].float())


@pytest.mark.parametrize("backend,dtype", [("cpp", torch.float16), ("cpp", torch.bfloat16),
                                           ("reference", torch.float16), ("triton", torch.float64)])
def test_unsupported_dtype_names_the_backend(backend, dtype):
    require_backend(backend)
    case = make_case()
    with pytest.raises(TypeError, match=rf"backend '{backend}' supports .*; got input of dtype {dtype}"):
        run(case, backend, "cpu", dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_on_the_cpu_computes_in_float32(dtype):
    """backend=None with float16/bfloat16 CPU tensors (autocast): computed in float32, returned in the
    input's dtype, with gradients of the inputs' dtypes."""
    case = make_case()
    grad_output = torch.randn(2, 6, 7, 6, dtype=torch.float64)
    output, grads = run(case, None, "cpu", dtype, grad_output)
    assert output.dtype == dtype and all(g.dtype == dtype for g in grads.values())
    rounded = {name: (t.to(dtype).double() if torch.is_tensor(t) else t) for name, t in case.items()}
    want, want_grads = run(rounded, None, "cpu", torch.float64, grad_output.to(dtype).double(), reference=True)
    torch.testing.assert_close(output.double(), want.to(dtype).double(), rtol=2e-2, atol=2e-2)
    for name, grad in grads.items():
        torch.testing.assert_close(grad.double(), want_grads[name].to(dtype).double(), rtol=5e-2, atol=5e-2)


def test_dead_backend_says_why():
    if jmipose.ops.backends()["cuda"].live:
        pytest.skip("cuda is live here")
    case = make_case()
    with pytest.raises(jmipose.ops.BackendUnavailableError, match="not live"):
        run(case, "cuda", "cpu", torch.float32)


def test_cpp_abi_rejects_bad_sizes_without_crashing():
    require_backend("cpp")
    import ctypes

    x, off, w, out = torch.zeros(1, 4, 5, 5), torch.zeros(1, 18, 5, 5), torch.zeros(6, 4, 3, 3), torch.zeros(1, 6, 5, 5)
    good = [1, 4, 5, 5, 6, 3, 3, 5, 5, 1, 1, 1, 1, 1, 1, 1, 1]
    pointers = [_backends.ptr(t) for t in (x, off, None, w, None, out)]

    def call(sizes, dtype=0, ptrs=pointers):
        _backends.call_cpu("jmipose_joint_region_gather_forward_cpu", *ptrs,
                           *[ctypes.c_int64(v) for v in sizes], ctypes.c_int32(dtype))

    call(good)
    for index, value, pattern in [(7, 4, "output size"), (15, 3, "divisible by groups"), (16, 3, "offset_groups"),
                                  (0, -1, "batch must be >= 0"), (9, 0, "stride_h must be in"),
                                  (2, 1 << 40, "height must be in")]:
        sizes = list(good)
        sizes[index] = value
        with pytest.raises(_backends.KernelError, match=pattern):
            call(sizes)
    with pytest.raises(_backends.KernelError, match="dtype code 2"):
        call(good, dtype=2)
    with pytest.raises(_backends.KernelError, match="must not be NULL"):
        call(good, ptrs=[_backends.ptr(None)] * 6)


# ---------------------------------------------------------------------------------------------
# The module, and torchvision as an independent implementation


def test_module_matches_op_and_inits_like_conv2d():
    torch.manual_seed(0)
    layer = jmipose.nn.JointRegionGather(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    assert layer.weight.shape == (6, 2, 3, 2) and layer.bias.shape == (6,)
    bound = 1 / math.sqrt(2 * 3 * 2)
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    x = torch.randn(2, 4, 7, 8)
    offset = torch.randn(2, 2 * 6, 4, 8)
    expected = joint_region_gather_reference(x, offset, layer.weight, layer.bias, (2, 1), 1, (1, 2))
    torch.testing.assert_close(layer(x, offset), expected, rtol=1e-5, atol=1e-5)
    assert "JointRegionGather(4, 6, kernel_size=(3, 2)" in repr(layer)
    with pytest.raises(ValueError, match="divisible by groups"):
        jmipose.nn.JointRegionGather(4, 6, 3, groups=4)


def _torchvision():
    try:
        import torchvision.ops
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available here"
        pytest.skip(f"torchvision does not import here ({type(exc).__name__}: {exc})")
    return torchvision.ops


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("name", ["3x3", "groups2_offset_groups2", "stride2", "dilation3", "asymmetric",
                                  "no_mask_no_bias", "large_offsets"])
def test_matches_torchvision(backend, name):
    tv_ops = _torchvision()
    device = require_backend(backend)
    case = make_case(**FIXED_CASES[name])
    tv_leaves = {n: t.clone().requires_grad_() if t is not None else None for n, t in _tensors(case).items()}
    expected = tv_ops.deform_conv2d(tv_leaves["input"], tv_leaves["offset"], tv_leaves["weight"], tv_leaves["bias"],
                                    case["stride"], case["padding"], case["dilation"], tv_leaves["mask"])
    grad_output = torch.randn(expected.shape, dtype=torch.float64)
    expected.backward(grad_output)
    for dtype in _dtypes(backend):
        out, grads = run(case, backend, device, dtype, grad_output)
        _assert_close(out, expected.detach(), dtype, f"{backend} vs torchvision output")
        for grad_name, grad in grads.items():
            _assert_close(grad, tv_leaves[grad_name].grad, dtype, f"{backend} vs torchvision grad {grad_name}")


def test_module_matches_torchvision_deform_conv2d():
    tv_ops = _torchvision()
    torch.manual_seed(0)
    theirs = tv_ops.DeformConv2d(4, 6, 3, padding=1, groups=2)
    ours = jmipose.nn.JointRegionGather(4, 6, 3, padding=1, groups=2)
    ours.load_state_dict(theirs.state_dict())
    x, offset, mask = torch.randn(2, 4, 5, 6), torch.randn(2, 18, 5, 6), torch.rand(2, 9, 5, 6)
    torch.testing.assert_close(ours(x, offset, mask), theirs(x, offset, mask), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Differentiable once


@pytest.mark.parametrize("backend", backend_params("reference", "cpp", "triton", "cuda"))
def test_double_backward_is_refused_at_the_first_backward(backend):
    """create_graph=True through the op fails at the first backward with the reason (not at the
    second, deep in torch); the same graph then still gives the first derivatives."""
    device = require_backend(backend)
    dtype = torch.float64 if backend in ("reference", "cpp") else torch.float32
    case = make_case(batch=1, size=(4, 5))
    names = ("input", "offset", "weight", "bias", "mask")
    leaves = [case[n].to(device, dtype).requires_grad_() for n in names]
    out = jmipose.ops.joint_region_gather(*leaves[:4], 1, 1, 1, leaves[4], backend=backend)
    with pytest.raises(RuntimeError, match="joint_region_gather is differentiable once: .*create_graph=True"):
        torch.autograd.grad(out.square().sum(), leaves, create_graph=True)
    grads = torch.autograd.grad(out.square().sum(), leaves)
    # the eager reference is differentiable to any order (the way out the message names)
    ref_leaves = [case[n].clone().requires_grad_() for n in names]
    ref_out = joint_region_gather_reference(*ref_leaves[:4], 1, 1, 1, ref_leaves[4])
    expected = torch.autograd.grad(ref_out.square().sum(), ref_leaves, create_graph=True)
    for name, grad, want in zip(names, grads, expected):
        _assert_close(grad, want.detach(), dtype, f"{backend} grad {name}")
    assert torch.autograd.grad(expected[0].sum(), ref_leaves[2])[0].abs().sum() > 0
