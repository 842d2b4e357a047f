"""The one place that knows where kernels come from.

Loads the compiled libraries (``jmipose/_lib/libjmipose_{cpu,cuda}.so``) lazily with ctypes, tells
which backends are live and why the others are not, picks a backend for a device, and converts
tensors into the arguments of the C ABI.  Importing this module never fails: a missing or broken
library only makes its backend not live, with the reason.

The C ABI (``csrc/common``): every exported function returns 0 on success, or a non-zero status
with a message readable from ``jmipose_{cpu,cuda}_last_error()``; tensors travel as data pointers
plus explicit sizes; CUDA entry points also take the device index and the ``cudaStream_t`` of
torch's current stream, so kernels run in order with torch's own work.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

LIB_DIR = Path(__file__).resolve().parent.parent / "_lib"
CPU_LIB_PATH = LIB_DIR / "libjmipose_cpu.so"
CUDA_LIB_PATH = LIB_DIR / "libjmipose_cuda.so"
ABI_VERSION = 1
BACKENDS = ("reference", "cpp", "cuda", "triton")

# dtype codes of csrc/common/macros.h (enum DType); keep the two in sync.
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


class BackendUnavailableError(RuntimeError):
    """A backend was asked for explicitly but cannot run here; the message says why."""


class KernelError(RuntimeError):
    """A compiled kernel reported an error through the C ABI."""


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run here, and if not, why."""

    live: bool
    reason: str = ""

    def __repr__(self) -> str:
        return "live" if self.live else f"not live ({self.reason})"


_lock = threading.Lock()
_cpu_lib: ctypes.CDLL | None = None
_cuda_lib: ctypes.CDLL | None = None
_load_errors: dict[str, str] = {}


def _open(path: Path, prefix: str) -> ctypes.CDLL:
    if not path.exists():
        raise OSError(f"{path.name} was not built (no file {path}); reinstall with `pip install .`")
    lib = ctypes.CDLL(str(path))
    version_fn = getattr(lib, f"jmipose_{prefix}_abi_version")
    version_fn.restype = ctypes.c_int
    if version_fn() != ABI_VERSION:
        raise OSError(f"{path.name} has C ABI version {version_fn()}, this jmipose expects {ABI_VERSION}; "
                      "rebuild it with `pip install .`")
    err_fn = getattr(lib, f"jmipose_{prefix}_last_error")
    err_fn.restype = ctypes.c_char_p
    return lib


def cpu_lib() -> ctypes.CDLL | None:
    """The C++ CPU library, or None (reason in ``backends()['cpp']``)."""
    global _cpu_lib
    if _cpu_lib is None and "cpp" not in _load_errors:
        with _lock:
            if _cpu_lib is None and "cpp" not in _load_errors:
                try:
                    _cpu_lib = _open(CPU_LIB_PATH, "cpu")
                except (OSError, AttributeError) as exc:
                    _load_errors["cpp"] = str(exc)
    return _cpu_lib


def cuda_lib() -> ctypes.CDLL | None:
    """The CUDA library, or None (reason in ``backends()['cuda']``)."""
    global _cuda_lib
    if _cuda_lib is None and "cuda" not in _load_errors:
        with _lock:
            if _cuda_lib is None and "cuda" not in _load_errors:
                try:
                    _cuda_lib = _open(CUDA_LIB_PATH, "cuda")
                except (OSError, AttributeError) as exc:
                    _load_errors["cuda"] = str(exc)
    return _cuda_lib


@functools.cache
def build_info() -> dict[str, Any]:
    """What ``setup.py`` recorded about the compiled libraries ({} when nothing was built)."""
    path = LIB_DIR / "build_info.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in {"", "0", "false", "False"}


@functools.cache
def _triton_import_error() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # a broken triton install must not break jmipose
        return f"triton failed to import: {exc}"
    return None


def _cuda_status() -> BackendStatus:
    lib = cuda_lib()
    if lib is None:
        info = build_info()
        if info and not info.get("cuda", False):
            return BackendStatus(False, f"not built ({info.get('cuda_skipped_reason') or 'CUDA disabled'})")
        return BackendStatus(False, _load_errors.get("cuda", "not built"))
    count = ctypes.c_int(0)
    lib.jmipose_cuda_device_count.restype = ctypes.c_int
    rc = lib.jmipose_cuda_device_count(ctypes.byref(count))
    arch = build_info().get("cuda_arch")
    built = f"built for {arch}" if arch else "built"
    if rc != 0 or count.value == 0:
        why = lib.jmipose_cuda_last_error().decode(errors="replace") or "no device"
        return BackendStatus(False, f"{built}, but no GPU ({why})")
    if not torch.cuda.is_available():
        return BackendStatus(False, f"{built}, {count.value} GPU(s) visible, but this torch has no CUDA support")
    return BackendStatus(True)


