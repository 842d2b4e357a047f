"""Kernel-level contract of op A's Triton backend (jmipose/kernels/joint_region_gather.py).  The CUDA
backend on a GPU: test_joint_region_gather_cuda.py.

Every result is compared with the reference evaluated in float64 on the same dtype-rounded inputs
(tests/ops/joint_region_gather_cases.py has the cases and the tolerance rule).  Without a GPU the
Triton kernels run under TRITON_INTERPRET=1, which is slow: shapes are small, each case checks the
output and all five gradients in one pass, and the half-type and model-shape sweeps are GPU-only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.ops.joint_region_gather_cases import (
    CASES,
    GRAD_NAMES,
    MODEL_CASE,
    Case,
    assert_close,
    assert_matches_reference,
    check_borders,
    check_non_finite_offsets,
    make_inputs,
    reference,
)

pytest.importorskip("triton", reason="triton is not installed")
from jmipose.kernels import joint_region_gather as kernels

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _interpreter_problem() -> str | None:
    """Why the Triton interpreter cannot run these kernels here, or None.  triton 3.6's interpreter
    turns a runtime loop bound into an int with ``int(array_of_shape_1)``, which numpy >= 2.3
    rejects; later triton releases squeeze the array first (3.9 does)."""
    if DEVICE.type == "cuda":
        return None
    import triton
    import triton.language as tl
    from triton.runtime.errors import InterpreterError

    @triton.jit
    def _count_kernel(out_ptr, n):
        total = 0.0
        for _ in range(n):
            total += 1.0
        tl.store(out_ptr, total)

    out = torch.zeros(1)
    try:
        _count_kernel[(1,)](out, 3)
    except InterpreterError as exc:  # it wraps numpy's TypeError
        import numpy

        return (f"triton {triton.__version__}'s interpreter cannot run loops with runtime bounds under numpy "
                f"{numpy.__version__} ({exc}); use a later triton or numpy < 2.3")
    return None if out.item() == 3.0 else "the Triton interpreter miscounts a runtime loop"


_PROBLEM = _interpreter_problem()
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or "")


# Small tiles force several pixel tiles, output blocks, channel blocks (with a partial last one) and
# split reductions of grad weight, as the model's shapes do with the GPU tiles.
SMALL_BLOCKS = kernels.Blocks(p=16, o=16, c=16, num_warps=4)
SMALL_CONFIG = kernels.LaunchConfig(forward=SMALL_BLOCKS, data=SMALL_BLOCKS, weight=SMALL_BLOCKS,
                                    weight_splits=3)


def run_triton(case: Case, inputs: dict, dtype: torch.dtype, needs=None, config=None):
    """The Triton host functions on ``inputs`` (cast to ``dtype`` on DEVICE): output and the five
    gradients (by default every gradient that exists)."""
    def on_device(t):
        return None if t is None else t.to(DEVICE, dtype)

    x, offset, mask, weight, bias, grad_output = (on_device(inputs[n]) for n in (*GRAD_NAMES, "grad_output"))
    out = kernels.forward(x, offset, mask, weight, bias, *case.geometry, config=config)
    if needs is None:
        needs = (True, True, case.with_mask, True, case.with_bias)
    grads = kernels.backward(grad_output, x, offset, mask, weight, *case.geometry, needs, config=config)
    return out, grads


def check_case(case: Case, dtype: torch.dtype, seed: int = 0, config=None) -> None:
    inputs = make_inputs(case, seed, dtype)
    out, grads = run_triton(case, inputs, dtype, config=config)
    assert_matches_reference(case, inputs, out, grads, dtype)


@pytest.mark.parametrize("name", list(CASES))
def test_float32_forward_and_gradients(name):
    check_case(CASES[name], torch.float32, seed=len(name))


@pytest.mark.parametrize("case", [
    # 20 input channels in one segment (two channel blocks, the second partial), 18 outputs (two
    # output blocks), 25 pixels (two pixel tiles), grad weight over two splits.
    Case(batch=2, in_channels=20, out_channels=18, height=6, width=6, kernel=(2, 2), padding=(0, 0)),
    # conv groups of 10 channels, offset groups of 5: segments end inside a block.
    Case(batch=2, in_channels=20, out_channels=18, height=5, width=6, kernel=(1, 2), padding=(0, 0), groups=2,
         offset_groups=4),
], ids=["one_group", "groups2_offset_groups4"])
def test_channels_not_a_multiple_of_the_blocks(case):
    check_case(case, torch.float32, seed=case.groups, config=SMALL_CONFIG)


def test_samples_on_and_just_outside_the_borders():
    check_borders(run_triton, seed=3)


def test_non_finite_offsets_read_zero_and_get_zero_gradients():
    check_non_finite_offsets(run_triton, Case(batch=1, in_channels=4, out_channels=3, height=5, width=5,
                                              offset_groups=2), seed=4)


@pytest.mark.parametrize("needs", [(False, True, False, True, False), (True, False, True, False, True)])
def test_only_the_requested_gradients(needs):
    case = Case(batch=1, in_channels=3, out_channels=2, height=4, width=5)
    inputs = make_inputs(case, 5, torch.float32)
    _, expected_grads = reference(case, inputs)
    _, grads = run_triton(case, inputs, torch.float32, needs=needs)
    for name, wanted, grad, expected in zip(GRAD_NAMES, needs, grads, expected_grads):
        if wanted:
            assert_close(grad, expected, torch.float32, f"grad {name}")
        else:
            assert grad is None, f"grad {name} was not asked for"


def test_empty_batch():
    case = Case(batch=0)
    inputs = make_inputs(case, 6, torch.float32)
    out, grads = run_triton(case, inputs, torch.float32)
    assert out.shape == (0, 3, 6, 5)
    for name, grad in zip(GRAD_NAMES, grads):
        expected_shape = (3,) if name == "bias" else inputs[name].shape
        assert grad.shape == expected_shape and not grad.any(), name


def test_float64_is_refused():
    case = Case(batch=1)
    inputs = make_inputs(case, 8, torch.float64)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        kernels.forward(inputs["input"], inputs["offset"], inputs["mask"], inputs["weight"], None,
                        *case.geometry)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_types(dtype):
    check_case(Case(batch=1, in_channels=4, out_channels=3, height=5, width=4), dtype, seed=7)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", list(CASES))
def test_half_types_on_gpu(name, dtype):
    check_case(CASES[name], dtype, seed=11)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=["float32", "float16", "bfloat16"])
def test_model_shape_on_gpu(dtype):
    check_case(MODEL_CASE, dtype, seed=13)


_COMPILE_SCRIPT = """
import sys
import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from jmipose.kernels import joint_region_gather as kernels

