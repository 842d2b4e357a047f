"""Fuzzing joint_motion_attention through every live backend against the float64 reference.

Each example draws B, h, N_m, N_j (zero included), d (1..64, now and then a large-but-allowed token
count for the compiled backends), residuals, key masks (none, random, all keys masked, all but one), the
scale (default, zero, negative, large), a value range, NaN/+-inf sprinkled into the inputs, and a
memory layout per tensor (tests/fuzz/common.py); the outputs and the eight gradients are compared with
the float64 reference.  A second fuzzer corrupts a valid call and checks the documented error.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import jmipose
from jmipose.ops.joint_motion_attention import _DTYPES, joint_motion_attention_reference
from tests.backends import backend_params, require_backend
from tests.fuzz.common import (LAYOUTS, NON_FINITE, Tally, assert_documented_error, assert_gradients_match,
                               assert_matches, budget, dtypes_for, invalid_call_examples, lay_out, not_a_float_tensor,
                               resize_argument, seeds, set_argument, sprinkle)

pytestmark = pytest.mark.fuzz
TOKENS = ("q_m", "k_m", "v_m", "q_j", "k_j", "v_j", "res_m", "res_j")


@st.composite
def problems(draw, small: bool):
    big = not small and draw(st.integers(0, 14)) == 0
    top = 12 if small else (300 if big else 40)
    # the first choice is the one hypothesis favours (and shrinks to): a real batch, empty 1 time in 4
    return dict(batch=draw(st.sampled_from([1, 2, 1, 0] if not small else [1, 1, 1, 0])),
                heads=draw(st.integers(1, 1 if small else 3)),
                n_m=draw(st.integers(0, top)), n_j=draw(st.integers(0, top)),
                d=draw(st.sampled_from([1, 2, 3, 8, 16, 17, 32, 64] if not small else [1, 3, 16])),
                residual=draw(st.sampled_from(["none", "m", "j", "both"])),
                masks=draw(st.sampled_from(["none", "random", "all", "all_but_one"])),
                scale=draw(st.sampled_from([None, None, 0.0, -0.7, 1.5])),
                magnitude=draw(st.sampled_from([1.0, 2.0])))


def make_inputs(p: dict, values: str, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    shape_m, shape_j = (p["batch"], p["heads"], p["n_m"], p["d"]), (p["batch"], p["heads"], p["n_j"], p["d"])
    out = {}
    for name, shape in zip(TOKENS[:6], (shape_m,) * 3 + (shape_j,) * 3):
        out[name] = torch.randn(shape, generator=gen, dtype=torch.float64) * p["magnitude"]
    out["res_m"] = torch.randn(shape_m, generator=gen, dtype=torch.float64) if p["residual"] in ("m", "both") else None
    out["res_j"] = torch.randn(shape_j, generator=gen, dtype=torch.float64) if p["residual"] in ("j", "both") else None
    for name, tokens in (("mask_m", p["n_m"]), ("mask_j", p["n_j"])):
        if p["masks"] == "none":
            out[name] = None
            continue
        mask = torch.rand(p["batch"], tokens, generator=gen) < 0.4
        if p["masks"] == "all":
            mask[:] = True
        elif p["masks"] == "all_but_one" and tokens:
            mask[:] = True
            mask[:, tokens - 1] = False
        out[name] = mask
    if values == "nonfinite":
        for k, name in enumerate(TOKENS):
            if out[name] is not None:
                out[name] = sprinkle(out[name], NON_FINITE, 0.03, seed + 10 + k)
    return out


def _call(fn, inputs: dict, scale, **kwargs):
    return fn(*(inputs[n] for n in TOKENS[:6]), res_m=inputs["res_m"], res_j=inputs["res_j"], scale=scale,
              mask_m=inputs["mask_m"], mask_j=inputs["mask_j"], **kwargs)


def _grads(outputs, leaves: dict, grad_outputs):
    names = [n for n in TOKENS if leaves.get(n) is not None]
    if not any(o.numel() for o in outputs):
        return {n: torch.zeros_like(leaves[n]) for n in names}
    grads = torch.autograd.grad(outputs, [leaves[n] for n in names], grad_outputs, allow_unused=True,
                                materialize_grads=True)
    return dict(zip(names, grads))


def expected(inputs: dict, scale, grad_outputs):
    leaves = {n: (t.clone().requires_grad_() if t is not None and t.is_floating_point() else t)
              for n, t in inputs.items()}
    outputs = _call(joint_motion_attention_reference, leaves, scale)
    return [o.detach() for o in outputs], _grads(outputs, leaves, grad_outputs)


def actual(inputs: dict, scale, grad_outputs, backend, device, dtype, layouts: dict):
    leaves = {n: (t.to(device, dtype).requires_grad_() if t.is_floating_point() else t.to(device))
              if t is not None else None for n, t in inputs.items()}
    args = {n: (lay_out(t, layouts.get(n, "contiguous")) if t is not None else None) for n, t in leaves.items()}
    outputs = _call(jmipose.ops.joint_motion_attention, args, scale, backend=backend)
    for out, query in zip(outputs, (args["q_m"], args["q_j"])):
        assert out.dtype == dtype and out.shape == query.shape and out.device.type == device.type
    grads = _grads(outputs, leaves, [g.to(device, dtype) for g in grad_outputs])
    return [o.detach() for o in outputs], grads


@pytest.mark.parametrize("backend", backend_params())
def test_fuzz_matches_float64_reference(backend):
    device = require_backend(backend)
    small = backend == "triton" and device.type == "cpu"
    dtypes = dtypes_for(backend, device, _DTYPES)
    tally = Tally(f"joint_motion_attention[{backend}]")

    @settings(max_examples=budget(backend, device), deadline=None)
    @given(p=problems(small), dtype=st.sampled_from(dtypes), seed=seeds,
           values=st.sampled_from(["finite", "finite", "finite", "nonfinite"]),
           layouts=st.fixed_dictionaries({n: st.sampled_from(LAYOUTS) for n in TOKENS}))
    def check(p, dtype, seed, values, layouts):
        inputs = make_inputs(p, values, seed)
        rounded = {n: (t.to(dtype).double() if t is not None and t.is_floating_point() else t)
                   for n, t in inputs.items()}
        gen = torch.Generator().manual_seed(seed + 1)
        grad_outputs = [torch.randn(inputs[q].shape, generator=gen, dtype=torch.float64).to(dtype).double()
                        for q in ("q_m", "q_j")]
        want, want_grads = expected(rounded, p["scale"], grad_outputs)
        got, got_grads = actual(inputs, p["scale"], grad_outputs, backend, device, dtype, layouts)
        nonfinite = values == "nonfinite"
        tally.add(dtype, layouts, f"values_{values}", f"masks_{p['masks']}", f"scale_{p['scale']}",
                  f"residual_{p['residual']}", batch_0=p["batch"] == 0, no_tokens=0 in (p["n_m"], p["n_j"]),
                  tokens_over_40=max(p["n_m"], p["n_j"]) > 40)
        for name, g, w in zip(("out_m", "out_j"), got, want):
            assert_matches(g, w, dtype, f"{backend} {name}", nonfinite)
        assert_gradients_match(got_grads, want_grads, dtype, backend, nonfinite)

    check()
    tally.write()


# ---------------------------------------------------------------------------------------------
# Invalid calls

def _valid_call(seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    m, j = (2, 2, 5, 8), (2, 2, 3, 8)
    call = {n: torch.randn(m if n.endswith("_m") else j, generator=gen) for n in TOKENS}
    call["mask_m"] = torch.zeros(2, 5, dtype=torch.bool)
    call["mask_j"] = torch.zeros(2, 3, dtype=torch.bool)
    call["scale"] = None
    return call


def _corruptions():
    cases = []
    for name in TOKENS:
        cases += [(set_argument(name, lambda t: t[0]), name, ValueError), *not_a_float_tensor(name),
                  (resize_argument(name, 3, 1), name, ValueError)]
    for name in TOKENS[1:]:
        cases.append((set_argument(name, lambda t: t.double()), "one dtype", TypeError))
        cases.append((resize_argument(name, 0, 1), name, ValueError))
    for name in ("k_m", "v_m", "k_j", "v_j", "res_m", "res_j"):
        cases.append((resize_argument(name, 2, 1), name, ValueError))
    for name in ("mask_m", "mask_j"):
        cases += [(set_argument(name, lambda t: t.float()), name, TypeError),
                  (set_argument(name, lambda t: t[0]), name, ValueError),
                  (resize_argument(name, 1, 2), name, ValueError), (set_argument(name, [[True]]), name, TypeError)]
    cases += [(set_argument("scale", float("nan")), "scale", ValueError),
              (set_argument("scale", float("inf")), "scale", ValueError),
              (set_argument("scale", "0.5"), "scale", TypeError), (set_argument("scale", True), "scale", TypeError),
              (set_argument("scale", torch.tensor(0.5)), "scale", TypeError)]
    return cases


CORRUPTIONS = _corruptions()


def _call_op(call: dict, backend):
    return jmipose.ops.joint_motion_attention(*(call[n] for n in TOKENS[:6]), res_m=call["res_m"],
                                              res_j=call["res_j"], scale=call["scale"], mask_m=call["mask_m"],
                                              mask_j=call["mask_j"], backend=backend)


@invalid_call_examples(CORRUPTIONS)
def test_fuzz_invalid_calls_raise_the_documented_error(index, seed, backend):
    assert_documented_error("joint_motion_attention", CORRUPTIONS[index], _valid_call(seed),
                            lambda call: _call_op(call, backend))
