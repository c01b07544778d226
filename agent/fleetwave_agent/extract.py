"""Safe, single-pass extraction of a package payload into an empty staging directory.

The payload is untrusted until every byte has been checked, so extraction is strict:

* only regular files and directories (no links of any kind, devices, FIFOs, sparse
  or continuation members); no setuid, setgid or sticky bits;
* member names must be relative, ``/``-separated, without ``.``, ``..`` or empty parts;
  they are refused, never rewritten (tarfile's ``data`` filter rewrites absolute
  paths, which would hide an attack);
* every file must be listed in the manifest with the same mode, size and SHA-256,
  every manifest file must be present, and no member may appear twice;
* the member count and the bytes actually written are counted while streaming, so a
  decompression bomb stops at the cap; header sizes are only an early hint;
* files are created with ``openat``-style calls relative to directory descriptors
  opened with ``O_NOFOLLOW``, with ``O_EXCL``, so nothing can be written outside
  ``staging`` even if something raced us;
* the digest of the compressed payload is computed in the same pass and must match
  the signed manifest, unless the caller hashed this very file already (a
  :class:`digests.PayloadDigest` taken on upload, whose file identity is checked on the
  open descriptor before and after extraction).

On any error the caller discards the staging directory; nothing else is touched.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import os
import stat
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

from fleetwave_agent.errors import (
    ChecksumError,
    PackageError,
    SizeLimitError,
    StoreError,
    UnsafePackageError,
)
from fleetwave_agent.manifest import FileEntry, Manifest
from fleetwave_agent.package import CHUNK, HEADER_BYTES, MAGIC, SIGNATURE_BYTES, Limits

if TYPE_CHECKING:
    from fleetwave_agent.digests import PayloadDigest

_TAR_BUFSIZE = 64 << 10
_TAIL_BYTES = 4 * _TAR_BUFSIZE  # more than tarfile can have buffered ahead
_MAX_TRAILING = 1 << 20  # tar pads to 10 KiB records; anything near this is not padding
_ALLOWED_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def extract_payload(
    package: Path,
    manifest: Manifest,
    staging: Path,
    limits: Limits,
    *,
    readonly: bool = False,
    fsync: bool = True,
    on_file: Callable[[str], None] | None = None,
    payload_digest: PayloadDigest | None = None,
) -> None:
    """Extract ``package``'s payload into the empty directory ``staging``.

    ``manifest`` must be the (already verified) manifest of ``package``. With
    ``readonly`` files get their manifest mode minus write bits; with ``fsync`` every
    file and directory is flushed to disk. ``on_file`` is called with each file's path
    after it is written (progress, and test crash points). ``payload_digest`` is the
    caller's own earlier hash of this file (see :mod:`digests`); it is used instead
    of hashing the payload again only if the open file is still that file.

    Raises UnsafePackageError, SizeLimitError, ChecksumError or PackageError.
    """
    _require_empty_dir(staging)
    expected = {f.path: f for f in manifest.files}
    ancestors = {p for f in manifest.files for p in _parents(f.path)}
    root_fd = os.open(staging, _DIR_FLAGS)
    dirs = _DirChain(root_fd, fsync=fsync)
    try:
        with package.open("rb") as fh:
            known = _known_digest(fh, package, manifest, payload_digest)
            raw = _seek_payload(fh, package, manifest)
            reader = _PayloadReader(fh, manifest.payload_size, hash_payload=known is None)
            try:
                seen = _extract_members(
                    reader, expected, ancestors, dirs, limits, readonly, fsync, on_file
                )
            except (
                PackageError,
                tarfile.TarError,
                EOFError,
                zlib.error,
                OSError,
                UnicodeError,
                _Malformed,
            ) as exc:
                if isinstance(exc, OSError) and exc.errno is not None:
                    raise StoreError(f"{staging}: cannot write release: {exc}") from None
                # Corruption can look like anything to tar; report it as what it is.
                _drain(reader)
                if _payload_changed(fh, reader, known, manifest):
                    raise ChecksumError(
                        f"{package}: payload sha256 does not match the signed manifest"
                    ) from exc
                if isinstance(exc, PackageError):
                    raise
                raise PackageError(f"{package}: malformed payload: {exc}") from None
            _drain(reader)
            if reader.size != manifest.payload_size or raw != manifest.payload_size:
                raise ChecksumError(f"{package}: payload size does not match the manifest")
            if _payload_changed(fh, reader, known, manifest):
                raise ChecksumError(f"{package}: payload sha256 does not match the signed manifest")
        missing = sorted(set(expected) - seen)
        if missing:
            raise ChecksumError(
                f"{package}: {len(missing)} manifest file(s) missing from the payload, "
                f"first {missing[0]!r}"
            )
        dirs.close_all()
    finally:
        dirs.close_all(sync=False)
        os.close(root_fd)


def _known_digest(
    fh: BinaryIO, package: Path, manifest: Manifest, digest: PayloadDigest | None
) -> PayloadDigest | None:
    """``digest`` if it describes the open file; ChecksumError if it contradicts ``manifest``."""
    if digest is None or not digest.describes(os.fstat(fh.fileno())):
        return None
    if digest.sha256 != manifest.payload_sha256 or digest.payload_size != manifest.payload_size:
        raise ChecksumError(f"{package}: payload sha256 does not match the signed manifest")
    return digest


def _payload_changed(
    fh: BinaryIO, reader: _PayloadReader, known: PayloadDigest | None, manifest: Manifest
) -> bool:
    """True unless the payload just read is the one the signed manifest names."""
    if known is None:
        return reader.digest.hexdigest() != manifest.payload_sha256
    # The bytes were hashed before; they are the same only if the file was not touched
    # (any write changes its ctime) while it was being extracted.
    return not known.describes(os.fstat(fh.fileno()))


def _require_empty_dir(staging: Path) -> None:
    try:
        st = staging.lstat()
    except FileNotFoundError:
        raise StoreError(f"{staging}: staging directory does not exist") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"{staging}: staging must be a real directory")
    if any(staging.iterdir()):
        raise StoreError(f"{staging}: staging directory is not empty")


def _seek_payload(fh: BinaryIO, package: Path, manifest: Manifest) -> int:
    """Position ``fh`` at the payload; return the number of payload bytes in the file."""
    raw_manifest = manifest.canonical_bytes()
    head = fh.read(HEADER_BYTES + len(raw_manifest))
    if head != MAGIC + len(raw_manifest).to_bytes(4, "big") + raw_manifest:
        raise ChecksumError(f"{package}: file does not hold the given manifest")
    offset = HEADER_BYTES + len(raw_manifest) + SIGNATURE_BYTES
    size = os.fstat(fh.fileno()).st_size - offset
    fh.seek(offset)
    if size != manifest.payload_size:
        raise ChecksumError(
            f"{package}: payload is {size} bytes, manifest says {manifest.payload_size}"
        )
    return size


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _check_name(name: str) -> list[str]:
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\x00" in name
        or "\\" in name
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise UnsafePackageError(f"unsafe member path {name!r}: must be relative, without '..'")
    return parts


def _describe_type(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"symlink to {member.linkname!r}"
    if member.islnk():
        return f"hardlink to {member.linkname!r}"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "FIFO"
    if member.issparse() or member.sparse is not None:
        return "sparse file"
    return f"member of type {member.type!r}"


def _extract_members(
    reader: _PayloadReader,
    expected: dict[str, FileEntry],
    ancestors: set[str],
    dirs: _DirChain,
    limits: Limits,
    readonly: bool,
    fsync: bool,
    on_file: Callable[[str], None] | None,
) -> set[str]:
    seen: set[str] = set()
    seen_dirs: set[str] = set()
    members = 0
    written = 0
    buffer = bytearray(CHUNK)
    gunzip = _GunzipReader(reader)
    # Plain "r|": we inflate ourselves, with bounded output per call, because tarfile's
    # own gzip stream inflates a whole input buffer at once (a memory bomb) and
    # re-slices a growing buffer on every header read.
    with tarfile.open(fileobj=gunzip, mode="r|", bufsize=_TAR_BUFSIZE) as tar:
        for member in tar:
            members += 1
            if members > limits.max_members:
                raise SizeLimitError(f"payload has more than {limits.max_members} members")
            name = member.name
            if member.type == tarfile.DIRTYPE:
                parts = _check_name(name)
                _check_mode(member)
                if name not in ancestors:
                    raise ChecksumError(f"payload directory {name!r} holds no manifest file")
                if name in seen_dirs:
                    raise UnsafePackageError(f"payload lists directory {name!r} twice")
                seen_dirs.add(name)
                dirs.parent_of([*parts, ""])  # creates it, and its parents
                continue
            if member.type not in _ALLOWED_FILE_TYPES or member.sparse is not None:
                raise UnsafePackageError(
                    f"payload member {name!r} is a {_describe_type(member)}; "
                    "only regular files and directories are allowed"
                )
            parts = _check_name(name)
            _check_mode(member)
            if member.size > limits.max_expanded_bytes - written:
                raise SizeLimitError(
                    f"payload expands beyond {limits.max_expanded_bytes} bytes at {name!r}"
                )
            entry = expected.get(name)
            if entry is None:
                raise ChecksumError(f"payload file {name!r} is not in the manifest")
            if name in seen:
                raise UnsafePackageError(f"payload lists file {name!r} twice")
            seen.add(name)
            if member.mode & 0o777 != entry.mode or member.size != entry.size:
                raise ChecksumError(
                    f"payload file {name!r}: mode or size differs from the manifest"
                )
            source = tar.extractfile(member)
            if source is None:  # pragma: no cover - regular members always have data
                raise PackageError(f"payload file {name!r} has no data")
            parent = dirs.parent_of(parts)
            written += _write_file(
                source,
                parent,
                parts[-1],
                entry,
                limits.max_expanded_bytes - written,
                buffer,
                readonly,
                fsync,
            )
            if on_file is not None:
                on_file(name)
    # tar.offset is where tarfile found the end-of-archive marker.
    gunzip.finish(tar.offset)
    return seen


def _check_mode(member: tarfile.TarInfo) -> None:
    if member.mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
        raise UnsafePackageError(
            f"payload member {member.name!r} has setuid, setgid or sticky bits "
            f"(mode {member.mode:o})"
        )


def _write_file(
    source: IO[bytes],
    parent_fd: int,
    leaf: str,
    entry: FileEntry,
    budget: int,
    buffer: bytearray,
    readonly: bool,
    fsync: bool,
) -> int:
    digest = hashlib.sha256()
    view = memoryview(buffer)
    total = 0
    try:
        fd = os.open(leaf, _FILE_FLAGS, 0o600, dir_fd=parent_fd)
    except (FileExistsError, IsADirectoryError):
        raise UnsafePackageError(
            f"payload file {entry.path!r} collides with another member"
        ) from None
    try:
        while True:
            n = source.readinto(view)  # type: ignore[attr-defined]
            if not n:
                break
            total += n
            # Count what really arrives, whatever the header said.
            if total > budget:
                raise SizeLimitError(f"payload expands beyond the size cap at {entry.path!r}")
            if total > entry.size:
                raise ChecksumError(f"payload file {entry.path!r} is larger than the manifest says")
            chunk = view[:n]
            digest.update(chunk)
            while chunk:
                chunk = chunk[os.write(fd, chunk) :]
        if total != entry.size or digest.hexdigest() != entry.sha256:
            raise ChecksumError(f"payload file {entry.path!r} does not match its manifest sha256")
        os.fchmod(fd, entry.mode & 0o555 if readonly else entry.mode)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return total


class _Malformed(ValueError):
    """The payload stream breaks the gzip or tar framing (mapped to a PackageError)."""


class _GunzipReader(io.RawIOBase):
    """Inflates a single-member gzip stream, at most ``size`` bytes per ``read``.

    It remembers the last few inflated chunks, because tarfile buffers ahead: the
    bytes after the end-of-archive marker may already sit in tarfile's buffer, and
    ``finish`` still has to check that they are only zero padding.
    """

    def __init__(self, src: _PayloadReader) -> None:
        super().__init__()
        self._src = src
        self._inflate = zlib.decompressobj(wbits=31)  # gzip wrapper: checks CRC and length
        self.produced = 0
        self._tail: collections.deque[bytes] = collections.deque()
        self._tail_bytes = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = CHUNK if size < 0 else min(size, CHUNK)
        while True:
            if self._inflate.unconsumed_tail:
                data = self._inflate.decompress(self._inflate.unconsumed_tail, size)
            elif self._inflate.eof:
                if self._inflate.unused_data or self._src.read(1):
                    raise _Malformed("data after the end of the gzip stream")
                return b""
            else:
                raw = self._src.read(CHUNK)
                if not raw:
                    raise _Malformed("gzip stream ends early")
                data = self._inflate.decompress(raw, size)
            if data:
                self._remember(data)
                return data

    def _remember(self, data: bytes) -> None:
        self.produced += len(data)
        self._tail.append(data)
        self._tail_bytes += len(data)
        while self._tail_bytes - len(self._tail[0]) >= _TAIL_BYTES:
            self._tail_bytes -= len(self._tail.popleft())

    def finish(self, end_of_archive: int) -> None:
        """Allow only zero bytes from the tar end marker to the end of the gzip stream."""
        tail_start = self.produced - self._tail_bytes
        if end_of_archive < tail_start:
            raise _Malformed("cannot locate the end of the tar archive")
        seen = b"".join(self._tail)[end_of_archive - tail_start :]
        if seen.count(0) != len(seen):
            raise _Malformed("data after the end of the tar archive")
        trailing = len(seen)
        while data := self.read(CHUNK):
            trailing += len(data)
            if trailing > _MAX_TRAILING or data.count(0) != len(data):
                raise _Malformed("data after the end of the tar archive")


def _drain(reader: _PayloadReader) -> None:
    while reader.read(CHUNK):
        pass


class _PayloadReader(io.RawIOBase):
    """Reads at most ``limit`` bytes from ``src``, hashing them on the way."""

    def __init__(self, src: BinaryIO, limit: int, *, hash_payload: bool = True) -> None:
        super().__init__()
        self._src = src
        self._left = limit
        self._hash = hash_payload
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self._left:
            size = self._left
        data = self._src.read(size)
        self._left -= len(data)
        self.size += len(data)
        if self._hash:
            self.digest.update(data)
        return data


class _DirChain:
    """Directory descriptors for the current file's parent chain, reused between files.

    Members arrive sorted, so consecutive files mostly share their parents; keeping
    only the current chain bounds the number of open descriptors by the tree depth.
    """

    def __init__(self, root_fd: int, *, fsync: bool) -> None:
        self._root = root_fd
        self._chain: list[tuple[str, int]] = []
        self._fsync = fsync

    def parent_of(self, parts: list[str]) -> int:
        wanted = parts[:-1]
        keep = 0
        while (
            keep < len(self._chain) and keep < len(wanted) and self._chain[keep][0] == wanted[keep]
        ):
            keep += 1
        self._close_from(keep, sync=True)
        fd = self._chain[-1][1] if self._chain else self._root
        for part in wanted[keep:]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise UnsafePackageError(
                    f"payload path component {part!r} is not a directory: {exc.strerror}"
                ) from None
            self._chain.append((part, child))
            fd = child
        return fd

    def _close_from(self, index: int, *, sync: bool) -> None:
        while len(self._chain) > index:
            _, fd = self._chain.pop()
            try:
                if sync and self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)

    def close_all(self, *, sync: bool = True) -> None:
        self._close_from(0, sync=sync)
        if sync and self._fsync:
            os.fsync(self._root)
