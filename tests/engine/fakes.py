"""In-memory seams for unit-testing the runner: a fleet of fake agents, a fake balancer
and a fake clock. They model the contracts (idempotent drain, agent releases and
health), not any implementation."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetwave.errors import (
    HostUnreachableError,
    LoadBalancerError,
    RemoteAgentError,
    SessionLostError,
)
from fleetwave.lb.base import LoadBalancer, ServerRef, ServerState, ServerStatus
from fleetwave.planning.model import HostRef


class FakeClock:
    """Time moves only when something sleeps: sleeping jumps the clock forward."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    async def sleep_until(self, t: float) -> None:
        await asyncio.sleep(0)
        self.t = max(self.t, t)


@dataclass
class FakeAgent:
    releases: list[str] = field(default_factory=lambda: ["v1"])
    current: str | None = "v1"
    previous: str | None = None
    healthy: bool = True
    packages: set[str] = field(default_factory=set)
    fail_install: str | None = None  # "self_rolled_back" | "unreachable" | "disk"
    uploads: int = 0
    calls: list[str] = field(default_factory=list)
    package_of: dict[str, str] = field(default_factory=dict)  # version -> package id
    fail_rollback: int = 0  # the next N rollback/activate calls fail (StoreError)
    lose_session: int = 0  # the next N calls fail with SessionLostError
    block: asyncio.Event | None = None  # install waits for it
    fail_gc: bool = False  # gc fails (StoreError)

    def switch(self, version: str) -> None:
        if self.current != version:
            self.previous, self.current = self.current, version


class FakeSession:
    def __init__(self, fleet: FakeFleet, host: HostRef) -> None:
        self.fleet = fleet
        self.host = host
        self.agent = fleet.agents[host.name]

    async def call(
        self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        await asyncio.sleep(0)
        a = self.agent
        a.calls.append(op)
        if a.lose_session > 0:
            a.lose_session -= 1
            raise SessionLostError(self.host.name, "connection reset by peer")
        if op == "status":
            return {
                "current": self._summary(a.current),
                "previous": self._summary(a.previous),
                "healthy": a.healthy,
            }
        if op == "install":
            version = self.fleet.version
            if a.fail_install == "self_rolled_back":
                raise RemoteAgentError(self.host.name, "RolledBackError", "health failed", 10)
            if a.fail_install == "disk":
                raise RemoteAgentError(self.host.name, "StoreError", "No space left", 5)
            if a.block is not None:
                await a.block.wait()
            prev = a.current
            a.releases.append(version)
            a.package_of[version] = (args or {})["package_id"]
            a.switch(version)
            return {"current_version": version, "previous_version": prev, "ok": True}
        if op in ("rollback", "activate") and a.fail_rollback > 0:
            a.fail_rollback -= 1
            raise RemoteAgentError(self.host.name, "StoreError", "disk full", 5)
        if op == "rollback":
            if a.previous is None:
                raise RemoteAgentError(self.host.name, "ReleaseNotFoundError", "none", 5)
            a.switch(a.previous)
            return {"ok": True}
        if op == "activate":
            assert args is not None
            a.switch(args["version"])
            return {"ok": True}
        if op == "gc":
            if a.fail_gc:
                raise RemoteAgentError(self.host.name, "StoreError", "read-only file system", 5)
            kept = {a.current, a.previous}
            removed = [v for v in a.releases if v not in kept]
            a.releases = [v for v in a.releases if v in kept]
            return {"removed": [{"version": v} for v in removed], "freed_bytes": 1000}
        raise AssertionError(op)

    def _summary(self, version: str | None) -> dict[str, str] | None:
        if version is None:
            return None
        return {"version": version, "package_id": self.agent.package_of.get(version, "o" * 64)}

    async def ensure_package(
        self, path: Path, package_id: str, *, lease: str | None = None
    ) -> bool:
        if self.host.name in self.fleet.bug_on_upload:
            raise KeyError("a bug in the upload")
        if package_id in self.agent.packages:
            return False
        self.agent.packages.add(package_id)
        self.agent.uploads += 1
        return True

    async def close(self) -> None:
        return None


class FakeFleet:
    """A Transport over fake agents."""

    def __init__(self, hosts: list[HostRef], version: str = "v2") -> None:
        self.agents = {h.name: FakeAgent() for h in hosts}
        self.version = version
        self.unreachable: set[str] = set()
        self.bug_on_upload: set[str] = set()  # hosts whose upload raises a non-fleetwave error
        self.refuse: dict[str, int] = {}  # host -> the next N connects are refused
        self.opened = 0

    async def open(self, host: HostRef) -> FakeSession:
        await asyncio.sleep(0)
        if self.refuse.get(host.name, 0) > 0:
            self.refuse[host.name] -= 1
            raise HostUnreachableError(host.name, "cannot connect: Connection refused")
        if host.name in self.unreachable or self.agents[host.name].fail_install == "unreachable":
            raise HostUnreachableError(host.name, "connection refused")
        self.opened += 1
        return FakeSession(self, host)

    async def close(self) -> None:
        return None


class FakeBalancer(LoadBalancer):
    """Tracks server states and the most servers out of rotation at once per backend."""

    def __init__(self, name: str = "lb") -> None:
        self.name = name
        self.states: dict[ServerRef, ServerState] = {}
        self.fail: set[str] = set()
        self.max_out = 0

    def _status(self, ref: ServerRef) -> ServerStatus:
        return ServerStatus(ref, self.states.get(ref, ServerState.READY), 0, True)

    async def _begin_drain(self, ref: ServerRef) -> None:
        await asyncio.sleep(0)
        if ref.server in self.fail:
            raise LoadBalancerError(f"{ref}: No such server.")
        self.states[ref] = ServerState.MAINT
        out = sum(s is not ServerState.READY for s in self.states.values())
        self.max_out = max(self.max_out, out)

    async def ready(self, ref: ServerRef) -> ServerStatus:
        await asyncio.sleep(0)
        self.states[ref] = ServerState.READY
        return self._status(ref)

    async def status(self, ref: ServerRef) -> ServerStatus:
        return self._status(ref)


def start_deployment(
    journal: Any, plan: Any, deployment_id: str = "d1", package_id: str = "p" * 64
) -> Any:
    """Create ``deployment_id``'s journal row and return its ``DeploymentInfo``: the
    setup every runner test on fakes begins with."""
    from fleetwave.rollout.runner import DeploymentInfo

    journal.create_deployment(
        deployment_id=deployment_id,
        pipeline="p",
        environment="prod",
        package_id=package_id,
        package_path="/pkg",
        plan={},
        now=0.0,
        controller="test",
    )
    return DeploymentInfo(deployment_id, plan, Path("/pkg"), package_id, 5.0)
