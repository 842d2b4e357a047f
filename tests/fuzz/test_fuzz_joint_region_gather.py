"""Fuzzing joint_region_gather through every live backend against the float64 reference.

Each example draws a geometry (kernel, stride, padding, dilation, groups, offset groups, empty batch,
zero-height/width images, sizes up to 33x33 for the compiled backends), a dtype, a memory layout per
tensor (transposed, channels-last, stride-2, a storage offset of one element, a stride-0 broadcast),
offsets of one kind (on the 1/256 grid, huge, NaN/+-inf sprinkled, exact integers on the borders),
optionally NaN/+-inf in the input, weight and mask values, and compares the output and all five
gradients with the float64 reference (tests/fuzz/common.py says how).  A second fuzzer corrupts a
valid call and checks it raises the documented TypeError/ValueError naming the argument.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import jmipose
from jmipose.ops.joint_region_gather import _DTYPES, joint_region_gather_reference
from tests.backends import backend_params, require_backend
from tests.fuzz.common import (HUGE, LAYOUTS, NON_FINITE, Tally, assert_documented_error, assert_gradients_match,
                               assert_matches, budget, dtypes_for, invalid_call_examples, lay_out, not_a_float_tensor,
                               resize_argument, seeds, set_argument, sprinkle)

pytestmark = pytest.mark.fuzz
NAMES = ("input", "offset", "mask", "weight", "bias")


@st.composite
def geometries(draw, small: bool):
    groups = draw(st.sampled_from([1, 2]))
    offset_groups = draw(st.sampled_from([1, 2, 3]))
    in_channels = draw(st.integers(1, 1 if small else 3)) * math.lcm(groups, offset_groups)
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = [draw(st.integers(0, 3)), draw(st.integers(0, 3))]
    big = not small and draw(st.integers(0, 9)) == 0  # now and then a large-but-allowed image
    top = 5 if small else (33 if big else 9)
    size = [draw(st.integers(0, top)), draw(st.integers(0, top))]
    for i in range(2):  # the output must have at least one pixel: pad what the kernel's span needs
        span = dilation[i] * (kernel[i] - 1) + 1
        padding[i] = max(padding[i], (span - size[i] + 1) // 2)
    # the first choice is the one hypothesis favours (and shrinks to): a real batch, empty 1 time in 4
    return dict(batch=draw(st.sampled_from([1, 2, 1, 0]) if not small else st.sampled_from([1, 1, 1, 0])),
                in_channels=in_channels, out_channels=groups * draw(st.integers(1, 3)), size=tuple(size),
                kernel=kernel, stride=stride, padding=tuple(padding), dilation=dilation, groups=groups,
                offset_groups=offset_groups, mask=draw(st.booleans()), bias=draw(st.booleans()))


def make_tensors(g: dict, offsets: str, values: str, seed: int) -> dict:
    """float64 CPU tensors of one call."""
    gen = torch.Generator().manual_seed(seed)
    (kh, kw), taps = g["kernel"], g["kernel"][0] * g["kernel"][1]
    out = [(g["size"][i] + 2 * g["padding"][i] - g["dilation"][i] * (g["kernel"][i] - 1) - 1) // g["stride"][i] + 1
           for i in range(2)]
    b, og = g["batch"], g["offset_groups"]
    offset = torch.round(torch.randn(b, 2 * og * taps, *out, generator=gen, dtype=torch.float64) * 3 * 256) / 256
    if offsets == "huge":
        offset = sprinkle(offset, HUGE, 0.3, seed + 1)
    elif offsets == "nonfinite":
        offset = sprinkle(offset, NON_FINITE + HUGE[:2], 0.3, seed + 1)
    elif offsets == "border":  # integer offsets that put samples exactly on -1, 0, H-1, H (and beyond)
        offset = torch.randint(-4, 5, offset.shape, generator=gen).to(torch.float64)
    tensors = {
        "input": torch.randn(b, g["in_channels"], *g["size"], generator=gen, dtype=torch.float64),
        "offset": offset,
        "mask": torch.rand(b, og * taps, *out, generator=gen, dtype=torch.float64) if g["mask"] else None,
        "weight": torch.randn(g["out_channels"], g["in_channels"] // g["groups"], kh, kw, generator=gen,
                              dtype=torch.float64),
        "bias": torch.randn(g["out_channels"], generator=gen, dtype=torch.float64) if g["bias"] else None,
    }
    if values == "nonfinite":
        for k, name in enumerate(("input", "weight", "mask")):
            if tensors[name] is not None:
                tensors[name] = sprinkle(tensors[name], NON_FINITE, 0.05, seed + 2 + k)
    return tensors


def expected(tensors: dict, g: dict, grad_output: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Output and the five gradients of the float64 reference (autograd)."""
    leaves = {n: t.clone().requires_grad_() for n, t in tensors.items() if t is not None}
    out = joint_region_gather_reference(leaves["input"], leaves["offset"], leaves["weight"], leaves.get("bias"),
                                        g["stride"], g["padding"], g["dilation"], leaves.get("mask"))
    names = list(leaves)
    grads = torch.autograd.grad(out, [leaves[n] for n in names], grad_output, allow_unused=True,
                                materialize_grads=True) if out.numel() else [torch.zeros_like(leaves[n])
                                                                             for n in names]
    return out.detach(), dict(zip(names, grads))


