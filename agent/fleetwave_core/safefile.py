"""Open files that a user or a config names, refusing what is not a regular file.

A path from a config file or a command line can name anything: a FIFO that blocks
``open(2)`` forever, ``/dev/zero`` that never ends, a directory. :func:`open_regular`
opens with ``O_NONBLOCK`` (so a FIFO's open returns at once), then checks the open
descriptor with ``fstat``, so what is checked is what is read, with no window for a
swap between a ``stat`` and the ``open``. :func:`read_regular` adds a size limit.

Errors are :class:`FileRefusedError` (what the file is, never what it holds) or the
``OSError`` of the open; callers turn both into their own one-line error.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


class FileRefusedError(ValueError):
    """The path is not a regular file, or it is over the size limit."""


def open_regular(path: Path | str) -> BinaryIO:
    """``path`` opened for binary reading; FileRefusedError unless it is a regular file."""
    fd = os.open(path, _FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileRefusedError(f"not a regular file ({_kind(mode)})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path | str, max_bytes: int) -> bytes:
    """The bytes of regular file ``path``; FileRefusedError if it holds more than ``max_bytes``.

    The limit is checked on the bytes read, not only on the size ``fstat`` reports, so
    a file that grows while it is read is still cut off.
    """
    with open_regular(path) as fh:
        if os.fstat(fh.fileno()).st_size > max_bytes:
            raise FileRefusedError(f"larger than the {max_bytes}-byte limit")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileRefusedError(f"larger than the {max_bytes}-byte limit")
    return data


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"
