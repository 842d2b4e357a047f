"""joint_motion_attention through every backend: forward and every gradient against the float64
eager reference, gradcheck, opcheck, torch.compile, non-contiguous inputs, errors, and against
``torch.nn.functional.scaled_dot_product_attention`` (two calls) as an independent implementation.

Inputs are N(0, 1) (outputs and gradients are O(1)); each backend's result is compared with the
float64 reference evaluated on the same (dtype-rounded) inputs, ``|x - ref| <= atol + rtol |ref|``:

===================================  =====================  =====================
dtype (where)                        forward (atol, rtol)   gradients (atol, rtol)
===================================  =====================  =====================
float64 (reference, cpp)             1e-10, 1e-9            1e-10, 1e-9
float32 (all; IEEE products on GPU)  2e-5, 1e-4             1e-4, 1e-3
float16 (GPU)                        5e-3, 5e-3             2e-2, 2e-2
bfloat16 (GPU)                       4e-2, 4e-2             1e-1, 1e-1
===================================  =====================  =====================

The triton backend runs under ``TRITON_INTERPRET=1`` on CPU tensors when there is no GPU
(tests/conftest.py), so its shapes here stay small.  ``JMIPOSE_FUZZ_EXAMPLES`` sets the number of
hypothesis examples per backend (default 200).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.library import opcheck

import jmipose
from jmipose.ops.joint_motion_attention import joint_motion_attention_reference
from tests.backends import backend_params, require_backend

GRAD_NAMES = ("q_m", "k_m", "v_m", "q_j", "k_j", "v_j", "res_m", "res_j")
FUZZ_EXAMPLES = int(os.environ.get("JMIPOSE_FUZZ_EXAMPLES", "200"))
_GPU = torch.cuda.is_available()


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors (tests/conftest.py)


def _tolerances(dtype: torch.dtype) -> tuple[dict, dict]:
    """(forward, gradient) tolerances as assert_close kwargs; the table in the module docstring."""
    if dtype == torch.float64:
        return dict(atol=1e-10, rtol=1e-9), dict(atol=1e-10, rtol=1e-9)
    if dtype == torch.float16:
        return dict(atol=5e-3, rtol=5e-3), dict(atol=2e-2, rtol=2e-2)
    if dtype == torch.bfloat16:
        return dict(atol=4e-2, rtol=4e-2), dict(atol=1e-1, rtol=1e-1)
    return dict(atol=2e-5, rtol=1e-4), dict(atol=1e-4, rtol=1e-3)


def _dtypes(backend: str, device: torch.device) -> list[torch.dtype]:
    if backend in ("reference", "cpp") and device.type == "cpu":
        return [torch.float32, torch.float64]
    if device.type == "cuda":
        return [torch.float32, torch.float16, torch.bfloat16]
    return [torch.float32]


def _randn(gen: torch.Generator, shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device, dtype)


@dataclass(frozen=True)
class Case:
    batch: int
    heads: int
    n_m: int
    n_j: int
    d: int
    residual: bool = True
    masks: str = "none"  # "none", "random" (30% of the keys), "all" (some queries have no key at all)

    def __str__(self) -> str:
        residual = "r" if self.residual else ""
        return f"B{self.batch}h{self.heads}m{self.n_m}j{self.n_j}d{self.d}{residual}-{self.masks}"


def _inputs(case: Case, dtype: torch.dtype, device: torch.device, seed: int = 0) -> dict:
    """Token tensors (and masks, residuals) of the case, rounded to dtype, on device."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"q_m": case.n_m, "k_m": case.n_m, "v_m": case.n_m,
              "q_j": case.n_j, "k_j": case.n_j, "v_j": case.n_j}
    if case.residual:
        shapes.update(res_m=case.n_m, res_j=case.n_j)
    inputs = {name: _randn(gen, (case.batch, case.heads, n, case.d), dtype, device)
              for name, n in shapes.items()}
    if case.masks != "none":
        mask_m = torch.rand(case.batch, case.n_m, generator=gen) < 0.3
        mask_j = torch.rand(case.batch, case.n_j, generator=gen) < 0.3
        if case.masks == "all":  # motion queries of batch 0 and joint queries of the last batch have no key
            mask_j[0] = True
            mask_m[-1] = True
        inputs.update(mask_m=mask_m.to(device), mask_j=mask_j.to(device))
    return inputs


