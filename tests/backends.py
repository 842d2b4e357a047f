"""Backend parametrisation shared by the op tests."""

from __future__ import annotations

import pytest
import torch

import jmipose

ALL_BACKENDS = ("reference", "cpp", "cuda", "triton")


def backend_device(backend: str) -> str:
    """The device a backend's tests run on: CUDA for cuda, CUDA for triton when present, else CPU."""
    if backend == "cuda":
        return "cuda"
    if backend == "triton" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def require_backend(backend: str) -> torch.device:
    """Skips the test (with the reason) when the backend is not live; returns its device."""
    status = jmipose.ops.backends()[backend]
    if not status.live:
        pytest.skip(f"backend {backend} not live: {status.reason}")
    return torch.device(backend_device(backend))


def backend_params(*names: str):
    """pytest params over backends; the cuda and GPU triton ones carry the gpu marker."""
    params = []
    for name in names or ALL_BACKENDS:
        marks = [pytest.mark.gpu] if name == "cuda" else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params
