"""jmipose.ops._backends: what both ops do on every call.

``dispatch`` (which backend, which compute dtype, the head-dim fallback of op B and its log line, the
errors for a backend that cannot run a call), ``device_scope`` (entered around every backend launch of
both ops, forward and backward), the autocast rule, and the one error class of both ops' checks.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import pytest
import torch

import jmipose
from jmipose.ops import _backends
from jmipose.ops._checks import ArgumentError
from jmipose.ops.joint_motion_attention import joint_motion_attention_reference
from tests.backends import require_backend

GATHER = sys.modules["jmipose.ops.joint_region_gather"]
ATTENTION = sys.modules["jmipose.ops.joint_motion_attention"]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def fresh_decisions(monkeypatch):
    """An empty dispatch cache for this test (and the one of the session back afterwards)."""
    monkeypatch.setattr(_backends, "_decisions", {})


@pytest.fixture
def gpu_backends_live(monkeypatch, fresh_decisions):
    """cuda and triton live for CUDA tensors, as on a GPU machine (decisions only: nothing launches)."""
    real = _backends._live_on

    def live_on(backend, device):
        if device.type == "cuda" and backend in ("cuda", "triton"):
            return _backends.BackendStatus(True)
        return real(backend, device)

    monkeypatch.setattr(_backends, "_live_on", live_on)


# ---------------------------------------------------------------------------------------------
# The error class


def test_argument_errors_are_value_type_and_runtime_errors():
    assert issubclass(ArgumentError, ValueError) and issubclass(ArgumentError, TypeError)
    assert issubclass(ArgumentError, RuntimeError) and jmipose.ops.ArgumentError is ArgumentError
    q = torch.randn(1, 1, 4, 8)
    for bad_call in (lambda: jmipose.ops.joint_motion_attention(q, q[:, :, :3], q, q, q, q),
                     lambda: jmipose.ops.joint_motion_attention(q, q, q, q, q, q.double()),
                     lambda: jmipose.ops.joint_region_gather(torch.randn(1, 2, 4, 4), torch.zeros(1, 17, 2, 2),
                                                             torch.randn(2, 2, 3, 3)),
                     lambda: jmipose.ops.joint_region_gather(q, q, q, backend="fastest")):
        with pytest.raises(RuntimeError) as raised:
            bad_call()
        assert isinstance(raised.value, ArgumentError), raised.value


# ---------------------------------------------------------------------------------------------
# Dispatch


@pytest.mark.parametrize("spec", [GATHER.SPEC, ATTENTION.SPEC], ids=["gather", "attention"])
def test_dispatch_on_the_cpu(spec, fresh_decisions):
    require_backend("cpp")
    for dtype in (torch.float32, torch.float64):
        assert _backends.dispatch(spec, None, CPU, dtype) == ("cpp", dtype)
    for dtype in (torch.float16, torch.bfloat16):  # no half kernels on the CPU: widened to float32
        assert _backends.dispatch(spec, None, CPU, dtype) == ("cpp", torch.float32)
    assert _backends.dispatch(spec, "reference", CPU, torch.float64) == ("reference", torch.float64)
    with pytest.raises(ArgumentError, match=r"backend 'cpp' supports float32, float64; got .* torch.float16"):
        _backends.dispatch(spec, "cpp", CPU, torch.float16)
    with pytest.raises(ArgumentError, match="backend must be one of"):
        _backends.dispatch(spec, "fastest", CPU, torch.float32)


def test_dispatch_on_a_gpu(gpu_backends_live, caplog):
    spec = ATTENTION.SPEC
    assert _backends.dispatch(spec, None, CUDA, torch.bfloat16, 48) == ("cuda", torch.bfloat16)
    assert _backends.dispatch(spec, None, CUDA, torch.float64, 48) == ("reference", torch.float64)
    assert _backends.dispatch(GATHER.SPEC, None, CUDA, torch.float64) == ("reference", torch.float64)
    assert _backends.dispatch(spec, "triton", CUDA, torch.float32, 128) == ("triton", torch.float32)
    with caplog.at_level(logging.WARNING, logger="jmipose.ops"):
        # the channel-axis attention: d = h*w is more than the GPU kernels run
        assert _backends.dispatch(spec, None, CUDA, torch.bfloat16, 6912) == ("reference", torch.bfloat16)
        assert _backends.dispatch(spec, None, CUDA, torch.bfloat16, 1728) == ("reference", torch.bfloat16)
        assert len(caplog.records) == 1  # once per kind of call
        message = caplog.records[0].getMessage()
        assert "joint_motion_attention: a head dim of 6912 on cuda is more than the cuda and triton backends run " \
               "(up to 128): using the reference backend" in message
        assert _backends.dispatch(spec, None, CUDA, torch.float32, 6912) == ("reference", torch.float32)
        assert len(caplog.records) == 2  # another dtype is another kind of call
    for backend in ("cuda", "triton"):
        with pytest.raises(ArgumentError, match=rf"backend '{backend}' supports a head dim up to 128, got 6912"):
            _backends.dispatch(spec, backend, CUDA, torch.bfloat16, 6912)


def test_an_explicit_gpu_backend_refuses_a_large_head_dim_through_the_op():
    require_backend("triton")
    if torch.cuda.is_available():
        pytest.skip("checks the CPU interpreter's path; the GPU path is test_large_head_dim_falls_back_on_a_gpu")
    q = torch.randn(1, 1, 4, 129)
    with pytest.raises(ArgumentError, match=r"joint_motion_attention: backend 'triton' supports a head dim up to "
                                            r"128, got 129 \(backend=None picks a backend that runs it\)"):
        jmipose.ops.joint_motion_attention(q, q, q, q, q, q, backend="triton")


def test_a_large_head_dim_runs_on_the_cpu():
    """The channel-axis attention of JM-Pose: 48 channel tokens of dimension h*w = 96*72 (cpp runs any d)."""
    require_backend("cpp")
    gen = torch.Generator().manual_seed(0)
    tokens = [torch.randn(1, 1, 48, 96 * 72, generator=gen, dtype=torch.float64) * 0.05 for _ in range(6)]
    residuals = [torch.randn(1, 1, 48, 96 * 72, generator=gen, dtype=torch.float64) for _ in range(2)]
    out_m, out_j = jmipose.ops.joint_motion_attention(*(t.float() for t in tokens), res_m=residuals[0].float(),
                                                      res_j=residuals[1].float())
    want_m, want_j = joint_motion_attention_reference(*tokens, res_m=residuals[0], res_j=residuals[1])
    torch.testing.assert_close(out_m.double(), want_m, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out_j.double(), want_j, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_large_head_dim_falls_back_on_a_gpu(caplog):
    gen = torch.Generator().manual_seed(0)
    tokens = [torch.randn(2, 1, 48, 6912, generator=gen) * 0.05 for _ in range(6)]
    with caplog.at_level(logging.WARNING, logger="jmipose.ops"):
        out_m, out_j = jmipose.ops.joint_motion_attention(*(t.cuda().bfloat16() for t in tokens))
    want_m, want_j = joint_motion_attention_reference(*(t.bfloat16().double() for t in tokens))
    torch.testing.assert_close(out_m.double().cpu(), want_m, rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(out_j.double().cpu(), want_j, rtol=3e-2, atol=3e-2)
    with pytest.raises(ArgumentError, match="up to 128"):
        jmipose.ops.joint_motion_attention(*(t.cuda() for t in tokens), backend="cuda")


# ---------------------------------------------------------------------------------------------
# The tensors' device around every launch


@pytest.fixture
def scopes(monkeypatch):
    """Records every device_scope entered (the tensor's device), then enters the real one."""
    entered = []
    real = _backends.device_scope

    @contextlib.contextmanager
    def recording(tensor):
        entered.append(tensor.device)
        with real(tensor):
            yield

    monkeypatch.setattr(_backends, "device_scope", recording)
    return entered


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_attention_launches_inside_the_tensors_device(backend, scopes):
    device = require_backend(backend)
    q = [torch.randn(1, 2, 20, 16, device=device, requires_grad=True) for _ in range(6)]
    out_m, out_j = jmipose.ops.joint_motion_attention(*q, backend=backend)
    assert scopes == [q[0].device]  # the forward launch
    (out_m.sum() + out_j.sum()).backward()
    assert scopes == [q[0].device] * 2  # and the backward's


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_gather_launches_inside_the_tensors_device(backend, scopes):
    device = require_backend(backend)
    x = torch.randn(1, 4, 5, 5, device=device, requires_grad=True)
    offset = torch.randn(1, 18, 5, 5, device=device, requires_grad=True)
    weight = torch.randn(4, 4, 3, 3, device=device, requires_grad=True)
    jmipose.ops.joint_region_gather(x, offset, weight, padding=1, backend=backend).sum().backward()
    assert scopes == [x.device] * 2


def test_device_scope_is_a_no_op_on_the_cpu():
    with _backends.device_scope(torch.zeros(1)):
        pass


@pytest.mark.gpu
def test_tensors_on_a_second_gpu_run_there():
    """Tensors on cuda:1 while cuda:0 is current: every backend launches on cuda:1."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    gen = torch.Generator().manual_seed(0)
    tokens = [torch.randn(1, 2, 40, 16, generator=gen) for _ in range(6)]
    want_m, _ = joint_motion_attention_reference(*(t.double() for t in tokens))
    with torch.cuda.device(0):
        for backend in ("cuda", "triton"):
            out_m, _ = jmipose.ops.joint_motion_attention(*(t.to("cuda:1") for t in tokens), backend=backend)
            assert out_m.device == torch.device("cuda:1")
            torch.testing.assert_close(out_m.double().cpu(), want_m, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Autocast


def test_the_autocast_rule():
    def tensors(*dtypes):
        return [torch.zeros(1, dtype=d) for d in dtypes]

    assert _backends.autocast_dtype(tensors(torch.bfloat16, torch.float32)) == torch.float32
    assert _backends.autocast_dtype(tensors(torch.float16, torch.bfloat16)) == torch.float32
    assert _backends.autocast_dtype(tensors(torch.float32, torch.float64)) == torch.float64
    assert _backends.autocast_dtype(tensors(torch.bfloat16, torch.bfloat16)) is None
    assert _backends.autocast_dtype([*tensors(torch.float16), None, torch.zeros(1, dtype=torch.bool)]) is None


def test_attention_under_cpu_autocast():
    """bfloat16 motion tokens with float32 joint tokens: computed in float32, each output in its
    queries' dtype; through the public function and through the registered op."""
    gen = torch.Generator().manual_seed(0)
    tokens = [torch.randn(2, 1, 9, 16, generator=gen) for _ in range(6)]
    tokens[:3] = [t.bfloat16() for t in tokens[:3]]
    want_m, want_j = joint_motion_attention_reference(*(t.double() for t in tokens))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_m, out_j = jmipose.ops.joint_motion_attention(*tokens)
        op_m, op_j, _, _ = torch.ops.jmipose.joint_motion_attention(*tokens, None, None, None, None, 0.25)
    assert (out_m.dtype, out_j.dtype) == (torch.bfloat16, torch.float32)
    assert (op_m.dtype, op_j.dtype) == (torch.bfloat16, torch.float32)
    torch.testing.assert_close(out_m.double(), want_m, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(out_j.double(), want_j, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(op_m, out_m, rtol=0, atol=0)
    with pytest.raises(ArgumentError, match="one dtype"):
        jmipose.ops.joint_motion_attention(*tokens)


# ---------------------------------------------------------------------------------------------
# Fake kernels


def test_fake_kernels_check_shapes():
    """Under fake tensors (torch.compile's tracing) a direct call of either registered op with shapes
    that do not fit fails with the op's message, not deep inside a compiled graph."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x, weight = torch.empty(1, 4, 5, 5), torch.empty(6, 4, 3, 3)
        offset, mask = torch.empty(1, 18, 5, 5), torch.empty(1, 9, 5, 5)
        out = torch.ops.jmipose.joint_region_gather(x, offset, mask, weight, None, 1, 1, 1, 1, 1, 1, "cpp")
        assert out.shape == (1, 6, 5, 5)
        with pytest.raises(ArgumentError, match=r"joint_region_gather: mask must have shape \(1, 9, 5, 5\)"):
            torch.ops.jmipose.joint_region_gather(x, offset, mask[:, :8], weight, None, 1, 1, 1, 1, 1, 1, "cpp")
        with pytest.raises(ArgumentError, match=r"joint_region_gather: grad_output must have the output's shape"):
            torch.ops.jmipose.joint_region_gather_backward(out[:, :5], x, offset, mask, weight, 1, 1, 1, 1, 1, 1,
                                                           [True] * 5, "cpp")
        q, p = torch.empty(2, 1, 7, 16), torch.empty(2, 1, 5, 16)
        out_m, out_j, lse_m, lse_j = torch.ops.jmipose.joint_motion_attention(q, q, q, p, p, p, None, None, None,
                                                                              None, 0.25, "cpp")
        assert out_j.shape == p.shape and lse_m.shape == (2, 1, 7)
        with pytest.raises(ArgumentError, match=r"joint_motion_attention: v_j must have shape \[B, h, N, d\]"):
            torch.ops.jmipose.joint_motion_attention(q, q, q, p, p, q, None, None, None, None, 0.25, "cpp")