def _grad_outputs(case: Case, dtype: torch.dtype, device: torch.device, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return tuple(_randn(gen, (case.batch, case.heads, n, case.d), dtype, device)
                 for n in (case.n_m, case.n_j))


def _split(inputs: dict) -> tuple[list, dict]:
    tokens = [inputs[name] for name in GRAD_NAMES[:6]]
    options = {name: inputs.get(name) for name in ("res_m", "res_j", "mask_m", "mask_j")}
    return tokens, options


def _forward_backward(fn, inputs: dict, grad_outputs, **kwargs):
    """Outputs and the gradients of every float input (None for absent residuals)."""
    leaves = {name: t.detach().clone().requires_grad_(True)
              for name, t in inputs.items() if t.is_floating_point()}
    tokens, options = _split({**inputs, **leaves})
    outputs = fn(*tokens, **options, **kwargs)
    torch.autograd.backward(outputs, grad_outputs)
    grads = {name: leaves[name].grad if name in leaves else None for name in GRAD_NAMES}
    return [o.detach() for o in outputs], grads


def _expected(inputs: dict, grad_outputs, scale=None):
    """The float64 eager reference (differentiated by autograd) on the same inputs."""
    as64 = {name: t.detach().cpu().double() if t.is_floating_point() else t.cpu()
            for name, t in inputs.items()}
    grads64 = [g.detach().cpu().double() for g in grad_outputs]
    return _forward_backward(joint_motion_attention_reference, as64, grads64, scale=scale)


def _check(inputs: dict, backend: str, dtype: torch.dtype, device: torch.device, case: Case,
           scale=None) -> None:
    grad_outputs = _grad_outputs(case, dtype, device)
    outputs, grads = _forward_backward(jmipose.ops.joint_motion_attention, inputs, grad_outputs, scale=scale,
                                       backend=backend)
    expected_outputs, expected_grads = _expected(inputs, grad_outputs, scale=scale)
    forward_tol, grad_tol = _tolerances(dtype)
    for name, out, ref in zip(("out_m", "out_j"), outputs, expected_outputs):
        assert out.dtype == dtype and out.device.type == device.type and out.shape == ref.shape, name
        torch.testing.assert_close(out.cpu().double(), ref, **forward_tol,
                                   msg=lambda m: f"{name} ({case}): {m}")
    for name in GRAD_NAMES:
        if expected_grads[name] is None:
            continue
        grad = grads[name]
        assert grad is not None and grad.dtype == dtype, name
        torch.testing.assert_close(grad.cpu().double(), expected_grads[name], **grad_tol,
                                   msg=lambda m: f"grad {name} ({case}): {m}")


CASES = [
    Case(2, 3, 37, 53, 48),                            # N_m != N_j, no block multiple
    Case(2, 2, 29, 41, 32, residual=False),            # no residuals
    Case(3, 2, 45, 33, 16, masks="random"),
    Case(3, 1, 24, 50, 64, masks="all"),               # all-masked query rows in both directions
    Case(1, 1, 1, 1, 48),                              # N = 1
    Case(2, 1, 1, 9, 16, masks="all"),                 # N_m = 1 and a query without keys
    Case(1, 1, 130, 97, 48, masks="random"),           # several blocks, ragged last blocks
    Case(1, 1, 20, 23, 128),
    Case(2, 1, 17, 19, 20, masks="random"),            # d not a multiple of 16
]


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_float64_reference(backend, case):
    device = require_backend(backend)
    for dtype in _dtypes(backend, device):
        _check(_inputs(case, dtype, device), backend, dtype, device, case)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("d", [16, 32, 48, 64, 128])
def test_head_dims(backend, d):
    device = require_backend(backend)
    case = Case(1, 2, 21, 34, d, masks="random")
    _check(_inputs(case, torch.float32, device, seed=d), backend, torch.float32, device, case)


@pytest.mark.parametrize("backend", backend_params())
def test_explicit_scale(backend):
    device = require_backend(backend)
    case = Case(2, 1, 19, 26, 32, masks="random")
    _check(_inputs(case, torch.float32, device), backend, torch.float32, device, case, scale=0.37)


@pytest.mark.parametrize("backend", backend_params())
def test_all_masked_rows_give_residual_and_zero_gradients(backend):
    device = require_backend(backend)
    case = Case(2, 2, 11, 13, 16, masks="all")
    inputs = _inputs(case, torch.float32, device)
    outputs, grads = _forward_backward(jmipose.ops.joint_motion_attention, inputs,
                                       _grad_outputs(case, torch.float32, device), backend=backend)
    out_m, out_j = outputs
    assert torch.isfinite(out_m).all() and torch.isfinite(out_j).all()
    assert torch.equal(out_m[0], inputs["res_m"][0]) and torch.equal(out_j[-1], inputs["res_j"][-1])
    for name in GRAD_NAMES[:6]:
        assert torch.isfinite(grads[name]).all(), name
    assert torch.all(grads["q_m"][0] == 0) and torch.all(grads["q_j"][-1] == 0)
    # masked keys receive no gradient ([B, h, N, d] indexed by the [B, N] mask moved next to B)
    for name, mask in (("k_j", "mask_j"), ("v_j", "mask_j"), ("k_m", "mask_m"), ("v_m", "mask_m")):
        assert torch.all(grads[name].transpose(1, 2)[inputs[mask]] == 0), name


@pytest.mark.parametrize("backend", backend_params())
def test_nan_query_gives_nan_in_its_row_only(backend):
    device = require_backend(backend)
    case = Case(1, 1, 9, 12, 16)
    inputs = _inputs(case, torch.float32, device)
    inputs["q_m"][0, 0, 3] = float("nan")
    tokens, options = _split(inputs)
    out_m, out_j = jmipose.ops.joint_motion_attention(*tokens, **options, backend=backend)
    assert torch.isnan(out_m[0, 0, 3]).all()
    finite_rows = [i for i in range(case.n_m) if i != 3]
    assert torch.isfinite(out_m[0, 0, finite_rows]).all() and torch.isfinite(out_j).all()


def _fuzz_cases(backend: str):
    """Shapes for hypothesis.  The Triton interpreter costs ~0.1 s per launch plus more per block, so
    its shapes stay tiny (the fixed cases above cover several query blocks for it)."""
    small = backend == "triton" and not _GPU
    return st.builds(
        Case, batch=st.integers(1, 2 if small else 3), heads=st.integers(1, 1 if small else 2),
        n_m=st.integers(1, 20 if small else 40), n_j=st.integers(1, 20 if small else 40),
        d=st.sampled_from([16, 32, 48] if small else [16, 32, 48, 64]) | st.integers(1, 33),
        residual=st.booleans(), masks=st.sampled_from(["none", "random", "all"]))


@pytest.mark.fuzz
@pytest.mark.parametrize("backend", backend_params())
def test_hypothesis_shapes(backend):
    device = require_backend(backend)

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None)
    @given(case=_fuzz_cases(backend), dtype=st.sampled_from(_dtypes(backend, device)),
           seed=st.integers(0, 2**16))
    def check(case, dtype, seed):
        _check(_inputs(case, dtype, device, seed), backend, dtype, device, case)

    check()


