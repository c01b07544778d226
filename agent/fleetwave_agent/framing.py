"""The package file's framing constants and the limits agents apply to untrusted
packages. Kept apart from :mod:`package` so the readers of the format (the
extractor, the digest cache) need not import the builder and verifier."""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"\x89FWPKG\x01\n"
SIGNATURE_BYTES = 64
_LEN = struct.Struct(">I")
HEADER_BYTES = len(MAGIC) + _LEN.size
#: Read and hash in chunks of this size.
CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Caps an agent applies to untrusted packages. Defaults suit production fleets."""

    max_package_bytes: int = 2 << 30  # the .fwpkg file as downloaded
    max_expanded_bytes: int = 8 << 30  # sum of extracted file sizes
    max_members: int = 200_000  # tar members (files and directories)
    max_manifest_bytes: int = 32 << 20


DEFAULT_LIMITS = Limits()
