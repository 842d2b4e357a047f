"""Op B: the joint-motion interaction attention (bidirectional cross-attention, residual fused).

    out_m = res_m + softmax(scale * q_m k_j^T  [keys masked by mask_j]) v_j     [B, h, N_m, d]
    out_j = res_j + softmax(scale * q_j k_m^T  [keys masked by mask_m]) v_m     [B, h, N_j, d]

``scale`` defaults to d**-0.5; ``mask_m`` [B, N_m] / ``mask_j`` [B, N_j] are boolean key-padding
masks (True = that token is not a key); a query whose keys are all masked gets the residual (or
zeros) and zero gradients, never NaN.  NaN in the inputs propagates to the outputs it reaches (a NaN
query gives a NaN output row), as in the reference.  JM-Pose's interaction block (../shared/PAPER.md)
exchanges information between the motion features and the joint features of one crop this way.

Backends (``backend=``; None picks the fastest live one for the device, dtype and head dim):

=========  ===============================================  ==============================
backend    implementation                                    dtypes (head dims)
=========  ===============================================  ==============================
reference  eager PyTorch below, materialises the N_m x N_j   float32, float64, float16,
           scores (the definition of truth)                  bfloat16 (any)
cpp        C++ CPU (csrc/joint_motion_attention/cpu.cpp):     float32, float64 (any)
           blocked online softmax, OpenMP
cuda       CUDA kernels (csrc/joint_motion_attention)        float32, float16, bfloat16 (<= 128)
triton     Triton kernels (jmipose/kernels)                  float32, float16, bfloat16 (<= 128)
=========  ===============================================  ==============================

With ``backend=None`` a head dim above 128 on a GPU (the channel-axis attention's d = h*w) runs on
the reference, with a warning logged once per kind of call; naming cuda or triton for it raises
``ArgumentError`` with the limit.  float16/bfloat16 where the chosen backend has no half kernels
(the CPU) are computed in float32 and handed back in their dtype.  Under ``torch.autocast`` (CPU and
CUDA) tensors of different floating dtypes are computed in the widest of them
(``_backends.autocast_dtype``) and each output keeps its queries' dtype.  Bad arguments raise
``jmipose.ops.ArgumentError``, which is a ``ValueError``/``TypeError`` and a ``RuntimeError`` at once.

The fused backends follow flash-attention-2 (Dao, 2023): an online softmax with float32 statistics
(float64 for float64 inputs), the log-sum-exp of every query row saved for backward, and a backward
that recomputes the probabilities from it; memory is O(B h N d), never O(N^2).  Gradients flow to
every q, k, v and to the residuals (whose gradient is the output gradient itself).  The op is a
``torch.library.custom_op`` (``jmipose::joint_motion_attention``, returning the outputs and the two
log-sum-exps) whose backward is a second op (``jmipose::joint_motion_attention_backward``), so both
trace under ``torch.compile(fullgraph=True)``; the public function and
``jmipose.nn.JointMotionAttention`` also compile under ``torch.jit.script``.  The op is
differentiable once: ``create_graph=True`` through it (double backward) raises at the first backward
(the eager reference, ``joint_motion_attention_reference``, is differentiable to any order).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from jmipose import resources
from jmipose.ops import _abi, _backends
from jmipose.ops._checks import ArgumentError, check_float_tensor, check_same_device_dtype, require

_OP = "joint_motion_attention"
_TOKENS = ("q_m", "k_m", "v_m", "q_j", "k_j", "v_j")


# ---------------------------------------------------------------------------------------------
# The reference


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


def _reference_direction(query, key, value, key_mask, residual, scale):
    """One direction of the reference backend: the output and the log-sum-exp of its scores."""
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


def joint_motion_attention_reference_backward(grad_out_m: Tensor, grad_out_j: Tensor, q_m: Tensor, k_m: Tensor,
                                              v_m: Tensor, q_j: Tensor, k_j: Tensor, v_j: Tensor, scale: float,
                                              mask_m: Tensor | None = None,
                                              mask_j: Tensor | None = None) -> tuple[Tensor, ...]:
    """The gradients of ``joint_motion_attention_reference`` w.r.t. (q_m, k_m, v_m, q_j, k_j, v_j),
    written out in eager PyTorch (the reference backend's backward; a residual's gradient is its
    output's gradient)."""
    dq_m, dk_j, dv_j = _reference_direction_backward(grad_out_m, q_m, k_j, v_j, mask_j, scale)
    dq_j, dk_m, dv_m = _reference_direction_backward(grad_out_j, q_j, k_m, v_m, mask_m, scale)
    return tuple(g.to(q_m.dtype).contiguous() for g in (dq_m, dk_m, dv_m, dq_j, dk_j, dv_j))


# ---------------------------------------------------------------------------------------------
# Argument checks


def _check_shapes(q_m: Tensor, k_m: Tensor, v_m: Tensor, q_j: Tensor, k_j: Tensor, v_j: Tensor,
                  res_m: Tensor | None, res_j: Tensor | None, mask_m: Tensor | None, mask_j: Tensor | None,
                  check) -> None:
    """Ranks and how the shapes fit together; ``check(condition, message)`` raises (``require`` in
    eager code, ``torch._check_with(ArgumentError, ...)`` in the fake kernels)."""
    named = {"q_m": q_m, "k_m": k_m, "v_m": v_m, "q_j": q_j, "k_j": k_j, "v_j": v_j, "res_m": res_m, "res_j": res_j}
    for name, tensor in named.items():
        if tensor is not None:
            check(tensor.dim() == 4, lambda name=name, tensor=tensor: (
                f"{_OP}: {name} must be a 4-D tensor, got {tensor.dim()}-D with shape {tuple(tensor.shape)}"))
    batch, heads, n_m, head_dim = q_m.shape
    n_j = q_j.shape[2]
    for name, tokens_from, tokens in (("k_m", "q_m", n_m), ("v_m", "q_m", n_m), ("q_j", "q_j", n_j),
                                      ("k_j", "q_j", n_j), ("v_j", "q_j", n_j), ("res_m", "q_m", n_m),
                                      ("res_j", "q_j", n_j)):
        tensor = named[name]
        if tensor is not None:
            expected = (batch, heads, tokens, head_dim)
            check(tuple(tensor.shape) == expected, lambda name=name, tensor=tensor, expected=expected,
                  tokens_from=tokens_from: (
                f"{_OP}: {name} must have shape [B, h, N, d] = {list(expected)} (B, h, d from q_m, N from "
                f"{tokens_from}), got {list(tensor.shape)}"))
    check(head_dim >= 1, lambda: f"{_OP}: the head dimension d must be >= 1, got q_m of shape {list(q_m.shape)}")
    for name, mask, tokens, tokens_name in (("mask_m", mask_m, n_m, "N_m"), ("mask_j", mask_j, n_j, "N_j")):
        if mask is not None:
            check(tuple(mask.shape) == (batch, tokens), lambda name=name, mask=mask, tokens=tokens,
                  tokens_name=tokens_name: (
                f"{_OP}: {name} must have shape [B, {tokens_name}] = {[batch, tokens]}, got {list(mask.shape)}"))


def _check_mask_type(name: str, mask: object) -> None:
    if mask is None:
        return
    if not isinstance(mask, Tensor):
        raise ArgumentError(f"{_OP}: {name} must be a bool torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ArgumentError(f"{_OP}: {name} must have dtype torch.bool (True = not a key), got {mask.dtype}")


def _check_arguments(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, scale, mask_m, mask_j) -> float:
    """Raises ``ArgumentError`` naming the argument, what was expected and what came (types and
    dtypes, then values, then shapes, then one device and one dtype); returns the scale."""
    named = {"q_m": q_m, "k_m": k_m, "v_m": v_m, "q_j": q_j, "k_j": k_j, "v_j": v_j, "res_m": res_m, "res_j": res_j}
    for name, value in named.items():
        if value is not None or name in _TOKENS:
            check_float_tensor(_OP, name, value)
    _check_mask_type("mask_m", mask_m)
    _check_mask_type("mask_j", mask_j)
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise ArgumentError(f"{_OP}: scale must be a real number or None, got {type(scale).__name__}")
        if not math.isfinite(scale):
            raise ArgumentError(f"{_OP}: scale must be finite, got {scale}")
    _check_shapes(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, require)
    check_same_device_dtype(_OP, named)
    for name, mask in (("mask_m", mask_m), ("mask_j", mask_j)):
        if mask is not None and mask.device != q_m.device:
            raise ArgumentError(f"{_OP}: {name} must be on the device of the tokens ({q_m.device}), "
                                f"got {mask.device}")
    return q_m.shape[3] ** -0.5 if scale is None else float(scale)


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


# ---------------------------------------------------------------------------------------------
# The dtype table (and the head dims of the GPU kernels)

SPEC = _backends.OpSpec(_OP, first_argument="q_m", dtypes={
    "reference": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
    "cpp": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float16, torch.bfloat16),
    "triton": (torch.float32, torch.float16, torch.bfloat16),
}, limits={"cuda": ("head dim", 128), "triton": ("head dim", 128)})
_DTYPES = SPEC.dtypes


# ---------------------------------------------------------------------------------------------
# Dispatch: one call, checked, to a backend


def _prepare(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, scale, mask_m, mask_j, backend, needs_grad):
    """What every call does before a backend runs: the checks, the autocast rule, the backend and
    compute dtype (``_backends.dispatch``), the memory limit.  Returns the choice, the scale and the
    eight token tensors (q_m ... v_j, res_m, res_j) in the compute dtype."""
    tokens = (q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j)
    device_type = q_m.device.type if isinstance(q_m, Tensor) else "cpu"
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        for name, value in zip((*_TOKENS, "res_m", "res_j"), tokens):
            if value is not None or name in _TOKENS:
                check_float_tensor(_OP, name, value)
        tokens = tuple(_backends.autocast_cast(tokens))
    scale = _check_arguments(*tokens, scale, mask_m, mask_j)
    q_m = tokens[0]
    choice = _backends.dispatch(SPEC, backend, q_m.device, q_m.dtype, q_m.shape[3])
    if choice.dtype != q_m.dtype:
        tokens = tuple(_backends.widen(tokens, choice.dtype))
    _check_memory(tokens[0], tokens[3], needs_grad, choice.backend)
    return choice, scale, tokens


def _mask_bytes(mask: Tensor | None) -> Tensor | None:
    return None if mask is None else mask.contiguous().view(torch.uint8)


_size_order = _abi.size_getter(_abi.JOINT_MOTION_ATTENTION_SIZES)


def _size_args(q_m: Tensor, q_j: Tensor) -> tuple[int, ...]:
    """The int64 sizes of the C ABI, in its order (``_abi.JOINT_MOTION_ATTENTION_SIZES``)."""
    batch, heads, n_m, head_dim = q_m.shape
    return _size_order({"batch": batch, "heads": heads, "n_m": n_m, "n_j": q_j.shape[2], "head_dim": head_dim})


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _native_forward(backend, q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, scale):
    out_m, out_j = torch.empty_like(q_m), torch.empty_like(q_j)
    stats = _stats_dtype(q_m.dtype)
    lse_m = q_m.new_empty(q_m.shape[:3], dtype=stats)
    lse_j = q_j.new_empty(q_j.shape[:3], dtype=stats)
    ptr = _backends.ptr
    args = (*(ptr(t) for t in (q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, _mask_bytes(mask_m),
                               _mask_bytes(mask_j), out_m, out_j, lse_m, lse_j)),
            *_size_args(q_m, q_j), float(scale), _backends.DTYPE_CODES[q_m.dtype])
    if backend == "cpp":
        _backends.call_cpu("jmipose_joint_motion_attention_forward_cpu", *args)
    else:
        _backends.call_cuda("jmipose_joint_motion_attention_forward_cuda", *args, *_backends.cuda_stream_args(q_m))
    return out_m, out_j, lse_m, lse_j


def _native_backward(backend, grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m,
                     res_j, mask_m, mask_j, lse_m, lse_j, scale):
    # float16/bfloat16 gradients are accumulated in float32 buffers (the C ABI contract), cast back here.
    grad_dtype = torch.float32 if q_m.dtype in _backends.HALF else q_m.dtype
    grads = [torch.empty_like(t, dtype=grad_dtype) for t in (q_m, k_m, v_m, q_j, k_j, v_j)]
    ptr = _backends.ptr
    args = (*(ptr(t) for t in (grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j,
                               _mask_bytes(mask_m), _mask_bytes(mask_j), lse_m, lse_j, *grads)),
            *_size_args(q_m, q_j), float(scale), _backends.DTYPE_CODES[q_m.dtype])
    if backend == "cpp":
        _backends.call_cpu("jmipose_joint_motion_attention_backward_cpu", *args)
    else:
        _backends.call_cuda("jmipose_joint_motion_attention_backward_cuda", *args, *_backends.cuda_stream_args(q_m))
    return tuple(g.to(q_m.dtype) for g in grads)


def _contiguous(*tensors: Tensor | None) -> list[Tensor | None]:
    return [None if t is None else t.contiguous() for t in tensors]


def _forward(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, scale, backend):
    """(out_m, out_j, lse_m, lse_j) on ``backend`` (arguments checked, dtype one the backend computes)."""
    if backend == "reference" or q_m.numel() == 0 or q_j.numel() == 0:
        out_m, lse_m = _reference_direction(q_m, k_j, v_j, mask_j, res_m, scale)
        out_j, lse_j = _reference_direction(q_j, k_m, v_m, mask_m, res_j, scale)
        return out_m, out_j, lse_m.contiguous(), lse_j.contiguous()
    tensors = _contiguous(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j)
    with _backends.device_scope(q_m):
        if backend == "triton":
            from jmipose.kernels import joint_motion_attention as triton_kernels

            return triton_kernels.forward(*tensors, *_contiguous(mask_m, mask_j), scale)
        return _native_forward(backend, *tensors, mask_m, mask_j, scale)


def _backward(grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j, mask_m, mask_j,
              lse_m, lse_j, scale, backend):
    """(dq_m, dk_m, dv_m, dq_j, dk_j, dv_j) on ``backend`` (arguments checked, dtype one the backend
    computes)."""
    if backend == "reference" or q_m.numel() == 0 or q_j.numel() == 0:
        return joint_motion_attention_reference_backward(grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, scale,
                                                         mask_m, mask_j)
    tensors = _contiguous(grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j)
    masks = _contiguous(mask_m, mask_j)
    with _backends.device_scope(q_m):
        if backend == "triton":
            from jmipose.kernels import joint_motion_attention as triton_kernels

            return tuple(triton_kernels.backward(*tensors, *masks, lse_m.contiguous(), lse_j.contiguous(), scale))
        return _native_backward(backend, *tensors, *masks, lse_m.contiguous(), lse_j.contiguous(), scale)


# ---------------------------------------------------------------------------------------------
# torch.library registration
#
# ``backend`` is the backend to run (None: the fastest live one); ``checked`` says the caller (the
# public function, the autograd formula) has checked the arguments, chosen the backend and widened
# half precision where needed.  Any other caller (TorchScript, ``torch.ops.jmipose...`` directly)
# leaves it False and the op does all of that itself.


@torch.library.custom_op("jmipose::joint_motion_attention", mutates_args=())
def _joint_motion_attention_op(q_m: Tensor, k_m: Tensor, v_m: Tensor, q_j: Tensor, k_j: Tensor, v_j: Tensor,
                               res_m: Tensor | None, res_j: Tensor | None, mask_m: Tensor | None,
                               mask_j: Tensor | None, scale: float, backend: str | None = None,
                               checked: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if checked:
        return _forward(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, scale, backend)
    choice, scale, tokens = _prepare(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, scale, mask_m, mask_j, backend,
                                     needs_grad=False)
    out_m, out_j, lse_m, lse_j = _forward(*tokens, mask_m, mask_j, scale, choice.backend)
    return out_m.to(q_m.dtype), out_j.to(q_j.dtype), lse_m, lse_j


@torch.library.custom_op("jmipose::joint_motion_attention_backward", mutates_args=())
def _joint_motion_attention_backward_op(grad_out_m: Tensor, grad_out_j: Tensor, q_m: Tensor, k_m: Tensor,
                                        v_m: Tensor, q_j: Tensor, k_j: Tensor, v_j: Tensor, out_m: Tensor,
                                        out_j: Tensor, res_m: Tensor | None, res_j: Tensor | None,
                                        mask_m: Tensor | None, mask_j: Tensor | None, lse_m: Tensor, lse_j: Tensor,
                                        scale: float, backend: str | None = None, checked: bool = False
                                        ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    if checked:
        return _backward(grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j, mask_m,
                         mask_j, lse_m, lse_j, scale, backend)
    dtype = q_m.dtype
    choice, scale, tokens = _prepare(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, scale, mask_m, mask_j, backend,
                                     needs_grad=True)
    for name, tensor, like in (("grad_out_m", grad_out_m, q_m), ("grad_out_j", grad_out_j, q_j),
                               ("out_m", out_m, q_m), ("out_j", out_j, q_j), ("lse_m", lse_m, q_m[..., 0]),
                               ("lse_j", lse_j, q_j[..., 0])):
        check_float_tensor(_OP, name, tensor)
        require(tensor.shape == like.shape, lambda name=name, tensor=tensor, like=like: (
            f"{_OP}: {name} must have shape {list(like.shape)}, got {list(tensor.shape)}"))
    q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j = tokens
    stats = _stats_dtype(choice.dtype)
    grad_out_m, grad_out_j, out_m, out_j = _backends.widen((grad_out_m, grad_out_j, out_m, out_j), choice.dtype)
    grads = _backward(grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j, mask_m,
                      mask_j, lse_m.to(stats), lse_j.to(stats), scale, choice.backend)
    return tuple(g.to(dtype) for g in grads)


# ---------------------------------------------------------------------------------------------
# Fake kernels (torch.compile): shapes only, checked with torch._check

_fake_check = functools.partial(torch._check_with, ArgumentError)


@_joint_motion_attention_op.register_fake
def _(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, scale, backend=None, checked=False):
    _check_shapes(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, _fake_check)
    stats = _stats_dtype(q_m.dtype)
    return (torch.empty_like(q_m, memory_format=torch.contiguous_format),
            torch.empty_like(q_j, memory_format=torch.contiguous_format),
            q_m.new_empty(q_m.shape[:3], dtype=stats), q_j.new_empty(q_j.shape[:3], dtype=stats))


@_joint_motion_attention_backward_op.register_fake
def _(grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j, mask_m, mask_j, lse_m,
      lse_j, scale, backend=None, checked=False):
    _check_shapes(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, _fake_check)
    for name, tensor, like in (("grad_out_m", grad_out_m, q_m), ("grad_out_j", grad_out_j, q_j)):
        _fake_check(tensor.shape == like.shape, lambda name=name, tensor=tensor, like=like: (
            f"{_OP}: {name} must have shape {list(like.shape)}, got {list(tensor.shape)}"))
    tokens = (q_m, k_m, v_m, q_j, k_j, v_j)
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in tokens)


# ---------------------------------------------------------------------------------------------
# Autograd


def _setup_context(ctx, inputs, output) -> None:
    q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, scale, backend, checked = inputs
    out_m, out_j, lse_m, lse_j = output
    ctx.save_for_backward(q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j, mask_m, mask_j, lse_m,
                          lse_j)
    ctx.scale, ctx.backend, ctx.checked = scale, backend, checked
    ctx.mark_non_differentiable(lse_m, lse_j)


def _autograd_backward(ctx, grad_out_m, grad_out_j, _grad_lse_m, _grad_lse_j):
    if torch.is_grad_enabled():
        raise RuntimeError(f"{_OP} is differentiable once: its backward is a kernel without a derivative of its "
                           "own, so a graph of the gradient (create_graph=True, double backward) cannot be built "
                           "through it; take this gradient without create_graph, or use "
                           f"{_OP}_reference, which autograd differentiates to any order")
    q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j, mask_m, mask_j, lse_m, lse_j = ctx.saved_tensors
    grads = torch.ops.jmipose.joint_motion_attention_backward(
        grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j, mask_m, mask_j,
        lse_m, lse_j, ctx.scale, ctx.backend, ctx.checked)
    grad_res_m = grad_out_m if res_m is not None and ctx.needs_input_grad[6] else None
    grad_res_j = grad_out_j if res_j is not None and ctx.needs_input_grad[7] else None
    return (*grads, grad_res_m, grad_res_j, None, None, None, None, None)


_joint_motion_attention_op.register_autograd(_autograd_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Autocast (CPU and CUDA): the one rule of _backends.autocast_dtype, each output in its queries' dtype


def _restore(args: tuple, outputs: tuple[Tensor, Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    out_m, out_j, lse_m, lse_j = outputs
    return out_m.to(args[0].dtype), out_j.to(args[3].dtype), lse_m, lse_j


_backends.register_autocast("joint_motion_attention", _restore)


# ---------------------------------------------------------------------------------------------
# Public function


def joint_motion_attention(q_m: Tensor, k_m: Tensor, v_m: Tensor, q_j: Tensor, k_j: Tensor, v_j: Tensor,
                           res_m: Tensor | None = None, res_j: Tensor | None = None, scale: float | None = None,
                           mask_m: Tensor | None = None, mask_j: Tensor | None = None,
                           backend: str | None = None) -> tuple[Tensor, Tensor]:
    """Both attention directions between motion tokens (``*_m``, [B, h, N_m, d]) and joint tokens
    (``*_j``, [B, h, N_j, d]) in one call; returns ``(out_m, out_j)``.

    ``out_m = res_m + softmax(scale q_m k_j^T) v_j`` and ``out_j = res_j + softmax(scale q_j k_m^T) v_m``;
    ``mask_m`` [B, N_m] / ``mask_j`` [B, N_j] (bool, True = not a key) mask the keys of the motion /
    joint tokens.  Inputs may be non-contiguous views.  ``backend``: "reference", "cpp", "cuda",
    "triton" or None (the fastest live one for the device, dtype and head dim).  Differentiable once
    w.r.t. every q, k, v and residual.  Raises ``jmipose.ops.ArgumentError`` (a ValueError, TypeError
    and RuntimeError) for bad arguments.  Compiles under ``torch.jit.script`` (there it calls the
    registered op, which checks its arguments and picks the backend itself).
    """
    if torch.jit.is_scripting():
        default_scale = float(q_m.shape[3]) ** -0.5
        out_m, out_j, _, _ = torch.ops.jmipose.joint_motion_attention(
            q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j,
            default_scale if scale is None else scale, backend, False)
        return out_m, out_j
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and isinstance(t, Tensor) and t.requires_grad for t in (q_m, k_m, v_m, q_j, k_j, v_j, res_m,
                                                                             res_j))
    choice, scale, tokens = _prepare(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, scale, mask_m, mask_j, backend,
                                     needs_grad)
    out_m, out_j, _, _ = torch.ops.jmipose.joint_motion_attention(*tokens, mask_m, mask_j, scale, choice.backend,
                                                                  True)
    return (out_m if out_m.dtype == q_m.dtype else out_m.to(q_m.dtype),
            out_j if out_j.dtype == q_j.dtype else out_j.to(q_j.dtype))


__all__ = ["joint_motion_attention", "joint_motion_attention_reference", "joint_motion_attention_reference_backward"]
