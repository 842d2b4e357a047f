"""Crash-safe file writing: a reader sees the old file or the complete new one, never a torn one.

Write to a temporary file in the same folder, flush and fsync it, rename it over the target (atomic
on POSIX), then fsync the folder so the rename itself survives a power cut.

Permissions: the new file gets the mode a plain ``open(path, "w")`` would give it: 0666 less the
process umask for a new file (the kernel applies the umask: the temporary file is created with
``os.open(..., 0o666)``, not ``tempfile.mkstemp``'s private 0600), and the old file's permission bits
when it replaces one, so a team's shared run folder stays readable to the team.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import stat
from pathlib import Path
from typing import Any


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new, empty temporary file beside ``path``, created 0666 & ~umask (as open() creates files)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {path}: 100 names taken")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        previous = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        previous = None
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            if previous is not None:   # as open(path, "w") on an existing file: its mode stays
                os.fchmod(f.fileno(), previous)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def json_safe(value: Any) -> Any:
    """Replace NaN/inf floats by None (JSON has no NaN) and tuples by lists, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def atomic_write_json(path: str | os.PathLike, value: Any, *, indent: int | None = 2) -> None:
    text = json.dumps(json_safe(value), indent=indent, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
