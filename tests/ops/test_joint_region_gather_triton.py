"""Kernel-level contract of op A's Triton backend (jmipose/kernels/joint_region_gather.py) and, on a
GPU, of its CUDA backend through the public op.

Every result is compared with ``joint_region_gather_reference`` evaluated in float64 (forward by
value, the five gradients by autograd) on the same, dtype-rounded inputs.  Offsets are multiples of
1/256, so a sampling coordinate is exact in float32 and both sides take the same bilinear cell (the
gradient w.r.t. the offset has kinks at integer coordinates).  Without a GPU the kernels run under
TRITON_INTERPRET=1, which is slow: shapes are small and each case checks everything in one pass.

Tolerances (absolute, relative to max(1, largest expected magnitude)): float32 1e-4 (float32
accumulation; tf32x3 products on a GPU); float16 1e-2 and bfloat16 4e-2 (the sampled columns are
rounded to the input dtype before the tensor-core products, as torchvision's im2col does).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import torch

from jmipose.ops.joint_region_gather import joint_region_gather_reference

pytest.importorskip("triton", reason="triton is not installed")
from jmipose.kernels import joint_region_gather as kernels  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _interpreter_problem() -> str | None:
    """Why the Triton interpreter cannot run these kernels here, or None.  triton 3.6's interpreter
    turns a runtime loop bound into an int with ``int(array_of_shape_1)``, which numpy >= 2.3
    rejects; later triton releases squeeze the array first (3.9 does)."""
    if DEVICE.type == "cuda":
        return None
    import triton
    import triton.language as tl

    @triton.jit
    def _count_kernel(out_ptr, n):
        total = 0.0
        for _ in range(n):
            total += 1.0
        tl.store(out_ptr, total)

    out = torch.zeros(1)
    try:
        _count_kernel[(1,)](out, 3)
    except Exception as exc:  # the interpreter wraps the numpy TypeError
        import numpy

        return (f"triton {triton.__version__}'s interpreter cannot run loops with runtime bounds under numpy "
                f"{numpy.__version__} ({exc}); use a later triton or numpy < 2.3")
    return None if out.item() == 3.0 else "the Triton interpreter miscounts a runtime loop"


_PROBLEM = _interpreter_problem()
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or "")
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}
GRAD_NAMES = ("input", "offset", "mask", "weight", "bias")


@dataclass(frozen=True)
class Case:
    batch: int = 2
    in_channels: int = 4
    out_channels: int = 3
    height: int = 6
    width: int = 5
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    offset_groups: int = 1
    with_mask: bool = True
    with_bias: bool = True
    offset_scale: float = 1.5

    @property
    def out_size(self) -> tuple[int, int]:
        return tuple((size + 2 * pad - dil * (k - 1) - 1) // st + 1 for size, pad, dil, k, st in
                     zip((self.height, self.width), self.padding, self.dilation, self.kernel, self.stride))


CASES = {
    "3x3_pad1": Case(batch=2, in_channels=5, out_channels=3, height=7, width=6),
    "b1_odd_no_mask_no_bias": Case(batch=1, in_channels=3, out_channels=5, height=5, width=9, padding=(0, 0),
                                   with_mask=False, with_bias=False),
    "groups2_offset_groups3": Case(batch=1, in_channels=12, out_channels=4, height=5, groups=2, offset_groups=3),
    "groups3_offset_groups1": Case(batch=1, in_channels=6, out_channels=6, groups=3),
    "stride2_offset_groups2": Case(batch=1, in_channels=4, out_channels=4, height=9, width=8, stride=(2, 2),
                                   offset_groups=2),
    "dilation3": Case(batch=1, height=10, width=9, padding=(3, 3), dilation=(3, 3)),
    "1x1_offset_groups2": Case(in_channels=6, out_channels=4, height=5, width=7, kernel=(1, 1), padding=(0, 0),
                               offset_groups=2),
    "2x3_mixed_geometry": Case(batch=1, height=7, width=8, kernel=(2, 3), stride=(2, 1), padding=(1, 0),
                               dilation=(1, 2)),
}

# Small tiles force several pixel tiles, output blocks, channel blocks (with a partial last one) and
# split reductions of grad weight, as the model's shapes do with the GPU tiles.
SMALL_BLOCKS = kernels.Blocks(p=16, o=16, c=16, num_warps=4)
SMALL_CONFIG = kernels.LaunchConfig(forward=SMALL_BLOCKS, data=SMALL_BLOCKS, weight=SMALL_BLOCKS, weight_splits=3)


def make_inputs(case: Case, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor | None]:
    """float64 CPU tensors holding values exactly representable in ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    kh, kw = case.kernel
    out_h, out_w = case.out_size
    taps = kh * kw

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype).double()

    offset = torch.round(rand(case.batch, 2 * case.offset_groups * taps, out_h, out_w, scale=case.offset_scale) * 256) / 256
    mask = torch.rand(case.batch, case.offset_groups * taps, out_h, out_w, generator=gen, dtype=torch.float64)
    return {
        "input": rand(case.batch, case.in_channels, case.height, case.width),
        "offset": offset,
        "mask": mask.to(dtype).double() if case.with_mask else None,
        "weight": rand(case.out_channels, case.in_channels // case.groups, kh, kw, scale=0.5),
        "bias": rand(case.out_channels) if case.with_bias else None,
        "grad_output": rand(case.batch, case.out_channels, out_h, out_w),
    }


def reference(case: Case, inputs: dict) -> tuple[torch.Tensor, tuple]:
    """float64 output and the five gradients (None for an absent mask or bias)."""
    leaves = {name: None if inputs[name] is None else inputs[name].clone().requires_grad_() for name in GRAD_NAMES}
    out = joint_region_gather_reference(leaves["input"], leaves["offset"], leaves["weight"], leaves["bias"],
                                        case.stride, case.padding, case.dilation, leaves["mask"])
    out.backward(inputs["grad_output"])
    return out.detach(), tuple(None if leaves[n] is None else leaves[n].grad for n in GRAD_NAMES)


def run_triton(case: Case, inputs: dict, dtype: torch.dtype, needs=None, config=None):
    def on_device(t):
        return None if t is None else t.to(DEVICE, dtype)

    x, offset, mask, weight, bias, grad_output = (on_device(inputs[n]) for n in (*GRAD_NAMES, "grad_output"))
    args = (case.stride, case.padding, case.dilation, case.groups, case.offset_groups)
    out = kernels.forward(x, offset, mask, weight, bias, *args, config=config)
    if needs is None:
        needs = (True, True, case.with_mask, True, case.with_bias)
    grads = kernels.backward(grad_output, x, offset, mask, weight, *args, needs, config=config)
    return out, grads


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    tol = TOLERANCE[dtype] * max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual.double().cpu(), expected, rtol=TOLERANCE[dtype], atol=tol, msg=lambda m: f"{what}: {m}")


