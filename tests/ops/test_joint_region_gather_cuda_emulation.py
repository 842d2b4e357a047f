"""The CUDA source of joint_region_gather (csrc/joint_region_gather/cuda.cu: kernels, launch code and
C ABI), compiled with g++ against the CPU emulation of the CUDA runtime (tests/cuda_emulation) and run
on CPU tensors, against the float64 reference.

CI has no GPU, so this is where the CUDA code's index math, tiling, shared-memory synchronisation
(a __syncthreads() that not every thread reaches aborts instead of hanging) and host logic are
exercised.  It does not test what only a GPU shows (memory model, real atomics, half-precision
conversions, speed): the ``gpu`` tests in test_joint_region_gather_cuda.py do.  float32 only.
"""

from __future__ import annotations

import ctypes

import pytest
import torch

from jmipose.ops import _abi
from tests.cuda_emulation.build import load_op
from tests.ops.joint_region_gather_cases import (
    CASES,
    GRAD_NAMES,
    Case,
    assert_matches_reference,
    check_borders,
    check_non_finite_offsets,
    make_inputs,
)


@pytest.fixture(scope="module")
def emulated_library() -> ctypes.CDLL:
    return load_op("joint_region_gather")


def _pointer(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


_size_order = _abi.size_getter(_abi.JOINT_REGION_GATHER_SIZES)


def _sizes(case: Case) -> tuple[int, ...]:
    """The size arguments in the C ABI's order (jmipose.ops._abi, the one definition)."""
    (kernel_h, kernel_w), (out_h, out_w) = case.kernel, case.out_size
    return _size_order({
        "batch": case.batch, "in_channels": case.in_channels, "height": case.height, "width": case.width,
        "out_channels": case.out_channels, "kernel_h": kernel_h, "kernel_w": kernel_w, "out_h": out_h,
        "out_w": out_w, "stride_h": case.stride[0], "stride_w": case.stride[1], "pad_h": case.padding[0],
        "pad_w": case.padding[1], "dil_h": case.dilation[0], "dil_w": case.dilation[1], "groups": case.groups,
        "offset_groups": case.offset_groups})


def run_emulated(lib: ctypes.CDLL, case: Case, inputs: dict):
    """Forward and backward through the C ABI, exactly as jmipose.ops calls the CUDA library (float32,
    device 0, the null stream; the functions bound from the ABI table); every gradient buffer starts
    as NaN, so one not fully written shows."""
    functions = _abi.bind(lib, "cuda", ("jmipose_joint_region_gather_forward_cuda",
                                        "jmipose_joint_region_gather_backward_cuda", "jmipose_cuda_last_error"))
    tensors = {n: None if inputs[n] is None else inputs[n].float().contiguous()
               for n in (*GRAD_NAMES, "grad_output")}
    tail = (*_sizes(case), 0, 0, None)  # dtype float32, device 0, the null stream
    out = torch.full((case.batch, case.out_channels, *case.out_size), float("nan"))
    status = functions["jmipose_joint_region_gather_forward_cuda"](
        *[_pointer(tensors[n]) for n in ("input", "offset", "mask", "weight", "bias")], _pointer(out), *tail)
    assert status == 0, functions["jmipose_cuda_last_error"]().decode()
    grads = [None if tensors[n] is None else torch.full_like(tensors[n], float("nan")) for n in GRAD_NAMES]
    status = functions["jmipose_joint_region_gather_backward_cuda"](
        *[_pointer(tensors[n]) for n in ("grad_output", "input", "offset", "mask", "weight")],
        *[_pointer(g) for g in grads], *tail)
    assert status == 0, functions["jmipose_cuda_last_error"]().decode()
    return out, grads


# Beyond the shared cases: more than one 64-pixel tile, more than 64 outputs (two forward output
# tiles, two staged grad_out chunks in the backward), channel chunks of 16 with a partial last one.
TILED_CASE = Case(batch=1, in_channels=40, out_channels=70, height=9, width=10, kernel=(2, 2), padding=(0, 0),
                  offset_groups=2)
FAST = ("3x3_pad1", "groups2_offset_groups3")


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in FAST else [pytest.mark.slow])
                                  for n in CASES])
def test_cases(emulated_library, name):
    case = CASES[name]
    inputs = make_inputs(case, 21, torch.float32)
    assert_matches_reference(case, inputs, *run_emulated(emulated_library, case, inputs), torch.float32)


def test_several_tiles_and_chunks(emulated_library):
    inputs = make_inputs(TILED_CASE, 22, torch.float32)
    out, grads = run_emulated(emulated_library, TILED_CASE, inputs)
    assert_matches_reference(TILED_CASE, inputs, out, grads, torch.float32)


def test_borders_and_non_finite_offsets(emulated_library):
    def run(case, inputs, dtype):
        return run_emulated(emulated_library, case, inputs)

    check_borders(run, seed=23)
    check_non_finite_offsets(run, Case(batch=2, in_channels=4, out_channels=3, height=5, width=5, offset_groups=2),
                             seed=24)


def test_empty_batch_and_bad_sizes(emulated_library):
    case = Case(batch=0)
    inputs = make_inputs(case, 25, torch.float32)
    out, grads = run_emulated(emulated_library, case, inputs)
    assert out.shape == (0, 3, 6, 5)
    assert not grads[3].any() and not grads[4].any()  # weight and bias gradients are zero

    bad = Case(batch=1)
    inputs = make_inputs(bad, 26, torch.float32)
    pointers = [_pointer(inputs[n]) for n in ("input", "offset", "mask", "weight", "bias")]  # never read
    sizes = list(_sizes(bad))
    sizes[_abi.JOINT_REGION_GATHER_SIZES.index("out_h")] = bad.out_size[0] + 1  # an output height that does not match
    out = torch.empty(1, 3, bad.out_size[0] + 1, bad.out_size[1])
    tail = [ctypes.c_int32(0), ctypes.c_void_p(0)]  # device, stream
    status = emulated_library.jmipose_joint_region_gather_forward_cuda(*pointers, _pointer(out), *sizes,
                                                                       ctypes.c_int32(0), *tail)
    assert status != 0 and b"output size" in emulated_library.jmipose_cuda_last_error()
    status = emulated_library.jmipose_joint_region_gather_forward_cuda(*pointers, _pointer(out), *_sizes(bad),
                                                                       ctypes.c_int32(1), *tail)  # float64
    assert status != 0 and b"not supported" in emulated_library.jmipose_cuda_last_error()
