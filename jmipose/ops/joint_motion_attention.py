"""Op B: the joint-motion interaction attention (bidirectional cross-attention, residual fused).

    out_m = res_m + softmax(scale * q_m k_j^T  [keys masked by mask_j]) v_j     [B, h, N_m, d]
    out_j = res_j + softmax(scale * q_j k_m^T  [keys masked by mask_m]) v_m     [B, h, N_j, d]

``scale`` defaults to d**-0.5; ``mask_m`` [B, N_m] / ``mask_j`` [B, N_j] are boolean key-padding
masks (True = that token is not a key); a query whose keys are all masked gets the residual (or
zeros) and zero gradients, never NaN.  NaN in the inputs propagates to the outputs it reaches (a NaN
query gives a NaN output row), as in the reference.  JM-Pose's interaction block (../shared/PAPER.md)
exchanges information between the motion features and the joint features of one crop this way.

Backends (``backend=``; None picks the fastest live one for the device and dtype):

* ``reference``  eager PyTorch, materialises the N_m x N_j scores (the definition; any float dtype).
* ``cpp``        C++ CPU (csrc/joint_motion_attention/cpu.cpp): blocked online softmax, OpenMP,
                 float32 and float64.
* ``cuda``       CUDA kernels (csrc/joint_motion_attention/cuda.cu): float32, float16, bfloat16.
* ``triton``     Triton kernels (jmipose/kernels/joint_motion_attention.py): float32, float16, bfloat16.

The fused backends follow flash-attention-2 (Dao, 2023): an online softmax with float32 statistics
(float64 for float64 inputs), the log-sum-exp of every query row saved for backward, and a backward
that recomputes the probabilities from it; memory is O(B h N d), never O(N^2).  Gradients flow to
every q, k, v and to the residuals (whose gradient is the output gradient itself).  The op is a
``torch.library.custom_op`` (``jmipose::joint_motion_attention``, returning the outputs and the two
log-sum-exps) whose backward is a second op (``jmipose::joint_motion_attention_backward``), so both
trace under ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import ctypes
import math

import torch
from torch import Tensor

from jmipose import resources
from jmipose.ops import _backends
from jmipose.ops._checks import check_float_tensor, check_same_device_dtype

_OP = "joint_motion_attention"
_SUPPORTED = ("reference", "cpp", "cuda", "triton")
_HALF = (torch.float16, torch.bfloat16)
_BACKEND_DTYPES = {
    "reference": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
    "cpp": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float16, torch.bfloat16),
    "triton": (torch.float32, torch.float16, torch.bfloat16),
}


# ---------------------------------------------------------------------------------------------
# The eager reference (the definition of the op)

def _scores(query: Tensor, key: Tensor, key_mask: Tensor | None, scale: float) -> Tensor:
    """scale * q k^T in float32 (float64 for float64 inputs), -inf on masked keys."""
    compute_dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    scores = torch.matmul(query.to(compute_dtype), key.to(compute_dtype).transpose(-1, -2)) * scale
    if key_mask is not None:
        scores = scores.masked_fill(key_mask[:, None, None, :], float("-inf"))
    return scores


def _probabilities(scores: Tensor, key_mask: Tensor | None) -> Tensor:
    probs = torch.softmax(scores, dim=-1)
    if key_mask is not None:  # all keys masked: softmax gives NaN; define the result as zero weights
        # Only those rows: a NaN score from a NaN query or key must still propagate (nan_to_num over
        # the whole tensor turned it into zero weights when a mask was given, but not without one).
        all_masked = key_mask.all(dim=-1)[:, None, None, None]
        probs = probs.masked_fill(all_masked, 0.0)
    return probs


def _attend(query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor | None, scale: float) -> Tensor:
    """softmax(scale * q k^T) v with an optional [B, N_k] key-padding mask; materialises the scores."""
    probs = _probabilities(_scores(query, key, key_mask, scale), key_mask)
    return torch.matmul(probs, value.to(probs.dtype)).to(query.dtype)


def joint_motion_attention_reference(q_m: Tensor, k_m: Tensor, v_m: Tensor, q_j: Tensor, k_j: Tensor,
                                     v_j: Tensor, *, res_m: Tensor | None = None, res_j: Tensor | None = None,
                                     scale: float | None = None, mask_m: Tensor | None = None,
                                     mask_j: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Eager PyTorch definition of the op (materialises both N_m x N_j score matrices)."""
    if scale is None:
        scale = q_m.shape[-1] ** -0.5
    out_m = _attend(q_m, k_j, v_j, mask_j, scale)
    out_j = _attend(q_j, k_m, v_m, mask_m, scale)
    if res_m is not None:
        out_m = out_m + res_m
    if res_j is not None:
        out_j = out_j + res_j
    return out_m, out_j


