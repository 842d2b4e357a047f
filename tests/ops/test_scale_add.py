"""The toy op scale_add through every backend: correctness, gradients, opcheck, torch.compile."""

import pytest
import torch
from torch.library import opcheck

import jmipose
from jmipose.ops.scale_add import scale_add_reference
from tests.backends import backend_params, require_backend


def _dtypes(backend):
    if backend in ("reference", "cpp"):
        return [torch.float32, torch.float64]
    return [torch.float32]


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("n", [0, 1, 1000, 4099])
def test_matches_float64_reference(backend, n):
    device = require_backend(backend)
    for dtype in _dtypes(backend):
        gen = torch.Generator().manual_seed(n)
        a = torch.randn(n, generator=gen, dtype=torch.float64)
        b = torch.randn(n, generator=gen, dtype=torch.float64)
        expected = a * -1.75 + b
        out = jmipose.ops.scale_add(a.to(device, dtype), b.to(device, dtype), -1.75, backend=backend)
        assert out.dtype == dtype and out.device.type == device.type
        tol = 1e-12 if dtype == torch.float64 else 1e-6
        torch.testing.assert_close(out.double().cpu(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", backend_params())
def test_gradients(backend):
    device = require_backend(backend)
    a = torch.randn(37, 5, device=device, requires_grad=True)
    b = torch.randn(37, 5, device=device, requires_grad=True)
    grad = torch.randn(37, 5, device=device)
    jmipose.ops.scale_add(a, b, 0.5, backend=backend).backward(grad)
    torch.testing.assert_close(a.grad, grad * 0.5)
    torch.testing.assert_close(b.grad, grad)


@pytest.mark.parametrize("backend", backend_params("reference", "cpp"))
def test_gradcheck_float64(backend):
    require_backend(backend)
    a = torch.randn(9, dtype=torch.float64, requires_grad=True)
    b = torch.randn(9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: jmipose.ops.scale_add(x, y, 3.0, backend=backend), (a, b))


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("layout", ["contiguous", "permuted"])
def test_opcheck(backend, layout):
    device = require_backend(backend)
    a = torch.randn(6, 7, device=device, requires_grad=True)
    b = torch.randn(6, 7, device=device)
    if layout == "permuted":
        a, b = a.t(), b.t()
    opcheck(torch.ops.jmipose.scale_add.default, (a, b, 2.0, backend))


@pytest.mark.parametrize("backend", backend_params("cpp", "triton"))
def test_torch_compile_fullgraph(backend):
    device = require_backend(backend)
    torch._dynamo.reset()

    def f(x, y):
        return jmipose.ops.scale_add(x.sin(), y, 2.0, backend=backend).cos()

    compiled = torch.compile(f, fullgraph=True)
    x = torch.randn(64, device=device, requires_grad=True)
    y = torch.randn(64, device=device)
    out = compiled(x, y)
    torch.testing.assert_close(out, scale_add_reference(x.sin(), y, 2.0).cos())
    out.sum().backward()
    torch.testing.assert_close(x.grad, -torch.sin(2 * x.sin() + y) * 2 * x.cos())


def test_errors_name_the_argument():
    a = torch.randn(4)
    with pytest.raises(TypeError, match="b must be a torch.Tensor"):
        jmipose.ops.scale_add(a, [1, 2, 3, 4])
    with pytest.raises(TypeError, match="a must have a floating dtype"):
        jmipose.ops.scale_add(torch.arange(4), a)
    with pytest.raises(ValueError, match=r"b must have the shape of a \(4,\), got \(5,\)"):
        jmipose.ops.scale_add(a, torch.randn(5))
    with pytest.raises(TypeError, match="one dtype"):
        jmipose.ops.scale_add(a, a.double())
    with pytest.raises(ValueError, match="backend must be one of"):
        jmipose.ops.scale_add(a, a, backend="fast")


def test_asking_for_a_dead_backend_says_why():
    status = jmipose.ops.backends()["cuda"]
    if status.live:
        pytest.skip("cuda is live here")
    with pytest.raises(jmipose.ops.BackendUnavailableError, match="not live"):
        jmipose.ops.scale_add(torch.randn(3), torch.randn(3), backend="cuda")
