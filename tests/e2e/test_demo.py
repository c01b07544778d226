"""End-to-end: the fleet act of ``scripts/demo`` (``examples/fleet-demo/demo.py``) run
as a subprocess in ``--quick`` mode: it must exit 0, lose no client request while
rolling v2 out and rolling the bad v3 back, and leave no namespace behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab import lab_unavailable_reason

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "examples" / "fleet-demo" / "demo.py"
# The quick demo takes well under a minute; the bound only stops a hung run.
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The driver's stdout; one run shared by this module's tests."""
    tmp_path = tmp_path_factory.mktemp("fleet-demo")
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    proc = subprocess.run(
        [sys.executable, str(DRIVER), "--quick", "--work", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def test_fleet_demo_rolls_out_and_back_without_failed_requests(demo_output: str) -> None:
    out = demo_output
    reports = re.findall(r"load report: (\d+) requests sent, (\d+) failed", out)
    assert len(reports) == 2, out  # v2 rolled out, v3 rolled back, both under load
    assert all(int(sent) > 0 and failed == "0" for sent, failed in reports), reports
    assert "exit status 20: rolled_back" in out
    assert re.search(r"host h01 \S+ install failed: .*health check 'http' failed", out), out
    assert "HostFailed" in out
    assert "HostRolledBack" in out
    assert "=> finished rolled_back" in out
    final = out[out.index("Act 5:") :]
    assert len(re.findall(r"release 2\.0\.0  HAProxy UP", final)) == 3, final
    assert "leftovers: none" in out


def test_fleet_demo_leaves_no_namespace(demo_output: str) -> None:
    prefixes = set(re.findall(r"netns (\S+)-h\d+", demo_output))
    assert len(prefixes) == 1, demo_output[:2000]
    netns = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    assert prefixes.pop() not in netns