@pytest.mark.parametrize("backend", backend_params("reference", "cpp"))
def test_gradcheck_float64(backend):
    require_backend(backend)
    cpu = torch.device("cpu")
    for case, seed in ((Case(2, 1, 6, 5, 3, masks="all"), 0), (Case(1, 2, 4, 7, 5), 3)):
        inputs = {name: t.requires_grad_(t.is_floating_point())
                  for name, t in _inputs(case, torch.float64, cpu, seed).items()}
        tokens, options = _split(inputs)

        def fn(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j):
            return jmipose.ops.joint_motion_attention(q_m, k_m, v_m, q_j, k_j, v_j, res_m=res_m, res_j=res_j,
                                                      mask_m=options["mask_m"], mask_j=options["mask_j"],
                                                      backend=backend)

        assert torch.autograd.gradcheck(fn, (*tokens, options["res_m"], options["res_j"]))


def _op_args(inputs: dict, backend: str, scale: float = 0.3):
    tokens, options = _split(inputs)
    return (*tokens, options["res_m"], options["res_j"], options["mask_m"], options["mask_j"], scale, backend)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("layout", ["contiguous", "permuted"])
def test_opcheck(backend, layout):
    device = require_backend(backend)
    case = Case(1, 2, 9, 6, 16, masks="random")
    inputs = _inputs(case, torch.float32, device)
    if layout == "permuted":  # same values, [B, N, h, d] storage seen as [B, h, N, d]
        inputs = {name: t.transpose(1, 2).contiguous().transpose(1, 2) if t.dim() == 4 else t
                  for name, t in inputs.items()}
        assert not inputs["q_m"].is_contiguous()
    for name in GRAD_NAMES:
        inputs[name].requires_grad_(True)
    opcheck(torch.ops.jmipose.joint_motion_attention.default, _op_args(inputs, backend))
    detached = {name: t.detach() for name, t in inputs.items()}
    outputs = torch.ops.jmipose.joint_motion_attention(*_op_args(detached, backend))
    grad_outputs = _grad_outputs(case, torch.float32, device)
    tokens = [detached[name] for name in GRAD_NAMES[:6]]
    opcheck(torch.ops.jmipose.joint_motion_attention_backward.default,
            (*grad_outputs, *tokens, outputs[0], outputs[1], detached["res_m"], detached["res_j"],
             detached["mask_m"], detached["mask_j"], outputs[2], outputs[3], 0.3, backend))