# ---------------------------------------------------------------------------------------------
# Backends

def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _reference_direction(query, key, value, key_mask, residual, scale):
    scores = _scores(query, key, key_mask, scale)
    probs = _probabilities(scores, key_mask)
    out = torch.matmul(probs, value.to(probs.dtype)).to(query.dtype)
    if residual is not None:
        out = out + residual
    return out.contiguous(), torch.logsumexp(scores, dim=-1)


def _reference_direction_backward(grad_out, query, key, value, key_mask, scale):
    """Explicit softmax-attention gradients (materialised): dV = P^T dO, dS = P (dP - rowsum(dP P)),
    dQ = scale dS K, dK = scale dS^T Q."""
    probs = _probabilities(_scores(query, key, key_mask, scale), key_mask)
    compute = probs.dtype
    grad_out, query, key, value = (t.to(compute) for t in (grad_out, query, key, value))
    grad_value = torch.matmul(probs.transpose(-1, -2), grad_out)
    grad_probs = torch.matmul(grad_out, value.transpose(-1, -2))
    grad_scores = probs * (grad_probs - (grad_probs * probs).sum(dim=-1, keepdim=True))
    grad_query = torch.matmul(grad_scores, key) * scale
    grad_key = torch.matmul(grad_scores.transpose(-1, -2), query) * scale
    return grad_query, grad_key, grad_value


def _empty_or_reference(q_m: Tensor, q_j: Tensor) -> bool:
    return q_m.numel() == 0 or q_j.numel() == 0


def _mask_bytes(mask: Tensor | None) -> Tensor | None:
    return None if mask is None else mask.contiguous().view(torch.uint8)


def _sizes(q_m: Tensor, q_j: Tensor) -> tuple[ctypes.c_int64, ...]:
    batch, heads, n_m, head_dim = q_m.shape
    return tuple(ctypes.c_int64(v) for v in (batch, heads, n_m, q_j.shape[2], head_dim))


def _native_forward(backend, q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, scale):
    out_m, out_j = torch.empty_like(q_m), torch.empty_like(q_j)
    stats = _stats_dtype(q_m.dtype)
    lse_m = q_m.new_empty(q_m.shape[:3], dtype=stats)
    lse_j = q_j.new_empty(q_j.shape[:3], dtype=stats)
    ptr = _backends.ptr
    args = [ptr(t) for t in (q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, _mask_bytes(mask_m),
                             _mask_bytes(mask_j), out_m, out_j, lse_m, lse_j)]
    args += [*_sizes(q_m, q_j), ctypes.c_double(scale), _backends.dtype_code(q_m)]
    if backend == "cpp":
        _backends.call_cpu("jmipose_joint_motion_attention_forward_cpu", *args)
    else:
        _backends.call_cuda("jmipose_joint_motion_attention_forward_cuda", *args,
                            *_backends.cuda_stream_args(q_m))
    return out_m, out_j, lse_m, lse_j


