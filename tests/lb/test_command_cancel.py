"""The command driver kills its command, and everything the command started, when the
step running it is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import pytest

from fleetwave.lb.base import ServerRef
from fleetwave.lb.command import CommandLoadBalancer

pytestmark = pytest.mark.integration

REF = ServerRef("edge", "web", "h7")

# The command starts a grandchild, records both pids, and then hangs.
HANG = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[1], "w").write(f"{os.getpid()} {child.pid}")
time.sleep(60)
"""


def _gone(pid: int) -> bool:
    """Exited (reaped, or a zombie waiting for its new parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_cancel_kills_the_command_and_its_group(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    lb = CommandLoadBalancer(
        "edge",
        drain=[sys.executable, "-c", HANG, str(pids_file)],
        ready=["true"],
        status=["true"],
        timeout_s=60.0,
    )

    async def main() -> list[int]:
        task = asyncio.create_task(lb._begin_drain(REF))
        deadline = time.monotonic() + 20
        while not (pids_file.exists() and pids_file.read_text()):
            assert time.monotonic() < deadline, "the command did not start"
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return [int(p) for p in pids_file.read_text().split()]

    pids = asyncio.run(asyncio.wait_for(main(), timeout=30))
    try:
        deadline = time.monotonic() + 5
        while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(_gone(p) for p in pids), f"left running: {[p for p in pids if not _gone(p)]}"
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
