"""Hosts behind no load balancer. Nothing can be drained or read, so the driver says
so honestly: it reports the state last requested *in this process* (READY until
drained), never any sessions, and ``healthy=None`` (no balancer health check)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetwave.lb.base import LoadBalancer, ServerRef, ServerState, ServerStatus
from fleetwave.lb.registry import Options


class NoLoadBalancer(LoadBalancer):
    """``driver: none``: drain and ready are no-ops that record the requested state."""

    def __init__(self, name: str):
        self.name = name
        self._requested: dict[ServerRef, ServerState] = {}

    def _status(self, ref: ServerRef) -> ServerStatus:
        state = self._requested.get(ref, ServerState.READY)
        return ServerStatus(ref=ref, state=state, sessions=0, healthy=None)

    async def _begin_drain(self, ref: ServerRef) -> None:
        """Nothing routes traffic, so there is nothing to wait for (sessions are
        always 0): the shared drain loop returns at once, with MAINT recorded."""
        self._requested[ref] = ServerState.MAINT

    async def ready(self, ref: ServerRef) -> ServerStatus:
        """Nothing to put back; records READY."""
        self._requested[ref] = ServerState.READY
        return self._status(ref)

    async def status(self, ref: ServerRef) -> ServerStatus:
        """The state last requested here (there is no balancer to ask)."""
        return self._status(ref)


def from_options(name: str, options: Mapping[str, Any]) -> NoLoadBalancer:
    """``none`` takes no options."""
    Options(name, options, allowed=())
    return NoLoadBalancer(name)
