"""Key generation, key files, key ids and the keyring."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetwave_agent.errors import RevokedKeyError, SignatureError, UntrustedKeyError
from fleetwave_agent.keys import (
    Keyring,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    raw_public_bytes,
)
from fleetwave_core.errors import ConfigError, UsageError

pytestmark = pytest.mark.unit


def test_generate_writes_private_0600_and_public_line(tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path, "ops")
    assert (private.name, public.name) == ("ops.key", "ops.pub")
    assert os.stat(private).st_mode & 0o777 == 0o600
    key = load_private_key(private)
    pub = load_public_key(public)
    assert raw_public_bytes(pub) == raw_public_bytes(key.public_key())
    tag, _, kid = public.read_text().split()
    assert tag == "fleetwave-ed25519"
    assert kid == key_id(pub) == hashlib.sha256(raw_public_bytes(pub)).hexdigest()[:16]


@pytest.mark.parametrize("name", ["../evil", "", ".hidden", "a/b"])
def test_generate_refuses_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError, match="invalid key name"):
        generate_keypair(tmp_path / "k", name)
    assert not (tmp_path / "k").exists()
    assert not (tmp_path / "evil.key").exists()


def test_generate_never_overwrites(tmp_path: Path) -> None:
    private, _ = generate_keypair(tmp_path)
    before = private.read_bytes()
    with pytest.raises(ConfigError, match="overwrite"):
        generate_keypair(tmp_path)
    assert private.read_bytes() == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "one line"),
        ("ssh-ed25519 AAAA", "one line"),
        ("fleetwave-ed25519 !!!notbase64", "base64"),
        ("fleetwave-ed25519 AAAA", "32 bytes"),
        ("fleetwave-ed25519 " + "A" * 43 + "= 0000000000000000", "does not match"),
    ],
)
def test_bad_public_key_files_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.pub"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_public_key(path)
    assert str(path) in str(info.value)


def test_private_key_must_be_ed25519_pem(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_text("not a key")
    with pytest.raises(ConfigError, match="PEM"):
        load_private_key(path)


def test_keyring_verify_outcomes(tmp_path: Path) -> None:
    trusted = Ed25519PrivateKey.generate()
    stranger = Ed25519PrivateKey.generate()
    tid = key_id(trusted.public_key())
    ring = Keyring.from_keys([trusted.public_key()])
    message = b"hello"
    ring.verify(tid, message, trusted.sign(message))
    with pytest.raises(SignatureError):
        ring.verify(tid, message + b"!", trusted.sign(message))
    with pytest.raises(UntrustedKeyError):
        ring.verify(key_id(stranger.public_key()), message, stranger.sign(message))
    revoked = Keyring.from_keys([trusted.public_key()], revoked=[tid])
    with pytest.raises(RevokedKeyError):
        revoked.verify(tid, message, trusted.sign(message))
    assert ring.key_ids == frozenset({tid})


def test_keyring_from_paths(tmp_path: Path) -> None:
    _, public = generate_keypair(tmp_path)
    ring = Keyring.from_paths([public], revoked=[" ABCDEF0123456789 "])
    assert ring.key_ids == frozenset({key_id(load_public_key(public))})
    assert ring.revoked == frozenset({"abcdef0123456789"})
