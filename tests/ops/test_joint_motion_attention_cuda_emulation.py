"""The CUDA source of joint_motion_attention, run on the CPU.

CI compiles csrc/joint_motion_attention/cuda.cu with nvcc but has no GPU to run it.  Here the same file,
unchanged, is compiled by the host C++ compiler against the emulated CUDA runtime in
tests/cuda_emulation (std::threads for CUDA threads, barriers, shuffles, and mma.sync rebuilt from
the PTX ISA fragment layout), and its C ABI is called with CPU tensors.  That checks the kernels'
indexing, tiling, masking, online softmax, the register-fragment bookkeeping of both the tensor-core
path (float16/bfloat16) and the FMA path (float32), the three-pass backward, and the host code (grid
shape, shared-memory opt-in, argument checks), against the float64 reference.  What it cannot check:
the real instruction timing, memory-model races the barriers hide, and nvcc-specific code generation;
the `gpu` tests cover those when a device is lent.
"""

from __future__ import annotations

import ctypes

import pytest
import torch

from jmipose.ops import _abi
from tests.cuda_emulation.build import load_op
from tests.ops.attention_problems import assert_matches_reference, make_problem

DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
H100_SHARED = 227 * 1024


@pytest.fixture(scope="module")
def emulated():
    return load_op("joint_motion_attention")


def _pointer(t):
    return None if t is None else t.data_ptr()


_size_order = _abi.size_getter(_abi.JOINT_MOTION_ATTENTION_SIZES)  # the C ABI's order, defined once


def _launches(lib):
    info = []
    for i in range(lib.emu_launch_count()):
        values = (ctypes.c_longlong * 4)()
        lib.emu_launch_info(i, values)
        info.append(dict(grid=(values[0], values[1]), threads=values[2], shared=values[3]))
    return info


def run_emulated(lib, problem, dtype, shared_limit=H100_SHARED):
    """Forward then backward through the C ABI, as jmipose/ops/joint_motion_attention.py calls it.
    Outputs start as NaN so anything the kernels fail to write shows up."""
    lib.emu_reset(shared_limit)

    def cast(t):
        return None if t is None else t.to(dtype).contiguous()

    def mask_bytes(m):
        return None if m is None else m.contiguous().view(torch.uint8)

    q_m, k_m, v_m, q_j, k_j, v_j = (cast(t) for t in problem["tensors"])
    res_m, res_j = cast(problem["res_m"]), cast(problem["res_j"])
    mask_m, mask_j = mask_bytes(problem["mask_m"]), mask_bytes(problem["mask_j"])
    batch, heads, n_m, head_dim = q_m.shape
    n_j = q_j.shape[2]
    out_m, out_j = torch.full_like(q_m, float("nan")), torch.full_like(q_j, float("nan"))
    lse_m = torch.full((batch, heads, n_m), float("nan"))
    lse_j = torch.full((batch, heads, n_j), float("nan"))
    functions = _abi.bind(lib, "cuda", ("jmipose_joint_motion_attention_forward_cuda",
                                        "jmipose_joint_motion_attention_backward_cuda", "jmipose_cuda_last_error"))
    sizes = _size_order({"batch": batch, "heads": heads, "n_m": n_m, "n_j": n_j, "head_dim": head_dim})
    tail = (*sizes, problem["scale"], DTYPE_CODES[dtype], 0, None)  # scale, dtype, device 0, the null stream
    rc = functions["jmipose_joint_motion_attention_forward_cuda"](
        *(_pointer(t) for t in (q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, out_m, out_j,
                                lse_m, lse_j)), *tail)
    assert rc == 0, functions["jmipose_cuda_last_error"]().decode()
    grad_out_m, grad_out_j = (cast(g) for g in problem["grads"])
    grads = [torch.full(t.shape, float("nan")) for t in (q_m, k_m, v_m, q_j, k_j, v_j)]  # float32 buffers
    rc = functions["jmipose_joint_motion_attention_backward_cuda"](
        *(_pointer(t) for t in (grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j,
                                mask_m, mask_j, lse_m, lse_j, *grads)), *tail)
    assert rc == 0, functions["jmipose_cuda_last_error"]().decode()
    return dict(out=(out_m, out_j), lse=(lse_m, lse_j), grads=[g.to(dtype) for g in grads], launches=_launches(lib))


