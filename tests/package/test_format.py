"""Building, reading and verifying packages; fleetwave-package.yaml."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from fleetwave_agent.errors import (
    ChecksumError,
    ImmutableVersionError,
    PackageError,
    SizeLimitError,
)
from fleetwave_agent.extract import extract_payload
from fleetwave_agent.package import (
    HEADER_BYTES,
    MAGIC,
    Limits,
    build_package,
    read_header,
    read_manifest,
    verify_package,
)
from fleetwave_core.errors import ConfigError

from .conftest import NOW, Keys, make_source
from .craft import Member, craft

pytestmark = pytest.mark.integration

FILES = {"a.txt": b"alpha\n", "bin/run": b"#!/bin/sh\necho hi\n", "deep/x/y.txt": b"y"}


def test_build_is_reproducible(tmp_path: Path, keys: Keys, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = build_package(
        make_source(tmp_path / "s1", FILES, mtime=1),
        name="app",
        version="1",
        private_key=keys.private_path,
        out_dir=tmp_path / "o1",
    )
    second = build_package(
        make_source(tmp_path / "s2", FILES, mtime=2),
        name="app",
        version="1",
        private_key=keys.private_path,
        out_dir=tmp_path / "o2",
    )
    assert first.read_bytes() == second.read_bytes()
    assert first.name == "app-1.fwpkg"
    manifest = read_manifest(first)
    assert manifest.created == 1_700_000_000
    assert [f.path for f in manifest.files] == ["a.txt", "bin/run", "deep/x/y.txt"]
    assert manifest.files[1].mode == 0o755


def test_created_defaults_to_newest_mtime(tmp_path: Path, keys: Keys, monkeypatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    src = make_source(tmp_path / "s", FILES, mtime=1_600_000_000)
    os.utime(src / "a.txt", (1_650_000_000, 1_650_000_000))
    out = build_package(
        src, name="app", version="1", private_key=keys.private_path, out_dir=tmp_path
    )
    assert read_manifest(out).created == 1_650_000_000


def test_layout_and_verify(tmp_path: Path, keys: Keys, build) -> None:
    package = build("1.0", FILES)
    data = package.read_bytes()
    assert data.startswith(MAGIC)
    header = read_header(package)
    assert data[HEADER_BYTES : HEADER_BYTES + len(header.manifest_bytes)] == header.manifest_bytes
    assert len(data) == header.payload_offset + header.manifest.payload_size
    manifest = verify_package(package, keys.keyring, now=NOW)
    assert manifest.package_id == header.manifest.package_id
    with pytest.raises(SizeLimitError):
        verify_package(package, keys.keyring, now=NOW, limits=Limits(max_package_bytes=100))
    with pytest.raises(SizeLimitError):
        verify_package(package, keys.keyring, now=NOW, limits=Limits(max_members=2))


def test_rebuilding_a_version_with_other_content_is_refused(tmp_path: Path, keys: Keys) -> None:
    src = make_source(tmp_path / "s", FILES)
    build_package(src, name="app", version="1", private_key=keys.private_path, out_dir=tmp_path)
    (src / "a.txt").write_bytes(b"changed")
    with pytest.raises(ImmutableVersionError):
        build_package(src, name="app", version="1", private_key=keys.private_path, out_dir=tmp_path)


def test_symlinks_in_source_are_refused(tmp_path: Path, keys: Keys) -> None:
    src = make_source(tmp_path / "s", FILES)
    (src / "link").symlink_to("/etc/passwd")
    with pytest.raises(PackageError, match="symlink"):
        build_package(src, name="app", version="1", private_key=keys.private_path, out_dir=tmp_path)
    assert list(tmp_path.glob("*.fwpkg")) == []


def test_package_config_becomes_hooks_and_checks(tmp_path: Path, keys: Keys) -> None:
    src = make_source(tmp_path / "s", FILES)
    (src / "fleetwave-package.yaml").write_text(
        "hooks:\n"
        "  start: {argv: [bin/run, --fast], timeout: 2m}\n"
        "  validate: {argv: [/usr/bin/true]}\n"
        "health_checks:\n"
        "  - {name: web, kind: http, url: 'http://127.0.0.1:8080/health', interval: 250ms}\n"
        "  - {name: port, kind: tcp, port: 8080, deadline: 1m}\n"
        "  - {name: cmd, kind: command, argv: [bin/run], timeout: 5s}\n"
    )
    out = build_package(
        src, name="app", version="1", private_key=keys.private_path, out_dir=tmp_path
    )
    m = read_manifest(out)
    assert m.hooks["start"].argv == ("bin/run", "--fast")
    assert m.hooks["start"].timeout_ms == 120_000
    assert m.hooks["validate"].timeout_ms == 60_000
    assert [(c.name, c.kind) for c in m.health_checks] == [
        ("web", "http"),
        ("port", "tcp"),
        ("cmd", "command"),
    ]
    assert m.health_checks[0].interval_ms == 250
    assert m.health_checks[1].deadline_ms == 60_000
    assert m.health_checks[2].timeout_ms == 5_000
    assert "fleetwave-package.yaml" not in [f.path for f in m.files]


BAD_CONFIGS = {
    "unknown-top-key": ("hookz: {}\n", 1, "hookz"),
    "unknown-hook": ("hooks:\n  boot: {argv: [x]}\n", 2, "hooks.boot"),
    "bad-duration": (
        "hooks:\n  start:\n    argv: [x]\n    timeout: soon\n",
        4,
        "hooks.start.timeout",
    ),
    "zero-duration": (
        "hooks:\n  start:\n    argv: [x]\n    timeout: 0s\n",
        4,
        "hooks.start.timeout",
    ),
    "empty-argv": ("hooks:\n  stop: {argv: []}\n", 2, "hooks.stop.argv"),
    "http-no-url": ("health_checks:\n  - {name: w, kind: http}\n", 2, "health_checks[0].url"),
    "tcp-bad-port": (
        "health_checks:\n  - name: p\n    kind: tcp\n    port: 70000\n",
        4,
        "health_checks[0].port",
    ),
    "wrong-kind-key": (
        "health_checks:\n  - name: p\n    kind: tcp\n    port: 1\n    url: http://x\n",
        5,
        "health_checks[0].url",
    ),
    "duplicate-key": ("hooks: {}\nhooks: {}\n", 2, "hooks"),
    "missing-program": ("hooks:\n  start: {argv: [bin/nope]}\n", 0, "hooks.start.argv"),
    "not-executable": ("hooks:\n  start: {argv: [./a.txt]}\n", 0, "hooks.start.argv"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_package_config_names_file_line_and_key(tmp_path: Path, keys: Keys, case) -> None:
    text, line, key_path = case
    src = make_source(tmp_path / "s", FILES)
    (src / "fleetwave-package.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        build_package(src, name="app", version="1", private_key=keys.private_path, out_dir=tmp_path)
    message = str(info.value)
    assert key_path in message
    assert "fleetwave-package.yaml" + (f":{line}" if line else "") in message
    assert list(tmp_path.glob("*.fwpkg")) == []


def test_extract_requires_an_empty_staging_dir(tmp_path: Path, keys: Keys, build) -> None:
    package = build("1.0")
    manifest = read_manifest(package)
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "x").write_text("x")
    with pytest.raises(Exception, match="not empty"):
        extract_payload(package, manifest, staging, Limits())


def test_extract_accepts_parent_directory_members(tmp_path: Path, keys: Keys) -> None:
    members = [Member("d", type=tarfile.DIRTYPE, mode=0o755), Member("d/f", b"data")]
    package = tmp_path / "dirs.fwpkg"
    manifest = craft(package, members, keys.private)
    staging = tmp_path / "staging"
    staging.mkdir()
    extract_payload(package, manifest, staging, Limits())
    assert (staging / "d" / "f").read_bytes() == b"data"


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_corruption_anywhere_in_the_payload_is_a_checksum_error(
    tmp_path: Path, keys: Keys, build, where: float
) -> None:
    package = build("1.0", {f"d/f{i}": os.urandom(3000) + b"z" * 3000 for i in range(20)})
    header = read_header(package)
    data = bytearray(package.read_bytes())
    at = header.payload_offset + int(header.manifest.payload_size * where)
    data[at] ^= 0x55
    package.write_bytes(bytes(data))
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(ChecksumError):
        extract_payload(package, header.manifest, staging, Limits())
