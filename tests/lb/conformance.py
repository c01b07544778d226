"""The behaviour every load-balancer driver must show (cf. trio's check_two_way_stream).

A driver test module builds a :class:`DriverCase` per driver and calls each ``check_*``
coroutine. A case says which checks apply: a balancer that cannot hold sessions (or
has no notion of servers, like ``none``) leaves those hooks as None.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

import pytest

from fleetwave.errors import LoadBalancerError
from fleetwave.lb.base import LoadBalancer, ServerRef, ServerState

#: Upper bound for any one check, so a broken driver fails instead of hanging.
CHECK_TIMEOUT_S = 30.0


class HeldSession(Protocol):
    """A session in flight through the balancer to the server under test."""

    def release(self) -> None: ...

    def finished_ok(self) -> bool:
        """Whether the session ended normally (for HTTP: a 200 was received)."""
        ...


@dataclass
class DriverCase:
    driver: LoadBalancer
    ref: ServerRef
    unknown_ref: ServerRef | None  # None: the driver cannot tell (``none``)
    hold_session: Callable[[], HeldSession] | None  # None: no sessions to hold


async def check_drain_is_maint_with_no_sessions(case: DriverCase) -> None:
    status = await asyncio.wait_for(case.driver.drain(case.ref, timeout_s=5), CHECK_TIMEOUT_S)
    assert status.state is ServerState.MAINT
    assert status.sessions == 0
    assert status.ref == case.ref
    again = await case.driver.status(case.ref)
    assert again.state is ServerState.MAINT
    assert again.sessions == 0


async def check_ready_after_drain(case: DriverCase) -> None:
    await asyncio.wait_for(case.driver.drain(case.ref, timeout_s=5), CHECK_TIMEOUT_S)
    status = await case.driver.ready(case.ref)
    assert status.state is ServerState.READY
    assert (await case.driver.status(case.ref)).state is ServerState.READY


async def check_drain_is_idempotent(case: DriverCase) -> None:
    first = await asyncio.wait_for(case.driver.drain(case.ref, timeout_s=5), CHECK_TIMEOUT_S)
    second = await asyncio.wait_for(case.driver.drain(case.ref, timeout_s=5), CHECK_TIMEOUT_S)
    assert first.state is second.state is ServerState.MAINT
    ready = await case.driver.ready(case.ref)
    again = await case.driver.ready(case.ref)
    assert ready.state is again.state is ServerState.READY


async def check_unknown_server(case: DriverCase) -> None:
    unknown = case.unknown_ref
    assert unknown is not None
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: case.driver.status(unknown),
        lambda: case.driver.drain(unknown, timeout_s=1),
        lambda: case.driver.ready(unknown),
    ]
    for call in calls:
        with pytest.raises(LoadBalancerError, match=unknown.server):
            await asyncio.wait_for(call(), CHECK_TIMEOUT_S)


async def check_reconcile_reasserts_drain(case: DriverCase) -> None:
    await case.driver.ready(case.ref)
    corrected = await case.driver.reconcile({case.ref: ServerState.MAINT})
    assert corrected == [case.ref]
    assert (await case.driver.status(case.ref)).state is ServerState.MAINT
    assert await case.driver.reconcile({case.ref: ServerState.MAINT}) == []


async def check_drain_waits_for_sessions(case: DriverCase) -> None:
    """A drain returns only once the session in flight has ended, and that session
    finishes normally. Ordering, not timing: the session is released by the test only
    after it sees the drain still waiting in DRAIN state."""
    assert case.hold_session is not None
    session = await asyncio.to_thread(case.hold_session)
    released = False
    try:
        drain = asyncio.ensure_future(case.driver.drain(case.ref, timeout_s=CHECK_TIMEOUT_S))
        for _ in range(200):  # bounded: until the driver has issued its drain
            if (await case.driver.status(case.ref)).state is not ServerState.READY:
                break
            await asyncio.sleep(0.02)
        status = await case.driver.status(case.ref)
        assert status.state is ServerState.DRAIN
        assert status.sessions >= 1
        assert not drain.done()
        released = True
        session.release()
        final = await asyncio.wait_for(drain, CHECK_TIMEOUT_S)
    finally:
        if not released:
            session.release()
    assert final.state is ServerState.MAINT
    assert final.sessions == 0
    assert await asyncio.to_thread(session.finished_ok)


async def check_drain_times_out(case: DriverCase) -> None:
    """With a short timeout, a drain gives up waiting, holds the server out (MAINT)
    while the session is still open, and the session still finishes normally."""
    assert case.hold_session is not None
    session = await asyncio.to_thread(case.hold_session)
    try:
        status = await asyncio.wait_for(case.driver.drain(case.ref, timeout_s=0.5), CHECK_TIMEOUT_S)
        assert status.state is ServerState.MAINT
        assert status.sessions >= 1
    finally:
        session.release()
    assert await asyncio.to_thread(session.finished_ok)


class FakeTime:
    """A clock that moves only when the drain loop sleeps, recording each sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def check_drain_deadline_on_fake_clock(case: DriverCase) -> None:
    """The shared drain loop against the driver's real status reads, on a fake clock:
    with no session it never sleeps; with one that outlives the deadline it sleeps at
    most one poll interval at a time, exactly up to the deadline, then holds out."""
    fake = FakeTime()
    # A binary fraction, so the fake clock's sums are exact and the count is too.
    timing = replace(
        case.driver.drain_timing, poll_interval_s=1 / 16, clock=fake.clock, sleep=fake.sleep
    )
    case.driver.drain_timing = timing
    idle = await asyncio.wait_for(case.driver.drain(case.ref, timeout_s=60), CHECK_TIMEOUT_S)
    assert idle.state is ServerState.MAINT
    assert fake.sleeps == []
    await case.driver.ready(case.ref)
    if case.hold_session is None:
        return
    session = await asyncio.to_thread(case.hold_session)
    timeout_s = timing.poll_interval_s * 10.5
    try:
        held = await asyncio.wait_for(
            case.driver.drain(case.ref, timeout_s=timeout_s), CHECK_TIMEOUT_S
        )
    finally:
        session.release()
    assert held.state is ServerState.MAINT
    assert held.sessions >= 1
    assert len(fake.sleeps) == 11
    assert fake.sleeps == [timing.poll_interval_s] * 10 + [timing.poll_interval_s / 2]
    assert fake.now - 1000.0 == timeout_s
    assert await asyncio.to_thread(session.finished_ok)


ALL_CHECKS = {
    "drain_is_maint_with_no_sessions": check_drain_is_maint_with_no_sessions,
    "ready_after_drain": check_ready_after_drain,
    "drain_is_idempotent": check_drain_is_idempotent,
    "unknown_server": check_unknown_server,
    "reconcile_reasserts_drain": check_reconcile_reasserts_drain,
    "drain_waits_for_sessions": check_drain_waits_for_sessions,
    "drain_times_out": check_drain_times_out,
    "drain_deadline_on_fake_clock": check_drain_deadline_on_fake_clock,
}
NEEDS_UNKNOWN = {"unknown_server"}
NEEDS_SESSIONS = {"drain_waits_for_sessions", "drain_times_out"}
