"""Op B: the joint-motion interaction attention (bidirectional cross-attention, residual fused).

    out_m = res_m + softmax(scale * q_m k_j^T  [keys masked by mask_j]) v_j     [B, h, N_m, d]
    out_j = res_j + softmax(scale * q_j k_m^T  [keys masked by mask_m]) v_m     [B, h, N_j, d]

``scale`` defaults to d**-0.5; ``mask_m`` [B, N_m] / ``mask_j`` [B, N_j] are boolean key-padding
masks (True = that token is not a key); a query whose keys are all masked gets the residual (or
zeros), never NaN.

This module currently holds the eager reference and the public function; the fused backends (C++
CPU, CUDA, Triton), ``torch.library.custom_op`` registration and full argument checks are added
by the op's own issue, behind this same function name.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _attend(query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor | None, scale: float) -> Tensor:
    """softmax(scale * q k^T) v with an optional [B, N_k] key-padding mask; materialises the scores."""
    compute_dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    scores = torch.matmul(query.to(compute_dtype), key.to(compute_dtype).transpose(-1, -2)) * scale
    if key_mask is not None:
        scores = scores.masked_fill(key_mask[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if key_mask is not None:  # all keys masked: softmax gives NaN; define the result as zero weights
        probs = torch.nan_to_num(probs, nan=0.0)
    return torch.matmul(probs, value.to(compute_dtype)).to(query.dtype)


def joint_motion_attention_reference(q_m: Tensor, k_m: Tensor, v_m: Tensor, q_j: Tensor, k_j: Tensor, v_j: Tensor,
                                     *, res_m: Tensor | None = None, res_j: Tensor | None = None,
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


def joint_motion_attention(q_m: Tensor, k_m: Tensor, v_m: Tensor, q_j: Tensor, k_j: Tensor, v_j: Tensor, *,
                           res_m: Tensor | None = None, res_j: Tensor | None = None, scale: float | None = None,
                           mask_m: Tensor | None = None, mask_j: Tensor | None = None,
                           backend: str | None = None) -> tuple[Tensor, Tensor]:
    """Both attention directions between motion tokens (``*_m``, [B, h, N_m, d]) and joint tokens
    (``*_j``, [B, h, N_j, d]) in one call; returns ``(out_m, out_j)``."""
    if backend not in (None, "reference"):
        raise NotImplementedError(f"joint_motion_attention: backend {backend!r} is not implemented yet")
    return joint_motion_attention_reference(q_m, k_m, v_m, q_j, k_j, v_j, res_m=res_m, res_j=res_j, scale=scale,
                                            mask_m=mask_m, mask_j=mask_j)