def check_case(case: Case, dtype: torch.dtype, seed: int = 0, config=None) -> None:
    inputs = make_inputs(case, seed, dtype)
    expected_out, expected_grads = reference(case, inputs)
    out, grads = run_triton(case, inputs, dtype, config=config)
    assert_close(out, expected_out, dtype, "output")
    for name, grad, expected in zip(GRAD_NAMES, grads, expected_grads):
        if expected is None:
            assert grad is None, f"grad {name} must be None when {name} is None"
        else:
            assert_close(grad, expected, dtype, f"grad {name}")


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


def _border_offsets(case: Case) -> torch.Tensor:
    """Offsets that put samples exactly on, just inside and just outside every border (1x1 kernel)."""
    h, w = case.height, case.width
    eps = 2.0 ** -8
    ys = [-1 - eps, -1.0, -1 + eps, -0.5, 0.0, 1.5, h - 1.0, h - 1 + eps, h - eps, float(h), h + eps]
    xs = [-1 - eps, -1.0, -1 + eps, 0.0, 2.25, w - 1.0, w - 1 + eps, w - eps, float(w), w + eps]
    targets = list(itertools.product(ys, xs))
    out_h, out_w = case.out_size
    offset = torch.zeros(case.batch, 2, out_h, out_w, dtype=torch.float64)
    for p in range(out_h * out_w):
        y, x = targets[(p * 7) % len(targets)]
        offset[:, 0, p // out_w, p % out_w] = y - p // out_w
        offset[:, 1, p // out_w, p % out_w] = x - p % out_w
    return offset


def test_samples_on_and_just_outside_the_borders():
    case = Case(batch=1, in_channels=3, out_channels=2, height=5, width=6, kernel=(1, 1), padding=(0, 0))
    inputs = make_inputs(case, 3, torch.float32)
    inputs["offset"] = _border_offsets(case)
    expected_out, expected_grads = reference(case, inputs)
    out, grads = run_triton(case, inputs, torch.float32)
    assert_close(out, expected_out, torch.float32, "output")
    for name, grad, expected in zip(GRAD_NAMES, grads, expected_grads):
        assert_close(grad, expected, torch.float32, f"grad {name}")
    # Independently of the reference: a sample at or beyond one pixel outside reads nothing at all.
    out_h, out_w = case.out_size
    y = inputs["offset"][0, 0] + torch.arange(out_h, dtype=torch.float64).view(-1, 1)
    x = inputs["offset"][0, 1] + torch.arange(out_w, dtype=torch.float64).view(1, -1)
    outside = (y <= -1) | (y >= case.height) | (x <= -1) | (x >= case.width)
    assert 0 < outside.sum() < outside.numel()
    for o in range(case.out_channels):
        assert (out[0, o].cpu()[outside] == inputs["bias"][o].float()).all()

def test_non_finite_offsets_read_zero_and_get_zero_gradients():
    case = Case(batch=1, in_channels=4, out_channels=3, height=5, width=5, offset_groups=2)
    inputs = make_inputs(case, 4, torch.float32)
    offset = inputs["offset"]
    bad = torch.zeros_like(offset, dtype=torch.bool)
    values = [float("nan"), float("inf"), float("-inf"), 1e30, -1e30, 3e9]
    for i, value in enumerate(values):  # scatter the bad values over groups, taps, components and pixels
        index = (0, (5 * i + 2) % offset.shape[1], i % 5, (2 * i) % 5)
        offset[index] = value
        bad[index] = True
    expected_out, expected_grads = reference(case, inputs)
    out, grads = run_triton(case, inputs, torch.float32)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    assert_close(out, expected_out, torch.float32, "output")
    for name, grad, expected in zip(GRAD_NAMES, grads, expected_grads):
        assert_close(grad, expected, torch.float32, f"grad {name}")
    assert (grads[1].cpu()[bad] == 0).all()


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


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_interpreter_or_gpu(dtype):
    check_case(Case(batch=1, in_channels=4, out_channels=3, height=5, width=4), dtype, seed=7)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", list(CASES))
def test_half_types_on_gpu(name, dtype):
    check_case(CASES[name], dtype, seed=11)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_model_shape_on_gpu(dtype):
    case = Case(batch=2, in_channels=48, out_channels=48, height=96, width=72, offset_groups=4, offset_scale=3.0)
    check_case(case, dtype, seed=13)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernels_compile_for_sm80_and_sm90(dtype):
    """Compiles the three kernels with the host's GPU tiles for sm_80 and sm_90 (no GPU needed), so
    code that only the compiler rejects (the interpreter accepts it) fails here."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    pointer = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}[dtype]
    config = kernels.choose_config(48, 48, 1, 1, 6912, dtype)
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
                                      target=GPUTarget("cuda", capability, 32),
                                      options={"num_warps": blocks.num_warps})
            assert compiled.asm["cubin"], f"{fn.__name__} sm_{capability}"


# --- the CUDA backend, through the public op (runs only where a GPU is present) -------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(CASES))
def test_cuda_backend_matches_float64_reference(name, dtype):
    import jmipose

    if not jmipose.ops.backends()["cuda"].live:
        pytest.skip(f"cuda backend not live: {jmipose.ops.backends()['cuda'].reason}")
    case = CASES[name]
    inputs = make_inputs(case, 17, dtype)
    expected_out, expected_grads = reference(case, inputs)
    leaves = {n: None if inputs[n] is None else inputs[n].to("cuda", dtype).requires_grad_() for n in GRAD_NAMES}
    out = jmipose.ops.joint_region_gather(leaves["input"], leaves["offset"], leaves["weight"], leaves["bias"],
                                          case.stride, case.padding, case.dilation, leaves["mask"], backend="cuda")
    out.backward(inputs["grad_output"].to("cuda", dtype))
    assert_close(out.detach(), expected_out, dtype, "output")
    for name_, expected in zip(GRAD_NAMES, expected_grads):
        if expected is not None:
            assert_close(leaves[name_].grad, expected, dtype, f"grad {name_}")


@pytest.mark.gpu
def test_cuda_backend_model_shape_and_non_finite_offsets():
    import jmipose

    if not jmipose.ops.backends()["cuda"].live:
        pytest.skip(f"cuda backend not live: {jmipose.ops.backends()['cuda'].reason}")
    case = Case(batch=2, in_channels=48, out_channels=48, height=96, width=72, offset_groups=4, offset_scale=3.0)
    inputs = make_inputs(case, 19, torch.float32)
    inputs["offset"][0, 3, 5, 7] = float("nan")
    inputs["offset"][1, 10, 50, 20] = float("inf")
    inputs["offset"][1, 11, 2, 3] = -1e30
    expected_out, expected_grads = reference(case, inputs)
    leaves = {n: inputs[n].to("cuda").requires_grad_() for n in GRAD_NAMES}
    out = jmipose.ops.joint_region_gather(leaves["input"], leaves["offset"], leaves["weight"], leaves["bias"],
                                          case.stride, case.padding, case.dilation, leaves["mask"], backend="cuda")
    out.backward(inputs["grad_output"].to("cuda"))
    assert_close(out.detach(), expected_out, torch.float32, "output")
    for name, expected in zip(GRAD_NAMES, expected_grads):
        assert_close(leaves[name].grad, expected, torch.float32, f"grad {name}")
    assert leaves["offset"].grad[0, 3, 5, 7] == 0 and leaves["offset"].grad[1, 10, 50, 20] == 0

