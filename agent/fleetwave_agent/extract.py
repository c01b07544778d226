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

import contextlib
import hashlib
import io
import os
import stat
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from fleetwave_agent.errors import (
    ChecksumError,
    PackageError,
    SizeLimitError,
    StoreError,
    UnsafePackageError,
)
from fleetwave_agent.framing import CHUNK, HEADER_BYTES, MAGIC, SIGNATURE_BYTES, Limits
from fleetwave_agent.manifest import FileEntry, Manifest, check_member_path
from fleetwave_agent.tarstream import MalformedTar, TarMember, TarReader
from fleetwave_core.safefile import FileRefusedError, open_regular

if TYPE_CHECKING:
    from fleetwave_agent.digests import PayloadDigest

_MAX_TRAILING = 1 << 20  # tar pads to 10 KiB records; anything near this is not padding
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
    root_fd = os.open(staging, _DIR_FLAGS)
    sink = _DiskSink(root_fd, readonly=readonly, fsync=fsync)
    try:
        try:
            _walk_payload(package, manifest, limits, sink, on_file, payload_digest)
        except OSError as exc:
            raise StoreError(f"{staging}: cannot write release: {exc}") from None
        sink.dirs.close_all()
    finally:
        sink.dirs.close_all(sync=False)
        os.close(root_fd)


def check_payload(package: Path, manifest: Manifest, limits: Limits) -> None:
    """Every check :func:`extract_payload` makes, writing nothing (``package verify``).

    The same walk over the same members with the same rules and errors; only the
    sink differs: file data is hashed and dropped instead of written.
    """
    _walk_payload(package, manifest, limits, _NullSink(), None, None)


def _walk_payload(
    package: Path,
    manifest: Manifest,
    limits: Limits,
    sink: _Sink,
    on_file: Callable[[str], None] | None,
    payload_digest: PayloadDigest | None,
) -> None:
    expected = {f.path: f for f in manifest.files}
    ancestors = {p for f in manifest.files for p in _parents(f.path)}
    try:
        fh = open_regular(package)
    except FileRefusedError as exc:
        raise PackageError(f"{package}: cannot be a package: {exc}") from None
    except OSError as exc:
        raise PackageError(f"{package}: cannot read package: {exc.strerror}") from None
    with fh:
        known = _known_digest(fh, package, manifest, payload_digest)
        raw = _seek_payload(fh, package, manifest)
        reader = _PayloadReader(fh, manifest.payload_size, hash_payload=known is None)
        try:
            seen = _extract_members(reader, expected, ancestors, sink, limits, on_file)
        except (PackageError, EOFError, zlib.error, OSError, UnicodeError, MalformedTar) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # the disk, not the package: extract_payload makes it a StoreError
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


def _describe_type(member: TarMember) -> str:
    kinds = {b"1": "hardlink", b"2": "symlink"}
    if member.type in kinds:
        return f"{kinds[member.type]} to {member.linkname[:80]!r}"
    if member.type in (b"3", b"4"):
        return "device file"
    if member.type == b"6":
        return "FIFO"
    if member.sparse:
        return "sparse file"
    return f"member of type {member.type.decode('ascii', 'replace')!r}"


