"""Triton kernels of op B, the joint-motion interaction attention (both directions in one launch).

    out_m = res_m + softmax(scale * q_m k_j^T, keys masked by mask_j) v_j      [B, h, N_m, d]
    out_j = res_j + softmax(scale * q_j k_m^T, keys masked by mask_m) v_m      [B, h, N_j, d]

The method is FlashAttention-2 (Dao, "FlashAttention-2: Faster Attention with Better Parallelism and
Work Partitioning", 2023): each program owns a block of queries, streams the keys through an online
softmax with float32 statistics (running max and sum in the log2 domain, so ``exp2`` is used), never
writes the score matrix, and saves the log-sum-exp ``lse = log(sum_k exp(scale q.k))`` per query.
The backward recomputes the probabilities ``P = exp(scale q k^T - lse)`` and uses

    D = rowsum(dO * (out - res)),   dS = P * (dO v^T - D),
    dQ = scale dS K,   dK = scale dS^T Q,   dV = P^T dO

in two deterministic passes (no atomics): a dQ pass per query block (it also writes D) and a dK/dV pass
per key block.  Grid axis 1 selects the direction (0: motion queries against joint keys, 1: joint
queries against motion keys), so one launch serves both directions.

Conventions: key-padding masks are True for tokens that are not keys; a query whose keys are all
masked gets zero attention (out = residual or 0), lse = -inf and zero gradients, never NaN.  Head
dims that are not a power of two (48) are padded to the next one (64) with masked loads.  float32
inputs use exact IEEE float32 dot products (``input_precision="ieee"``), float16/bfloat16 use tensor
cores with float32 accumulation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


# --------------------------------------------------------------------------------------------------
# tiles shared by the passes
#
# The top-level kernels turn (batch, head) into base pointers with int64 arithmetic once; inside one
# head's [N, d] slab the tile offsets are int32 (the host checks N * d < 2**31): int64 offsets for every
# element of a 128x64 tile cost two registers each and made the kernels spill.  The head dim is a
# compile-time constant, so row offsets and the d-padding masks are known to the vectoriser.


@triton.jit
def _load_query_block(q_ptr, query_start, n_queries, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                      HEAD_DIM: tl.constexpr):
    """The prologue of a program that owns a block of queries (the forward and the dQ pass): the
    head-dim lanes and which of them are real (d is padded to BLOCK_D), the query rows, the tile's
    offsets and mask, and the Q tile (zeros past the end)."""
    rows = query_start + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_valid = rows < n_queries
    dim_valid = dims < HEAD_DIM
    q_offsets = rows[:, None] * HEAD_DIM + dims[None, :]
    q_tile_mask = row_valid[:, None] & dim_valid[None, :]
    q = tl.load(q_ptr + q_offsets, mask=q_tile_mask, other=0.0)
    return dims, dim_valid, rows, row_valid, q_offsets, q_tile_mask, q


@triton.jit
def _load_key_block(k_ptr, v_ptr, key_mask_ptr, key_start, n_keys, dims, dim_valid,
                    HAS_KEY_MASK: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr):
    """K and V rows [key_start, key_start + BLOCK_N) (zeros past the end) and which of them are keys."""
    keys = key_start + tl.arange(0, BLOCK_N)
    key_valid = keys < n_keys
    kv_offsets = keys[:, None] * HEAD_DIM + dims[None, :]
    kv_tile_mask = key_valid[:, None] & dim_valid[None, :]
    k = tl.load(k_ptr + kv_offsets, mask=kv_tile_mask, other=0.0)
    v = tl.load(v_ptr + kv_offsets, mask=kv_tile_mask, other=0.0)
    if HAS_KEY_MASK:
        ignored = tl.load(key_mask_ptr + keys, mask=key_valid, other=1)
        key_valid = key_valid & (ignored == 0)
    return k, v, key_valid


@triton.jit
def _load_lse_log2(lse_ptr, rows, row_valid):
    """lse in log2 units; -inf (all keys masked) and padding rows become +inf, so exp2(s - lse) = 0."""
    lse = tl.load(lse_ptr + rows, mask=row_valid, other=float("-inf"))
    return tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)


@triton.jit
def _program_coordinates(num_blocks, heads, n_m, n_j, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """The prologue of every kernel.  Axis 0 enumerates (batch * head, block) with the block fastest,
    so neighbouring programs share one head's K/V in L2; it is the grid axis without the 65535 limit.
    Axis 1 is the direction.  Returns (batch * head, batch, first row of the block, direction, and the
    int64 element offsets of this head's motion and joint [N, d] slabs)."""
    pid = tl.program_id(0).to(tl.int64)
    bh = pid // num_blocks
    block_start = (pid % num_blocks).to(tl.int32) * BLOCK
    return bh, bh // heads, block_start, tl.program_id(1), bh * n_m * HEAD_DIM, bh * n_j * HEAD_DIM


# --------------------------------------------------------------------------------------------------
# forward


@triton.jit
def _forward_key_step(q, k_ptr, v_ptr, key_mask_ptr, m_i, l_i, acc, key_start, n_keys, dims, dim_valid,
                      qk_scale_log2, HAS_KEY_MASK: tl.constexpr, BLOCK_N: tl.constexpr,
                      HEAD_DIM: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One online-softmax update.  m_i: running max of the scaled scores (log2 units); l_i: running sum
    of exp2(score - m_i); acc: running sum of exp2(score - m_i) v."""
    k, v, key_valid = _load_key_block(k_ptr, v_ptr, key_mask_ptr, key_start, n_keys, dims, dim_valid,
                                      HAS_KEY_MASK, BLOCK_N, HEAD_DIM)
    scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale_log2
    scores = tl.where(key_valid[None, :], scores, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(scores, 1))
    # Rows with no valid key so far keep m = -inf; shifting by 0 instead avoids (-inf) - (-inf).
    m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(scores - m_shift[:, None])
    alpha = tl.math.exp2(m_i - m_shift)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return m_new, l_i, acc


@triton.jit
def _forward_query_block(q_ptr, k_ptr, v_ptr, res_ptr, key_mask_ptr, out_ptr, lse_ptr, query_start, n_queries,
                         n_keys, qk_scale_log2, HAS_RESIDUAL: tl.constexpr,
                         HAS_KEY_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr, DOT_PRECISION: tl.constexpr,
                         WHILE_LOOPS: tl.constexpr):
    """One block of queries of one direction (pointers at this head's slabs): online softmax over every
    key block, then the epilogue (normalise, add the residual, store out and lse)."""
    dims, dim_valid, rows, row_valid, q_offsets, q_tile_mask, q = _load_query_block(
        q_ptr, query_start, n_queries, BLOCK_M, BLOCK_D, HEAD_DIM)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if WHILE_LOOPS:
        key_start = 0
        while key_start < n_keys:
            m_i, l_i, acc = _forward_key_step(q, k_ptr, v_ptr, key_mask_ptr, m_i, l_i, acc, key_start, n_keys,
                                              dims, dim_valid, qk_scale_log2, HAS_KEY_MASK, BLOCK_N, HEAD_DIM,
                                              DOT_PRECISION)
            key_start += BLOCK_N
    else:
        for key_start in range(0, n_keys, BLOCK_N):
            m_i, l_i, acc = _forward_key_step(q, k_ptr, v_ptr, key_mask_ptr, m_i, l_i, acc, key_start, n_keys,
                                              dims, dim_valid, qk_scale_log2, HAS_KEY_MASK, BLOCK_N, HEAD_DIM,
                                              DOT_PRECISION)

    has_keys = l_i > 0.0
    l_safe = tl.where(has_keys, l_i, 1.0)
    attention = acc / l_safe[:, None]
    lse = tl.where(has_keys, (m_i + tl.math.log2(l_safe)) * 0.6931471805599453, float("-inf"))
    if HAS_RESIDUAL:
        attention += tl.load(res_ptr + q_offsets, mask=q_tile_mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + q_offsets, attention.to(out_ptr.dtype.element_ty), mask=q_tile_mask)
    tl.store(lse_ptr + rows, lse, mask=row_valid)


@triton.jit
def _joint_motion_attention_forward_kernel(
        q_m_ptr, k_m_ptr, v_m_ptr, q_j_ptr, k_j_ptr, v_j_ptr, res_m_ptr, res_j_ptr, mask_m_ptr, mask_j_ptr,
        out_m_ptr, out_j_ptr, lse_m_ptr, lse_j_ptr,
        n_m, n_j, heads, num_query_blocks, qk_scale_log2,
        HAS_RES_M: tl.constexpr, HAS_RES_J: tl.constexpr, HAS_MASK_M: tl.constexpr, HAS_MASK_J: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
        DOT_PRECISION: tl.constexpr, WHILE_LOOPS: tl.constexpr):
    bh, batch, query_start, direction, m_slab, j_slab = _program_coordinates(
        num_query_blocks, heads, n_m, n_j, BLOCK_M, HEAD_DIM)
    if direction == 0:  # motion queries, joint keys
        if query_start < n_m:
            _forward_query_block(q_m_ptr + m_slab, k_j_ptr + j_slab, v_j_ptr + j_slab, res_m_ptr + m_slab,
                                 mask_j_ptr + batch * n_j, out_m_ptr + m_slab, lse_m_ptr + bh * n_m,
                                 query_start, n_m, n_j, qk_scale_log2, HAS_RES_M, HAS_MASK_J,
                                 BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, DOT_PRECISION, WHILE_LOOPS)
    else:  # joint queries, motion keys
        if query_start < n_j:
            _forward_query_block(q_j_ptr + j_slab, k_m_ptr + m_slab, v_m_ptr + m_slab, res_j_ptr + j_slab,
                                 mask_m_ptr + batch * n_m, out_j_ptr + j_slab, lse_j_ptr + bh * n_j,
                                 query_start, n_j, n_m, qk_scale_log2, HAS_RES_J, HAS_MASK_M,
                                 BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, DOT_PRECISION, WHILE_LOOPS)


# --------------------------------------------------------------------------------------------------
# backward, pass 1: D and dQ per query block


@triton.jit
def _backward_dq_key_step(q, grad_out, lse_log2, delta, grad_q, k_ptr, v_ptr, key_mask_ptr, key_start, n_keys,
                          dims, dim_valid, qk_scale_log2, HAS_KEY_MASK: tl.constexpr,
                          BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, DOT_PRECISION: tl.constexpr):
    k, v, key_valid = _load_key_block(k_ptr, v_ptr, key_mask_ptr, key_start, n_keys, dims, dim_valid,
                                      HAS_KEY_MASK, BLOCK_N, HEAD_DIM)
    scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale_log2
    scores = tl.where(key_valid[None, :], scores, float("-inf"))
    p = tl.math.exp2(scores - lse_log2[:, None])
    grad_p = tl.dot(grad_out, tl.trans(v), input_precision=DOT_PRECISION)
    grad_scores = p * (grad_p - delta[:, None])
    return grad_q + tl.dot(grad_scores.to(k.dtype), k, input_precision=DOT_PRECISION)


@triton.jit
def _backward_dq_query_block(q_ptr, k_ptr, v_ptr, out_ptr, res_ptr, grad_out_ptr, lse_ptr, key_mask_ptr,
                             delta_ptr, grad_q_ptr, query_start, n_queries, n_keys, scale, qk_scale_log2,
                             HAS_RESIDUAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr, BLOCK_M: tl.constexpr,
                             BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
                             DOT_PRECISION: tl.constexpr, WHILE_LOOPS: tl.constexpr):
    dims, dim_valid, rows, row_valid, q_offsets, q_tile_mask, q = _load_query_block(
        q_ptr, query_start, n_queries, BLOCK_M, BLOCK_D, HEAD_DIM)
    grad_out = tl.load(grad_out_ptr + q_offsets, mask=q_tile_mask, other=0.0)

    # D = rowsum(dO * attention output), with the attention output = out - res; saved for the dK/dV pass.
    attention = tl.load(out_ptr + q_offsets, mask=q_tile_mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        attention -= tl.load(res_ptr + q_offsets, mask=q_tile_mask, other=0.0).to(tl.float32)
    delta = tl.sum(grad_out.to(tl.float32) * attention, 1)
    tl.store(delta_ptr + rows, delta, mask=row_valid)
    lse_log2 = _load_lse_log2(lse_ptr, rows, row_valid)

    grad_q = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if WHILE_LOOPS:
        key_start = 0
        while key_start < n_keys:
            grad_q = _backward_dq_key_step(q, grad_out, lse_log2, delta, grad_q, k_ptr, v_ptr, key_mask_ptr,
                                           key_start, n_keys, dims, dim_valid, qk_scale_log2,
                                           HAS_KEY_MASK, BLOCK_N, HEAD_DIM, DOT_PRECISION)
            key_start += BLOCK_N
    else:
        for key_start in range(0, n_keys, BLOCK_N):
            grad_q = _backward_dq_key_step(q, grad_out, lse_log2, delta, grad_q, k_ptr, v_ptr, key_mask_ptr,
                                           key_start, n_keys, dims, dim_valid, qk_scale_log2,
                                           HAS_KEY_MASK, BLOCK_N, HEAD_DIM, DOT_PRECISION)
    grad_q *= scale
    tl.store(grad_q_ptr + q_offsets, grad_q.to(grad_q_ptr.dtype.element_ty), mask=q_tile_mask)


@triton.jit
def _joint_motion_attention_backward_dq_kernel(
        grad_out_m_ptr, grad_out_j_ptr, q_m_ptr, k_m_ptr, v_m_ptr, q_j_ptr, k_j_ptr, v_j_ptr,
        out_m_ptr, out_j_ptr, res_m_ptr, res_j_ptr, mask_m_ptr, mask_j_ptr, lse_m_ptr, lse_j_ptr,
        delta_m_ptr, delta_j_ptr, grad_q_m_ptr, grad_q_j_ptr,
        n_m, n_j, heads, num_query_blocks, scale, qk_scale_log2,
        HAS_RES_M: tl.constexpr, HAS_RES_J: tl.constexpr, HAS_MASK_M: tl.constexpr, HAS_MASK_J: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
        DOT_PRECISION: tl.constexpr, WHILE_LOOPS: tl.constexpr):
    bh, batch, query_start, direction, m_slab, j_slab = _program_coordinates(
        num_query_blocks, heads, n_m, n_j, BLOCK_M, HEAD_DIM)
    if direction == 0:
        if query_start < n_m:
            _backward_dq_query_block(q_m_ptr + m_slab, k_j_ptr + j_slab, v_j_ptr + j_slab, out_m_ptr + m_slab,
                                     res_m_ptr + m_slab, grad_out_m_ptr + m_slab, lse_m_ptr + bh * n_m,
                                     mask_j_ptr + batch * n_j, delta_m_ptr + bh * n_m, grad_q_m_ptr + m_slab,
                                     query_start, n_m, n_j, scale, qk_scale_log2, HAS_RES_M, HAS_MASK_J,
                                     BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, DOT_PRECISION, WHILE_LOOPS)
    else:
        if query_start < n_j:
            _backward_dq_query_block(q_j_ptr + j_slab, k_m_ptr + m_slab, v_m_ptr + m_slab, out_j_ptr + j_slab,
                                     res_j_ptr + j_slab, grad_out_j_ptr + j_slab, lse_j_ptr + bh * n_j,
                                     mask_m_ptr + batch * n_m, delta_j_ptr + bh * n_j, grad_q_j_ptr + j_slab,
                                     query_start, n_j, n_m, scale, qk_scale_log2, HAS_RES_J, HAS_MASK_M,
                                     BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, DOT_PRECISION, WHILE_LOOPS)


# --------------------------------------------------------------------------------------------------
# backward, pass 2: dK and dV per key block


@triton.jit
def _backward_dkdv_query_step(k, v, key_valid, grad_k, grad_v, q_ptr, grad_out_ptr, lse_ptr, delta_ptr,
                              query_start, n_queries, dims, dim_valid, qk_scale_log2,
                              BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """The transposed scores S^T = K Q^T keep K, V and both accumulators in rows, so only the streamed
    Q and dO tiles are transposed."""
    rows = query_start + tl.arange(0, BLOCK_M)
    row_valid = rows < n_queries
    q_offsets = rows[:, None] * HEAD_DIM + dims[None, :]
    q_tile_mask = row_valid[:, None] & dim_valid[None, :]
    q = tl.load(q_ptr + q_offsets, mask=q_tile_mask, other=0.0)
    grad_out = tl.load(grad_out_ptr + q_offsets, mask=q_tile_mask, other=0.0)
    lse_log2 = _load_lse_log2(lse_ptr, rows, row_valid)
    delta = tl.load(delta_ptr + rows, mask=row_valid, other=0.0)

    scores_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale_log2
    scores_t = tl.where(key_valid[:, None], scores_t, float("-inf"))
    p_t = tl.math.exp2(scores_t - lse_log2[None, :])
    grad_v += tl.dot(p_t.to(grad_out.dtype), grad_out, input_precision=DOT_PRECISION)
    grad_p_t = tl.dot(v, tl.trans(grad_out), input_precision=DOT_PRECISION)
    grad_scores_t = p_t * (grad_p_t - delta[None, :])
    grad_k += tl.dot(grad_scores_t.to(q.dtype), q, input_precision=DOT_PRECISION)
    return grad_k, grad_v


@triton.jit
def _backward_dkdv_key_block(q_ptr, k_ptr, v_ptr, grad_out_ptr, lse_ptr, delta_ptr, key_mask_ptr, grad_k_ptr,
                             grad_v_ptr, key_start, n_queries, n_keys, scale, qk_scale_log2,
                             HAS_KEY_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr, DOT_PRECISION: tl.constexpr,
                             WHILE_LOOPS: tl.constexpr):
    """dK and dV of one block of keys of one direction: every query block streams past them."""
    dims = tl.arange(0, BLOCK_D)
    dim_valid = dims < HEAD_DIM
    k, v, key_valid = _load_key_block(k_ptr, v_ptr, key_mask_ptr, key_start, n_keys, dims, dim_valid,
                                      HAS_KEY_MASK, BLOCK_N, HEAD_DIM)
    grad_k = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    grad_v = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    if WHILE_LOOPS:
        query_start = 0
        while query_start < n_queries:
            grad_k, grad_v = _backward_dkdv_query_step(k, v, key_valid, grad_k, grad_v, q_ptr, grad_out_ptr,
                                                       lse_ptr, delta_ptr, query_start, n_queries, dims,
                                                       dim_valid, qk_scale_log2, BLOCK_M, HEAD_DIM,
                                                       DOT_PRECISION)
            query_start += BLOCK_M
    else:
        for query_start in range(0, n_queries, BLOCK_M):
            grad_k, grad_v = _backward_dkdv_query_step(k, v, key_valid, grad_k, grad_v, q_ptr, grad_out_ptr,
                                                       lse_ptr, delta_ptr, query_start, n_queries, dims,
                                                       dim_valid, qk_scale_log2, BLOCK_M, HEAD_DIM,
                                                       DOT_PRECISION)
    grad_k *= scale
    keys = key_start + tl.arange(0, BLOCK_N)
    kv_offsets = keys[:, None] * HEAD_DIM + dims[None, :]
    kv_tile_mask = (keys < n_keys)[:, None] & dim_valid[None, :]
    tl.store(grad_k_ptr + kv_offsets, grad_k.to(grad_k_ptr.dtype.element_ty), mask=kv_tile_mask)
    tl.store(grad_v_ptr + kv_offsets, grad_v.to(grad_v_ptr.dtype.element_ty), mask=kv_tile_mask)


@triton.jit
def _joint_motion_attention_backward_dkdv_kernel(
        grad_out_m_ptr, grad_out_j_ptr, q_m_ptr, k_m_ptr, v_m_ptr, q_j_ptr, k_j_ptr, v_j_ptr,
        mask_m_ptr, mask_j_ptr, lse_m_ptr, lse_j_ptr, delta_m_ptr, delta_j_ptr,
        grad_k_m_ptr, grad_v_m_ptr, grad_k_j_ptr, grad_v_j_ptr,
        n_m, n_j, heads, num_key_blocks, scale, qk_scale_log2,
        HAS_MASK_M: tl.constexpr, HAS_MASK_J: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
        DOT_PRECISION: tl.constexpr, WHILE_LOOPS: tl.constexpr):
    bh, batch, key_start, direction, m_slab, j_slab = _program_coordinates(
        num_key_blocks, heads, n_m, n_j, BLOCK_N, HEAD_DIM)
    if direction == 0:  # joint keys, attended by motion queries
        if key_start < n_j:
            _backward_dkdv_key_block(q_m_ptr + m_slab, k_j_ptr + j_slab, v_j_ptr + j_slab,
                                     grad_out_m_ptr + m_slab, lse_m_ptr + bh * n_m, delta_m_ptr + bh * n_m,
                                     mask_j_ptr + batch * n_j,
                                     grad_k_j_ptr + j_slab, grad_v_j_ptr + j_slab, key_start, n_m, n_j, scale,
                                     qk_scale_log2, HAS_MASK_J, BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM,
                                     DOT_PRECISION, WHILE_LOOPS)
    else:  # motion keys, attended by joint queries
        if key_start < n_m:
            _backward_dkdv_key_block(q_j_ptr + j_slab, k_m_ptr + m_slab, v_m_ptr + m_slab,
                                     grad_out_j_ptr + j_slab, lse_j_ptr + bh * n_j, delta_j_ptr + bh * n_j,
                                     mask_m_ptr + batch * n_m,
                                     grad_k_m_ptr + m_slab, grad_v_m_ptr + m_slab, key_start, n_j, n_m, scale,
                                     qk_scale_log2, HAS_MASK_M, BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM,
                                     DOT_PRECISION, WHILE_LOOPS)


# --------------------------------------------------------------------------------------------------
# host side


@dataclass(frozen=True)
class Blocks:
    """Tile of one kernel: BLOCK_M queries by BLOCK_N keys per step, warps, pipeline stages."""

    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2


@dataclass(frozen=True)
class LaunchConfig:
    """The tiles of the op's three kernels (one call's launch configuration)."""

    forward: Blocks
    backward_dq: Blocks
    backward_dkdv: Blocks


def launch_config(head_dim: int, dtype: torch.dtype, device: torch.device) -> LaunchConfig:
    """The launch configuration of a call: tile sizes without autotuning, picked for an H100 at the
    model's shapes (N up to 6,912, d 16/48).

    float16/bfloat16 run on tensor cores: 128x64 forward tiles as in FlashAttention-2; the backward keeps
    the side that owns the accumulators large (128 rows) and streams the other in 32-row tiles.  float32
    uses exact IEEE dot products (FMA, operands in registers), so its tiles are smaller.  The warp counts
    were chosen from ptxas register reports of these kernels compiled ahead of time for sm_90 and sm_80
    (no GPU needed; triton 3.9): 4 warps spilled at 255 registers in most configurations, 8 warps do not
    (at most 32 bytes on sm_80).  ``jmipose bench --compile-only`` reports every configuration with the
    installed triton (CI: 3.9; its slow job: 3.6, the GPU machines' version); none spills at the model's
    shapes.  On CPU tensors (the interpreter, used by tests) small tiles make small
    shapes span several blocks.
    """
    if device.type != "cuda":
        return LaunchConfig(Blocks(32, 16), Blocks(32, 16), Blocks(16, 32))
    padded_dim = max(16, triton.next_power_of_2(head_dim))
    if dtype == torch.float32:
        if padded_dim <= 64:
            return LaunchConfig(Blocks(64, 32, 8, 2), Blocks(64, 32, 8, 2), Blocks(32, 32, 8, 2))
        return LaunchConfig(Blocks(32, 32, 8, 2), Blocks(32, 32, 8, 2), Blocks(32, 32, 8, 2))
    if padded_dim <= 64:
        # dK/dV with two stages: with three, triton 3.6 spilled it on sm_80 (255 registers at d = 48).
        return LaunchConfig(Blocks(128, 64, 8, 3), Blocks(128, 32, 8, 3), Blocks(32, 128, 8, 2))
    return LaunchConfig(Blocks(64, 64, 8, 2), Blocks(64, 32, 8, 2), Blocks(32, 64, 8, 2))


# tl.dot ignores this for float16/bfloat16 inputs; for float32 it turns TF32 off (exact IEEE products).
DOT_PRECISION = "ieee"

# Head dims compiled ahead of time (the ones the op documents; any d <= 128 runs padded to the same
# BLOCK_D); the model's attention: d = 48, bfloat16 (N only changes the grid).
COMPILED_HEAD_DIMS = (16, 32, 48, 64, 128)
_MODEL_HEAD_DIM, _MODEL_DTYPE = 48, torch.bfloat16


def launch_variants() -> list[dict]:
    """Every kernel specialisation the GPU dispatch of this module can launch, for ahead-of-time
    compilation (``jmipose bench --compile-only``): the three kernels x the configuration
    ``launch_config`` picks for each dtype and head dim x residual and key-mask flags.  One dict per
    variant:

    ``kernel`` (the ``triton.jit`` function), ``name``, ``dtype``, ``config`` (the tiles, as text),
    ``constexprs`` (every compile-time argument), ``flags`` (those of them that depend on the call's
    data rather than on the configuration), ``signature`` (the type of every other argument, as
    ``triton.compile`` takes it), ``num_warps``, ``num_stages`` and ``model`` (whether the dispatch
    picks it for the model's attention)."""
    element = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}
    variants = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for head_dim in COMPILED_HEAD_DIMS:
            configs = launch_config(head_dim, dtype, torch.device("cuda"))
            kernels = [("forward", _joint_motion_attention_forward_kernel, configs.forward, True),
                       ("backward_dq", _joint_motion_attention_backward_dq_kernel, configs.backward_dq, True),
                       ("backward_dkdv", _joint_motion_attention_backward_dkdv_kernel, configs.backward_dkdv, False)]
            for name, kernel, config, has_residuals in kernels:
                residuals = [(True, True), (True, False), (False, True), (False, False)] if has_residuals else [None]
                for res in residuals:
                    for mask_m in (True, False):
                        for mask_j in (True, False):
                            flags = {"HAS_MASK_M": mask_m, "HAS_MASK_J": mask_j}
                            if res is not None:
                                flags.update(HAS_RES_M=res[0], HAS_RES_J=res[1])
                            constexprs = {**flags, "BLOCK_M": config.block_m, "BLOCK_N": config.block_n,
                                          "BLOCK_D": max(16, triton.next_power_of_2(head_dim)),
                                          "HEAD_DIM": head_dim, "DOT_PRECISION": DOT_PRECISION,
                                          "WHILE_LOOPS": False}
                            signature = {}
                            for arg in kernel.arg_names:
                                if arg in constexprs:
                                    continue
                                if arg.startswith(("lse", "delta")):
                                    signature[arg] = "*fp32"
                                elif arg.startswith("mask"):  # bytes, or a never-read placeholder (q)
                                    present = flags["HAS_MASK_M" if arg == "mask_m_ptr" else "HAS_MASK_J"]
                                    signature[arg] = "*u8" if present else element[dtype]
                                elif arg.endswith("_ptr"):
                                    signature[arg] = element[dtype]
                                else:
                                    signature[arg] = "fp32" if arg in ("scale", "qk_scale_log2") else "i32"
                            variants.append({
                                "kernel": kernel, "name": name, "dtype": dtype,
                                "config": f"d={head_dim} BLOCK_M={config.block_m} BLOCK_N={config.block_n}",
                                "constexprs": constexprs, "flags": flags, "signature": signature,
                                "num_warps": config.num_warps, "num_stages": config.num_stages,
                                "model": head_dim == _MODEL_HEAD_DIM and dtype == _MODEL_DTYPE})
    return variants


def _while_loops() -> bool:
    """Whether the key/query loops must be written as while loops.

    Only for the CPU interpreter of triton < 3.7 with numpy >= 2.4 (triton-lang/triton#9171): that
    interpreter turns ``range(0, n, BLOCK)`` over a runtime ``n`` into ``int()`` of a 1-element array,
    which numpy 2.4 refuses.  Compiled kernels always use ``for`` loops (only those are pipelined).
    """
    if type(_joint_motion_attention_forward_kernel).__name__ != "InterpretedFunction":
        return False
    import numpy as np  # the interpreter's own dependency; compiled kernels never get here

    triton_version = tuple(int(part) for part in re.findall(r"\d+", triton.__version__)[:2])
    numpy_version = tuple(int(part) for part in re.findall(r"\d+", np.__version__)[:2])
    return triton_version < (3, 7) and numpy_version >= (2, 4)


def _check_inputs(q_m: torch.Tensor, q_j: torch.Tensor) -> None:
    if q_m.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"joint_motion_attention (triton): inputs must be float32, float16 or bfloat16, "
                        f"got {q_m.dtype}")
    if q_m.dim() != 4 or q_j.dim() != 4 or q_m.shape[:2] != q_j.shape[:2] or q_m.shape[3] != q_j.shape[3]:
        raise ValueError(f"joint_motion_attention (triton): q_m [B, h, N_m, d] and q_j [B, h, N_j, d] "
                         f"disagree: {tuple(q_m.shape)} vs {tuple(q_j.shape)}")
    if q_m.shape[3] > 128:
        raise ValueError(f"joint_motion_attention (triton): head dim must be at most 128, got {q_m.shape[3]}")
    # Offsets inside one head's [N, d] slab are int32 in the kernels (the base pointers are int64).
    if (max(q_m.shape[2], q_j.shape[2]) + 128) * q_m.shape[3] >= 2**31:
        raise ValueError(f"joint_motion_attention (triton): N * d must stay below 2**31 per head, got "
                         f"N_m={q_m.shape[2]}, N_j={q_j.shape[2]}, d={q_m.shape[3]}")


def _mask_arg(mask: torch.Tensor | None, fallback: torch.Tensor) -> torch.Tensor:
    """A [B, N] bool mask as bytes (same storage), or a never-read placeholder pointer."""
    if mask is None:
        return fallback
    return mask.contiguous().view(torch.uint8)


def _residual_arg(residual: torch.Tensor | None, fallback: torch.Tensor) -> torch.Tensor:
    """The residual, or a never-read placeholder pointer (HAS_RES_* is False)."""
    return fallback if residual is None else residual


def _shared_kwargs(q_m: torch.Tensor, q_j: torch.Tensor, mask_m, mask_j) -> dict:
    """The sizes and compile-time flags every kernel of this module takes."""
    _, heads, n_m, head_dim = q_m.shape
    return dict(n_m=n_m, n_j=q_j.shape[2], heads=heads, HEAD_DIM=head_dim,
                BLOCK_D=max(16, triton.next_power_of_2(head_dim)), HAS_MASK_M=mask_m is not None,
                HAS_MASK_J=mask_j is not None, DOT_PRECISION=DOT_PRECISION, WHILE_LOOPS=_while_loops())


def _residual_kwargs(res_m, res_j) -> dict:
    return dict(HAS_RES_M=res_m is not None, HAS_RES_J=res_j is not None)


def _tile_kwargs(config: Blocks) -> dict:
    return dict(BLOCK_M=config.block_m, BLOCK_N=config.block_n, num_warps=config.num_warps,
                num_stages=config.num_stages)


def _grid(batch_heads: int, n_max: int, block: int) -> tuple[tuple[int, int], int]:
    """(grid, blocks per head): axis 0 flattens (batch * head, block), axis 1 is the direction."""
    blocks = triton.cdiv(n_max, block)
    return (batch_heads * blocks, 2), blocks


def forward(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, scale):
    """Fused forward of both directions.

    Returns ``(out_m, out_j, lse_m, lse_j)``: outputs in the input dtype (residual included) and the
    float32 log-sum-exp of the scaled scores per query ([B, h, N]), -inf where all keys are masked.
    """
    _check_inputs(q_m, q_j)
    q_m, k_m, v_m, q_j, k_j, v_j = (t.contiguous() for t in (q_m, k_m, v_m, q_j, k_j, v_j))
    res_m, res_j = (None if r is None else r.contiguous() for r in (res_m, res_j))
    batch, heads, n_m, head_dim = q_m.shape
    n_j = q_j.shape[2]
    out_m, out_j = torch.empty_like(q_m), torch.empty_like(q_j)
    lse_m = torch.empty((batch, heads, n_m), device=q_m.device, dtype=torch.float32)
    lse_j = torch.empty((batch, heads, n_j), device=q_m.device, dtype=torch.float32)
    if batch * heads == 0 or n_m == 0 or n_j == 0:
        # No keys on one side: its queries attend to nothing; nothing to launch for the other side.
        out_m.copy_(res_m if res_m is not None else torch.zeros_like(out_m))
        out_j.copy_(res_j if res_j is not None else torch.zeros_like(out_j))
        lse_m.fill_(float("-inf"))
        lse_j.fill_(float("-inf"))
        return out_m, out_j, lse_m, lse_j

    config = launch_config(head_dim, q_m.dtype, q_m.device).forward
    grid, num_query_blocks = _grid(batch * heads, max(n_m, n_j), config.block_m)
    _joint_motion_attention_forward_kernel[grid](
        q_m, k_m, v_m, q_j, k_j, v_j, _residual_arg(res_m, q_m), _residual_arg(res_j, q_j),
        _mask_arg(mask_m, q_m), _mask_arg(mask_j, q_j), out_m, out_j, lse_m, lse_j,
        num_query_blocks=num_query_blocks, qk_scale_log2=float(scale) * LOG2E,
        **_shared_kwargs(q_m, q_j, mask_m, mask_j), **_residual_kwargs(res_m, res_j),
        **_tile_kwargs(config))
    return out_m, out_j, lse_m, lse_j


def backward(grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j,
             mask_m, mask_j, lse_m, lse_j, scale):
    """Gradients ``(dq_m, dk_m, dv_m, dq_j, dk_j, dv_j)`` in the input dtype (float32 accumulation).

    Two launches: D and dQ per query block, then dK and dV per key block.  Deterministic: every gradient
    element is accumulated by exactly one program in a fixed order (no atomics).
    """
    _check_inputs(q_m, q_j)
    dtype = q_m.dtype
    q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, lse_m, lse_j = (
        t.contiguous() for t in (q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, lse_m, lse_j))
    grad_out_m, grad_out_j = (g.to(dtype).contiguous() for g in (grad_out_m, grad_out_j))
    res_m, res_j = (None if r is None else r.contiguous() for r in (res_m, res_j))
    batch, heads, n_m, head_dim = q_m.shape
    n_j = q_j.shape[2]
    if batch * heads == 0 or n_m == 0 or n_j == 0:  # nothing attends to anything: all gradients are zero
        return tuple(torch.zeros_like(t) for t in (q_m, k_m, v_m, q_j, k_j, v_j))
    # empty_like is enough: the grids cover every query and key block of both directions.
    grad_q_m, grad_k_m, grad_v_m, grad_q_j, grad_k_j, grad_v_j = grads = tuple(
        torch.empty_like(t) for t in (q_m, k_m, v_m, q_j, k_j, v_j))
    delta_m, delta_j = torch.empty_like(lse_m), torch.empty_like(lse_j)
    configs = launch_config(head_dim, dtype, q_m.device)
    shared = dict(scale=float(scale), qk_scale_log2=float(scale) * LOG2E,
                  **_shared_kwargs(q_m, q_j, mask_m, mask_j))
    mask_m_arg, mask_j_arg = _mask_arg(mask_m, q_m), _mask_arg(mask_j, q_j)

    grid, num_query_blocks = _grid(batch * heads, max(n_m, n_j), configs.backward_dq.block_m)
    _joint_motion_attention_backward_dq_kernel[grid](
        grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j,
        _residual_arg(res_m, q_m), _residual_arg(res_j, q_j), mask_m_arg, mask_j_arg,
        lse_m, lse_j, delta_m, delta_j, grad_q_m, grad_q_j, num_query_blocks=num_query_blocks,
        **shared, **_residual_kwargs(res_m, res_j), **_tile_kwargs(configs.backward_dq))

    grid, num_key_blocks = _grid(batch * heads, max(n_m, n_j), configs.backward_dkdv.block_n)
    _joint_motion_attention_backward_dkdv_kernel[grid](
        grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, mask_m_arg, mask_j_arg, lse_m, lse_j,
        delta_m, delta_j, grad_k_m, grad_v_m, grad_k_j, grad_v_j, num_key_blocks=num_key_blocks,
        **shared, **_tile_kwargs(configs.backward_dkdv))
    return grads
