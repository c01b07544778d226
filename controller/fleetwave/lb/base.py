"""The seam every load-balancer driver implements.

The engine only ever asks three things of a balancer: take a server out of rotation
safely (drain, wait for its sessions to end, then hold it out), put it back, and say
what state it is in. A cloud balancer (e.g. AWS target groups) is one more module that
implements this class.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping
from dataclasses import dataclass

from fleetwave.config.topology import ServerRef

__all__ = ["LoadBalancer", "ServerRef", "ServerState", "ServerStatus"]


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


class LoadBalancer(abc.ABC):
    """A driver. Every method is idempotent: re-asserting a drain is always safe."""

    name: str

    @abc.abstractmethod
    async def drain(self, ref: ServerRef, *, timeout_s: float) -> ServerStatus:
        """Stop new sessions, wait until current sessions reach 0 or ``timeout_s``
        passes, then hold the server out of rotation (maint). Returns the final status."""

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