@pytest.mark.parametrize("backend", backend_params())
def test_projected_views_and_gradients(backend):
    """q, k, v as non-contiguous views of one projected tensor (how the interaction block calls it)."""
    device = require_backend(backend)
    batch, heads, n_m, n_j, d = 2, 2, 15, 22, 16
    gen = torch.Generator().manual_seed(5)
    motion = torch.randn(batch, n_m, 3 * heads * d, generator=gen).to(device).requires_grad_(True)
    joint = torch.randn(batch, n_j, 3 * heads * d, generator=gen).to(device).requires_grad_(True)

    def heads_of(tokens, n):  # [B, N, 3 h d] -> three [B, h, N, d] strided views
        return tokens.view(batch, n, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)

    results = {}
    for name in (backend, "reference"):
        q_m, k_m, v_m = heads_of(motion, n_m)
        q_j, k_j, v_j = heads_of(joint, n_j)
        assert not q_m.is_contiguous()
        out_m, out_j = jmipose.ops.joint_motion_attention(q_m, k_m, v_m, q_j, k_j, v_j, res_m=q_m, res_j=q_j,
                                                          backend=name)
        (out_m.square().sum() + out_j.sin().sum()).backward()
        results[name] = (out_m.detach(), out_j.detach(), motion.grad.clone(), joint.grad.clone())
        motion.grad, joint.grad = None, None
    for got, expected in zip(results[backend], results["reference"]):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", backend_params("reference", "cpp", "triton"))
