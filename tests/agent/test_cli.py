"""The fleetwave-agent CLI as a subprocess: one-line errors, exit codes, nothing changed."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetwave_agent import render
from fleetwave_agent.errors import IntegrityError, ReleaseNotFoundError, RolledBackError
from fleetwave_agent.operations import Agent
from fleetwave_core.errors import ConfigError, UsageError
from fleetwave_core.exitcodes import ExitCode

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
    (tmp_path / "root").mkdir()  # an empty root: a missing one is refused first
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


def test_global_flags_after_the_command(
    tmp_path: Path, make_package: PackageBuilder, keypair: tuple[Path, Path]
) -> None:
    root = tmp_path / "root"
    proc = run("install", "--root", root, make_package("1"), "--trust", keypair[1], "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["version"] == "1"
    assert (root / "current").is_symlink()
    assert json.loads(run("status", "--root", root, "--json").stdout)["current"]["version"] == "1"


#: Passes while the start hook's marker file exists (the "app" is up).
UP_CHECK = [
    {
        "name": "up",
        "kind": "command",
        "argv": ["sh", "-c", 'test -f "$FLEETWAVE_RUN_DIR/up"'],
        "deadline": "2s",
    }
]
UP_HOOKS = {"start": 'touch "$FLEETWAVE_RUN_DIR/up"', "stop": 'rm -f "$FLEETWAVE_RUN_DIR/up"'}


def test_status_exits_health_when_a_check_fails(
    tmp_path: Path, make_package: PackageBuilder, keypair: tuple[Path, Path]
) -> None:
    root, pub = tmp_path / "root", keypair[1]
    assert run_root(root, pub, "install", make_package("1", UP_HOOKS, UP_CHECK)).returncode == 0
    assert run_root(root, pub, "status").returncode == 0
    (root / "run" / "up").unlink()  # the app died
    proc = run_root(root, pub, "status")
    assert proc.returncode == ExitCode.HEALTH
    assert "health     up: FAILING" in proc.stdout
    assert "app 1: health failing (1 of 1 checks: up)" in _one_error_line(proc)
    proc = run_root(root, pub, "status", "--json")
    assert proc.returncode == ExitCode.HEALTH
    assert json.loads(proc.stdout)["healthy"] is False
    assert run_root(root, pub, "status", "--no-health").returncode == 0


READ_ONLY = [("status",), ("list",), ("verify-installed",), ("lease",), ("status", "--json")]
MUTATING = [
    ("activate", "1"),
    ("rollback",),
    ("stop",),
    ("start",),
    ("gc",),
    ("pin", "1"),
    ("lease", "--break"),
]


@pytest.mark.parametrize("args", READ_ONLY + MUTATING)
def test_a_missing_root_is_refused_and_not_created(
    tmp_path: Path, keypair: tuple[Path, Path], args: tuple[str, ...]
) -> None:
    root = tmp_path / "missing"
    proc = run_root(root, keypair[1], *args)
    assert proc.returncode == ExitCode.STORE, proc.stderr
    assert f"{root}: no agent root here" in _one_error_line(proc)
    assert proc.stdout == ""
    assert not root.exists()


@pytest.mark.parametrize("args", READ_ONLY)
def test_read_only_commands_write_nothing_in_an_empty_root(
    tmp_path: Path, keypair: tuple[Path, Path], args: tuple[str, ...]
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    run_root(root, keypair[1], *args)
    assert list(root.iterdir()) == []


def test_list_shows_every_release_with_its_marks(
    tmp_path: Path, make_package: PackageBuilder, keypair: tuple[Path, Path]
) -> None:
    root, pub = tmp_path / "root", keypair[1]
    for version in ("1", "2", "3"):
        assert run_root(root, pub, "install", make_package(version)).returncode == 0
    assert run_root(root, pub, "pin", "1").returncode == 0
    bad = run_root(root, pub, "install", make_package("4", {"validate": "exit 1"}))
    assert bad.returncode == RolledBackError.exit_code
    proc = run_root(root, pub, "list", "--json")
    assert proc.returncode == 0, proc.stderr
    releases = json.loads(proc.stdout)["releases"]
    assert [(r["version"], render.marks(r)) for r in releases] == [
        ("1", ["pinned"]),
        ("2", ["previous"]),
        ("3", ["current"]),
        ("4", ["bad"]),
    ]
    first = releases[0]
    assert first["installed"].endswith("Z")
    assert first["installed_at"] == pytest.approx(time.time(), abs=120)
    assert first["bytes"] == 1  # VERSION holds "1"
    lines = run_root(root, pub, "list").stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "PACKAGE", "ID", "INSTALLED", "SIZE", "MARKS"]
    assert lines[3].endswith("current")
    pid, installed = first["package_id"][:12], first["installed"]
    assert lines[1].split() == ["app", "1", pid, installed, "1", "B", "pinned"]


def test_stop_and_start_run_the_hooks_and_are_logged(
    tmp_path: Path, make_package: PackageBuilder, keypair: tuple[Path, Path]
) -> None:
    root, pub = tmp_path / "root", keypair[1]
    assert run_root(root, pub, "install", make_package("1", UP_HOOKS, UP_CHECK)).returncode == 0
    proc = run_root(root, pub, "stop")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("stopped 1 in ")
    assert not (root / "run" / "up").exists()
    assert run_root(root, pub, "status").returncode == ExitCode.HEALTH
    assert "last op    stop 1: ok" in run_root(root, pub, "status", "--no-health").stdout
    proc = run_root(root, pub, "start", "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert (record["op"], record["outcome"], record["health"][0]["ok"]) == ("start", "ok", True)
    assert run_root(root, pub, "status").returncode == 0
    log = [json.loads(line) for line in (root / "ops" / "log.jsonl").read_text().splitlines()]
    assert [(e["op"], e["outcome"]) for e in log] == [
        ("install", "ok"),
        ("stop", "ok"),
        ("start", "ok"),
    ]


def test_stop_is_fenced_by_the_lease_and_needs_a_stop_hook(
    tmp_path: Path,
    make_package: PackageBuilder,
    keypair: tuple[Path, Path],
    make_agent: Callable[..., Agent],
) -> None:
    root, pub = tmp_path / "root", keypair[1]
    assert run_root(root, pub, "install", make_package("1")).returncode == 0
    proc = run_root(root, pub, "stop")
    assert proc.returncode == UsageError.exit_code
    assert "app 1 has no stop hook: nothing to stop" in _one_error_line(proc)
    make_agent().lease.acquire("deploy-7", "ctl", 600)
    for command in ("stop", "start"):
        proc = run_root(root, pub, command)
        assert proc.returncode == ExitCode.LEASE_HELD
        assert f"{command} refused: this host's lease is held by deployment deploy-7" in (
            _one_error_line(proc)
        )
