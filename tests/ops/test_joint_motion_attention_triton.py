"""The Triton kernels of joint_motion_attention (the host functions of
jmipose.kernels.joint_motion_attention) against the float64 eager reference: both outputs, the
log-sum-exps and all six gradients.  The CUDA backend on a GPU: test_joint_motion_attention_cuda.py.

Without a GPU the Triton kernels run under TRITON_INTERPRET=1 (tests/conftest.py), so shapes are
small: the host picks small tiles for CPU tensors, and one test forces the GPU tile sizes.  Tolerances
are in tests/ops/attention_problems.py (float32: exact IEEE products, ~1e-6 relative error; float16 /
bfloat16, GPU only: 5e-3 / 4e-2 on outputs, 2e-2 / 1e-1 on gradients, relative to each tensor's scale).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.ops.attention_problems import (GRAD_NAMES, assert_matches_reference,
                                          make_problem)

pytest.importorskip("triton")
from jmipose.kernels import joint_motion_attention as jma_triton  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_triton(problem, dtype=torch.float32):
    """Forward and backward through the host functions, inputs rounded to dtype."""
    def cast(t):
        return None if t is None else t.to(DEVICE, dtype)

    def device_mask(m):
        return None if m is None else m.to(DEVICE)

    tensors = [cast(t) for t in problem["tensors"]]
    res_m, res_j = cast(problem["res_m"]), cast(problem["res_j"])
    mask_m, mask_j = device_mask(problem["mask_m"]), device_mask(problem["mask_j"])
    out_m, out_j, lse_m, lse_j = jma_triton.forward(*tensors, res_m, res_j, mask_m, mask_j, problem["scale"])
    grads = jma_triton.backward(*(cast(g) for g in problem["grads"]), *tensors, out_m, out_j, res_m, res_j,
                                mask_m, mask_j, lse_m, lse_j, problem["scale"])
    for grad, tensor in zip(grads, tensors):
        assert grad.dtype == dtype and grad.shape == tensor.shape
    return dict(out=(out_m, out_j), lse=(lse_m, lse_j), grads=list(grads))


def check(problem, dtype=torch.float32):
    got = run_triton(problem, dtype)
    assert_matches_reference(got, problem, dtype)
    return got


# --------------------------------------------------------------------------------------------------
# float32 (the interpreter on CPU; compiled on a GPU)


@pytest.mark.parametrize("head_dim", [16, 32, 48, 64, 128])
def test_every_head_dim_matches_reference(head_dim):
    # N_m != N_j, neither a multiple of the tiles, masks on both sides, one residual
    check(make_problem(1, 2, 37, 21, head_dim, residual="m", seed=head_dim))


@pytest.mark.parametrize("residual,masks", [("none", "none"), ("both", "none"), ("j", "j"), ("both", "both")])
def test_residual_and_mask_combinations(residual, masks):
    check(make_problem(2, 1, 19, 34, 16, residual=residual, masks=masks, seed=len(residual + masks)))


@pytest.mark.parametrize("n_m,n_j", [(1, 1), (1, 40), (33, 1), (32, 16), (48, 17)])
def test_token_counts(n_m, n_j):
    # N = 1, exact multiples of the CPU tiles (32 x 16) and one past them
    check(make_problem(2, 1, n_m, n_j, 32, seed=n_m * 100 + n_j))


def test_masks_follow_the_batch_index():
    # three batch elements x two heads: each batch element has its own masks
    problem = make_problem(3, 2, 20, 26, 16, seed=7)
    problem["mask_m"][1, :10] = True
    problem["mask_j"][2, 5:] = True
    check(problem)


def test_all_masked_rows_give_residual_zero_grads_and_no_nan():
    problem = make_problem(2, 2, 23, 18, 48, residual="m", seed=3)
    problem["mask_j"][0] = True  # batch 0: the motion queries have no key
    problem["mask_m"][1] = True  # batch 1: the joint queries have no key
    got = check(problem)
    out_m, out_j = (t.double().cpu() for t in got["out"])
    lse_m, lse_j = (t.cpu() for t in got["lse"])
    assert torch.equal(out_m[0], problem["res_m"][0].float().double())
    assert torch.all(out_j[1] == 0)
    assert torch.all(torch.isneginf(lse_m[0])) and torch.all(torch.isneginf(lse_j[1]))
    grad_q_m, grad_k_m, grad_v_m, grad_q_j, grad_k_j, grad_v_j = (g.cpu() for g in got["grads"])
    assert torch.all(grad_q_m[0] == 0) and torch.all(grad_k_j[0] == 0) and torch.all(grad_v_j[0] == 0)
    assert torch.all(grad_q_j[1] == 0) and torch.all(grad_k_m[1] == 0) and torch.all(grad_v_m[1] == 0)


def test_gpu_tile_sizes(monkeypatch):
    # The tiles the host picks for an H100 (128-row blocks and more), run here so the interpreter also
    # covers the configuration a GPU uses; the sizes straddle those tiles.
    gpu_configs = jma_triton.launch_config(48, torch.bfloat16, torch.device("cuda"))
    monkeypatch.setattr(jma_triton, "launch_config", lambda *args: gpu_configs)
    check(make_problem(1, 1, 131, 70, 48, seed=11))


def test_non_default_scale():
    # the scale reaches every pass (forward, dQ and dK/dV)
    problem = make_problem(1, 1, 9, 12, 16, seed=9)
    problem["scale"] = 1.0 / math.pi
    check(problem)


def test_backward_is_deterministic():
    problem = make_problem(1, 2, 45, 29, 16, seed=5)
    first = run_triton(problem)["grads"]
    second = run_triton(problem)["grads"]
    for name, a, b in zip(GRAD_NAMES, first, second):
        assert torch.equal(a, b), f"grad {name} differs between two identical runs"


def test_empty_batch():
    problem = make_problem(0, 2, 5, 7, 16, masks="none")
    got = run_triton(problem)
    assert got["out"][0].shape == (0, 2, 5, 16) and got["lse"][1].shape == (0, 2, 7)


def test_rejects_float64_and_wide_heads():
    problem = make_problem(1, 1, 4, 4, 16, masks="none")
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        jma_triton.forward(*problem["tensors"], None, None, None, None, 0.25)
    wide = [t.float().repeat(1, 1, 1, 9) for t in problem["tensors"]]  # d = 144
    with pytest.raises(ValueError, match="head dim"):
        jma_triton.forward(*wide, None, None, None, None, 0.25)


# --------------------------------------------------------------------------------------------------
# GPU only: half precision, and float32 at a model shape


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("head_dim", [16, 48, 64, 128])
def test_triton_half_precision_on_gpu(dtype, head_dim):
    check(make_problem(2, 2, 300, 173, head_dim, seed=head_dim), dtype)


@pytest.mark.gpu
def test_triton_float32_at_a_model_shape_on_gpu():
    check(make_problem(2, 1, 1728, 1728, 48, masks="none", seed=1))


# --------------------------------------------------------------------------------------------------
# Compiled for real GPUs without one: catches what the interpreter cannot (lowering errors, shared
# memory).  Runs in a subprocess because this process runs Triton in interpreter mode.

_COMPILE_FOR_GPUS = r"""
import os, sys
os.environ.pop("TRITON_INTERPRET", None)
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from jmipose.kernels import joint_motion_attention as jma

