"""Helpers that build packages, honest or hostile, for the package tests.

Hostile packages are signed with whatever key the test asks for (usually the trusted
one), so a test proves that extraction itself refuses them, not just the signature.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetwave_agent.keys import key_id
from fleetwave_agent.manifest import FileEntry, Manifest
from fleetwave_agent.package import MAGIC


@dataclass(frozen=True)
class Member:
    """One tar member to write. ``manifest`` says whether the signed manifest lists it."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    mode: int = 0o644
    linkname: str = ""
    manifest: bool = True


@dataclass
class Signer:
    key: Ed25519PrivateKey
    revoked: set[str] = field(default_factory=set)

    @property
    def key_id(self) -> str:
        return key_id(self.key.public_key())


def tar_gz(members: Iterable[Member]) -> bytes:
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.GNU_FORMAT) as tar,
    ):
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = m.type
            info.mode = m.mode
            info.linkname = m.linkname
            info.size = len(m.data) if m.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
            tar.addfile(info, io.BytesIO(m.data) if info.size else None)
    return raw.getvalue()


def entries_for(members: Iterable[Member]) -> list[FileEntry]:
    return [
        FileEntry(
            path=m.name,
            mode=stat.S_IMODE(m.mode) & 0o777,
            size=len(m.data),
            sha256=hashlib.sha256(m.data).hexdigest(),
        )
        for m in members
        if m.manifest and m.type == tarfile.REGTYPE
    ]


def write_signed(
    path: Path,
    payload: bytes,
    files: list[FileEntry],
    signer: Ed25519PrivateKey,
    *,
    name: str = "app",
    version: str = "2.0",
    expires: int | None = None,
    created: int = 1_700_000_000,
) -> Manifest:
    """Sign a manifest describing ``files`` and ``payload`` and write a .fwpkg."""
    manifest = Manifest(
        name=name,
        version=version,
        created=created,
        key_id=key_id(signer.public_key()),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        payload_size=len(payload),
        files=tuple(sorted(files, key=lambda f: f.path)),
        expires=expires,
    )
    raw = manifest.canonical_bytes()
    signature = signer.sign(manifest.signing_message())
    path.write_bytes(MAGIC + len(raw).to_bytes(4, "big") + raw + signature + payload)
    return manifest


def craft(
    path: Path, members: list[Member], signer: Ed25519PrivateKey, **kwargs: object
) -> Manifest:
    return write_signed(path, tar_gz(members), entries_for(members), signer, **kwargs)  # type: ignore[arg-type]


def snapshot(root: Path, *, skip: Iterable[Path] = ()) -> dict[str, tuple[int, str]]:
    """Every path under ``root`` (not following links) -> (mode, content digest or link)."""
    skipped = {str(p) for p in skip}
    result: dict[str, tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skipped]
        for entry in [*dirnames, *filenames]:
            full = os.path.join(dirpath, entry)
            if full in skipped:
                continue
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                value = "->" + os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as fh:
                    value = hashlib.sha256(fh.read()).hexdigest()
            else:
                value = "dir"
            result[os.path.relpath(full, root)] = (st.st_mode, value)
    return result
