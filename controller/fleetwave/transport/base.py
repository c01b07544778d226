"""The seam between the engine and the hosts.

The engine opens one :class:`AgentSession` per host and reuses it for every step of a
deployment. Sessions speak the agent's RPC protocol (``fleetwave_agent.rpc_protocol``).
Transport libraries' errors never pass this seam: implementations raise
:class:`fleetwave.errors.TransportError` subclasses, or
:class:`fleetwave.errors.RemoteAgentError` for errors the agent itself reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from fleetwave.planning.model import HostRef


class AgentSession(Protocol):
    host: HostRef

    async def call(
        self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Run one RPC operation and return its result."""
        ...

    async def ensure_package(
        self, path: Path, package_id: str, *, lease: str | None = None
    ) -> bool:
        """Upload the package unless the agent already has it; True when bytes were sent.
        ``lease`` (a deployment id) fences the upload like every mutating call."""
        ...

    async def close(self) -> None: ...


class Transport(Protocol):
    async def open(self, host: HostRef) -> AgentSession:
        """Connect (with retries) and start the agent's RPC session on ``host``."""
        ...

    async def close(self) -> None:
        """Close every session this transport opened."""
        ...
