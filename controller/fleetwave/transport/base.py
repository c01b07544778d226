"""The seam between the engine and the hosts.

The engine opens one :class:`AgentSession` per host and reuses it for every step of a
deployment. Sessions speak the agent's RPC protocol (``fleetwave_agent.rpc_protocol``).
Transport libraries' errors never pass this seam: implementations raise
:class:`fleetwave.errors.TransportError` subclasses (defined here) or
:class:`RemoteAgentError` for errors the agent itself reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from fleetwave_agent.errors import IntegrityError

from ..errors import TransportError
from ..plan import HostRef


class HostUnreachableError(TransportError):
    """Connect failed or timed out after every retry; the host counts as failed."""


class HostKeyError(TransportError):
    """The host key did not verify. The host is never touched; never retried."""


class AuthenticationError(TransportError):
    """The deploy key was refused."""


class AgentCallTimeoutError(TransportError, TimeoutError):
    """An agent call did not answer within its timeout."""


class SessionLostError(TransportError):
    """The connection or the agent process died mid-session."""


class RemoteAgentError(TransportError):
    """The agent ran the request and reported an error (``error_type`` is its class name)."""

    def __init__(self, host: str, error_type: str, message: str, exit_code: int):
        self.error_type = error_type
        self.remote_message = message
        self.exit_code = exit_code
        super().__init__(host, f"agent: {error_type}: {message}")


class RemoteIntegrityError(RemoteAgentError, IntegrityError):
    """The agent refused a package's signature or checksum. Never retried."""


class AgentSession(Protocol):
    host: HostRef

    async def call(
        self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Run one RPC operation and return its result."""
        ...

    async def ensure_package(self, path: Path, package_id: str) -> bool:
        """Upload the package unless the agent already has it; True when bytes were sent."""
        ...

    async def close(self) -> None: ...


class Transport(Protocol):
    async def open(self, host: HostRef) -> AgentSession:
        """Connect (with retries) and start the agent's RPC session on ``host``."""
        ...

    async def close(self) -> None:
        """Close every session this transport opened."""
        ...
