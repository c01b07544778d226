"""The drain loop the LoadBalancer base owns, on a fake clock: its deadline, its
polling interval and its hold-out step, with a scripted driver and with ``none``."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from fleetwave.lb.base import DrainTiming, LoadBalancer, ServerRef, ServerState, ServerStatus
from fleetwave.lb.none import NoLoadBalancer
from tests.lb.conformance import FakeTime

pytestmark = pytest.mark.unit

REF = ServerRef("edge", "web", "h1")


class ScriptedBalancer(LoadBalancer):
    """Sessions come from a script, one value per status read (the last repeats)."""

    def __init__(self, sessions: list[int], *, holds_out: bool, fake: FakeTime) -> None:
        self.name = "edge"
        self.drain_timing = DrainTiming(0.25, fake.clock, fake.sleep)
        self._sessions = sessions
        self._holds_out = holds_out
        self.state = ServerState.READY
        self.calls: list[str] = []

    async def _begin_drain(self, ref: ServerRef) -> None:
        self.calls.append("begin")
        self.state = ServerState.DRAIN

    async def _hold_out(self, ref: ServerRef) -> bool:
        self.calls.append("hold_out")
        if self._holds_out:
            self.state = ServerState.MAINT
        return self._holds_out

    async def ready(self, ref: ServerRef) -> ServerStatus:
        self.state = ServerState.READY
        return await self.status(ref)

    async def status(self, ref: ServerRef) -> ServerStatus:
        self.calls.append("status")
        sessions = self._sessions.pop(0) if len(self._sessions) > 1 else self._sessions[0]
        return ServerStatus(ref, self.state, sessions, True)


def test_returns_once_sessions_reach_zero() -> None:
    fake = FakeTime()
    lb = ScriptedBalancer([3, 2, 0], holds_out=True, fake=fake)
    status = asyncio.run(lb.drain(REF, timeout_s=60))
    assert fake.sleeps == [0.25, 0.25]
    assert lb.calls == ["begin", "status", "status", "status", "hold_out", "status"]
    assert (status.state, status.sessions) == (ServerState.MAINT, 0)


def test_deadline_ends_the_wait_and_the_server_is_still_held_out() -> None:
    fake = FakeTime()
    lb = ScriptedBalancer([5], holds_out=True, fake=fake)
    status = asyncio.run(lb.drain(REF, timeout_s=0.625))
    # Never past the deadline: the last sleep is what was left of it.
    assert fake.sleeps == [0.25, 0.25, 0.125]
    assert fake.now - 1000.0 == 0.625
    assert lb.calls[-2:] == ["hold_out", "status"]
    assert (status.state, status.sessions) == (ServerState.MAINT, 5)


def test_zero_timeout_reads_once_and_holds_out_without_sleeping() -> None:
    fake = FakeTime()
    lb = ScriptedBalancer([5], holds_out=True, fake=fake)
    asyncio.run(lb.drain(REF, timeout_s=0))
    assert fake.sleeps == []
    assert lb.calls == ["begin", "status", "hold_out", "status"]


def test_without_a_hold_out_step_the_last_read_is_returned() -> None:
    fake = FakeTime()
    lb = ScriptedBalancer([1, 0], holds_out=False, fake=fake)
    status = asyncio.run(lb.drain(REF, timeout_s=60))
    assert lb.calls == ["begin", "status", "status", "hold_out"]
    assert (status.state, status.sessions) == (ServerState.DRAIN, 0)


def test_none_driver_never_waits() -> None:
    fake = FakeTime()
    lb = NoLoadBalancer("edge")
    lb.drain_timing = replace(lb.drain_timing, clock=fake.clock, sleep=fake.sleep)
    status = asyncio.run(lb.drain(REF, timeout_s=60))
    assert fake.sleeps == []
    assert (status.state, status.sessions, status.healthy) == (ServerState.MAINT, 0, None)
    assert asyncio.run(lb.ready(REF)).state is ServerState.READY
