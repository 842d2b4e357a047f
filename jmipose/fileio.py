"""Crash-safe file writing: a reader sees the old file or the complete new one, never a torn one.

Write to a temporary file in the same folder, flush and fsync it, rename it over the target (atomic
on POSIX), then fsync the folder so the rename itself survives a power cut.

Permissions: the new file gets the mode a plain ``open(path, "w")`` would give it: 0666 less the
process umask for a new file (the kernel applies the umask: the temporary file is created with
``os.open(..., 0o666)``, not ``tempfile.mkstemp``'s private 0600), and the old file's permission bits
when it replaces one, so a team's shared run folder stays readable to the team.

Also: output paths checked before the work (:func:`check_output_dir`, :func:`check_output_file`) and a
lock that keeps two runs out of one output folder (:class:`RunLock`).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import stat
import tempfile
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


# ----- output paths checked before the work -----

def _probe_folder(folder: Path, what: str) -> None:
    """Create ``folder`` (and its parents) and write and remove a probe file in it, so that a path
    that cannot take the output fails now, with a message naming ``what``, not after the work."""
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            if parent == folder:
                raise NotADirectoryError(f"{what}: {folder} is a file, not a folder")
            raise NotADirectoryError(f"{what}: cannot create the folder {folder} ({parent} is a file)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".jmipose-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise type(error)(f"{what}: cannot write in {folder} ({error.strerror or error})") from None


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` as a folder jmipose can write into (created when missing); ``NotADirectoryError`` /
    ``PermissionError`` / ``OSError`` naming ``what`` (e.g. ``"--out"``) otherwise."""
    folder = Path(path)
    _probe_folder(folder, what)
    return folder


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """``path`` as a file jmipose can write atomically (its folder created when missing): not a
    folder, in a writable folder.  Raises ``IsADirectoryError`` / ``NotADirectoryError`` /
    ``PermissionError`` naming ``what`` (e.g. ``"--json"``)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what}: {path} is a folder; give a file name")
    _probe_folder(path.parent, f"{what} {path}")
    return path


# ----- one run per output folder -----

class RunLockedError(OSError):
    """Another live process holds the lock of an output folder (see :class:`RunLock`)."""


_HELD: dict[str, int] = {}   # lock files this process holds -> their file descriptors


class RunLock:
    """An exclusive lock on an output folder (the file ``<folder>/<name>``), held while a run writes
    there, so that a second run into the same folder refuses at once instead of interleaving logs and
    checkpoints.

    The lock is a POSIX record lock (``fcntl.lockf``) on that file: the kernel drops it when the
    holding process ends, however it ends, so a run killed with SIGKILL leaves no stale lock behind,
    and forked DataLoader workers do not inherit it.  The file stays and records the holder (pid, host,
    start time) for the message of a refused run.  Where the file system refuses locks (some network
    mounts), the recorded pid decides instead: a lock whose process no longer runs on this host is
    stale and taken over.  (A POSIX lock is also dropped when its process closes *any* descriptor of
    the file: the holder must not open the lock file otherwise.)  ``with RunLock(folder): ...``."""

    def __init__(self, folder: str | os.PathLike, name: str = "train.lock", what: str = "output_dir"):
        self.path = Path(folder) / name
        self.what = what
        self._fd: int | None = None

    def _holder(self) -> dict:
        try:
            value = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def _refuse(self, holder: dict) -> None:
        who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
               f"{holder.get('started', '?')}") if holder else "another process"
        raise RunLockedError(f"{self.what} {self.path.parent} is in use by another run ({who}); wait for it to "
                             f"end or choose another {self.what}")

    @staticmethod
    def _alive(pid) -> bool:
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # it exists, owned by someone else
            return True
        return True

    def acquire(self) -> RunLock:
        import datetime
        import errno
        import fcntl
        import socket

        key = str(self.path.resolve())
        if key in _HELD:   # this process holds it already (a nested run of the same process)
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno in (errno.EACCES, errno.EAGAIN):
                    self._refuse(self._holder())
                # no locks on this file system: decide by the recorded pid
                holder = self._holder()
                if holder.get("host") == socket.gethostname() and holder.get("pid") != os.getpid() \
                        and self._alive(holder.get("pid")):
                    self._refuse(holder)
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        _HELD[key] = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        _HELD.pop(str(self.path.resolve()), None)
        os.close(self._fd)   # closing the descriptor drops the lock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
