"""The memory limit (jmipose.resources): an op call or a video whose own allocations would exceed it is
refused with a message before anything is allocated; under the limit the same call runs."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
import torch

import jmipose
from jmipose import resources
from jmipose.data.video import VideoReader
from jmipose.resources import ResourceLimitError, memory_limit


def test_parse_and_sources(monkeypatch):
    assert resources.parse_bytes("16G") == 16 << 30
    assert resources.parse_bytes("512m") == 512 << 20
    assert resources.parse_bytes("1.5K") == 1536
    assert resources.parse_bytes("2GiB") == 2 << 30
    assert resources.parse_bytes("123") == 123
    assert resources.parse_bytes("0") is None and resources.parse_bytes("none") is None
    with pytest.raises(ValueError, match="JMIPOSE_MAX_BYTES must be a byte count .* got 'lots'"):
        resources.parse_bytes("lots")
    monkeypatch.setenv("JMIPOSE_MAX_BYTES", "3M")
    assert resources.max_bytes() == (3 << 20, "JMIPOSE_MAX_BYTES=3M")
    with memory_limit(1000):
        assert resources.max_bytes()[0] == 1000
        with memory_limit(None):
            assert resources.max_bytes()[0] is None
    assert resources.max_bytes()[0] == 3 << 20
    monkeypatch.delenv("JMIPOSE_MAX_BYTES")
    physical, source = resources.max_bytes("cpu")
    assert physical is not None and physical > 1 << 28 and "cpu device's memory" in source
    with pytest.raises(ValueError, match="positive int"):
        resources.set_max_bytes(-5)


def _attention_inputs(n_m, n_j, batch=1, heads=1, d=8):
    return [torch.randn(batch, heads, n, d) for n in (n_m, n_m, n_m, n_j, n_j, n_j)]


def test_reference_attention_refuses_its_score_matrix_before_allocating(monkeypatch):
    # 50,000 x 40,000 float32 scores are 8 GB per matrix; the tokens themselves are 3 MB.
    q_m, k_m, v_m, q_j, k_j, v_j = _attention_inputs(50_000, 40_000)
    monkeypatch.setenv("JMIPOSE_MAX_BYTES", "1G")
    tracemalloc.start()
    try:
        with pytest.raises(ResourceLimitError, match=r"joint_motion_attention \(reference\) with B=1, h=1, "
                                                     r"N_m=50000, N_j=40000, d=8 would need 14\.9 GiB .* more than "
                                                     r"the memory limit of 1\.0 GiB \(JMIPOSE_MAX_BYTES=1G\)"):
            jmipose.ops.joint_motion_attention(q_m, k_m, v_m, q_j, k_j, v_j, backend="reference")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # refused by arithmetic, not by trying
    # the fused backend never materialises the scores: the same call fits
    out_m, out_j = jmipose.ops.joint_motion_attention(*_attention_inputs(600, 500), backend="cpp")
    assert out_m.shape == (1, 1, 600, 8)


def test_attention_limit_counts_gradients_and_dtype():
    q_m, k_m, v_m, q_j, k_j, v_j = _attention_inputs(300, 200, d=16)
    # reference forward: two 300x200 float32 matrices (the directions run one after the other: 480 KB)
    # + outputs and lse (36 KB); with gradients three matrices (720 KB) + the token gradients (96 KB)
    with memory_limit(400_000):
        with pytest.raises(ResourceLimitError, match="reference"):
            jmipose.ops.joint_motion_attention(q_m, k_m, v_m, q_j, k_j, v_j, backend="reference")
        jmipose.ops.joint_motion_attention(q_m, k_m, v_m, q_j, k_j, v_j, backend="cpp")
    with memory_limit(600_000):
        jmipose.ops.joint_motion_attention(q_m, k_m, v_m, q_j, k_j, v_j, backend="reference")
        q_m.requires_grad_()
        with pytest.raises(ResourceLimitError, match="reference"):
            jmipose.ops.joint_motion_attention(q_m, k_m, v_m, q_j, k_j, v_j, backend="reference")
        with torch.no_grad():
            jmipose.ops.joint_motion_attention(q_m, k_m, v_m, q_j, k_j, v_j, backend="reference")


def test_gather_limit_covers_reference_columns_and_output():
    x, offset, weight = torch.randn(2, 8, 20, 20), torch.zeros(2, 18, 20, 20), torch.randn(8, 8, 3, 3)
    # reference: 4 x [2, 8*9, 400] float32 columns (0.92 MB) + int64 corner indices + the output
    with memory_limit(500_000):
        with pytest.raises(ResourceLimitError, match=r"joint_region_gather \(reference\) on input \[2, 8, 20, 20\]"):
            jmipose.ops.joint_region_gather(x, offset, weight, padding=1, backend="reference")
        jmipose.ops.joint_region_gather(x, offset, weight, padding=1, backend="cpp")
    with memory_limit(20_000):  # less than the 51 KB output itself: every backend refuses
        for backend in ("reference", "cpp"):
            with pytest.raises(ResourceLimitError, match=backend):
                jmipose.ops.joint_region_gather(x, offset, weight, padding=1, backend=backend)
    with memory_limit(None):
        out = jmipose.ops.joint_region_gather(x, offset, weight, padding=1, backend="reference")
        assert out.shape == (2, 8, 20, 20)


def test_a_video_whose_frames_exceed_the_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
    for index in range(3):
        writer.write(np.full((480, 640, 3), 40 * index, np.uint8))
    writer.release()
    with memory_limit(1_000_000):  # two 640x480x3 frames are 1.8 MB
        with pytest.raises(ResourceLimitError, match=r"clip\.mp4: decoding 640x480 frames \(2 held at once\)"):
            VideoReader(path)
    with memory_limit(2_000_000):
        assert VideoReader(path).size == (640, 480)
        with pytest.raises(ResourceLimitError, match=r"10 held at once"):
            VideoReader(path, background=True)
    assert ResourceLimitError.__mro__[1] is MemoryError
