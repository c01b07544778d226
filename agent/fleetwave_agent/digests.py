"""Hash a package's payload once, while it is uploaded, and let the store reuse it.

An upload streams the whole package through the agent anyway, so the payload's
SHA-256 is computed on the way (:class:`PayloadHasher`) and checked against the
manifest before the file is renamed into ``incoming/``: a corrupted upload is refused
at once instead of sitting in ``incoming/`` as if it were the package.

The resulting :class:`PayloadDigest` binds the digest to the identity of the file it
was computed from (device, inode, size, mtime and ctime in nanoseconds). The store
uses it instead of hashing the payload again only while that identity is unchanged:
any write, truncation, ``chmod`` or replacement of the file changes its ctime or
inode, and the store then hashes the bytes itself. The digest is only ever held in
the memory of the process that computed it; it is never read back from disk.
Signature, payload size and every per-file digest are still checked at install.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fleetwave_agent.errors import ChecksumError
from fleetwave_agent.framing import _LEN, HEADER_BYTES, MAGIC, SIGNATURE_BYTES

if TYPE_CHECKING:
    from fleetwave_agent.manifest import Manifest

FileIdentity = tuple[int, int, int, int, int]


def file_identity(st: os.stat_result) -> FileIdentity:
    """What must stay equal for a digest of a file's bytes to still describe the file."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class PayloadDigest:
    """SHA-256 of the payload of the file whose identity is ``identity``."""

    sha256: str
    payload_size: int
    identity: FileIdentity

    def describes(self, st: os.stat_result) -> bool:
        """True if the file with stat ``st`` is still the one that was hashed."""
        return file_identity(st) == self.identity

    def vouches_for(self, package: Path, manifest: Manifest) -> bool:
        """True if this digest proves ``package``'s payload is ``manifest``'s, unread.

        False if the file changed since it was hashed (hash it again); ChecksumError if
        the digest of this very file contradicts the manifest.
        """
        try:
            if not self.describes(os.stat(package)):
                return False
        except OSError:
            return False
        if self.sha256 != manifest.payload_sha256 or self.payload_size != manifest.payload_size:
            raise ChecksumError(f"{package}: payload sha256 does not match the signed manifest")
        return True


class PayloadHasher:
    """Consumes a package's bytes in order and hashes the part after the signature.

    The payload offset comes from the framing header (magic, manifest length); the
    header itself is validated later by ``package.read_header``. If the header is
    malformed the digest is meaningless, and the package is refused by that check.
    """

    def __init__(self) -> None:
        self._head = bytearray()
        self._offset: int | None = None
        self._position = 0
        self._digest = hashlib.sha256()

    def update(self, data: bytes) -> None:
        """Feed the next bytes of the package."""
        start = self._position
        self._position += len(data)
        if self._offset is None:
            self._head += data[: max(0, HEADER_BYTES - start)]
            if len(self._head) < HEADER_BYTES:
                return
            if bytes(self._head[: len(MAGIC)]) == MAGIC:
                (manifest_len,) = _LEN.unpack_from(self._head, len(MAGIC))
                self._offset = HEADER_BYTES + manifest_len + SIGNATURE_BYTES
            else:
                self._offset = self._position + (1 << 62)  # not a package: hash nothing
        if self._position > self._offset:
            self._digest.update(memoryview(data)[max(0, self._offset - start) :])

    @property
    def payload_size(self) -> int:
        """Bytes of payload seen so far (0 until the header has been seen)."""
        if self._offset is None:
            return 0
        return max(0, self._position - self._offset)

    def hexdigest(self) -> str:
        """SHA-256 of the payload bytes seen so far."""
        return self._digest.hexdigest()