def _extract_members(
    reader: _PayloadReader,
    expected: dict[str, FileEntry],
    ancestors: set[str],
    sink: _Sink,
    limits: Limits,
    on_file: Callable[[str], None] | None,
) -> set[str]:
    seen: set[str] = set()
    seen_dirs: set[str] = set()
    members = 0
    written = 0
    # We inflate ourselves, with bounded output per call, and read tar headers in
    # bounded buffers (tarstream): tarfile reads pax and long-name headers whole.
    gunzip = _GunzipReader(reader)
    tar = TarReader(gunzip.read)
    for member in tar.members():
        members += 1
        if members > limits.max_members:
            raise SizeLimitError(f"payload has more than {limits.max_members} members")
        name = member.name
        if member.is_dir:
            parts = _check_name(name)
            _check_mode(member)
            if member.size:
                raise UnsafePackageError(f"payload directory {name!r} carries data")
            if name not in ancestors:
                raise ChecksumError(f"payload directory {name!r} holds no manifest file")
            if name in seen_dirs:
                raise UnsafePackageError(f"payload lists directory {name!r} twice")
            seen_dirs.add(name)
            sink.directory(parts)
            continue
        if not member.is_file:
            raise UnsafePackageError(
                f"payload member {name[:80]!r} is a {_describe_type(member)}; "
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
            raise ChecksumError(f"payload file {name!r}: mode or size differs from the manifest")
        written += _copy_file(tar, sink, parts, entry, limits.max_expanded_bytes - written)
        if on_file is not None:
            on_file(name)
    if tar.end_offset is None:  # pragma: no cover - members() returns only at the marker
        raise _Malformed("tar archive without an end marker")
    gunzip.finish(tar.end_offset)
    return seen


def _check_name(name: str) -> list[str]:
    try:
        return check_member_path(name)
    except UnsafePackageError as exc:
        raise UnsafePackageError(f"payload member: {exc}") from None


def _check_mode(member: TarMember) -> None:
    if member.mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
        raise UnsafePackageError(
            f"payload member {member.name!r} has setuid, setgid or sticky bits "
            f"(mode {member.mode:o})"
        )


def _copy_file(tar: TarReader, sink: _Sink, parts: list[str], entry: FileEntry, budget: int) -> int:
    """Stream one member's data into ``sink``, checking size and digest on the way."""
    digest = hashlib.sha256()
    total = 0
    out = sink.open_file(parts, entry)
    try:
        while chunk := tar.read(CHUNK):
            total += len(chunk)
            # Count what really arrives, whatever the header said.
            if total > budget:
                raise SizeLimitError(f"payload expands beyond the size cap at {entry.path!r}")
            if total > entry.size:
                raise ChecksumError(f"payload file {entry.path!r} is larger than the manifest says")
            digest.update(chunk)
            out.write(chunk)
        if total != entry.size or digest.hexdigest() != entry.sha256:
            raise ChecksumError(f"payload file {entry.path!r} does not match its manifest sha256")
        out.finish()
    finally:
        out.close()
    return total


class _FileOut(Protocol):
    def write(self, data: bytes) -> None: ...
    def finish(self) -> None: ...
    def close(self) -> None: ...


class _Sink(Protocol):
    """Where checked members go: the staging directory, or nowhere (verify)."""

    def directory(self, parts: list[str]) -> None: ...
    def open_file(self, parts: list[str], entry: FileEntry) -> _FileOut: ...


class _NullFile:
    def write(self, data: bytes) -> None:
        pass

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


class _NullSink:
    def directory(self, parts: list[str]) -> None:
        pass

    def open_file(self, parts: list[str], entry: FileEntry) -> _FileOut:
        return _NullFile()


class _DiskFile:
    def __init__(self, fd: int, mode: int, fsync: bool) -> None:
        self._fd = fd
        self._mode = mode
        self._fsync = fsync

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def finish(self) -> None:
        os.fchmod(self._fd, self._mode)
        if self._fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


class _DiskSink:
    def __init__(self, root_fd: int, *, readonly: bool, fsync: bool) -> None:
        self.dirs = _DirChain(root_fd, fsync=fsync)
        self._readonly = readonly
        self._fsync = fsync

    def directory(self, parts: list[str]) -> None:
        self.dirs.parent_of([*parts, ""])  # creates it, and its parents

    def open_file(self, parts: list[str], entry: FileEntry) -> _FileOut:
        parent = self.dirs.parent_of(parts)
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, 0o600, dir_fd=parent)
        except (FileExistsError, IsADirectoryError):
            raise UnsafePackageError(
                f"payload file {entry.path!r} collides with another member"
            ) from None
        mode = entry.mode & 0o555 if self._readonly else entry.mode
        return _DiskFile(fd, mode, self._fsync)


class _Malformed(MalformedTar):
    """The payload stream breaks the gzip or tar framing (mapped to a PackageError)."""


class _GunzipReader:
    """Inflates a single-member gzip stream, at most ``size`` bytes per ``read``.

    The tar reader asks for exactly what it needs, so nothing is read ahead of the
    end-of-archive marker and :meth:`finish` sees every byte after it.
    """

    def __init__(self, src: _PayloadReader) -> None:
        self._src = src
        self._inflate = zlib.decompressobj(wbits=31)  # gzip wrapper: checks CRC and length

    def read(self, size: int) -> bytes:
        size = min(size, CHUNK)
        while True:
            if self._inflate.eof:
                if self._inflate.unused_data or self._src.read(1):
                    raise _Malformed("data after the end of the gzip stream")
                return b""
            if self._inflate.unconsumed_tail:
                data = self._inflate.decompress(self._inflate.unconsumed_tail, size)
            else:
                raw = self._src.read(CHUNK)
                if not raw:
                    raise _Malformed("gzip stream ends early")
                data = self._inflate.decompress(raw, size)
            if data:
                return data

    def finish(self, end_of_archive: int) -> None:
        """Allow only zero bytes (at most _MAX_TRAILING) after the tar end marker."""
        trailing = 0
        while data := self.read(CHUNK):
            trailing += len(data)
            if trailing > _MAX_TRAILING or data.count(0) != len(data):
                raise _Malformed(f"data after the end of the tar archive (at {end_of_archive})")


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
