"""Walking, sealing, flushing, hashing and removing release trees, without recursion.

A validly signed package is still untrusted input: its directory depth is whatever its
author chose. Python 3.11's ``os.walk`` and ``shutil.rmtree`` recurse once per level,
so a package nested ~1,000 deep raised RecursionError half-way through an install and
again in every later ``recover()``. Every walk here keeps its own explicit stack, so
depth costs memory, not interpreter frames.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

from fleetwave_core.fsutil import fsync_dir

Walk = list[tuple[str, list[str], list[str]]]


def walk(root: Path | str) -> Iterator[tuple[str, list[str], list[str]]]:
    """Like ``os.walk(root)`` (top-down, symlinks not followed), but iterative.

    Yields ``(dirpath, dirnames, filenames)``; anything that is not a directory (files,
    symlinks, special files) is listed in ``filenames``. Entries are sorted.
    """
    stack = [os.fspath(root)]
    while stack:
        dirpath = stack.pop()
        dirnames: list[str] = []
        filenames: list[str] = []
        with os.scandir(dirpath) as entries:
            for entry in entries:
                (dirnames if entry.is_dir(follow_symlinks=False) else filenames).append(entry.name)
        dirnames.sort()
        filenames.sort()
        yield dirpath, dirnames, filenames
        stack.extend(os.path.join(dirpath, d) for d in reversed(dirnames))


def seal_dirs(root: Path) -> None:
    """Make every directory of a release read-only, then flush the whole tree to disk."""
    tree = list(walk(root))
    for dirpath, _, _ in reversed(tree):  # children first: a sealed parent stays listable
        os.chmod(dirpath, 0o555)
    flush_tree(root, tree)


def flush_tree(root: Path, tree: Walk) -> None:
    """Make every file and directory under ``root`` durable.

    ``syncfs(2)`` flushes the file system in one call, where a fsync per file costs a
    journal commit each and dominates installs of packages with many small files. It
    runs before the release's manifest is written, which is what makes the release
    complete, so a crash can never leave a complete release with unflushed data.
    Without syncfs (not Linux) every file and directory is fsync'd instead.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syncfs = _syncfs()
        if syncfs is not None and syncfs(fd) == 0:
            return
        for dirpath, _, filenames in tree:
            for filename in filenames:
                file_fd = os.open(os.path.join(dirpath, filename), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(file_fd)
                finally:
                    os.close(file_fd)
            fsync_dir(Path(dirpath))
    finally:
        os.close(fd)


@cache
def _syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs(2)``, or None where it is not available."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return function


def remove_tree(path: Path) -> None:
    """Remove a (possibly read-only, arbitrarily deep) tree; a missing path is fine.

    Raises OSError when something cannot be removed.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    # (directory, children done?): a directory is removed after everything below it.
    stack: list[tuple[str, bool]] = [(os.fspath(path), False)]
    while stack:
        dirpath, done = stack.pop()
        if done:
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(dirpath)
            continue
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o700)  # a sealed release directory refuses unlink
        stack.append((dirpath, True))
        try:
            with os.scandir(dirpath) as listing:
                entries = list(listing)
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, False))
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def drift(release_path: Path, expected: dict[str, tuple[int, int, str]]) -> list[str]:
    """Differences between a release tree and its manifest's ``path -> (mode, size, sha)``.

    Lines ``changed:``, ``mode:``, ``added:`` and ``removed:``, in walk order.
    """
    dirs = {"/".join(p.split("/")[:i]) for p in expected for i in range(1, p.count("/") + 1)}
    problems: list[str] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in walk(release_path):
        base = Path(dirpath)
        for entry in sorted([*dirnames, *filenames]):
            full = base / entry
            rel = full.relative_to(release_path).as_posix()
            st = full.lstat()
            if stat.S_ISDIR(st.st_mode):
                if rel not in dirs:
                    problems.append(f"added: {rel}/")
                continue
            spec = expected.get(rel)
            seen.add(rel)
            if spec is None or not stat.S_ISREG(st.st_mode):
                problems.append(f"added: {rel}" if spec is None else f"changed: {rel} (type)")
                continue
            mode, size, sha256 = spec
            if stat.S_IMODE(st.st_mode) != mode & 0o555:
                problems.append(
                    f"mode: {rel} is {stat.S_IMODE(st.st_mode):o}, expected {mode & 0o555:o}"
                )
            if st.st_size != size or sha256_file(full) != sha256:
                problems.append(f"changed: {rel}")
    problems.extend(f"removed: {p}" for p in sorted(set(expected) - seen))
    return problems


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    import hashlib  # OpenSSL's loading is ~3 ms; only drift checks hash here

    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