def _native_backward(backend, grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m,
                     res_j, mask_m, mask_j, lse_m, lse_j, scale):
    # float16/bfloat16 gradients are accumulated in float32 buffers (the C ABI contract), cast back here.
    grad_dtype = torch.float32 if q_m.dtype in (torch.float16, torch.bfloat16) else q_m.dtype
    grads = [torch.empty_like(t, dtype=grad_dtype) for t in (q_m, k_m, v_m, q_j, k_j, v_j)]
    ptr = _backends.ptr
    args = [ptr(t) for t in (grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j,
                             _mask_bytes(mask_m), _mask_bytes(mask_j), lse_m, lse_j, *grads)]
    args += [*_sizes(q_m, q_j), ctypes.c_double(scale), _backends.dtype_code(q_m)]
    if backend == "cpp":
        _backends.call_cpu("jmipose_joint_motion_attention_backward_cpu", *args)
    else:
        _backends.call_cuda("jmipose_joint_motion_attention_backward_cuda", *args,
                            *_backends.cuda_stream_args(q_m))
    return tuple(g.to(q_m.dtype) for g in grads)


def _contiguous(*tensors: Tensor | None) -> list[Tensor | None]:
    return [None if t is None else t.contiguous() for t in tensors]


def _forward_impl(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, scale, backend):
    if backend == "reference" or _empty_or_reference(q_m, q_j):
        out_m, lse_m = _reference_direction(q_m, k_j, v_j, mask_j, res_m, scale)
        out_j, lse_j = _reference_direction(q_j, k_m, v_m, mask_m, res_j, scale)
        return out_m, out_j, lse_m.contiguous(), lse_j.contiguous()
    tensors = _contiguous(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j)
    if backend == "triton":
        from jmipose.kernels import joint_motion_attention as triton_kernels

        return triton_kernels.forward(*tensors, _contiguous(mask_m)[0], _contiguous(mask_j)[0], scale)
    return _native_forward(backend, *tensors, mask_m, mask_j, scale)


def _backward_impl(grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j, mask_m,
                   mask_j, lse_m, lse_j, scale, backend):
    if backend == "reference" or _empty_or_reference(q_m, q_j):
        dq_m, dk_j, dv_j = _reference_direction_backward(grad_out_m, q_m, k_j, v_j, mask_j, scale)
        dq_j, dk_m, dv_m = _reference_direction_backward(grad_out_j, q_j, k_m, v_m, mask_m, scale)
        grads = (dq_m, dk_m, dv_m, dq_j, dk_j, dv_j)
        return tuple(g.to(q_m.dtype).contiguous() for g in grads)
    tensors = _contiguous(grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j)
    masks = _contiguous(mask_m, mask_j)
    if backend == "triton":
        from jmipose.kernels import joint_motion_attention as triton_kernels

        return tuple(triton_kernels.backward(*tensors, *masks, lse_m.contiguous(), lse_j.contiguous(), scale))
    return _native_backward(backend, *tensors, *masks, lse_m.contiguous(), lse_j.contiguous(), scale)


# ---------------------------------------------------------------------------------------------
# torch.library registration

_FORWARD_SCHEMA = ("(Tensor q_m, Tensor k_m, Tensor v_m, Tensor q_j, Tensor k_j, Tensor v_j, Tensor? res_m, "
                   "Tensor? res_j, Tensor? mask_m, Tensor? mask_j, float scale, str backend) "
                   "-> (Tensor, Tensor, Tensor, Tensor)")
_BACKWARD_SCHEMA = ("(Tensor grad_out_m, Tensor grad_out_j, Tensor q_m, Tensor k_m, Tensor v_m, Tensor q_j, "
                    "Tensor k_j, Tensor v_j, Tensor out_m, Tensor out_j, Tensor? res_m, Tensor? res_j, "
                    "Tensor? mask_m, Tensor? mask_j, Tensor lse_m, Tensor lse_j, float scale, str backend) "
                    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")

_forward_op = torch.library.custom_op("jmipose::joint_motion_attention", _forward_impl, mutates_args=(),
                                      schema=_FORWARD_SCHEMA)
_backward_op = torch.library.custom_op("jmipose::joint_motion_attention_backward", _backward_impl,
                                       mutates_args=(), schema=_BACKWARD_SCHEMA)


@_forward_op.register_fake
def _(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, scale, backend):
    stats = _stats_dtype(q_m.dtype)
    return (torch.empty_like(q_m, memory_format=torch.contiguous_format),
            torch.empty_like(q_j, memory_format=torch.contiguous_format),
            q_m.new_empty(q_m.shape[:3], dtype=stats), q_j.new_empty(q_j.shape[:3], dtype=stats))


@_backward_op.register_fake
def _(grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j, mask_m, mask_j, lse_m,
      lse_j, scale, backend):
    tokens = (q_m, k_m, v_m, q_j, k_j, v_j)
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in tokens)


