"""Every error the controller raises. They share the root :class:`FleetwaveError` and
the exit-code table with the agent (:mod:`fleetwave_core`).

Transport libraries' errors never pass the transport seam: its implementations raise
the :class:`TransportError` family below, or :class:`RemoteAgentError` for errors the
agent itself reported.
"""

from __future__ import annotations

from fleetwave_agent.errors import IntegrityError
from fleetwave_core.errors import ConfigError, FleetwaveError, LockedError, UsageError
from fleetwave_core.exitcodes import ExitCode

__all__ = [
    "AgentCallTimeoutError",
    "AlarmSyntaxError",
    "AuthenticationError",
    "ConfigError",
    "EngineStalledError",
    "FleetwaveError",
    "ForeignReleaseError",
    "HostKeyError",
    "HostUnreachableError",
    "IntegrityError",
    "JournalError",
    "LeaseRefusedError",
    "LoadBalancerError",
    "LockedError",
    "MetricQueryError",
    "MetricResponseError",
    "MetricSourceError",
    "MetricSourceUnavailableError",
    "PackageRefusedError",
    "PlanError",
    "RemoteAgentError",
    "RemoteIntegrityError",
    "SessionLostError",
    "TransportError",
    "UsageError",
]


class PlanError(FleetwaveError, ValueError):
    """A pipeline and topology cannot be planned safely (the message says which rule)."""

    exit_code = ExitCode.CONFIG


class AlarmSyntaxError(ConfigError):
    """An alarm expression does not parse. ``column`` is 1-based within ``expression``."""

    def __init__(self, message: str, *, expression: str, column: int):
        self.expression = expression
        self.column = column
        super().__init__(f"{message} at column {column} in {expression!r}")


class LoadBalancerError(FleetwaveError):
    """A load-balancer driver could not drain, return or read a server."""

    exit_code = ExitCode.LOAD_BALANCER


class JournalError(FleetwaveError):
    """The journal is missing, corrupt, or does not hold what was asked for."""

    exit_code = ExitCode.JOURNAL


class EngineStalledError(FleetwaveError):
    """The engine waits for an outcome while nothing is in flight (a bug, never expected)."""

    exit_code = ExitCode.ENGINE_STALLED


class ForeignReleaseError(FleetwaveError):
    """A host runs a release that is neither the one this deployment installed nor the
    one it ran before; resume and rollback leave it alone and report it."""


class TransportError(FleetwaveError, ConnectionError):
    """Reaching a host or running the agent there failed. ``host`` names the host."""

    exit_code = ExitCode.TRANSPORT

    def __init__(self, host: str, message: str):
        self.host = host
        super().__init__(f"{host}: {message}")


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
        self.remote_exit_code = exit_code
        super().__init__(host, f"agent: {error_type}: {message}")


class RemoteIntegrityError(RemoteAgentError, IntegrityError):
    """The agent refused a package's signature or checksum. Never retried."""

    exit_code = ExitCode.INTEGRITY


class MetricSourceError(FleetwaveError):
    """A metric source could not answer. ``source`` names it (``agent``, ``prometheus``).

    Watching treats it as data, not as a crash: the affected datapoints are missing,
    and the alarm's ``treat_missing_data`` decides. Sources never leak their library's
    errors (urllib, JSON) past this family.
    """

    def __init__(self, source: str, message: str):
        self.source = source
        super().__init__(f"metric source {source}: {message}")


class MetricSourceUnavailableError(MetricSourceError, ConnectionError):
    """Unreachable, timed out, or the server said it cannot serve now (5xx, 503)."""


class MetricQueryError(MetricSourceError, ValueError):
    """The source refused the query (Prometheus ``bad_data``, ``execution``): a config
    problem, not a transient one. ``error_type`` is the API's own."""

    exit_code = ExitCode.CONFIG

    def __init__(self, source: str, message: str, *, error_type: str = ""):
        self.error_type = error_type
        super().__init__(source, message)


class MetricResponseError(MetricSourceError):
    """The answer did not have the documented shape (a bug or a proxy in the way)."""


class PackageRefusedError(FleetwaveError):
    """The controller's pre-flight check refused the package; no host was touched.

    ``exit_code`` is the agent's own for the cause: INTEGRITY for a signature or
    checksum, PACKAGE_REFUSED for an expired, unsafe or oversized package.
    """

    def __init__(self, message: str, *, exit_code: int):
        self.exit_code = ExitCode(exit_code)
        super().__init__(message)


class LeaseRefusedError(LockedError):
    """Another deployment holds a host's lease (``rollout/lease.py``); nothing was drained
    for this one. The message names the host and the holder."""