def actual(tensors: dict, g: dict, grad_output: torch.Tensor, backend: str, device, dtype, layouts: dict):
    leaves = {n: t.to(device, dtype).requires_grad_() for n, t in tensors.items() if t is not None}
    args = {n: lay_out(t, layouts[n]) for n, t in leaves.items()}
    out = jmipose.ops.joint_region_gather(args["input"], args["offset"], args["weight"], args.get("bias"),
                                          g["stride"], g["padding"], g["dilation"], args.get("mask"),
                                          backend=backend)
    assert out.dtype == dtype and out.device.type == device.type and out.is_contiguous()
    grads = torch.autograd.grad(out, list(leaves.values()), grad_output.to(device, dtype), allow_unused=True,
                                materialize_grads=True)
    return out.detach(), dict(zip(leaves, grads))


@pytest.mark.parametrize("backend", backend_params())
def test_fuzz_matches_float64_reference(backend):
    device = require_backend(backend)
    small = backend == "triton" and device.type == "cpu"
    dtypes = dtypes_for(backend, device, _DTYPES)
    tally = Tally(f"joint_region_gather[{backend}]")

    @settings(max_examples=budget(backend, device), deadline=None)
    @given(g=geometries(small), dtype=st.sampled_from(dtypes), seed=seeds,
           offsets=st.sampled_from(["grid", "huge", "nonfinite", "border"]),
           values=st.sampled_from(["finite", "finite", "nonfinite"]),
           layouts=st.fixed_dictionaries({n: st.sampled_from(LAYOUTS) for n in NAMES}))
    def check(g, dtype, seed, offsets, values, layouts):
        tensors = make_tensors(g, offsets, values, seed)
        rounded = {n: (t.to(dtype).double() if t is not None else None) for n, t in tensors.items()}
        out_shape = (g["batch"], g["out_channels"], *tensors["offset"].shape[2:])
        grad_output = torch.randn(out_shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        grad_output = grad_output.to(dtype).double()
        want, want_grads = expected(rounded, g, grad_output)
        got, got_grads = actual(tensors, g, grad_output, backend, device, dtype, layouts)
        nonfinite = values == "nonfinite"
        tally.add(dtype, layouts, f"offsets_{offsets}", f"values_{values}", batch_0=g["batch"] == 0,
                  zero_size_image=0 in g["size"], image_over_9=max(g["size"]) > 9, stride_3=3 in g["stride"],
                  dilation_3=3 in g["dilation"])
        assert_matches(got, want, dtype, f"{backend} output", nonfinite)
        assert_gradients_match(got_grads, want_grads, dtype, backend, nonfinite)

    check()
    tally.write()


# ---------------------------------------------------------------------------------------------
# Invalid calls

def _valid_call(seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {"input": torch.randn(2, 4, 5, 6, generator=gen), "offset": torch.randn(2, 18, 5, 6, generator=gen),
            "weight": torch.randn(6, 2, 3, 3, generator=gen), "bias": torch.randn(6, generator=gen),
            "mask": torch.rand(2, 9, 5, 6, generator=gen), "stride": 1, "padding": 1, "dilation": 1}


def _corruptions():
    cases = []
    for name, rank in (("input", 4), ("offset", 4), ("weight", 4), ("mask", 4), ("bias", 1)):
        # the wrong rank: a 4-D tensor flattened to 7 entries, the 1-D bias given a leading dim
        wrong_rank = (lambda t: t.reshape(-1)[:7]) if rank != 1 else (lambda t: t[None])
        cases.append((set_argument(name, wrong_rank), name, ValueError))
        cases += not_a_float_tensor(name)
        cases.append((set_argument(name, lambda t: t.to(torch.bool)), name, TypeError))
    # (tensor, dim, entries added, what the error names)
    resized = [("offset", 1, 1, "offset"), ("offset", 2, -1, "offset"), ("offset", 0, 1, "offset"),
               ("mask", 1, 2, "mask"), ("mask", 3, 1, "mask"), ("bias", 0, 1, "bias"),
               ("weight", 1, 1, "input channels"), ("weight", 0, -6, "weight")]
    cases += [(resize_argument(name, dim, delta), named, ValueError) for name, dim, delta, named in resized]
    cases.append((set_argument("weight", lambda t: t.double()), "one dtype", TypeError))
    bad_geometry = [("stride", 0, ValueError), ("stride", (1, -2), ValueError), ("padding", -1, ValueError),
                    ("dilation", (0, 1), ValueError), ("stride", 1.5, TypeError), ("padding", (1, 1, 1), TypeError),
                    ("dilation", True, TypeError), ("stride", "2", TypeError)]
    cases += [(set_argument(name, value), name, error) for name, value, error in bad_geometry]
    cases.append((set_argument("padding", 2 ** 40), "offset", ValueError))  # an output too large to index
    return cases


CORRUPTIONS = _corruptions()


@invalid_call_examples(CORRUPTIONS)
def test_fuzz_invalid_calls_raise_the_documented_error(index, seed, backend):
    assert_documented_error("joint_region_gather", CORRUPTIONS[index], _valid_call(seed),
                            lambda call: jmipose.ops.joint_region_gather(**call, backend=backend))