def _setup_context(ctx, inputs, output) -> None:
    q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, scale, backend = inputs
    out_m, out_j, lse_m, lse_j = output
    ctx.save_for_backward(q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j, mask_m, mask_j, lse_m,
                          lse_j)
    ctx.scale, ctx.backend = scale, backend
    ctx.mark_non_differentiable(lse_m, lse_j)


def _backward(ctx, grad_out_m, grad_out_j, _grad_lse_m, _grad_lse_j):
    q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j, mask_m, mask_j, lse_m, lse_j = ctx.saved_tensors
    grads = torch.ops.jmipose.joint_motion_attention_backward(
        grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j, mask_m, mask_j,
        lse_m, lse_j, ctx.scale, ctx.backend)
    grad_res_m = grad_out_m if res_m is not None and ctx.needs_input_grad[6] else None
    grad_res_j = grad_out_j if res_j is not None and ctx.needs_input_grad[7] else None
    return (*grads, grad_res_m, grad_res_j, None, None, None, None)


_forward_op.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Argument checks and the public function

def _check_tokens(name: str, tensor: Tensor, reference_name: str, reference: Tensor, tokens_from: str,
                  tokens: int) -> None:
    batch, heads, _, head_dim = reference.shape
    expected = (batch, heads, tokens, head_dim)
    if tuple(tensor.shape) != expected:
        raise ValueError(f"{_OP}: {name} must have shape [B, h, N, d] = {list(expected)} (B, h, d from "
                         f"{reference_name}, N from {tokens_from}), got {list(tensor.shape)}")


