"""``fleetwave keygen`` and ``fleetwave package build|verify|inspect``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fleetwave.cli import main

from .conftest import make_source

pytestmark = pytest.mark.integration


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_keygen_build_verify_inspect(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    started = int(time.time())
    status, out, _ = run(capsys, "keygen", "--out", str(tmp_path / "k"), "--name", "ci")
    assert status == 0
    assert "key id:" in out
    assert str(tmp_path / "k" / "ci.pub") in out
    src = make_source(tmp_path / "src", {"a.txt": b"a", "bin/run": b"#!/bin/sh\n"})
    status, out, _ = run(
        capsys,
        "package",
        "build",
        str(src),
        "--name",
        "app",
        "--version",
        "1.2",
        "--key",
        str(tmp_path / "k" / "ci.key"),
        "--out",
        str(tmp_path / "out"),
        "--expires-in",
        "7d",
    )
    assert status == 0
    package = tmp_path / "out" / "app-1.2.fwpkg"
    assert f"package:    {package}" in out
    package_id = out.split("package id: ")[1].strip()

    status, out, _ = run(
        capsys, "package", "verify", str(package), "--trust", str(tmp_path / "k" / "ci.pub")
    )
    assert status == 0
    assert package_id in out

    status, out, _ = run(capsys, "package", "inspect", str(package), "--json")
    doc = json.loads(out)
    assert doc["package_id"] == package_id
    expires = doc["manifest"]["package"]["expires"]
    assert started + 7 * 86_400 <= expires <= time.time() + 7 * 86_400

    status, out, _ = run(capsys, "package", "inspect", str(package))
    assert status == 0
    assert "bin/run" in out
    assert "0755" in out

    run(capsys, "keygen", "--out", str(tmp_path / "other"))
    status, _, err = run(
        capsys,
        "package",
        "verify",
        str(package),
        "--trust",
        str(tmp_path / "other" / "fleetwave.pub"),
    )
    assert status == 4
    assert err.startswith("fleetwave: error: ")
    assert "not in the trusted keyring" in err
    assert err.count("\n") == 1


def test_verify_fails_on_a_corrupt_file(tmp_path: Path, capsys) -> None:
    run(capsys, "keygen", "--out", str(tmp_path / "k"))
    bogus = tmp_path / "bogus.fwpkg"
    bogus.write_bytes(b"hello")
    status, _, err = run(
        capsys, "package", "verify", str(bogus), "--trust", str(tmp_path / "k" / "fleetwave.pub")
    )
    assert status == 3
    assert "truncated" in err


def test_bad_expires_in_is_a_usage_error(tmp_path: Path, capsys) -> None:
    run(capsys, "keygen", "--out", str(tmp_path / "k"))
    src = make_source(tmp_path / "src", {"a.txt": b"a"})
    status, _, err = run(
        capsys,
        "package",
        "build",
        str(src),
        "--name",
        "app",
        "--version",
        "1",
        "--key",
        str(tmp_path / "k" / "fleetwave.key"),
        "--out",
        str(tmp_path / "o"),
        "--expires-in",
        "soon",
    )
    assert status == 2
    assert "--expires-in" in err