def test_float32_fma_path(emulated):
    # d = 48 padded to 64, N_m != N_j, neither a multiple of the 64-row tiles, masks, one residual
    problem = make_problem(1, 2, 70, 23, 48, residual="m", seed=1)
    got = run_emulated(emulated, problem, torch.float32)
    assert_matches_reference(got, problem, torch.float32)
    # forward, then delta, dK/dV and dQ; (batch, head, block) flattened on grid.x, the direction on grid.y
    assert [launch["grid"] for launch in got["launches"]] == [(2 * 2, 2), (18, 2), (4, 2), (4, 2)]


def test_bfloat16_tensor_core_path(emulated):
    problem = make_problem(1, 2, 37, 66, 64, residual="j", seed=2)
    assert_matches_reference(run_emulated(emulated, problem, torch.bfloat16), problem, torch.bfloat16)


def test_all_masked_rows_and_single_tokens(emulated):
    problem = make_problem(2, 1, 1, 9, 16, residual="m", seed=3)
    problem["mask_j"][0] = True  # batch 0: the motion query has no key
    got = run_emulated(emulated, problem, torch.float16)
    assert_matches_reference(got, problem, torch.float16)
    assert torch.equal(got["out"][0][0], problem["res_m"][0].half())
    assert torch.all(torch.isneginf(got["lse"][0][0]))
    assert torch.all(got["grads"][0][0] == 0) and torch.all(got["grads"][4][0] == 0)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("head_dim", [16, 20, 32, 48, 64, 128])
def test_every_dtype_and_head_dim(emulated, dtype, head_dim):
    # d = 20: rows of 40/80 bytes take the element-wise (non-vectorised) tile copy
    problem = make_problem(2, 1, 33, 65, head_dim, seed=head_dim)
    assert_matches_reference(run_emulated(emulated, problem, dtype), problem, dtype)


@pytest.mark.slow
def test_one_side_without_tokens(emulated):
    # N_m = 0: the joint queries attend to nothing (output = residual, zero gradients), NULL m pointers
    problem = make_problem(1, 2, 0, 5, 16, masks="none", seed=4)
    got = run_emulated(emulated, problem, torch.float32)
    assert torch.equal(got["out"][1], problem["res_j"].float())
    assert all(torch.all(g == 0) for g in got["grads"])


def test_shared_memory_beyond_the_default_is_reserved(emulated):
    # float32 at d = 64 needs more than the 48 KB default: cudaFuncSetAttribute must be called first
    problem = make_problem(1, 1, 5, 6, 64, masks="none", seed=5)
    got = run_emulated(emulated, problem, torch.float32)
    assert max(launch["shared"] for launch in got["launches"]) > 48 * 1024
    # every configuration fits the 99 KB opt-in limit of sm_86/sm_89 ...
    run_emulated(emulated, problem, torch.float32, shared_limit=99 * 1024)
    # ... and a device with less reports it by name instead of failing the launch
    with pytest.raises(AssertionError, match="bytes of shared memory per block"):
        run_emulated(emulated, problem, torch.float32, shared_limit=40 * 1024)


def test_argument_errors_are_reported(emulated):
    emulated.emu_reset(H100_SHARED)
    null = ctypes.c_void_p(0)
    sizes = [ctypes.c_int64(v) for v in (1, 1, 4, 4)]
    rc = emulated.jmipose_joint_motion_attention_forward_cuda(*[null] * 14, *sizes, ctypes.c_int64(256),
                                                              ctypes.c_double(1.0), ctypes.c_int32(0),
                                                              ctypes.c_int32(0), null)
    assert rc != 0 and b"head_dim must be in 1..128" in emulated.jmipose_cuda_last_error()
    rc = emulated.jmipose_joint_motion_attention_forward_cuda(*[null] * 14, *sizes, ctypes.c_int64(16),
                                                              ctypes.c_double(1.0), ctypes.c_int32(0),
                                                              ctypes.c_int32(0), null)
    assert rc != 0 and b"must not be NULL" in emulated.jmipose_cuda_last_error()
    problem = make_problem(1, 1, 3, 3, 16, masks="none")
    with pytest.raises(AssertionError, match="unsupported dtype code 1"):
        run_emulated(emulated, problem, torch.float64)