def _check_mask(name: str, mask: object, batch: int, tokens: int, tokens_name: str,
                device: torch.device) -> None:
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{_OP}: {name} must be a bool torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{_OP}: {name} must have dtype torch.bool (True = not a key), got {mask.dtype}")
    if tuple(mask.shape) != (batch, tokens):
        raise ValueError(f"{_OP}: {name} must have shape [B, {tokens_name}] = {[batch, tokens]}, "
                         f"got {list(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"{_OP}: {name} must be on the device of the tokens ({device}), got {mask.device}")


def _check_arguments(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, scale, mask_m, mask_j) -> float:
    named = {"q_m": q_m, "k_m": k_m, "v_m": v_m, "q_j": q_j, "k_j": k_j, "v_j": v_j}
    for name, value in named.items():
        check_float_tensor(_OP, name, value, ndim=4)
    for name, value in (("res_m", res_m), ("res_j", res_j)):
        if value is not None:
            check_float_tensor(_OP, name, value, ndim=4)
    check_same_device_dtype(_OP, {**named, "res_m": res_m, "res_j": res_j})
    n_m, n_j = q_m.shape[2], q_j.shape[2]
    for name in ("k_m", "v_m"):
        _check_tokens(name, named[name], "q_m", q_m, "q_m", n_m)
    for name in ("q_j", "k_j", "v_j"):
        _check_tokens(name, named[name], "q_m", q_m, "q_j", n_j)
    if res_m is not None:
        _check_tokens("res_m", res_m, "q_m", q_m, "q_m", n_m)
    if res_j is not None:
        _check_tokens("res_j", res_j, "q_m", q_m, "q_j", n_j)
    if q_m.shape[3] < 1:
        raise ValueError(f"{_OP}: the head dimension d must be >= 1, got q_m of shape {list(q_m.shape)}")
    _check_mask("mask_m", mask_m, q_m.shape[0], n_m, "N_m", q_m.device)
    _check_mask("mask_j", mask_j, q_m.shape[0], n_j, "N_j", q_m.device)
    if scale is None:
        return q_m.shape[3] ** -0.5
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"{_OP}: scale must be a real number or None, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise ValueError(f"{_OP}: scale must be finite, got {scale}")
    return float(scale)


def _check_memory(q_m: Tensor, q_j: Tensor, needs_grad: bool, backend: str) -> None:
    """Refuses (ResourceLimitError) a call whose own allocations would exceed the memory limit of
    :mod:`jmipose.resources`: outputs and log-sum-exps, the six token gradients when autograd will want
    them, and for the reference backend the materialised B x h x N_m x N_j scores (two matrices live
    per direction in forward, three in backward)."""
    if torch.compiler.is_compiling():  # a Python-side guard; traced graphs are checked when run eagerly
        return
    batch, heads, n_m, head_dim = q_m.shape
    n_j, element = q_j.shape[2], q_m.element_size()
    tokens = batch * heads * (n_m + n_j)
    needed = tokens * head_dim * element + tokens * 8
    if needs_grad:
        needed += 3 * tokens * head_dim * max(element, 4)
    if backend == "reference":
        compute = 8 if q_m.dtype == torch.float64 else 4
        needed += (3 if needs_grad else 2) * batch * heads * n_m * n_j * compute
    resources.check_bytes(f"{_OP} ({backend}) with B={batch}, h={heads}, N_m={n_m}, N_j={n_j}, d={head_dim}",
                          needed, q_m.device)


def _supported_for(dtype: torch.dtype) -> tuple[str, ...]:
    return tuple(name for name in _SUPPORTED if dtype in _BACKEND_DTYPES[name])


def joint_motion_attention(q_m: Tensor, k_m: Tensor, v_m: Tensor, q_j: Tensor, k_j: Tensor, v_j: Tensor, *,
                           res_m: Tensor | None = None, res_j: Tensor | None = None,
                           scale: float | None = None, mask_m: Tensor | None = None,
                           mask_j: Tensor | None = None, backend: str | None = None) -> tuple[Tensor, Tensor]:
    """Both attention directions between motion tokens (``*_m``, [B, h, N_m, d]) and joint tokens
    (``*_j``, [B, h, N_j, d]) in one call; returns ``(out_m, out_j)``.

    ``out_m = res_m + softmax(scale q_m k_j^T) v_j`` and ``out_j = res_j + softmax(scale q_j k_m^T) v_m``;
    ``mask_m`` [B, N_m] / ``mask_j`` [B, N_j] (bool, True = not a key) mask the keys of the motion /
    joint tokens.  Inputs may be non-contiguous views.  ``backend``: "reference", "cpp", "cuda",
    "triton" or None (the fastest live one for the device and dtype).
    """
    scale = _check_arguments(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, scale, mask_m, mask_j)
    if backend in _BACKEND_DTYPES and q_m.dtype not in _BACKEND_DTYPES[backend]:
        allowed = ", ".join(str(d).replace("torch.", "") for d in _BACKEND_DTYPES[backend])
        raise TypeError(f"{_OP}: backend {backend!r} supports {allowed}; got q_m of dtype {q_m.dtype}")
    dtype = q_m.dtype
    if backend is None and dtype in _HALF:
        backend = _backends.resolve_backend_cached(None, q_m.device.type, _OP, _SUPPORTED)
        if dtype not in _BACKEND_DTYPES[backend]:
            # float16/bfloat16 where the device's fastest backend has no half kernel (the CPU, e.g.
            # under autocast): compute in float32 there and hand back the input's dtype, as autocast
            # does for an op without a half kernel (and as joint_region_gather does)
            q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j = (
                None if t is None else t.float() for t in (q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j))
    name = _backends.resolve_backend_cached(backend, q_m.device.type, _OP, _supported_for(q_m.dtype))
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j))
    _check_memory(q_m, q_j, needs_grad, name)
    out_m, out_j, _, _ = torch.ops.jmipose.joint_motion_attention(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j,
                                                                  mask_m, mask_j, scale, name)
    return out_m.to(dtype), out_j.to(dtype)
