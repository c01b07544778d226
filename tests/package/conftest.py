from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetwave_agent.keys import Keyring, generate_keypair, load_private_key, load_public_key
from fleetwave_agent.package import build_package

NOW = 1_800_000_000.0


@dataclass(frozen=True)
class Keys:
    private_path: Path
    public_path: Path
    private: Ed25519PrivateKey
    keyring: Keyring
    other: Ed25519PrivateKey  # a valid key nobody trusts


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    private_path, public_path = generate_keypair(tmp_path_factory.mktemp("keys"))
    return Keys(
        private_path=private_path,
        public_path=public_path,
        private=load_private_key(private_path),
        keyring=Keyring.from_keys([load_public_key(public_path)]),
        other=Ed25519PrivateKey.generate(),
    )


def make_source(root: Path, files: dict[str, bytes], *, mtime: int = 1_700_000_000) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if rel.startswith("bin/"):
            path.chmod(0o755)
    for path in root.rglob("*"):
        os.utime(path, (mtime, mtime))
    return root


@pytest.fixture
def build(tmp_path: Path, keys: Keys):
    """build(version, files) -> path of a real package built by build_package."""

    def _build(version: str, files: dict[str, bytes] | None = None, name: str = "app") -> Path:
        src = make_source(
            tmp_path / f"src-{name}-{version}",
            files or {"a.txt": f"version {version}\n".encode(), "bin/run": b"#!/bin/sh\n"},
        )
        return build_package(
            src,
            name=name,
            version=version,
            private_key=keys.private_path,
            out_dir=tmp_path / "out",
            created=1_700_000_000,
        )

    return _build
