"""Hostile packages: each is refused with its specific error, and nothing else changes.

Every case runs against a store whose ``current`` is a good release. After the
refusal the whole test directory (bar the scratch ``staging/`` directory and the lock
file) must be byte-for-byte as before, ``current`` must be untouched, and staging
must be empty. Payload attacks are validly signed by the trusted key.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetwave_agent.errors import (
    ChecksumError,
    ExpiredPackageError,
    ImmutableVersionError,
    PackageError,
    RevokedKeyError,
    SignatureError,
    SizeLimitError,
    UnsafePackageError,
    UntrustedKeyError,
)
from fleetwave_agent.keys import Keyring
from fleetwave_agent.manifest import FileEntry
from fleetwave_agent.package import Limits
from fleetwave_agent.store import ReleaseStore

from .conftest import NOW, Keys
from .craft import Member, craft, entries_for, snapshot, tar_gz, write_signed

pytestmark = pytest.mark.integration

DEFAULT_LIMITS = Limits()
GOOD = [Member("a.txt", b"hello\n"), Member("bin/run", b"#!/bin/sh\n", mode=0o755)]


@dataclass(frozen=True)
class Ctx:
    tmp: Path
    keys: Keys
    good: Path  # a valid, trusted v2.0 package


def tampered_payload(ctx: Ctx) -> Path:
    data = bytearray(ctx.good.read_bytes())
    data[-30] ^= 0x01
    out = ctx.tmp / "tampered.fwpkg"
    out.write_bytes(bytes(data))
    return out


def tampered_signature(ctx: Ctx) -> Path:
    data = bytearray(ctx.good.read_bytes())
    sig_start = 12 + int.from_bytes(data[8:12], "big")
    data[sig_start + 5] ^= 0x80
    out = ctx.tmp / "badsig.fwpkg"
    out.write_bytes(bytes(data))
    return out


def wrong_key(ctx: Ctx) -> Path:
    return _craft(ctx, "wrongkey", GOOD, key=ctx.keys.other)


def expired(ctx: Ctx) -> Path:
    return _craft(ctx, "expired", GOOD, expires=int(NOW) - 1)


def truncated_payload(ctx: Ctx) -> Path:
    out = ctx.tmp / "truncated.fwpkg"
    out.write_bytes(ctx.good.read_bytes()[:-10])
    return out


def truncated_header(ctx: Ctx) -> Path:
    out = ctx.tmp / "truncated-head.fwpkg"
    out.write_bytes(ctx.good.read_bytes()[:40])
    return out


def file_digest_mismatch(ctx: Ctx) -> Path:
    payload = tar_gz(GOOD)
    files = entries_for(GOOD)
    files[0] = FileEntry(files[0].path, files[0].mode, files[0].size, "0" * 64)
    out = ctx.tmp / "mismatch.fwpkg"
    write_signed(out, payload, files, ctx.keys.private)
    return out


def extra_file(ctx: Ctx) -> Path:
    return _craft(ctx, "extra", [*GOOD, Member("unlisted", b"x", manifest=False)])


def missing_file(ctx: Ctx) -> Path:
    payload = tar_gz(GOOD)
    files = [*entries_for(GOOD), FileEntry("gone.txt", 0o644, 1, "1" * 64)]
    out = ctx.tmp / "missing.fwpkg"
    write_signed(out, payload, files, ctx.keys.private)
    return out


def dotdot(ctx: Ctx) -> Path:
    return _craft(ctx, "dotdot", [*GOOD, Member("../../escaped", b"pwned", manifest=False)])


def absolute(ctx: Ctx) -> Path:
    target = ctx.tmp / "outside" / "absolute"
    return _craft(ctx, "abs", [*GOOD, Member(str(target), b"pwned", manifest=False)])


def symlink_then_write(ctx: Ctx) -> Path:
    members = [
        Member("a.txt", b"hello\n"),
        Member("escape", type=tarfile.SYMTYPE, linkname=str(ctx.tmp / "outside")),
        Member("escape/planted", b"pwned", manifest=False),
    ]
    return _craft(ctx, "symlink", members)


def hardlink(ctx: Ctx) -> Path:
    members = [*GOOD, Member("hl", type=tarfile.LNKTYPE, linkname="../../outside/victim")]
    return _craft(ctx, "hardlink", members)


def device(ctx: Ctx) -> Path:
    return _craft(ctx, "device", [*GOOD, Member("dev", type=tarfile.CHRTYPE, mode=0o666)])


def fifo(ctx: Ctx) -> Path:
    return _craft(ctx, "fifo", [*GOOD, Member("pipe", type=tarfile.FIFOTYPE)])


def sparse(ctx: Ctx) -> Path:
    return _craft(ctx, "sparse", [*GOOD, Member("holes", type=tarfile.GNUTYPE_SPARSE)])


def setuid(ctx: Ctx) -> Path:
    payload = tar_gz([GOOD[0], Member("bin/run", b"#!/bin/sh\n", mode=0o4755)])
    out = ctx.tmp / "setuid.fwpkg"
    write_signed(out, payload, entries_for(GOOD), ctx.keys.private)
    return out


def bomb(ctx: Ctx) -> Path:
    """64 MiB of zeros in ~64 KiB; the manifest claims 10 bytes, the cap is 1 MiB."""
    zeros = bytes(64 << 20)
    members = [Member("bomb", zeros, manifest=False)]
    files = [FileEntry("bomb", 0o644, 10, hashlib.sha256(b"0" * 10).hexdigest())]
    out = ctx.tmp / "bomb.fwpkg"
    write_signed(out, tar_gz(members), files, ctx.keys.private)
    return out


def million_members(ctx: Ctx) -> Path:
    """100 honest files (the cap), then a million more headers as one cheap gzip stream."""
    honest = [Member(f"f{i:03d}", b"x") for i in range(100)]
    # Each honest member is one header block and one data block; keep exactly those,
    # dropping the end-of-archive padding, so the filler continues the same archive.
    raw_head = zlib.decompress(tar_gz(honest), 31)[: 100 * 1024]
    info = tarfile.TarInfo("filler")
    block = info.tobuf(format=tarfile.GNU_FORMAT)
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    parts = [compressor.compress(raw_head)]
    chunk = block * 10_000
    for _ in range(100):  # 100 x 10,000 = 1,000,000 members
        parts.append(compressor.compress(chunk))
    parts.append(compressor.compress(bytes(1024)) + compressor.flush())
    out = ctx.tmp / "million.fwpkg"
    write_signed(out, b"".join(parts), entries_for(honest), ctx.keys.private)
    return out


def data_after_archive(ctx: Ctx) -> Path:
    """Bytes smuggled after the tar end marker, inside the signed gzip stream."""
    raw = zlib.decompress(tar_gz(GOOD), 31) + b"smuggled"
    out = ctx.tmp / "trailing.fwpkg"
    write_signed(out, gzip.compress(raw, mtime=0), entries_for(GOOD), ctx.keys.private)
    return out


def second_gzip_member(ctx: Ctx) -> Path:
    payload = tar_gz(GOOD) + gzip.compress(b"second member", mtime=0)
    out = ctx.tmp / "twomembers.fwpkg"
    write_signed(out, payload, entries_for(GOOD), ctx.keys.private)
    return out


def reused_version(ctx: Ctx) -> Path:
    return _craft(ctx, "reused", [Member("a.txt", b"different\n")], version="1.0")


def _craft(ctx: Ctx, stem: str, members: list[Member], key: object = None, **kw: object) -> Path:
    out = ctx.tmp / f"{stem}.fwpkg"
    craft(out, members, key or ctx.keys.private, **kw)  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class Case:
    make: Callable[[Ctx], Path]
    error: type[PackageError]
    limits: Limits = DEFAULT_LIMITS
    revoke: bool = False


CASES = {
    "tampered-payload-byte": Case(tampered_payload, ChecksumError),
    "tampered-signature-byte": Case(tampered_signature, SignatureError),
    "wrong-key": Case(wrong_key, UntrustedKeyError),
    "revoked-key": Case(lambda ctx: ctx.good, RevokedKeyError, revoke=True),
    "expired": Case(expired, ExpiredPackageError),
    "truncated-payload": Case(truncated_payload, ChecksumError),
    "truncated-header": Case(truncated_header, PackageError),
    "file-digest-mismatch": Case(file_digest_mismatch, ChecksumError),
    "file-not-in-manifest": Case(extra_file, ChecksumError),
    "manifest-file-missing": Case(missing_file, ChecksumError),
    "dotdot-path": Case(dotdot, UnsafePackageError),
    "absolute-path": Case(absolute, UnsafePackageError),
    "symlink-escape-then-write": Case(symlink_then_write, UnsafePackageError),
    "hardlink-escape": Case(hardlink, UnsafePackageError),
    "device-file": Case(device, UnsafePackageError),
    "fifo": Case(fifo, UnsafePackageError),
    "sparse-file": Case(sparse, UnsafePackageError),
    "setuid": Case(setuid, UnsafePackageError),
    "decompression-bomb": Case(bomb, SizeLimitError, Limits(max_expanded_bytes=1 << 20)),
    "million-members": Case(million_members, SizeLimitError, Limits(max_members=100)),
    "data-after-tar-archive": Case(data_after_archive, PackageError),
    "second-gzip-member": Case(second_gzip_member, PackageError),
    "reused-version": Case(reused_version, ImmutableVersionError),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_hostile_package_is_refused_and_changes_nothing(
    case: Case, tmp_path: Path, keys: Keys, build
) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim").write_text("original\n")
    store = ReleaseStore(tmp_path / "root")
    with store.lock():
        store.switch(store.stage(build("1.0"), keys.keyring, now=NOW))
    good = build("2.0")
    package = case.make(Ctx(tmp=tmp_path, keys=keys, good=good))
    keyring = keys.keyring
    if case.revoke:
        keyring = Keyring(keys=keys.keyring.keys, revoked=frozenset(keys.keyring.key_ids))
    current_before = store.current()
    skip = [store.staging_dir, store.root / ".lock"]
    before = snapshot(tmp_path, skip=skip)

    with store.lock(), pytest.raises(PackageError) as info:
        store.stage(package, keyring, now=NOW, limits=case.limits)

    assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
    assert snapshot(tmp_path, skip=skip) == before
    assert store.current() == current_before
    assert list(store.staging_dir.iterdir()) == []
    assert not (tmp_path / "escaped").exists()
    assert (tmp_path / "outside" / "victim").read_text() == "original\n"