def backends() -> dict[str, BackendStatus]:
    """Which backends are live here; each one that is not carries the reason.

    >>> jmipose.ops.backends()   # doctest: +SKIP
    {'reference': live, 'cpp': live, 'cuda': not live (built for 80;90, but no GPU (...)), 'triton': ...}
    """
    status = {"reference": BackendStatus(True)}
    status["cpp"] = BackendStatus(True) if cpu_lib() is not None else BackendStatus(False, _load_errors["cpp"])
    status["cuda"] = _cuda_status()
    triton_error = _triton_import_error()
    if triton_error:
        status["triton"] = BackendStatus(False, triton_error)
    elif torch.cuda.is_available() or triton_interpret():
        status["triton"] = BackendStatus(True)
    else:
        status["triton"] = BackendStatus(
            False, "no GPU (set TRITON_INTERPRET=1 to run Triton kernels on the CPU, slowly)")
    return status


def _live_on(backend: str, device: torch.device) -> BackendStatus:
    status = backends()[backend]
    if not status.live:
        return status
    if backend == "cpp" and device.type != "cpu":
        return BackendStatus(False, f"the cpp backend runs on CPU tensors, got tensors on {device}")
    if backend == "cuda" and device.type != "cuda":
        return BackendStatus(False, f"the cuda backend runs on CUDA tensors, got tensors on {device}")
    if backend == "triton" and device.type == "cpu" and not triton_interpret():
        return BackendStatus(False, "Triton on CPU tensors needs TRITON_INTERPRET=1")
    if backend == "triton" and device.type not in {"cpu", "cuda"}:
        return BackendStatus(False, f"Triton does not run on {device}")
    return status


def resolve_backend(backend: str | None, device: torch.device, op: str,
                    supported: tuple[str, ...] = BACKENDS) -> str:
    """The backend an op call will use on ``device``.

    ``None`` picks the fastest live one (cuda, then triton, on a GPU; cpp on the CPU; the reference
    otherwise); an explicit name that cannot run raises ``BackendUnavailableError`` saying why.
    """
    if backend is None:
        order = ("cuda", "triton", "reference") if device.type == "cuda" else ("cpp", "reference")
        for name in order:
            if name in supported and _live_on(name, device).live:
                return name
        return "reference"
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend not in supported:
        raise BackendUnavailableError(f"{op}: backend {backend!r} is not implemented for this op "
                                      f"(available: {supported})")
    status = _live_on(backend, device)
    if not status.live:
        raise BackendUnavailableError(f"{op}: backend {backend!r} is not live: {status.reason}")
    return backend


# ---------------------------------------------------------------------------------------------
# Calling the C ABI

def ptr(tensor: torch.Tensor | None) -> ctypes.c_void_p:
    """Data pointer of a tensor (None -> NULL) for a ctypes call."""
    return ctypes.c_void_p(0 if tensor is None else tensor.data_ptr())


def dtype_code(tensor: torch.Tensor) -> ctypes.c_int32:
    return ctypes.c_int32(DTYPE_CODES[tensor.dtype])


def cuda_stream_args(tensor: torch.Tensor) -> tuple[ctypes.c_int32, ctypes.c_void_p]:
    """(device index, current cudaStream_t) for a CUDA entry point."""
    index = tensor.device.index if tensor.device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(index).cuda_stream
    return ctypes.c_int32(index), ctypes.c_void_p(stream)


def call(lib: ctypes.CDLL, prefix: str, name: str, *args: Any) -> None:
    """Calls ``lib.name(*args)`` and raises ``KernelError`` with the library's message on failure."""
    fn = getattr(lib, name)
    fn.restype = ctypes.c_int
    rc = fn(*args)
    if rc != 0:
        message = getattr(lib, f"jmipose_{prefix}_last_error")().decode(errors="replace")
        raise KernelError(f"{name} failed (status {rc}): {message}")


def call_cpu(name: str, *args: Any) -> None:
    lib = cpu_lib()
    if lib is None:
        raise BackendUnavailableError(f"cpp backend is not live: {_load_errors.get('cpp', 'not built')}")
    call(lib, "cpu", name, *args)


def call_cuda(name: str, *args: Any) -> None:
    lib = cuda_lib()
    if lib is None:
        raise BackendUnavailableError(f"cuda backend is not live: {_load_errors.get('cuda', 'not built')}")
    call(lib, "cuda", name, *args)


@torch.compiler.assume_constant_result
def resolve_backend_cached(backend: str | None, device_type: str, op: str,
                           supported: tuple[str, ...] = BACKENDS) -> str:
    """``resolve_backend`` for public op wrappers: under ``torch.compile`` its result is a constant
    of the graph (the library probing behind it is not traced)."""
    return resolve_backend(backend, torch.device(device_type), op, supported)