def test_torch_compile_fullgraph(backend):
    device = require_backend(backend)
    torch._dynamo.reset()
    case = Case(2, 1, 13, 18, 16, masks="random")
    inputs = _inputs(case, torch.float32, device)
    tokens, options = _split(inputs)

    def block(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j):
        out_m, out_j = jmipose.ops.joint_motion_attention(q_m * 2, k_m, v_m, q_j, k_j, v_j.cos(), res_m=res_m,
                                                          res_j=res_j, mask_m=options["mask_m"],
                                                          mask_j=options["mask_j"], backend=backend)
        return (out_m.square().sum() + out_j.tanh().sum())

    compiled = torch.compile(block, fullgraph=True)
    leaves = [t.clone().requires_grad_(True) for t in (*tokens, options["res_m"], options["res_j"])]
    eager_leaves = [t.detach().double().requires_grad_(True) for t in leaves]
    loss = compiled(*leaves)
    loss.backward()

    def reference_block(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j):
        out_m, out_j = joint_motion_attention_reference(q_m * 2, k_m, v_m, q_j, k_j, v_j.cos(), res_m=res_m,
                                                        res_j=res_j, mask_m=options["mask_m"].cpu(),
                                                        mask_j=options["mask_j"].cpu())
        return (out_m.square().sum() + out_j.tanh().sum())

    expected = reference_block(*[t.cpu() for t in eager_leaves])
    expected.backward()
    torch.testing.assert_close(loss.detach().cpu().double(), expected.detach(), atol=1e-3, rtol=1e-4)
    for leaf, ref in zip(leaves, eager_leaves):
        torch.testing.assert_close(leaf.grad.cpu().double(), ref.grad, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("backend", backend_params())
def test_matches_sdpa_pair(backend):
    """Against two calls of torch's scaled_dot_product_attention (an independent implementation)."""
    device = require_backend(backend)
    case = Case(2, 2, 33, 27, 32, masks="random")
    inputs = _inputs(case, torch.float32, device, seed=11)
    inputs["mask_j"][:, 0] = False  # SDPA gives NaN for a query without keys; keep one key everywhere
    inputs["mask_m"][:, 0] = False
    tokens, options = _split(inputs)
    q_m, k_m, v_m, q_j, k_j, v_j = tokens
    out_m, out_j = jmipose.ops.joint_motion_attention(*tokens, **options, backend=backend)
    with torch.no_grad():
        keys_j = ~options["mask_j"][:, None, None, :]  # SDPA's bool mask: True = takes part
        keys_m = ~options["mask_m"][:, None, None, :]
        sdpa_m = options["res_m"] + F.scaled_dot_product_attention(q_m, k_j, v_j, attn_mask=keys_j)
        sdpa_j = options["res_j"] + F.scaled_dot_product_attention(q_j, k_m, v_m, attn_mask=keys_m)
    tol = _tolerances(torch.float32)[0]
    torch.testing.assert_close(out_m, sdpa_m, **tol)
    torch.testing.assert_close(out_j, sdpa_j, **tol)


def test_cpp_is_bitwise_deterministic_across_thread_counts():
    """Same bits for 1, 2 and 3 OpenMP threads.  The backward picks its schedule from the thread count
    (cpu.cpp: one task per direction and head with 1 or 2 threads here, the two-pass split with 3), and
    every schedule accumulates each gradient row in the same order."""
    from jmipose.ops import _backends

    require_backend("cpp")
    lib = _backends.cpu_lib()
    lib.omp_get_max_threads.restype = ctypes.c_int  # libgomp, found through the library's dependencies
    saved = lib.omp_get_max_threads()
    case = Case(1, 1, 200, 230, 48, masks="random")
    inputs = _inputs(case, torch.float32, torch.device("cpu"))
    grad_outputs = _grad_outputs(case, torch.float32, torch.device("cpu"))
    results = []
    try:
        for threads in (1, 2, 3, 1):
            lib.omp_set_num_threads(ctypes.c_int(threads))
            outputs, grads = _forward_backward(jmipose.ops.joint_motion_attention, inputs, grad_outputs,
                                               backend="cpp")
            results.append([*outputs, *(g for g in grads.values() if g is not None)])
    finally:
        lib.omp_set_num_threads(ctypes.c_int(saved))
    for other in results[1:]:
        for got, first in zip(other, results[0]):
            assert torch.equal(got, first)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_on_the_cpu_computes_in_float32(dtype, monkeypatch):
    """backend=None with float16/bfloat16 CPU tensors (autocast): the cpp backend computes in float32
    and hands back the input's dtype, gradients included, instead of a half-precision eager run."""
    require_backend("cpp")
    case = Case(2, 2, 21, 13, 16, masks="random")
    inputs = _inputs(case, dtype, torch.device("cpu"))
    grad_outputs = _grad_outputs(case, dtype, torch.device("cpu"))
    backends = []
    real_op = torch.ops.jmipose.joint_motion_attention

    def spy(*args):
        backends.append((args[11], args[0].dtype))  # the op's arguments: 6 tokens, 2 residuals, 2 masks, scale, backend
        return real_op(*args)

    monkeypatch.setattr(torch.ops.jmipose, "joint_motion_attention", spy)
    outputs, grads = _forward_backward(jmipose.ops.joint_motion_attention, inputs, grad_outputs)
    assert backends == [("cpp", torch.float32)]
    # the float64 reference on the half-rounded inputs, rounded like the result
    expected_outputs, expected_grads = _expected(inputs, grad_outputs)
    for out, ref in zip(outputs, expected_outputs):
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), ref.to(dtype).double(), atol=2e-2, rtol=2e-2)
    for name in GRAD_NAMES:
        assert grads[name].dtype == dtype, name
        torch.testing.assert_close(grads[name].double(), expected_grads[name].to(dtype).double(),
                                   atol=5e-2, rtol=5e-2, msg=lambda m: f"grad {name}: {m}")