dtype = getattr(torch, sys.argv[1])
pointer = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}[dtype]
config = kernels.launch_config(48, 48, 1, 1, 6912, dtype)
common = {"DOT_FP32": dtype == torch.float32, "FP32_PRECISION": "tf32x3", "INDEX_DTYPE": tl.int32}
launches = [
    (kernels._joint_region_gather_forward_kernel, config.forward, {}, {"HAS_MASK": True, "HAS_BIAS": True}),
    (kernels._joint_region_gather_backward_data_kernel, config.data, {"grad_x_ptr": "*fp32"},
     {"HAS_MASK": True, "NEEDS_INPUT_GRAD": True, "NEEDS_OFFSET_GRAD": True, "NEEDS_MASK_GRAD": True,
      "NEEDS_CORNERS": True}),
    (kernels._joint_region_gather_backward_weight_kernel, config.weight, {"partial_ptr": "*fp32"},
     {"HAS_MASK": True}),
]
for fn, blocks, pointers, flags in launches:
    constexprs = {**flags, **common, "BLOCK_P": blocks.p, "BLOCK_O": blocks.o, "BLOCK_C": blocks.c}
    signature = {name: "constexpr" if name in constexprs else pointers.get(name, pointer)
                 if name.endswith("_ptr") else "i32" for name in fn.arg_names}
    for capability in (80, 90):
        compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                                  target=GPUTarget("cuda", capability, 32), options={"num_warps": blocks.num_warps})
        assert compiled.asm["cubin"], (fn.__name__, capability)
print("compiled")
"""


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kernels_compile_for_sm80_and_sm90(dtype, tmp_path):
    """Compiles the three kernels with the host's GPU tiles for sm_80 and sm_90 (no GPU needed), so
    code that only the compiler rejects (the interpreter accepts it) fails here.  In a subprocess:
    this process's kernels are interpreted (conftest sets TRITON_INTERPRET=1)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT, dtype], capture_output=True, text=True,
                            env=env, check=False)
    assert result.returncode == 0 and "compiled" in result.stdout, result.stderr[-4000:]