def signature(kernel, dtype, constants):
    sig, constexprs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in constants:
            sig[name] = "constexpr"
            constexprs[(i,)] = constants[name]
        elif name.startswith(("lse", "delta")):
            sig[name] = "*fp32"
        elif name.startswith("mask"):
            sig[name] = "*u8"
        elif name.endswith("_ptr"):
            sig[name] = "*" + {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
        else:
            sig[name] = "fp32" if name in ("scale", "qk_scale_log2") else "i32"
    return sig, constexprs

for capability in (80, 90):
    for dtype in (torch.bfloat16, torch.float32):
        head_dim = 48
        configs = jma.launch_config(head_dim, dtype, torch.device("cuda"))
        shared = dict(HAS_MASK_M=True, HAS_MASK_J=True, HEAD_DIM=head_dim, BLOCK_D=64, DOT_PRECISION="ieee",
                      WHILE_LOOPS=False)
        kernels = [(jma._joint_motion_attention_forward_kernel, configs.forward, True),
                   (jma._joint_motion_attention_backward_dq_kernel, configs.backward_dq, True),
                   (jma._joint_motion_attention_backward_dkdv_kernel, configs.backward_dkdv, False)]
        for kernel, config, has_residual in kernels:
            constants = dict(shared, BLOCK_M=config.block_m, BLOCK_N=config.block_n)
            if has_residual:
                constants.update(HAS_RES_M=True, HAS_RES_J=True)
            sig, constexprs = signature(kernel, dtype, constants)
            compiled = triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=constexprs),
                                      target=GPUTarget("cuda", capability, 32),
                                      options=dict(num_warps=config.num_warps, num_stages=config.num_stages))
            print(capability, dtype, kernel.__name__, compiled.metadata.shared)
"""


@pytest.mark.slow
def test_kernels_compile_for_sm80_and_sm90(tmp_path):
    env = dict(os.environ, TRITON_CACHE_DIR=str(tmp_path))
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run([sys.executable, "-c", _COMPILE_FOR_GPUS], capture_output=True, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 12
    for line in lines:
        assert int(line.split()[-1]) <= 99 * 1024, f"more shared memory than an sm_86/sm_89 block has: {line}"
