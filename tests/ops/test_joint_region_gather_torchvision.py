"""joint_region_gather / JointRegionGather as a drop-in for torchvision's deform_conv2d / DeformConv2d.

torchvision's own ``TestDeformConv`` (test/test_ops.py) run against our op: its case (6 -> 2 channels,
2 weight groups, 3 offset groups, a 3x2 kernel, stride (2, 1), padding (1, 0), dilation (2, 1), a 5x4
input, float64, batch 0 and 33, contiguous and permuted layouts, masks drawn from N(0, 1)), its
tolerances (1e-5 forward; gradcheck in fast mode with nondet_tol 1e-5) and its five kinds of checks:
forward (with and without mask), backward (eager and through a ``torch.jit.script`` function),
scripting of the module, wrong sizes raising a RuntimeError, and autocast.  Written here from those
facts, not copied.  The truth is ``torchvision.ops.deform_conv2d`` when it imports, else a loop-by-loop
float64 transcription of its per-sample rule (as torchvision's test computes its expectation).
"""

from __future__ import annotations

import math

import pytest
import torch

import jmipose
from jmipose.nn import JointRegionGather
from tests.backends import require_backend

BACKENDS = ("cpp", "reference")
IN_CHANNELS, OUT_CHANNELS, WEIGHT_GROUPS, OFFSET_GROUPS = 6, 2, 2, 3
KERNEL, STRIDE, PADDING, DILATION, SIZE = (3, 2), (2, 1), (1, 0), (2, 1), (5, 4)
OUT_SIZE = tuple((SIZE[i] + 2 * PADDING[i] - (DILATION[i] * (KERNEL[i] - 1) + 1)) // STRIDE[i] + 1 for i in (0, 1))


def _sample(image: torch.Tensor, y: float, x: float) -> float:
    """Bilinear sample of one channel, zero outside (torchvision's rule), scalar float64."""
    height, width = image.shape
    if y <= -1 or y >= height or x <= -1 or x >= width:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    value = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                value += wy * wx * float(image[yy, xx])
    return value


def loop_reference(x, weight, offset, mask, bias):
    """The expected output, one multiply-add at a time (float64)."""
    batch, in_channels = x.shape[:2]
    out_channels, channels_per_group, kh, kw = weight.shape
    out_per_group = out_channels // (in_channels // channels_per_group)
    channels_per_offset_group = in_channels // (offset.shape[1] // (2 * kh * kw))
    out = torch.zeros(batch, out_channels, *OUT_SIZE, dtype=torch.float64)
    x, weight, offset, bias = (t.detach().double() for t in (x, weight, offset, bias))
    mask = None if mask is None else mask.detach().double()
    for b in range(batch):
        for o in range(out_channels):
            for i in range(OUT_SIZE[0]):
                for j in range(OUT_SIZE[1]):
                    total = float(bias[o])
                    for di in range(kh):
                        for dj in range(kw):
                            for c in range(channels_per_group):
                                c_in = (o // out_per_group) * channels_per_group + c
                                tap = (c_in // channels_per_offset_group) * kh * kw + di * kw + dj
                                y = STRIDE[0] * i - PADDING[0] + DILATION[0] * di + float(offset[b, 2 * tap, i, j])
                                x_ = STRIDE[1] * j - PADDING[1] + DILATION[1] * dj + float(offset[b, 2 * tap + 1, i, j])
                                modulation = 1.0 if mask is None else float(mask[b, tap, i, j])
                                total += modulation * float(weight[o, c, di, dj]) * _sample(x[b, c_in], y, x_)
                    out[b, o, i, j] = total
    return out


def expected_output(x, weight, offset, mask, bias):
    try:
        from torchvision.ops import deform_conv2d
    except Exception:  # noqa: BLE001 - torchvision does not import beside every torch: our own truth
        return loop_reference(x, weight, offset, mask, bias)
    with torch.no_grad():
        return deform_conv2d(x.double(), offset.double(), weight.double(), bias.double(), STRIDE, PADDING, DILATION,
                             None if mask is None else mask.double())


def case_arguments(batch: int, contiguous: bool, dtype: torch.dtype = torch.float64, seed: int = 0):
    """x, weight, offset, mask, bias of torchvision's case (leaves that require grad)."""
    gen = torch.Generator().manual_seed(seed)
    taps = KERNEL[0] * KERNEL[1]

    def leaf(values):
        return values.to(dtype).requires_grad_()

    x = leaf(torch.rand(batch, IN_CHANNELS, *SIZE, generator=gen, dtype=torch.float64))
    offset = leaf(torch.randn(batch, 2 * OFFSET_GROUPS * taps, *OUT_SIZE, generator=gen, dtype=torch.float64))
    mask = leaf(torch.randn(batch, OFFSET_GROUPS * taps, *OUT_SIZE, generator=gen, dtype=torch.float64))
    weight = leaf(torch.randn(OUT_CHANNELS, IN_CHANNELS // WEIGHT_GROUPS, *KERNEL, generator=gen,
                              dtype=torch.float64))
    bias = leaf(torch.randn(OUT_CHANNELS, generator=gen, dtype=torch.float64))
    if not contiguous:  # the same values in torchvision's permuted memory layouts
        x = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
        offset = offset.permute(1, 3, 0, 2).contiguous().permute(2, 0, 3, 1)
        mask = mask.permute(1, 3, 0, 2).contiguous().permute(2, 0, 3, 1)
        weight = weight.permute(3, 2, 0, 1).contiguous().permute(2, 3, 1, 0)
    return x, weight, offset, mask, bias


def torchvision_axes(test):
    """Parametrises ``test(backend, contiguous, batch)`` over torchvision's axes: each backend,
    contiguous and permuted memory layouts, an empty batch and a batch of 33."""
    for name, values in (("batch", [0, 33]), ("contiguous", [True, False]), ("backend", BACKENDS)):
        test = pytest.mark.parametrize(name, values)(test)
    return test


def make_layer(backend: str | None, dtype: torch.dtype = torch.float64) -> JointRegionGather:
    return JointRegionGather(IN_CHANNELS, OUT_CHANNELS, KERNEL, stride=STRIDE, padding=PADDING, dilation=DILATION,
                             groups=WEIGHT_GROUPS, backend=backend).to(dtype=dtype)


@torchvision_axes
def test_forward(backend, contiguous, batch):
    require_backend(backend)
    x, _, offset, mask, _ = case_arguments(batch, contiguous)
    torch.manual_seed(0)
    layer = make_layer(backend)
    for modulation in (mask, None):
        out = layer(x, offset, modulation)
        expected = expected_output(x, layer.weight, offset, modulation, layer.bias)
        assert out.shape == (batch, OUT_CHANNELS, *OUT_SIZE)
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_loop_reference_is_the_op():
    """The loop transcription (the truth where torchvision does not import) agrees with our float64
    reference on a batch of 2, so it is not a loop that agrees with nothing."""
    x, weight, offset, mask, bias = case_arguments(2, True, seed=3)
    ours = jmipose.ops.joint_region_gather(x, offset, weight, bias, STRIDE, PADDING, DILATION, mask,
                                           backend="reference")
    torch.testing.assert_close(loop_reference(x, weight, offset, mask, bias), ours.detach(), rtol=1e-12,
                               atol=1e-12)


def test_wrong_sizes_raise_runtime_errors():
    """torchvision's test: a float32 layer, float64 input (its dtype default), and an offset or mask
    with too few channels: the size is reported (before the dtype mismatch), as a RuntimeError."""
    x, _, offset, mask, _ = case_arguments(10, True)
    layer = JointRegionGather(IN_CHANNELS, OUT_CHANNELS, KERNEL, stride=STRIDE, padding=PADDING,
                              dilation=DILATION, groups=WEIGHT_GROUPS)
    with pytest.raises(RuntimeError, match=r"offset.shape\[1\] must be a positive multiple of 2\*kh\*kw = 12"):
        layer(x, torch.rand_like(offset[:, :2]))
    with pytest.raises(RuntimeError, match=r"mask must have shape \(10, 18, 2, 3\) .*got \(10, 2, 2, 3\)"):
        layer(x, offset, torch.rand_like(mask[:, :2]))
    with pytest.raises(RuntimeError, match="one dtype"):  # right sizes: now the dtype
        layer(x, offset, mask)
    # one error class for Python's conventions and torch's
    with pytest.raises(jmipose.ops.ArgumentError) as raised:
        layer(x, torch.rand_like(offset[:, :2]))
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, TypeError)


@torchvision_axes
def test_backward(backend, contiguous, batch):
    require_backend(backend)
    x, weight, offset, mask, bias = case_arguments(batch, contiguous)

    def with_mask(x_, offset_, mask_, weight_, bias_):
        return jmipose.ops.joint_region_gather(x_, offset_, weight_, bias_, stride=STRIDE, padding=PADDING,
                                               dilation=DILATION, mask=mask_, backend=backend)

    def without_mask(x_, offset_, weight_, bias_):
        return jmipose.ops.joint_region_gather(x_, offset_, weight_, bias_, stride=STRIDE, padding=PADDING,
                                               dilation=DILATION, mask=None, backend=backend)

    assert torch.autograd.gradcheck(with_mask, (x, offset, mask, weight, bias), nondet_tol=1e-5, fast_mode=True)
    assert torch.autograd.gradcheck(without_mask, (x, offset, weight, bias), nondet_tol=1e-5, fast_mode=True)

    @torch.jit.script
    def scripted(x_: torch.Tensor, offset_: torch.Tensor, mask_: torch.Tensor, weight_: torch.Tensor,
                 bias_: torch.Tensor, stride_: tuple[int, int], pad_: tuple[int, int], dilation_: tuple[int, int],
                 backend_: str) -> torch.Tensor:
        return jmipose.ops.joint_region_gather(x_, offset_, weight_, bias_, stride=stride_, padding=pad_,
                                               dilation=dilation_, mask=mask_, backend=backend_)

    @torch.jit.script
    def scripted_without_mask(x_: torch.Tensor, offset_: torch.Tensor, weight_: torch.Tensor, bias_: torch.Tensor,
                              stride_: tuple[int, int], pad_: tuple[int, int],
                              dilation_: tuple[int, int]) -> torch.Tensor:
        return jmipose.ops.joint_region_gather(x_, offset_, weight_, bias_, stride=stride_, padding=pad_,
                                               dilation=dilation_, mask=None)

    assert torch.autograd.gradcheck(
        lambda z, off, msk, wei, bi: scripted(z, off, msk, wei, bi, STRIDE, PADDING, DILATION, backend),
        (x, offset, mask, weight, bias), nondet_tol=1e-5, fast_mode=True)
    assert torch.autograd.gradcheck(
        lambda z, off, wei, bi: scripted_without_mask(z, off, wei, bi, STRIDE, PADDING, DILATION),
        (x, offset, weight, bias), nondet_tol=1e-5, fast_mode=True)


@pytest.mark.parametrize("backend", [None, *BACKENDS])
def test_module_scripts_and_matches_eager(backend):
    if backend is not None:
        require_backend(backend)
    torch.manual_seed(0)
    layer = JointRegionGather(in_channels=8, out_channels=8, kernel_size=3, padding=1, backend=backend)
    scripted = torch.jit.script(layer)
    x, offset, mask = torch.randn(2, 8, 6, 5), torch.randn(2, 18, 6, 5), torch.rand(2, 9, 6, 5)
    torch.testing.assert_close(scripted(x, offset, mask), layer(x, offset, mask), rtol=0, atol=0)
    torch.testing.assert_close(scripted(x, offset), layer(x, offset), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match=r"offset must have shape"):  # the op checks what TorchScript hands it
        scripted(x, offset[:, :, :5], mask)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_on_the_torchvision_case(backend):
    require_backend(backend)
    for contiguous in (True, False):
        x, weight, offset, mask, bias = case_arguments(33, contiguous)
        torch.library.opcheck(torch.ops.jmipose.joint_region_gather.default,
                              (x, offset, mask, weight, bias, *STRIDE, *PADDING, *DILATION, backend))


def test_autocast_on_the_cpu():
    """A bfloat16 activation with the layer's float32 parameters under CPU autocast: computed in float32
    (the widest dtype), output in the input's bfloat16, as torchvision's op does."""
    x, _, offset, mask, _ = case_arguments(4, True, dtype=torch.bfloat16)
    torch.manual_seed(0)
    layer = make_layer(None, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x, offset, mask)
        scripted_out = torch.jit.script(layer)(x, offset, mask)  # the registered op's autocast rule
    assert out.dtype == torch.bfloat16 and scripted_out.dtype == torch.bfloat16
    expected = expected_output(x.double(), layer.weight, offset.double(), mask.double(), layer.bias)
    torch.testing.assert_close(out.double(), expected, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(scripted_out, out, rtol=0, atol=0)
    out.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    with pytest.raises(RuntimeError, match="one dtype"):  # outside autocast, mixed dtypes stay an error
        layer(x, offset, mask)


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [0, 33])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_autocast_on_cuda(batch, dtype):
    """torchvision's CUDA autocast test: the forward case under autocast, in float32 and float16."""
    x, _, offset, mask, _ = (t.detach().cuda() if t is not None else None
                             for t in case_arguments(batch, False, dtype=dtype))
    torch.manual_seed(0)
    layer = make_layer(None, dtype).cuda()
    with torch.autocast("cuda"):
        out = layer(x, offset, mask)
    expected = expected_output(x.cpu(), layer.weight.cpu(), offset.cpu(), mask.cpu(), layer.bias.cpu())
    tol = 2e-3 if dtype == torch.float16 else 1e-5
    torch.testing.assert_close(out.double().cpu(), expected, rtol=tol, atol=tol)


def test_autocast_is_registered_for_both_ops_on_cpu_and_cuda():
    for op in ("jmipose::joint_region_gather", "jmipose::joint_motion_attention"):
        for key in ("AutocastCPU", "AutocastCUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(op, key), (op, key)
