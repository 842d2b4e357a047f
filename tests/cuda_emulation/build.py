"""Builds an op's CUDA source against the CPU emulation of the CUDA runtime in this folder and loads it.

``load_op("joint_region_gather")`` compiles ``csrc/joint_region_gather/cuda.cu`` (or this folder's
``<op>.cpp`` when the op needs more than the runtime headers, which includes the ``.cu`` itself),
``csrc/common/cuda_api.cu`` (the library's own entry points, ``jmipose_cuda_last_error`` among them) and
``device_api.cpp`` (``emu_reset``, ``emu_launch_count``, ``emu_launch_info``) with g++ into one shared
library, and returns it as a ``ctypes.CDLL``.  Libraries are cached under the temp dir by a hash of the
compiler, the flags and every source they may include, so an unchanged op compiles once per machine.
Skips the calling test when no g++ is installed.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

EMULATION = Path(__file__).resolve().parent
ROOT = EMULATION.parents[1]
CSRC = ROOT / "csrc"
CACHE_ENV = "JMIPOSE_CUDA_EMULATION_CACHE"  # overrides the cache dir
# C++20 for the designated initialisers and lambdas the sources may use; -O1 keeps the build short.
FLAGS = ("-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-Wall", "-Wextra", "-Werror",
         "-Wno-unused-parameter", "-Wno-unknown-pragmas", "-DJMIPOSE_CUDA_EMULATION")

_lock = threading.Lock()
_loaded: dict[Path, ctypes.CDLL] = {}


def _compiler() -> str:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++ to compile the CUDA source for the CPU emulation")
    return compiler


def _sources(op: str) -> list[Path]:
    op_dir = CSRC / op
    if not (op_dir / "cuda.cu").is_file():
        raise ValueError(f"op must name a folder of csrc with a cuda.cu, got {op!r}")
    wrapper = EMULATION / f"{op}.cpp"
    return [wrapper if wrapper.is_file() else op_dir / "cuda.cu", CSRC / "common" / "cuda_api.cu",
            EMULATION / "device_api.cpp"]


def _fingerprint(compiler: str, op: str) -> str:
    """A hash of what the library is built from: the compiler and its version, the flags, and every
    source file the build may read (this folder, csrc/common and the op's folder)."""
    digest = hashlib.sha256()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    for part in (compiler, version, *FLAGS, op):
        digest.update(part.encode() + b"\0")
    files = [p for folder in (EMULATION, CSRC / "common", CSRC / op) for p in sorted(folder.iterdir())
             if p.is_file() and p.suffix in {".h", ".cuh", ".cu", ".cpp"}]
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def _cache_dir() -> Path:
    # per user: another user's folder in a shared temp dir is not writable
    default = Path(tempfile.gettempdir()) / f"jmipose-cuda-emulation-{os.getuid()}"
    folder = Path(os.environ.get(CACHE_ENV) or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _compile(compiler: str, op: str, library: Path) -> None:
    # Written under a unique name and renamed into place, so a concurrent build or a reader never sees a
    # partial file.
    partial = library.with_name(f"{library.stem}.{os.getpid()}.{threading.get_ident()}.partial.so")
    command = [compiler, *FLAGS, f"-I{EMULATION}", f"-I{CSRC}", "-x", "c++", *map(str, _sources(op)),
               "-o", str(partial)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"compiling {op} for the CUDA emulation failed:\n{result.stderr[-4000:]}")
    os.replace(partial, library)


def load_op(op: str) -> ctypes.CDLL:
    """The emulated CUDA library of ``op`` (a folder of csrc), compiled if not cached, with the
    ``restype`` of its char* entry point set."""
    compiler = _compiler()
    with _lock:
        library = _cache_dir() / f"lib{op}_cuda_emulation_{_fingerprint(compiler, op)}.so"
        if library not in _loaded:
            if not library.is_file():
                _compile(compiler, op, library)
            lib = ctypes.CDLL(str(library))
            lib.jmipose_cuda_last_error.restype = ctypes.c_char_p
            _loaded[library] = lib
        return _loaded[library]
