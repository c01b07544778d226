"""Receiving an uploaded package over RPC into ``incoming/``.

Written to a temp file, fsynced, checked (its manifest must have the announced id and
its payload the manifest's size and SHA-256, hashed while receiving) and renamed into
place. A package already present is not stored again; the caller is expected to have
asked ``has_package`` first so no bytes are sent at all. The signature is checked at
install, not here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fleetwave_agent.errors import ChecksumError, PackageError, RpcProtocolError, SizeLimitError
from fleetwave_core.fsutil import fsync_dir

if TYPE_CHECKING:
    from fleetwave_agent.digests import PayloadDigest
    from fleetwave_agent.package import Limits
    from fleetwave_agent.store import ReleaseStore

_CHUNK = 1 << 20


class ByteSource(Protocol):
    def read(self, n: int = ..., /) -> bytes: ...


def receive_upload(
    store: ReleaseStore,
    limits: Limits,
    package_id: str,
    size: int,
    body: ByteSource,
    received: dict[Path, PayloadDigest],
) -> dict[str, Any]:
    """Store exactly ``size`` bytes from ``body`` as the package ``package_id``.

    ``received`` gets the payload digest taken while receiving, by stored path.
    """
    from fleetwave_agent.digests import PayloadDigest, PayloadHasher, file_identity
    from fleetwave_agent.package import read_manifest

    if store.has_package(package_id):
        return {"stored": False, "present": True}
    if size > limits.max_package_bytes:
        raise SizeLimitError(
            f"upload of {size} bytes exceeds max_package_bytes={limits.max_package_bytes}"
        )
    final = store.incoming_path(package_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.part")
    hasher = PayloadHasher()
    try:
        with open(tmp, "wb") as out:
            left = size
            while left:
                chunk = body.read(min(_CHUNK, left))
                if not chunk:
                    raise RpcProtocolError(f"upload ended after {size - left} of {size} bytes")
                out.write(chunk)
                hasher.update(chunk)
                left -= len(chunk)
            out.flush()
            os.fsync(out.fileno())
        manifest = read_manifest(tmp)
        if manifest.package_id != package_id:
            raise PackageError(
                f"uploaded package is {manifest.package_id[:12]}, "
                f"not the announced {package_id[:12]}"
            )
        if hasher.payload_size != manifest.payload_size:
            raise ChecksumError(
                f"uploaded package {package_id[:12]}: payload is {hasher.payload_size} "
                f"bytes, manifest says {manifest.payload_size}"
            )
        if hasher.hexdigest() != manifest.payload_sha256:
            raise ChecksumError(
                f"uploaded package {package_id[:12]}: payload sha256 does not match its manifest"
            )
        os.replace(tmp, final)
        fsync_dir(final.parent)
        # After the rename: on some filesystems rename(2) updates the file's ctime.
        received[final] = PayloadDigest(
            sha256=manifest.payload_sha256,
            payload_size=manifest.payload_size,
            identity=file_identity(os.stat(final)),
        )
    finally:
        tmp.unlink(missing_ok=True)
    return {"stored": True, "present": True, "bytes": size}
