"""Durable file writes: fsync a directory, and write a file atomically.

A rename is durable only once its directory is fsynced; a reader sees either the old
file or the whole new one, never a torn write.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

#: Every temporary file :func:`atomic_write` creates starts with this, so a crash
#: leftover is recognisable (the agent's release store sweeps such names).
TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    """fsync directory ``path`` so renames and creations in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, *, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory.

    The temporary file (``.tmp-NAME-PID-RANDOM``) is created exclusively and never
    through a symlink, with exactly ``mode`` (whatever the umask). With ``durable``
    (the default) the file and its directory are fsynced, so after a crash ``path``
    holds either its old content or ``data``; without it a crash of the process still
    leaves one or the other, but a power loss may lose the write. Raises OSError.
    """
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}-{os.urandom(4).hex()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed O_CREAT's mode
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)
