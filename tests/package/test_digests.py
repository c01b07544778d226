"""Hash once: the upload's payload digest, and what the store may and may not skip.

The store skips hashing the payload only for a :class:`PayloadDigest` that describes
the very file (same device, inode, size, mtime, ctime); signature and per-file digests
are checked regardless, so a forged digest for a tampered file still fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetwave_agent.digests import PayloadDigest, PayloadHasher, file_identity
from fleetwave_agent.errors import ChecksumError, IntegrityError, PackageError
from fleetwave_agent.keys import Keyring
from fleetwave_agent.package import read_header, read_manifest
from fleetwave_agent.store import ReleaseStore
from tests.package.conftest import NOW, Keys
from tests.package.craft import snapshot
from tests.package.test_hostile import CASES, Case, Ctx

pytestmark = pytest.mark.integration


def digest_of(path: Path, sha256: str | None = None) -> PayloadDigest:
    """A digest claiming ``sha256`` (default: the manifest's) for the file as it is now."""
    manifest = read_manifest(path)
    return PayloadDigest(
        sha256=sha256 if sha256 is not None else manifest.payload_sha256,
        payload_size=manifest.payload_size,
        identity=file_identity(os.stat(path)),
    )


@pytest.fixture
def package(build) -> Path:
    path: Path = build("1.0.0", {"a.txt": os.urandom(50_000), "bin/run": b"#!/bin/sh\n"})
    return path


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.integers(min_value=0, max_value=60_000), max_size=8))
def test_hasher_equals_manifest_digest_however_the_stream_is_cut(package: Path, cuts) -> None:
    data = package.read_bytes()
    hasher = PayloadHasher()
    start = 0
    for cut in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        hasher.update(data[start:cut])
        start = max(start, cut)
    manifest = read_manifest(package)
    assert hasher.hexdigest() == manifest.payload_sha256
    assert hasher.payload_size == manifest.payload_size


def test_hasher_of_a_non_package_hashes_nothing() -> None:
    hasher = PayloadHasher()
    hasher.update(b"GIF89a" + bytes(1000))
    assert hasher.payload_size == 0


def test_trusted_digest_installs_and_matches_a_normal_install(
    tmp_path: Path, keys: Keys, package: Path
) -> None:
    store = ReleaseStore(tmp_path / "root")
    release = store.stage(package, keys.keyring, now=NOW, payload_digest=digest_of(package))
    header = read_header(package)
    assert release.package_id == header.manifest.package_id
    assert (release.path / "a.txt").stat().st_size == 50_000
    assert store.verify_installed(release) == []


def test_digest_contradicting_the_manifest_is_a_checksum_error(
    tmp_path: Path, keys: Keys, package: Path
) -> None:
    store = ReleaseStore(tmp_path / "root")
    with pytest.raises(ChecksumError):
        store.stage(package, keys.keyring, now=NOW, payload_digest=digest_of(package, "0" * 64))
    assert store.releases() == []
    # Also for a package id that is already installed (nothing to extract).
    store.stage(package, keys.keyring, now=NOW)
    with pytest.raises(ChecksumError):
        store.stage(package, keys.keyring, now=NOW, payload_digest=digest_of(package, "0" * 64))


def test_file_changed_after_hashing_is_hashed_again(
    tmp_path: Path, keys: Keys, package: Path
) -> None:
    digest = digest_of(package)
    data = bytearray(package.read_bytes())
    data[-30] ^= 0x01  # same size, in place: only its mtime/ctime tell
    package.write_bytes(bytes(data))
    store = ReleaseStore(tmp_path / "root")
    with pytest.raises(IntegrityError):
        store.stage(package, keys.keyring, now=NOW, payload_digest=digest)
    assert store.releases() == []


def test_forged_digest_for_a_tampered_file_is_still_refused(
    tmp_path: Path, keys: Keys, package: Path
) -> None:
    data = bytearray(package.read_bytes())
    data[-30] ^= 0x01
    package.write_bytes(bytes(data))
    # Claims the signed digest for the tampered bytes: only the other checks can refuse it.
    store = ReleaseStore(tmp_path / "root")
    with pytest.raises(PackageError):
        store.stage(package, keys.keyring, now=NOW, payload_digest=digest_of(package))
    assert store.releases() == []
    assert not any((tmp_path / "root" / "staging").iterdir())


def honest_digest(path: Path) -> PayloadDigest | None:
    """What receive_upload would compute for this file's bytes."""
    hasher = PayloadHasher()
    hasher.update(path.read_bytes())
    try:
        identity = file_identity(os.stat(path))
    except OSError:
        return None
    return PayloadDigest(hasher.hexdigest(), hasher.payload_size, identity)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_hostile_package_with_its_upload_digest_is_refused_the_same_way(
    case: Case, tmp_path: Path, keys: Keys, build
) -> None:
    """The hostile-package suite again, each package staged with its upload digest."""
    store = ReleaseStore(tmp_path / "root")
    with store.lock():
        store.switch(store.stage(build("1.0"), keys.keyring, now=NOW))
    package = case.make(Ctx(tmp=tmp_path, keys=keys, good=build("2.0")))
    keyring = keys.keyring
    if case.revoke:
        keyring = Keyring(keys=keys.keyring.keys, revoked=frozenset(keys.keyring.key_ids))
    current_before = store.current()
    skip = [store.staging_dir, store.root / ".lock"]
    before = snapshot(tmp_path, skip=skip)

    with store.lock(), pytest.raises(PackageError) as info:
        store.stage(
            package,
            keyring,
            now=NOW,
            limits=case.limits,
            payload_digest=honest_digest(package),
        )

    assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
    assert snapshot(tmp_path, skip=skip) == before
    assert store.current() == current_before
    assert list(store.staging_dir.iterdir()) == []
