"""The one place that knows where kernels come from, and how an op call reaches one.

Loads the compiled libraries (``jmipose/_lib/libjmipose_{cpu,cuda}.so``) lazily with ctypes, binds
their functions from the one table of the C ABI (``jmipose.ops._abi``), tells which backends are
live and why the others are not, and holds what both ops do on every call:

* ``dispatch``: the backend a call runs on (None: the fastest live one that computes the dtype and
  sizes; a named one is checked) and the dtype it computes in: float16/bfloat16 tensors where the
  chosen backend has no half kernels (the CPU) are widened to float32, and the result handed back in
  the tensors' dtype;
* ``device_scope``: every launch runs inside the tensors' CUDA device (Triton launches on the
  current device; the CUDA entry points also take the device index);
* ``register_autocast``: one autocast rule for both ops (``autocast_dtype``).

Importing this module never fails: a missing or broken library only makes its backend not live,
with the reason.

The C ABI (``csrc/common``): every exported function returns 0 on success, or a non-zero status
with a message readable from ``jmipose_{cpu,cuda}_last_error()``; tensors travel as data pointers
plus explicit sizes; CUDA entry points also take the device index and the ``cudaStream_t`` of
torch's current stream, so kernels run in order with torch's own work.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from jmipose.ops import _abi
from jmipose.ops._checks import ArgumentError

LIB_DIR = Path(__file__).resolve().parent.parent / "_lib"
CPU_LIB_PATH = LIB_DIR / "libjmipose_cpu.so"
CUDA_LIB_PATH = LIB_DIR / "libjmipose_cuda.so"
ABI_VERSION = 1
BACKENDS = ("reference", "cpp", "cuda", "triton")
HALF = (torch.float16, torch.bfloat16)

# dtype codes of csrc/common/macros.h (enum DType); keep the two in sync.
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}

logger = logging.getLogger("jmipose.ops")


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


# ---------------------------------------------------------------------------------------------
# Loading the libraries

_lock = threading.Lock()
_libraries: dict[str, ctypes.CDLL] = {}
_functions: dict[str, dict[str, _abi.CFunction]] = {}
_load_errors: dict[str, str] = {}
_PATHS = {"cpu": CPU_LIB_PATH, "cuda": CUDA_LIB_PATH}
_BACKEND_OF = {"cpu": "cpp", "cuda": "cuda"}


def _open(which: str) -> None:
    path = _PATHS[which]
    if not path.exists():
        raise OSError(f"{path.name} was not built (no file {path}); reinstall with `pip install .`")
    lib = ctypes.CDLL(str(path))
    version_fn = getattr(lib, f"jmipose_{which}_abi_version")
    version_fn.argtypes, version_fn.restype = [], ctypes.c_int
    if version_fn() != ABI_VERSION:
        raise OSError(f"{path.name} has C ABI version {version_fn()}, this jmipose expects {ABI_VERSION}; "
                      "rebuild it with `pip install .`")
    try:
        functions = _abi.bind(lib, which)
    except AttributeError as exc:
        raise OSError(f"{path.name} lacks a function of the C ABI ({exc}); rebuild it with `pip install .`") from None
    _libraries[which], _functions[which] = lib, functions


def _load(which: str) -> dict[str, _abi.CFunction] | None:
    if which not in _functions and _BACKEND_OF[which] not in _load_errors:
        with _lock:
            if which not in _functions and _BACKEND_OF[which] not in _load_errors:
                try:
                    _open(which)
                except (OSError, AttributeError) as exc:
                    _load_errors[_BACKEND_OF[which]] = str(exc)
    return _functions.get(which)


def cpu_lib() -> ctypes.CDLL | None:
    """The C++ CPU library, or None (reason in ``backends()['cpp']``)."""
    _load("cpu")
    return _libraries.get("cpu")


def cuda_lib() -> ctypes.CDLL | None:
    """The CUDA library, or None (reason in ``backends()['cuda']``)."""
    _load("cuda")
    return _libraries.get("cuda")


def c_functions(which: str) -> dict[str, _abi.CFunction]:
    """The bound functions of the ``"cpu"`` or ``"cuda"`` library (``BackendUnavailableError`` when it
    did not load)."""
    functions = _functions.get(which) or _load(which)
    if functions is None:
        backend = _BACKEND_OF[which]
        raise BackendUnavailableError(f"{backend} backend is not live: {_load_errors.get(backend, 'not built')}")
    return functions


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
    functions = _load("cuda")
    if functions is None:
        info = build_info()
        if info and not info.get("cuda", False):
            return BackendStatus(False, f"not built ({info.get('cuda_skipped_reason') or 'CUDA disabled'})")
        return BackendStatus(False, _load_errors.get("cuda", "not built"))
    count = ctypes.c_int(0)
    rc = functions["jmipose_cuda_device_count"](ctypes.byref(count))
    arch = build_info().get("cuda_arch")
    built = f"built for {arch}" if arch else "built"
    if rc != 0 or count.value == 0:
        why = functions["jmipose_cuda_last_error"]().decode(errors="replace") or "no device"
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
    """The backend an op call will use on ``device``, from liveness alone (``dispatch`` adds the
    dtype and size rules).

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
        raise ArgumentError(f"{op}: backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend not in supported:
        raise BackendUnavailableError(f"{op}: backend {backend!r} is not implemented for this op "
                                      f"(available: {supported})")
    status = _live_on(backend, device)
    if not status.live:
        raise BackendUnavailableError(f"{op}: backend {backend!r} is not live: {status.reason}")
    return backend


# ---------------------------------------------------------------------------------------------
# Dispatch: backend, compute dtype, device

@dataclass(frozen=True, eq=False)
class OpSpec:
    """What dispatch knows of an op: its name, the dtypes each backend computes, the argument whose
    dtype and device decide (named in errors), and the sizes some backends cannot run (backend ->
    (what, largest value), e.g. ``{"cuda": ("head dim", 128)}``)."""

    name: str
    dtypes: Mapping[str, tuple[torch.dtype, ...]]
    first_argument: str
    limits: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    def exceeded(self, size: int) -> frozenset[str]:
        """The backends whose limit ``size`` exceeds."""
        return frozenset(b for b, (_, largest) in self.limits.items() if size > largest) if self.limits else _NONE


_NONE: frozenset[str] = frozenset()


class Choice(NamedTuple):
    """Where a call runs: the backend, and the dtype it computes in (the tensors' own, or float32
    for float16/bfloat16 tensors on a backend without half kernels)."""

    backend: str
    dtype: torch.dtype


@torch.compiler.assume_constant_result
def dispatch(spec: OpSpec, backend: str | None, device: torch.device, dtype: torch.dtype, size: int = 0) -> Choice:
    """The backend and compute dtype of one call of ``spec``'s op on tensors of ``dtype`` on
    ``device`` (``size``: the value ``spec.limits`` bounds, e.g. op B's head dim).

    ``backend=None`` takes the fastest live backend of the device that runs the call: cuda, triton,
    then the reference on a GPU, cpp then the reference on the CPU, skipping a backend whose limit
    the size exceeds (logged once per op, device and kind of call: a fallback can be much slower)
    and widening float16/bfloat16 to float32 on a backend that has no half kernels.  A named backend
    that is not live raises ``BackendUnavailableError``; one that does not compute the dtype or the
    size raises ``ArgumentError`` naming its limit.  Decisions are cached (the liveness of a backend
    does not change while a process runs, except Triton on the CPU with ``TRITON_INTERPRET``, which is
    part of the key); under ``torch.compile`` the result is a constant of the graph.
    """
    return _dispatch(spec, backend, device.type, dtype, spec.exceeded(size), size, triton_interpret())


def _dispatch(spec: OpSpec, backend: str | None, device_type: str, dtype: torch.dtype, exceeded: frozenset[str],
              size: int, interpret: bool) -> Choice:
    key = (spec, backend, device_type, dtype, exceeded, interpret)
    choice = _decisions.get(key)
    if choice is None:
        choice = _decide(spec, backend, torch.device(device_type), dtype, exceeded, size)
        _decisions[key] = choice
    return choice


_decisions: dict[tuple, Choice] = {}


def _decide(spec: OpSpec, backend: str | None, device: torch.device, dtype: torch.dtype, exceeded: frozenset[str],
            size: int) -> Choice:
    op = spec.name
    if backend is not None:
        name = resolve_backend(backend, device, op)
        if dtype not in spec.dtypes[name]:
            allowed = ", ".join(str(d).replace("torch.", "") for d in spec.dtypes[name])
            raise ArgumentError(f"{op}: backend {name!r} supports {allowed}; got {spec.first_argument} of dtype "
                                f"{dtype}")
        if name in exceeded:
            what, largest = spec.limits[name]
            raise ArgumentError(f"{op}: backend {name!r} supports a {what} up to {largest}, got {size} "
                                f"(backend=None picks a backend that runs it)")
        return Choice(name, dtype)
    order = ("cuda", "triton", "reference") if device.type == "cuda" else ("cpp", "reference")
    skipped = []
    for name in order:
        if not _live_on(name, device).live:
            continue
        if name in exceeded:
            skipped.append(name)
            continue
        if dtype in spec.dtypes[name]:
            choice = Choice(name, dtype)
        elif dtype in HALF and torch.float32 in spec.dtypes[name]:
            choice = Choice(name, torch.float32)
        else:
            continue
        if skipped:
            what, largest = spec.limits[skipped[0]]
            logger.warning("%s: a %s of %d on %s is more than the %s backend%s run%s (up to %d): using the %s "
                           "backend (logged once per op, device and dtype)", op, what, size, device.type,
                           " and ".join(skipped), "s" if len(skipped) > 1 else "", "" if len(skipped) > 1 else "s",
                           largest, name)
        return choice
    raise BackendUnavailableError(f"{op}: no live backend computes {dtype} on {device.type}")


def widen(tensors: Iterable[torch.Tensor | None], dtype: torch.dtype) -> list[torch.Tensor | None]:
    """The tensors in ``dtype`` (None stays None): half precision computed in float32."""
    return [None if t is None else t.to(dtype) for t in tensors]


_NO_DEVICE = contextlib.nullcontext()


def device_scope(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """The tensor's CUDA device as the current one for the launches inside (a no-op on the CPU):
    Triton launches on the current device, so tensors on ``cuda:1`` need it to be ``cuda:1``."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else _NO_DEVICE


# ---------------------------------------------------------------------------------------------
# Autocast

def autocast_dtype(tensors: Iterable[torch.Tensor | None]) -> torch.dtype | None:
    """The one autocast rule of jmipose's ops: floating tensors of different dtypes are computed in
    the widest of them, float32 where float16 meets bfloat16 (a bfloat16 activation with float32
    weights computes in float32, as torchvision's ops do under autocast); None when they already
    share a dtype (an all-bfloat16 call keeps the GPU's half kernels)."""
    dtypes = {t.dtype for t in tensors if t is not None and t.is_floating_point()}
    if len(dtypes) <= 1:
        return None
    return torch.float64 if torch.float64 in dtypes else torch.float32


def autocast_cast(tensors: Iterable[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """``tensors`` with the autocast rule applied (floating ones cast to ``autocast_dtype``)."""
    tensors = list(tensors)
    dtype = autocast_dtype(tensors)
    if dtype is None:
        return tensors
    return [t.to(dtype) if t is not None and t.is_floating_point() else t for t in tensors]


_autocast_library: torch.library.Library | None = None


def register_autocast(op_name: str, restore: Callable[[tuple, Any], Any]) -> None:
    """Registers the autocast rule for ``jmipose::op_name`` on CPU and CUDA: floating tensor
    arguments cast by ``autocast_dtype``, the op run with autocast off, and ``restore(args, result)``
    giving the result back in the callers' dtypes (torchvision's convention: an op's output keeps its
    input's dtype)."""
    global _autocast_library
    if _autocast_library is None:
        _autocast_library = torch.library.Library("jmipose", "FRAGMENT")
    op = getattr(torch.ops.jmipose, op_name).default
    for device_type, key in (("cpu", "AutocastCPU"), ("cuda", "AutocastCUDA")):
        def kernel(_keyset, *args, device_type=device_type):
            cast = autocast_cast(a if isinstance(a, torch.Tensor) else None for a in args)
            cast = [c if isinstance(a, torch.Tensor) else a for a, c in zip(args, cast)]
            with torch.autocast(device_type, enabled=False):
                return restore(args, op(*cast))

        _autocast_library.impl(op_name, kernel, key, with_keyset=True)


# ---------------------------------------------------------------------------------------------
# Calling the C ABI

def ptr(tensor: torch.Tensor | None) -> int | None:
    """Data pointer of a tensor (None -> NULL) for a C ABI call."""
    return None if tensor is None else tensor.data_ptr()


def dtype_code(tensor: torch.Tensor) -> int:
    return DTYPE_CODES[tensor.dtype]


def cuda_stream_args(tensor: torch.Tensor) -> tuple[int, int]:
    """(device index, current cudaStream_t) for a CUDA entry point."""
    index = tensor.device.index if tensor.device.index is not None else torch.cuda.current_device()
    return index, torch.cuda.current_stream(index).cuda_stream


def _call(which: str, name: str, args: tuple) -> None:
    functions = _functions.get(which) or c_functions(which)
    rc = functions[name](*args)
    if rc != 0:
        message = functions[f"jmipose_{which}_last_error"]().decode(errors="replace")
        raise KernelError(f"{name} failed (status {rc}): {message}")


def call_cpu(name: str, *args: Any) -> None:
    """Calls the C++ library's ``name`` and raises ``KernelError`` with its message on failure."""
    _call("cpu", name, args)


def call_cuda(name: str, *args: Any) -> None:
    """Calls the CUDA library's ``name`` and raises ``KernelError`` with its message on failure."""
    _call("cuda", name, args)