def test_empty_batch_and_no_keys():
    require_backend("cpp")
    for backend in ("reference", "cpp"):
        q = torch.randn(0, 1, 5, 16)
        out_m, out_j = jmipose.ops.joint_motion_attention(q, q, q, q, q, q, backend=backend)
        assert out_m.shape == (0, 1, 5, 16) and out_j.shape == (0, 1, 5, 16)
        q_m, q_j, res_m = torch.randn(1, 1, 4, 16), torch.randn(1, 1, 0, 16), torch.randn(1, 1, 4, 16)
        out_m, out_j = jmipose.ops.joint_motion_attention(q_m, q_m, q_m, q_j, q_j, q_j, res_m=res_m,
                                                          backend=backend)
        assert torch.equal(out_m, res_m) and out_j.shape == (1, 1, 0, 16)


def test_errors_name_the_argument():
    q = torch.randn(2, 3, 5, 16)
    p = torch.randn(2, 3, 7, 16)
    op = jmipose.ops.joint_motion_attention
    with pytest.raises(ValueError, match=r"q_m must be a 4-D tensor, got 3-D"):
        op(q[0], q, q, p, p, p)
    with pytest.raises(TypeError, match="k_j must be a torch.Tensor"):
        op(q, q, q, p, None, p)
    with pytest.raises(TypeError, match="v_m must have a floating dtype"):
        op(q, q, q.long(), p, p, p)
    with pytest.raises(TypeError, match="one dtype"):
        op(q, q, q, p, p.double(), p)
    with pytest.raises(ValueError, match=r"k_m must have shape \[B, h, N, d\] = \[2, 3, 5, 16\].*"
                                         r"got \[2, 3, 6, 16\]"):
        op(q, torch.randn(2, 3, 6, 16), q, p, p, p)
    with pytest.raises(ValueError, match=r"v_j must have shape .*\[2, 3, 7, 16\].*got \[2, 3, 7, 32\]"):
        op(q, q, q, p, p, torch.randn(2, 3, 7, 32))
    with pytest.raises(ValueError, match=r"q_j must have shape .*got \[1, 3, 7, 16\]"):
        op(q, q, q, torch.randn(1, 3, 7, 16), p, p)
    with pytest.raises(ValueError, match=r"k_j must have shape .*got \[2, 2, 7, 16\]"):
        op(q, q, q, p, torch.randn(2, 2, 7, 16), p)
    with pytest.raises(ValueError, match=r"res_m must have shape .*\[2, 3, 5, 16\].*got \[2, 3, 7, 16\]"):
        op(q, q, q, p, p, p, res_m=p)
    with pytest.raises(TypeError, match=r"mask_j must have dtype torch.bool"):
        op(q, q, q, p, p, p, mask_j=torch.zeros(2, 7))
    with pytest.raises(ValueError, match=r"mask_m must have shape \[B, N_m\] = \[2, 5\], got \[2, 7\]"):
        op(q, q, q, p, p, p, mask_m=torch.zeros(2, 7, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"mask_j must be a bool torch.Tensor or None"):
        op(q, q, q, p, p, p, mask_j=[True] * 7)
    with pytest.raises(ValueError, match="scale must be finite"):
        op(q, q, q, p, p, p, scale=float("nan"))
    with pytest.raises(TypeError, match="scale must be a real number"):
        op(q, q, q, p, p, p, scale="0.5")
    with pytest.raises(ValueError, match="head dimension d must be >= 1"):
        e = torch.randn(2, 3, 5, 0)
        op(e, e, e, e, e, e)
    with pytest.raises(TypeError, match=r"backend 'cpp' supports float32, float64; got q_m of dtype "
                                        r"torch.float16"):
        h = q.half()
        op(h, h, h, h, h, h, backend="cpp")
    with pytest.raises(ValueError, match="backend must be one of"):
        op(q, q, q, p, p, p, backend="fast")
    if _GPU:
        with pytest.raises(ValueError, match="one device"):
            op(q, q, q, p, p, p.cuda())


def test_asking_for_a_dead_backend_says_why():
    if jmipose.ops.backends()["cuda"].live:
        pytest.skip("cuda is live here")
    q = torch.randn(1, 1, 3, 16)
    with pytest.raises(jmipose.ops.BackendUnavailableError, match="not live"):
        jmipose.ops.joint_motion_attention(q, q, q, q, q, q, backend="cuda")


def test_cpp_rejects_bad_sizes_without_crashing():
    """The C ABI validates sizes itself (a caller other than the Python wrapper gets an error)."""
    from jmipose.ops import _backends

    require_backend("cpp")
    q = torch.randn(1, 1, 4, 16)
    out, lse = torch.empty_like(q), torch.empty(1, 1, 4)
    pointers = [_backends.ptr(t) for t in (q, q, q, q, q, q, None, None, None, None, out, out, lse, lse)]

    def call(batch, heads, n_m, n_j, d, scale=0.25, dtype=0):
        sizes = [ctypes.c_int64(v) for v in (batch, heads, n_m, n_j, d)]
        _backends.call_cpu("jmipose_joint_motion_attention_forward_cpu", *pointers, *sizes,
                           ctypes.c_double(scale), ctypes.c_int32(dtype))

    for args, message in [((1, 1, -4, 4, 16), "sizes must be >= 0"), ((1, 1, 4, 4, 0), "head_dim must be in"),
                          ((1, 1, 4, 4, 16, float("inf")), "scale must be finite"),
                          ((1, 1, 4, 4, 16, 0.25, 2), "dtype code 2 is not supported"),
                          ((1 << 40, 1 << 20, 4, 4, 16), "overflow")]:
        with pytest.raises(jmipose.ops.KernelError, match=message):
            call(*args)
    null_q = [_backends.ptr(None)] + pointers[1:]
    sizes = [ctypes.c_int64(v) for v in (1, 1, 4, 4, 16)]
    with pytest.raises(jmipose.ops.KernelError, match="q_m is NULL"):
        _backends.call_cpu("jmipose_joint_motion_attention_forward_cpu", *null_q, *sizes,
                           ctypes.c_double(0.25), ctypes.c_int32(0))


@pytest.mark.parametrize("backend", backend_params())
def test_double_backward_is_refused_at_the_first_backward(backend):
    """create_graph=True through the op fails at the first backward with the reason (not at the
    second, deep in torch); the same graph then still gives the first derivatives."""
    device = require_backend(backend)
    dtype = torch.float64 if backend in ("reference", "cpp") else torch.float32
    gen = torch.Generator().manual_seed(0)
    values = [torch.randn(2, 2, n, 16, generator=gen, dtype=torch.float64) for n in (7, 7, 7, 5, 5, 5, 7, 5)]
    leaves = [v.to(device, dtype).requires_grad_() for v in values]
    out_m, out_j = jmipose.ops.joint_motion_attention(*leaves[:6], res_m=leaves[6], res_j=leaves[7],
                                                      backend=backend)
    loss = out_m.square().sum() + out_j.square().sum()
    with pytest.raises(RuntimeError, match="joint_motion_attention is differentiable once: .*create_graph=True"):
        torch.autograd.grad(loss, leaves, create_graph=True)
    grads = torch.autograd.grad(loss, leaves)
    # the eager reference is differentiable to any order (the way out the message names)
    ref_leaves = [v.clone().requires_grad_() for v in values]
    ref_m, ref_j = joint_motion_attention_reference(*ref_leaves[:6], res_m=ref_leaves[6], res_j=ref_leaves[7])
    expected = torch.autograd.grad(ref_m.square().sum() + ref_j.square().sum(), ref_leaves, create_graph=True)
    tol = _tolerances(dtype)[1]
    for grad, want in zip(grads, expected):
        torch.testing.assert_close(grad.double().cpu(), want.detach(), **tol)
    assert torch.autograd.grad(expected[0].sum(), ref_leaves[4])[0].abs().sum() > 0
