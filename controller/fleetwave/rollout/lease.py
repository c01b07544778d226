"""The controller's side of the host lease: one controller per host, fleet-wide.

The agent keeps the lease (``fleetwave_agent.lease``): which deployment may change the
host, and until when. The local lock (``lock.py``) only covers one state directory; the
lease covers every checkout, CI runner and pipeline that shares a host.

:class:`LeaseKeeper` drives it for one deployment:

* :meth:`~LeaseKeeper.start` takes the lease on every host of the plan before the
  first decision, so a second controller is refused (:class:`LeaseRefusedError`,
  naming the host and the holder) before it drains anything. A host that cannot be
  reached then is leased lazily, by :meth:`~LeaseKeeper.ensure`, right before its first
  step; a refusal there is that host's failure, and nothing is drained for it.
* :meth:`~LeaseKeeper.renew_forever` renews every held lease each third of its ttl, so
  a controller that dies frees its hosts within one ttl.
* :meth:`~LeaseKeeper.session` wraps an agent session so that every mutating call
  names the lease (the deployment id): the agent fences off any other deployment.
* :meth:`~LeaseKeeper.release_all` gives the hosts back once the deployment finished.

The same deployment id reclaims its own leases (``resume``, ``rollback`` from another
process), since the agent grants a lease to the deployment that already holds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from fleetwave.errors import FleetwaveError, LeaseRefusedError, RemoteAgentError
from fleetwave.planning.model import HostRef
from fleetwave.transport.base import AgentSession

#: Agent operations that change a host; each carries ``lease`` (``fleetwave_agent.rpc``).
MUTATING_OPS = frozenset({"install", "activate", "rollback", "gc", "upload"})
_HELD = "LeaseHeldError"
_LOST = "LeaseLostError"

OpenSession = Callable[[HostRef], Awaitable[AgentSession]]
Note = Callable[[str], None]


class LeasedSession:
    """An :class:`AgentSession` whose mutating calls carry this deployment's lease."""

    def __init__(self, inner: AgentSession, lease: str) -> None:
        self.inner = inner
        self.host = inner.host
        self.lease = lease

    async def call(
        self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """The inner call, with ``lease`` added to mutating operations."""
        if op in MUTATING_OPS:
            args = {**(args or {}), "lease": self.lease}
        return await self.inner.call(op, args, timeout_s=timeout_s)

    async def ensure_package(
        self, path: Path, package_id: str, *, lease: str | None = None
    ) -> bool:
        """The inner upload, fenced by this deployment's lease."""
        return await self.inner.ensure_package(path, package_id, lease=lease or self.lease)

    async def close(self) -> None:
        await self.inner.close()


class LeaseKeeper:
    """The leases one deployment holds on its hosts (see the module docstring)."""

    def __init__(
        self,
        deployment_id: str,
        controller_id: str,
        ttl_s: float,
        *,
        note: Note | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"lease ttl must be positive, got {ttl_s}")
        self.deployment_id = deployment_id
        self.controller_id = controller_id
        self.ttl_s = ttl_s
        self.held: set[str] = set()
        self._note = note or (lambda message: None)
        self._open: OpenSession | None = None
        self._hosts: dict[str, HostRef] = {}

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / 3

    def session(self, inner: AgentSession) -> LeasedSession:
        """``inner`` with this deployment's lease on every mutating call."""
        return LeasedSession(inner, self.deployment_id)

    async def start(self, hosts: Iterable[HostRef], open_session: OpenSession) -> None:
        """Lease every host, or raise LeaseRefusedError (after giving back what was
        taken) when another deployment holds one. Unreachable hosts are noted and left
        to :meth:`ensure`."""
        self._open = open_session
        refs = list(hosts)
        self._hosts = {h.name: h for h in refs}

        async def one(host: HostRef) -> LeaseRefusedError | None:
            try:
                await self._acquire(host)
            except LeaseRefusedError as exc:
                return exc
            except FleetwaveError as exc:
                self._note(f"lease: {host.name}: not leased yet ({exc}); retried before its step")
            return None

        refusals = [r for r in await asyncio.gather(*(one(h) for h in refs)) if r is not None]
        if refusals:
            await self.release_all()
            raise refusals[0]

    async def ensure(self, host: HostRef) -> None:
        """Lease ``host`` unless held already (before its first step)."""
        if host.name not in self.held:
            await self._acquire(host)

    async def renew_forever(self) -> None:
        """Renew every held lease each third of the ttl, until cancelled."""
        while True:
            await asyncio.sleep(self.renew_every_s)
            await self.renew_once()

    async def renew_once(self) -> None:
        """One round of renewals, concurrently: one slow host delays no other."""
        names = sorted(self.held)
        await asyncio.gather(*(self._renew(self._hosts[n]) for n in names if n in self._hosts))

    async def release_all(self) -> None:
        """Give every held lease back; errors are noted (the lease then just expires)."""

        async def one(host: HostRef) -> None:
            try:
                session = await self._session(host)
                await session.call("lease_release", {"deployment_id": self.deployment_id})
            except FleetwaveError as exc:
                self._note(f"lease: {host.name}: not released ({exc}); it expires by itself")
            self.held.discard(host.name)

        await asyncio.gather(*(one(self._hosts[n]) for n in sorted(self.held)))

    # -- internals -------------------------------------------------------------------

    async def _session(self, host: HostRef) -> AgentSession:
        if self._open is None:
            raise RuntimeError("LeaseKeeper.start() was not called")
        return await self._open(host)

    async def _acquire(self, host: HostRef) -> None:
        self._hosts.setdefault(host.name, host)
        session = await self._session(host)
        args = {
            "deployment_id": self.deployment_id,
            "controller_id": self.controller_id,
            "ttl_s": self.ttl_s,
        }
        try:
            result = await session.call("lease_acquire", args)
        except RemoteAgentError as exc:
            if exc.error_type == _HELD:
                raise LeaseRefusedError(
                    f"deployment {self.deployment_id} refused on host {host.name}: "
                    f"{exc.remote_message}; nothing was drained for it"
                ) from None
            raise
        self.held.add(host.name)
        replaced = result.get("replaced")
        if isinstance(replaced, dict):
            self._note(
                f"lease: {host.name}: took over the expired lease of deployment "
                f"{replaced.get('deployment_id')} (controller {replaced.get('controller_id')})"
            )

    async def _renew(self, host: HostRef) -> None:
        args = {"deployment_id": self.deployment_id, "ttl_s": self.ttl_s}
        try:
            session = await self._session(host)
            await session.call("lease_renew", args)
            return
        except RemoteAgentError as exc:
            if exc.error_type not in (_HELD, _LOST):
                self._note(f"lease: {host.name}: renewal failed ({exc}); retried next round")
                return
            lost = exc
        except FleetwaveError as exc:
            self._note(f"lease: {host.name}: renewal failed ({exc}); retried next round")
            return
        if lost.error_type == _LOST:
            # It expired and nobody took it (a long call held the session): take it again.
            try:
                await self._acquire(host)
                return
            except LeaseRefusedError:
                pass
            except FleetwaveError as exc:
                self._note(f"lease: {host.name}: renewal failed ({exc}); retried next round")
                return
        # Another deployment holds it now: the agent fences our next step on that host.
        self.held.discard(host.name)
        self._note(f"lease: {host.name}: lost ({lost.remote_message})")
