"""Op B's CUDA backend on a GPU, through the public op, against the float64 eager reference (marker
``gpu``: skipped without a device): both outputs and all six gradients.  Without a GPU, the CUDA
source itself runs under the CPU emulation of the CUDA runtime:
test_joint_motion_attention_cuda_emulation.py.

Problems and tolerances: tests/ops/attention_problems.py.
"""

from __future__ import annotations

import pytest
import torch

import jmipose
from tests.ops.attention_problems import (GRAD_NAMES, TOLERANCES, assert_close_scaled, make_problem, reference_results,
                                          rounded)

pytestmark = pytest.mark.gpu
DEVICE = torch.device("cuda")


def run_public_op(problem, dtype, backend):
    """Outputs and the six input gradients through jmipose.ops.joint_motion_attention."""
    def cast(t):
        return None if t is None else t.to(DEVICE, dtype)

    leaves = [cast(t).requires_grad_(True) for t in problem["tensors"]]
    out_m, out_j = jmipose.ops.joint_motion_attention(
        *leaves, res_m=cast(problem["res_m"]), res_j=cast(problem["res_j"]), scale=problem["scale"],
        mask_m=None if problem["mask_m"] is None else problem["mask_m"].to(DEVICE),
        mask_j=None if problem["mask_j"] is None else problem["mask_j"].to(DEVICE), backend=backend)
    torch.autograd.backward([out_m, out_j], [cast(g) for g in problem["grads"]])
    return (out_m, out_j), [t.grad for t in leaves]


def check_public_op(problem, dtype, backend):
    out_rel, grad_rel = TOLERANCES[dtype]
    expected = reference_results(problem if dtype == torch.float32 else rounded(problem, dtype))
    outs, grads = run_public_op(problem, dtype, backend)
    for name, a, e in zip(("out_m", "out_j"), outs, expected["out"]):
        assert a.dtype == dtype
        assert_close_scaled(a, e, out_rel, name)
    for name, a, e in zip(GRAD_NAMES, grads, expected["grads"]):
        assert a.dtype == dtype
        assert_close_scaled(a, e, grad_rel, f"grad {name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("head_dim", [16, 32, 48, 64, 128])
@pytest.mark.parametrize("n_m,n_j", [(1, 1), (77, 300), (1000, 999)])
def test_cuda_backend_matches_reference(dtype, head_dim, n_m, n_j):
    problem = make_problem(2, 3, n_m, n_j, head_dim, residual="j", seed=n_m + head_dim)
    problem["mask_m"][1] = True  # batch 1: the joint queries have no key
    check_public_op(problem, dtype, "cuda")


def test_cuda_backend_with_many_batch_heads():
    # B * h = 70,000 > 65,535, the limit of grid.y / grid.z: the flattened grid must cover them all
    check_public_op(make_problem(700, 100, 3, 2, 16, masks="none", seed=2), torch.float32, "cuda")


def test_cuda_backend_on_a_side_stream():
    problem = make_problem(4, 2, 500, 400, 48, seed=4)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        check_public_op(problem, torch.float32, "cuda")
    stream.synchronize()
