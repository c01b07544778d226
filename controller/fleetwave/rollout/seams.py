"""What the runner and its helpers are given: the deployment they carry out and the
clock they measure it with (tests pass a fake one, so bakes never sleep for real)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fleetwave.planning.model import Plan


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, t: float) -> None: ...


class SystemClock:
    """Wall-clock time (the journal stores it; bakes are measured in it)."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, t: float) -> None:
        await asyncio.sleep(max(0.0, t - time.time()))


@dataclass(frozen=True)
class DeploymentInfo:
    """One deployment: its id, its plan and the package it deploys."""

    deployment_id: str
    plan: Plan
    package_path: Path
    package_id: str
    drain_timeout_s: float = 60.0


def controller_id() -> str:
    """This controller process, as the journal and the lock record it."""
    return f"{socket.gethostname()}:{os.getpid()}"


__all__ = ["Clock", "DeploymentInfo", "SystemClock", "controller_id"]
