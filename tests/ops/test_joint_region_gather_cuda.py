"""Op A's CUDA backend on a GPU, through the public op, against the float64 reference (marker ``gpu``:
skipped without a device).  Without a GPU, the CUDA source itself runs under the CPU emulation of
the CUDA runtime: test_joint_region_gather_cuda_emulation.py.

Cases, inputs and tolerances: tests/ops/joint_region_gather_cases.py.
"""

from __future__ import annotations

import pytest
import torch

import jmipose
from tests.ops.joint_region_gather_cases import (
    CASES,
    GRAD_NAMES,
    MODEL_CASE,
    Case,
    assert_matches_reference,
    check_borders,
    check_non_finite_offsets,
    make_inputs,
)

pytestmark = pytest.mark.gpu


def run_cuda(case: Case, inputs: dict, dtype: torch.dtype):
    """Output and the five gradients of the public op on the cuda backend (inputs cast to ``dtype``)."""
    status = jmipose.ops.backends()["cuda"]
    if not status.live:
        pytest.skip(f"cuda backend not live: {status.reason}")
    leaves = {n: None if inputs[n] is None else inputs[n].to("cuda", dtype).requires_grad_()
              for n in GRAD_NAMES}
    out = jmipose.ops.joint_region_gather(leaves["input"], leaves["offset"], leaves["weight"], leaves["bias"],
                                          case.stride, case.padding, case.dilation, leaves["mask"],
                                          backend="cuda")
    out.backward(inputs["grad_output"].to("cuda", dtype))
    return out.detach(), tuple(None if leaves[n] is None else leaves[n].grad for n in GRAD_NAMES)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", [*CASES, "model"])
def test_cuda_backend_matches_float64_reference(name, dtype):
    case = MODEL_CASE if name == "model" else CASES[name]
    inputs = make_inputs(case, 17, dtype)
    out, grads = run_cuda(case, inputs, dtype)
    assert_matches_reference(case, inputs, out, grads, dtype)


def test_cuda_backend_borders_and_non_finite_offsets():
    check_borders(run_cuda, seed=19)
    check_non_finite_offsets(run_cuda, MODEL_CASE, seed=19)
