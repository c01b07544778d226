"""Ed25519 signing keys, key ids and the keyring an agent trusts.

A private key is a PKCS#8 PEM file (mode 0600). A public key file is one line of
text: ``fleetwave-ed25519 <base64 of the 32 raw key bytes> <key id>``. The key id
is the first 16 lower-case hex digits of SHA-256 over the 32 raw public key bytes;
it is what a manifest names, so an agent can pick the right key without trying
them all. ``docs/package-format.md`` is the normative description.

``cryptography`` is imported inside the functions that need it, not at module level:
the agent's ``rpc`` sessions that never verify a signature (``has_package``,
``rollback``, ``status``) must not pay its import on every start.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fleetwave_agent.errors import RevokedKeyError, SignatureError, UntrustedKeyError
from fleetwave_core.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

PUBLIC_KEY_TAG = "fleetwave-ed25519"
_MAX_KEY_FILE_BYTES = 64 * 1024
_KEY_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")


def raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """16 lower-case hex chars: the start of SHA-256 over the raw public key bytes."""
    return hashlib.sha256(raw_public_bytes(public_key)).hexdigest()[:16]


def format_public_key(public_key: Ed25519PublicKey) -> str:
    """The one-line text form written to ``NAME.pub`` (ends with a newline)."""
    encoded = base64.b64encode(raw_public_bytes(public_key)).decode("ascii")
    return f"{PUBLIC_KEY_TAG} {encoded} {key_id(public_key)}\n"


def generate_keypair(out_dir: Path, name: str = "fleetwave") -> tuple[Path, Path]:
    """Create ``out_dir/NAME.key`` (PKCS#8 PEM, 0600) and ``out_dir/NAME.pub``.

    Neither file is ever overwritten: both are created with ``O_EXCL``, and if the
    public key cannot be written the new private key is removed again, so a failure
    leaves no half-made pair behind.
    """
    if not _KEY_NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid key name {name!r}: use 1-64 of [A-Za-z0-9._-], not starting with '.'"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path = out_dir / f"{name}.key"
    public_path = out_dir / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise ConfigError("refusing to overwrite an existing key file", source=str(path))
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(private_path, pem, 0o600)
    try:
        _write_new(public_path, format_public_key(private_key.public_key()).encode(), 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return private_path, public_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise ConfigError("refusing to overwrite an existing key file", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot create key file: {exc.strerror}", source=str(path)) from None
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what we asked for
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _read_key_file(path: Path) -> bytes:
    """A key file's bytes: a regular file (a FIFO must not block) of key size."""
    from fleetwave_core.safefile import FileRefusedError, read_regular

    try:
        return read_regular(path, _MAX_KEY_FILE_BYTES)
    except FileRefusedError as exc:
        raise ConfigError(f"cannot be a key file: {exc}", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read key file: {exc.strerror}", source=str(path)) from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an unencrypted PKCS#8 PEM Ed25519 private key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not an unencrypted PEM private key: {exc}", source=str(path)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("not an Ed25519 private key", source=str(path))
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load a public key in the ``fleetwave-ed25519`` one-line format.

    A key id in the file, when present, must match the key: a mismatch means the file
    was edited by hand and is refused rather than trusted under the wrong id.
    """
    data = _read_key_file(path)
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError("public key file is not ASCII text", source=str(path)) from None
    fields = text.split()
    if len(fields) not in (2, 3) or fields[0] != PUBLIC_KEY_TAG:
        raise ConfigError(
            f"expected '{PUBLIC_KEY_TAG} <base64 key> [key id]' on one line", source=str(path)
        )
    try:
        raw = base64.b64decode(fields[1], validate=True)
    except binascii.Error:
        raise ConfigError("public key is not valid base64", source=str(path)) from None
    if len(raw) != 32:
        raise ConfigError(f"public key must be 32 bytes, got {len(raw)}", source=str(path))
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public_key = Ed25519PublicKey.from_public_bytes(raw)
    if len(fields) == 3 and fields[2] != key_id(public_key):
        raise ConfigError(
            f"key id {fields[2]!r} in the file does not match the key ({key_id(public_key)})",
            source=str(path),
        )
    return public_key


@dataclass(frozen=True)
class Keyring:
    """The public keys an agent trusts, by key id, and the key ids it has revoked.

    Revocation wins over trust: a revoked id is refused even if its key is listed.
    """

    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    revoked: frozenset[str] = frozenset()

    @classmethod
    def from_paths(cls, trusted: Sequence[Path], revoked: Iterable[str] = ()) -> Keyring:
        """Load every trusted public key file; ``revoked`` holds key ids."""
        keys: dict[str, Ed25519PublicKey] = {}
        for path in trusted:
            public_key = load_public_key(Path(path))
            keys[key_id(public_key)] = public_key
        revoked_ids = frozenset(r.strip().lower() for r in revoked if r.strip())
        return cls(keys=keys, revoked=revoked_ids)

    @classmethod
    def from_keys(cls, trusted: Iterable[Ed25519PublicKey], revoked: Iterable[str] = ()) -> Keyring:
        """A keyring from key objects (tests, embedding)."""
        return cls(keys={key_id(k): k for k in trusted}, revoked=frozenset(revoked))

    @property
    def key_ids(self) -> frozenset[str]:
        """Ids of the trusted keys, revoked ones included."""
        return frozenset(self.keys)

    def verify(self, key_id: str, message: bytes, signature: bytes) -> None:
        """Check ``signature`` over ``message`` by key ``key_id``; raise if not acceptable."""
        if key_id in self.revoked:
            raise RevokedKeyError(f"signing key {key_id} has been revoked")
        public_key = self.keys.get(key_id)
        if public_key is None:
            raise UntrustedKeyError(f"signing key {key_id} is not in the trusted keyring")
        from cryptography.exceptions import InvalidSignature

        try:
            public_key.verify(signature, message)
        except InvalidSignature:
            raise SignatureError(f"bad signature for key {key_id}") from None
