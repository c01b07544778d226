"""The maintainer scripts, run by /bin/sh with every external command replaced by a
recording shim: PATH holds only the shims, so a command the test forgot fails with
"not found" instead of changing this machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.integration

SCRIPTS = REPO / "packaging" / "deb"
SYSTEMD = Path("/run/systemd/system").is_dir()
COMMANDS = (
    "adduser",
    "install",
    "py3compile",
    "py3clean",
    "python3",
    "deb-systemd-helper",
    "deb-systemd-invoke",
    "systemctl",
    "rm",
)


def run_script(
    tmp_path: Path, script: str, *args: str, user_exists: bool = False
) -> tuple[int, list[str]]:
    """Run packaging/deb/SCRIPT ARGS with shims; the calls it made, one line each."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls"
    log.write_text("")
    for name in COMMANDS:
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 0\n')
        shim.chmod(0o755)
    getent = bin_dir / "getent"
    getent.write_text(f'#!/bin/sh\necho "getent $*" >> "{log}"\nexit {0 if user_exists else 2}\n')
    getent.chmod(0o755)
    proc = subprocess.run(
        ["/bin/sh", str(SCRIPTS / script), *args],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "not found" not in proc.stderr, proc.stderr
    return proc.returncode, log.read_text().splitlines()


@pytest.mark.parametrize("script", ["postinst", "prerm", "postrm"])
def test_syntax(script: str) -> None:
    proc = subprocess.run(
        ["sh", "-n", str(SCRIPTS / script)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert os.access(SCRIPTS / script, os.R_OK)


def test_postinst_creates_the_deploy_user_and_compiles(tmp_path: Path) -> None:
    code, calls = run_script(tmp_path, "postinst", "configure")
    assert code == 0
    [adduser] = [c for c in calls if c.startswith("adduser ")]
    for part in ("--system", "--group", "--home /var/lib/fleetwave", "--shell /bin/sh"):
        assert part in adduser
    assert adduser.endswith(" fleetwave")
    assert "py3compile -p fleetwave-agent" in calls
    if not Path("/var/lib/fleetwave").is_dir():
        assert "install -d -m 0750 -o fleetwave -g fleetwave /var/lib/fleetwave" in calls


def test_postinst_is_idempotent_for_an_existing_user(tmp_path: Path) -> None:
    code, calls = run_script(tmp_path, "postinst", "configure", "0.1.0", user_exists=True)
    assert code == 0
    assert not [c for c in calls if c.startswith("adduser")]
    assert "py3compile -p fleetwave-agent" in calls


@pytest.mark.skipif(SYSTEMD, reason="systemd runs here: the no-systemd branch is not taken")
def test_postinst_without_systemd_touches_no_unit(tmp_path: Path) -> None:
    code, calls = run_script(tmp_path, "postinst", "configure")
    assert code == 0
    assert not [c for c in calls if c.startswith(("systemctl", "deb-systemd"))]


def test_postinst_rejects_an_unknown_action(tmp_path: Path) -> None:
    code, calls = run_script(tmp_path, "postinst", "bogus")
    assert code == 1
    assert calls == []


def test_prerm_cleans_byte_code(tmp_path: Path) -> None:
    code, calls = run_script(tmp_path, "prerm", "remove")
    assert code == 0
    assert "py3clean -p fleetwave-agent" in calls


@pytest.mark.parametrize(("action", "deletes_root"), [("remove", False), ("purge", True)])
def test_postrm_deletes_the_agent_root_only_on_purge(
    tmp_path: Path, action: str, deletes_root: bool
) -> None:
    code, calls = run_script(tmp_path, "postrm", action)
    assert code == 0
    assert ("rm -rf /var/lib/fleetwave" in calls) is deletes_root
    assert not [c for c in calls if c.startswith(("deluser", "userdel"))]
