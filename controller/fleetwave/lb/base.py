"""The seam every load-balancer driver implements.

The engine only ever asks three things of a balancer: take a server out of rotation
safely (drain, wait for its sessions to end, then hold it out), put it back, and say
what state it is in. A cloud balancer (e.g. AWS target groups) is one more module that
implements this class.

The drain is a template method: this class owns the loop (stop new sessions, poll the
sessions until they reach 0 or the deadline passes, hold the server out), its deadline
and its polling interval (:class:`DrainTiming`); a driver implements the primitives
``_begin_drain`` and, when its balancer has one, ``_hold_out``.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from fleetwave.config.topology import ServerRef

__all__ = ["DrainTiming", "LoadBalancer", "ServerRef", "ServerState", "ServerStatus"]


class ServerState(enum.Enum):
    READY = "ready"  # in rotation
    DRAIN = "drain"  # no new sessions; existing ones finish
    MAINT = "maint"  # out of rotation, health checks stopped
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ServerStatus:
    ref: ServerRef
    state: ServerState
    sessions: int  # current sessions; what a drain waits on
    healthy: bool | None  # the balancer's own health check, None when it has none


@dataclass(frozen=True)
class DrainTiming:
    """How a drain waits: the interval between session reads, and the clock and sleep
    its deadline runs on (a fake pair in tests, so no test waits for real)."""

    poll_interval_s: float = 0.5
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


class LoadBalancer(abc.ABC):
    """A driver. Every method is idempotent: re-asserting a drain is always safe."""

    name: str
    #: Drivers with sessions to wait on set their own from their options.
    drain_timing: DrainTiming = DrainTiming()

    async def drain(self, ref: ServerRef, *, timeout_s: float) -> ServerStatus:
        """Stop new sessions, wait until current sessions reach 0 or ``timeout_s``
        passes, then hold the server out of rotation (maint). Returns the final status.

        The hold-out happens on timeout too: sessions still open then finish on their
        own, but the server takes no new ones while the host is changed."""
        timing = self.drain_timing
        await self._begin_drain(ref)
        deadline = timing.clock() + timeout_s
        status = await self.status(ref)
        while status.sessions > 0 and timing.clock() < deadline:
            # Never sleep past the deadline: the last read happens right at it.
            await timing.sleep(min(timing.poll_interval_s, max(deadline - timing.clock(), 0.0)))
            status = await self.status(ref)
        if await self._hold_out(ref):
            status = await self.status(ref)
        return status

    @abc.abstractmethod
    async def _begin_drain(self, ref: ServerRef) -> None:
        """Primitive: stop new sessions to ``ref``; the ones in flight go on."""

    async def _hold_out(self, ref: ServerRef) -> bool:
        """Primitive: once the wait is over, take ``ref`` fully out of rotation (e.g.
        HAProxy's maint). Returns whether it asked the balancer for anything; the
        default, for balancers without such a step, asks nothing."""
        return False

    @abc.abstractmethod
    async def ready(self, ref: ServerRef) -> ServerStatus:
        """Put the server back in rotation. Call only after the host's checks passed."""

    @abc.abstractmethod
    async def status(self, ref: ServerRef) -> ServerStatus:
        """The server's current state, read from the balancer (never cached)."""

    async def reconcile(
        self, expected: Mapping[ServerRef, ServerState], *, timeout_s: float = 0.0
    ) -> list[ServerRef]:
        """Re-assert the drains the engine holds: every server expected DRAIN or MAINT
        that the balancer shows READY (e.g. HAProxy reloaded without a state file) is
        drained again, waiting at most ``timeout_s`` for sessions. Servers expected READY
        are never touched (someone may have taken them out on purpose). Returns the
        servers that had to be corrected."""
        corrected = []
        for ref, want in expected.items():
            if want not in (ServerState.DRAIN, ServerState.MAINT):
                continue
            if (await self.status(ref)).state is ServerState.READY:
                await self.drain(ref, timeout_s=timeout_s)
                corrected.append(ref)
        return corrected

    async def close(self) -> None:  # noqa: B027 - optional hook, most drivers hold nothing
        """Release connections the driver holds."""
