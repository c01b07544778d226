"""The fleetwave-agent CLI as a subprocess: one-line errors, exit codes, nothing changed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fleetwave_agent.errors import IntegrityError, ReleaseNotFoundError, RolledBackError
from fleetwave_core.errors import ConfigError, UsageError

from .conftest import AGENT_CMD, PackageBuilder, agent_env

pytestmark = pytest.mark.integration


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT_CMD, *map(str, args)],
        capture_output=True,
        text=True,
        env=agent_env(),
        timeout=60,
        check=False,
    )


def run_root(root: Path, pub: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT_CMD, "--root", str(root), "--trust", str(pub), *map(str, args)],
        capture_output=True,
        text=True,
        env=agent_env(),
        timeout=60,
        check=False,
    )


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fleetwave-agent: error: ")
    return lines[0]


def test_install_status_rollback_cycle(
    tmp_path: Path, make_package: PackageBuilder, keypair: tuple[Path, Path]
) -> None:
    root = tmp_path / "root"
    pub = keypair[1]
    v1, v2 = make_package("1"), make_package("2")
    proc = run_root(root, pub, "install", v1)
    assert proc.returncode == 0, proc.stderr
    assert "installed 1" in proc.stdout
    assert run_root(root, pub, "install", v2).returncode == 0
    status = json.loads(run_root(root, pub, "status", "--json").stdout)
    assert status["current"]["version"] == "2"
    assert status["previous"]["version"] == "1"
    assert status["last_operation"]["op"] == "install"
    proc = run_root(root, pub, "rollback")
    assert proc.returncode == 0
    assert "rolled back to 1" in proc.stdout
    text = run_root(root, pub, "status").stdout
    assert "current    app 1" in text
    assert "last op    rollback 1: ok" in text
    assert run_root(root, pub, "activate", "2").returncode == 0
    assert run_root(root, pub, "verify-installed").returncode == 0
    assert run_root(root, pub, "gc", "--json").returncode == 0


def test_self_rollback_exits_non_zero_with_one_line(
    tmp_path: Path, make_package: PackageBuilder, keypair: tuple[Path, Path]
) -> None:
    root = tmp_path / "root"
    assert run_root(root, keypair[1], "install", make_package("1")).returncode == 0
    bad = make_package("2", {"validate": "exit 1"})
    proc = run_root(root, keypair[1], "install", bad)
    assert proc.returncode == RolledBackError.exit_code
    assert "rolled back to 1" in _one_error_line(proc)
    status = json.loads(run_root(root, keypair[1], "status", "--json").stdout)
    assert status["last_operation"]["rolled_back"] is True
    assert status["current"]["version"] == "1"


def test_tampered_package_refused_and_nothing_changed(
    tmp_path: Path, make_package: PackageBuilder, keypair: tuple[Path, Path]
) -> None:
    root = tmp_path / "root"
    assert run_root(root, keypair[1], "install", make_package("1")).returncode == 0
    before = sorted(str(p) for p in (root / "releases").rglob("*"))
    data = bytearray(make_package("2").read_bytes())
    data[-5] ^= 1
    bad = tmp_path / "bad.fwpkg"
    bad.write_bytes(bytes(data))
    proc = run_root(root, keypair[1], "install", bad)
    assert proc.returncode == IntegrityError.exit_code, proc.stderr
    _one_error_line(proc)
    assert sorted(str(p) for p in (root / "releases").rglob("*")) == before
    assert "Traceback" not in proc.stderr
    debug = run_root(root, keypair[1], "--debug", "install", bad)
    assert "Traceback" in debug.stderr


def test_drift_exits_non_zero(
    tmp_path: Path, make_package: PackageBuilder, keypair: tuple[Path, Path]
) -> None:
    root = tmp_path / "root"
    run_root(root, keypair[1], "install", make_package("1", files={"f.txt": "x"}))
    [release] = (root / "releases" / "app").glob("1-*[!t]")
    (release / "f.txt").chmod(0o644)
    (release / "f.txt").write_text("y")
    proc = run_root(root, keypair[1], "verify-installed")
    assert proc.returncode == IntegrityError.exit_code
    assert "f.txt" in proc.stdout


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("install", "/nonexistent.fwpkg"), UsageError.exit_code, "no such package file"),
        (("rollback",), ReleaseNotFoundError.exit_code, "no previous release"),
        (("activate", "7"), ReleaseNotFoundError.exit_code, "7"),
        (("verify-installed",), ReleaseNotFoundError.exit_code, "no current release"),
    ],
)
def test_errors_are_one_line(
    tmp_path: Path, keypair: tuple[Path, Path], args: tuple[str, ...], code: int, fragment: str
) -> None:
    proc = run_root(tmp_path / "root", keypair[1], *args)
    assert proc.returncode == code, proc.stderr
    assert fragment in _one_error_line(proc)


def test_config_errors_and_missing_trust(tmp_path: Path, make_package: PackageBuilder) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"root: {tmp_path / 'root'}\nkeep_releases: zero\n")
    proc = run("--config", cfg, "status")
    assert proc.returncode == ConfigError.exit_code
    assert f"{cfg}:2: keep_releases:" in _one_error_line(proc)
    proc = run("--root", tmp_path / "root", "install", make_package("1"))
    assert proc.returncode == ConfigError.exit_code
    assert "no trusted keys" in _one_error_line(proc)
    assert not (tmp_path / "root" / "current").exists()
    proc = subprocess.run(
        [*AGENT_CMD, "status"],
        capture_output=True,
        text=True,
        env=agent_env() | {"FLEETWAVE_AGENT_CONFIG": str(tmp_path / "missing.yaml")},
        timeout=60,
        check=False,
    )
    assert proc.returncode == ConfigError.exit_code
    assert "missing.yaml: file not found" in _one_error_line(proc)


def test_trust_is_repeatable_for_a_key_rotation(
    tmp_path: Path, make_package: PackageBuilder, keypair: tuple[Path, Path]
) -> None:
    """Old and new key trusted together while a rotation runs; every given key counts."""
    from fleetwave_agent.keys import generate_keypair

    _, new_pub = generate_keypair(tmp_path / "newkey", "new")
    root = tmp_path / "root"
    package = make_package("1")  # signed by the old key, given first or last below
    for order in ([new_pub, keypair[1]], [keypair[1], new_pub]):
        args: list[str | Path] = ["--root", root]
        for key in order:
            args += ["--trust", key]
        proc = run(*args, "install", package)
        assert proc.returncode == 0, proc.stderr
    refused = run("--root", root, "--trust", new_pub, "install", make_package("2"))
    assert refused.returncode == IntegrityError.exit_code


def test_pin_gc_and_disk_in_status(
    tmp_path: Path, make_package: PackageBuilder, keypair: tuple[Path, Path]
) -> None:
    root, pub = tmp_path / "root", keypair[1]
    for version in ("1", "2", "3", "4"):
        assert run_root(root, pub, "install", make_package(version)).returncode == 0
    proc = run_root(root, pub, "pin", "1")
    assert (proc.returncode, proc.stdout.strip()) == (0, "app 1 pinned")
    proc = run_root(root, pub, "gc")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("removed app 2; freed ")
    text = run_root(root, pub, "status", "--no-health").stdout
    assert "release    app 1  (" in text
    assert text.splitlines()[3].endswith("pinned")
    assert "disk       releases " in text
    assert "(3 kept, keep_releases 3), uploads 0 B" in text
    proc = run_root(root, pub, "unpin", "9")
    assert proc.returncode == ReleaseNotFoundError.exit_code
    assert "no installed release version 9" in _one_error_line(proc)
