"""Controller errors. They share the root :class:`FleetwaveError` with the agent's."""

from __future__ import annotations

from fleetwave_agent.errors import (
    ConfigError,
    FleetwaveError,
    IntegrityError,
    LockedError,
    UsageError,
)

__all__ = [
    "AlarmSyntaxError",
    "ConfigError",
    "FleetwaveError",
    "IntegrityError",
    "LoadBalancerError",
    "LockedError",
    "PlanError",
    "TransportError",
    "UsageError",
]


class PlanError(FleetwaveError, ValueError):
    """A pipeline and topology cannot be planned safely (the message says which rule)."""

    exit_code = 2


class TransportError(FleetwaveError, ConnectionError):
    """Reaching a host or running the agent there failed. ``host`` names the host."""

    exit_code = 10

    def __init__(self, host: str, message: str):
        self.host = host
        super().__init__(f"{host}: {message}")


class LoadBalancerError(FleetwaveError):
    """A load-balancer driver could not drain, return or read a server."""

    exit_code = 11


class AlarmSyntaxError(ConfigError):
    """An alarm expression does not parse. ``column`` is 1-based within ``expression``."""

    def __init__(self, message: str, *, expression: str, column: int):
        self.expression = expression
        self.column = column
        super().__init__(f"{message} at column {column} in {expression!r}")
