"""The systemd unit for `fleetwave-agent serve` keeps its essential hardening."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "fleetwave-agent.service"


def _directives() -> dict[str, list[str]]:
    section = ""
    out: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Service.NoNewPrivileges", "yes"),
        ("Service.ProtectSystem", "strict"),
        ("Service.ReadWritePaths", "/var/lib/fleetwave"),
        ("Service.PrivateTmp", "yes"),
        ("Service.ProtectHome", "yes"),
        ("Service.RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("Service.SystemCallFilter", "@system-service"),
        ("Service.CapabilityBoundingSet", ""),
        ("Service.Restart", "on-failure"),
        ("Install.WantedBy", "multi-user.target"),
    ],
)
def test_essential_directive(key: str, value: str) -> None:
    assert value in _directives().get(key, []), f"{UNIT.name}: {key}={value} missing"


def test_runs_serve_from_the_agent_venv() -> None:
    [exec_start] = _directives()["Service.ExecStart"]
    assert exec_start.startswith("/")
    assert exec_start.endswith(" serve")
    assert "fleetwave-agent" in exec_start


@pytest.mark.integration  # runs a subprocess
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # The agent is not installed on the test machine; every other complaint is a defect.
    problems = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if line.strip() and "is not executable: No such file or directory" not in line
    ]
    assert problems == []
