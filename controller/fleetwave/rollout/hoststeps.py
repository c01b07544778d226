"""The host steps: drain, install, return and roll back one host, and the probes
that read a host's balancer and agent state, each through the seams (``Transport``,
``LoadBalancer``) with transient transport errors retried.

Every step is idempotent on the agent (drain re-asserts, ``ensure_package`` uploads only
when absent, install of an installed package is a no-op switch, rollback targets an
explicit release), so a retry after a lost session is safe. A host fails only once the
retries are spent, and the failure names them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from fleetwave.errors import (
    AgentCallTimeoutError,
    AuthenticationError,
    FleetwaveError,
    ForeignReleaseError,
    HostKeyError,
    JournalError,
    LoadBalancerError,
    RemoteAgentError,
    TransportError,
)
from fleetwave.lb.base import LoadBalancer, ServerState
from fleetwave.observe.events import HostStep, Note
from fleetwave.planning.model import HostRef, Stage
from fleetwave.rollout.events import (
    Event,
    HostDrained,
    HostFailed,
    HostInstalled,
    HostReturned,
    HostRolledBack,
    StageProbed,
)
from fleetwave.rollout.journal import Journal
from fleetwave.rollout.lease import LeaseKeeper
from fleetwave.rollout.seams import Clock, DeploymentInfo
from fleetwave.rollout.types import (
    Action,
    BeforeRelease,
    DrainHost,
    FailureKind,
    HostOp,
    InstallOnHost,
    ReturnHost,
    RollbackHost,
)
from fleetwave.transport.base import AgentSession, Transport
from fleetwave.transport.retry import RetryPolicy, retry_async

#: Host steps retry transient transport errors this often (4 attempts in all).
DEFAULT_STEP_RETRY = RetryPolicy(retries=3, base_delay_s=0.5, max_delay_s=4.0)

HostAction = DrainHost | InstallOnHost | ReturnHost | RollbackHost

HOST_OP: Mapping[type[Action], HostOp] = {
    DrainHost: HostOp.DRAIN,
    InstallOnHost: HostOp.INSTALL,
    ReturnHost: HostOp.RETURN,
    RollbackHost: HostOp.ROLLBACK,
}


def transient(exc: BaseException) -> bool:
    """A transport error a retry may cure: a refused or reset connection, a lost
    session, a handshake dropped by a busy sshd. Never an error the agent reported
    (integrity errors included), a host-key or authentication failure, or a call
    timeout (the agent may still be working on it)."""
    if not isinstance(exc, TransportError):
        return False
    return not isinstance(
        exc, RemoteAgentError | HostKeyError | AuthenticationError | AgentCallTimeoutError
    )


def release_version(summary: Any) -> str | None:
    """The version of an agent release summary (``{"version": ...}``), or None."""
    if isinstance(summary, dict):
        v = summary.get("version")
        return v if isinstance(v, str) else None
    return summary if isinstance(summary, str) else None


def release_package(summary: Any) -> str | None:
    """The package id of an agent release summary, or None (old agents omit it)."""
    if isinstance(summary, dict):
        v = summary.get("package_id")
        return v if isinstance(v, str) else None
    return None


class HostSteps:
    """Carries out host steps for one deployment; keeps one agent session per host."""

    def __init__(
        self,
        info: DeploymentInfo,
        *,
        journal: Journal,
        transport: Transport,
        balancers: Mapping[str, LoadBalancer],
        clock: Clock,
        retry: RetryPolicy = DEFAULT_STEP_RETRY,
        emit: Callable[[Any], None] = lambda event: None,
        leases: LeaseKeeper | None = None,
    ) -> None:
        self.info = info
        self.journal = journal
        self.transport = transport
        self.balancers = balancers
        self.clock = clock
        self.retry = retry
        self.emit = emit
        self.leases = leases
        self.hosts = {h.name: h for h in info.plan.hosts()}
        self._sessions: dict[str, AgentSession] = {}
        self._session_locks: dict[str, asyncio.Lock] = {}

    def note(self, message: str) -> None:
        """A line for the operator (the event log and the progress view)."""
        self.emit(Note(self.info.deployment_id, self.clock.now(), message))

    async def probe(self, stage: Stage) -> StageProbed:
        """Which of ``stage``'s hosts serve (balancer READY and not failing, agent
        healthy), and which an operator holds out (MAINT or DRAIN: skipped)."""

        held: dict[str, str] = {}

        async def serving(host: HostRef) -> bool:
            if host.lb is not None:
                try:
                    st = await self.lb(host).status(host.lb)
                except FleetwaveError:
                    return False
                if st.state in (ServerState.MAINT, ServerState.DRAIN):
                    # An operator's choice (the stage has not been touched yet): kept.
                    held[host.name] = st.state.value
                    self.note(f"{host.name}: {st.state.value} at stage start; skipped")
                    return False
                if st.state is not ServerState.READY or st.healthy is False:
                    return False
            return await self.agent_healthy(host)

        flags = await asyncio.gather(*(serving(h) for h in stage.hosts))
        ok = frozenset(h.name for h, up in zip(stage.hosts, flags, strict=True) if up)
        return StageProbed(stage.id, ok, held)

    async def agent_healthy(self, host: HostRef) -> bool:
        """The agent answers, runs a release and its health checks pass."""
        try:
            status = await self.status(host, probe_health=True)
        except FleetwaveError:
            return False
        return status.get("current") is not None and status.get("healthy") is not False

    async def status(self, host: HostRef, *, probe_health: bool) -> dict[str, Any]:
        """The agent's ``status``, retrying transient transport errors."""
        args = None if probe_health else {"probe_health": False}

        async def once() -> dict[str, Any]:
            return await (await self.session(host)).call("status", args)

        status: dict[str, Any] = await self._retrying(host, once, [0])
        return status

    async def _retrying(self, host: HostRef, once: Any, attempts: list[int]) -> Any:
        """Run ``once`` with the step retry policy: a transient transport error drops
        the session (the next attempt reconnects) and tries again after a backoff."""

        async def attempt() -> Any:
            attempts[0] += 1
            try:
                return await once()
            except TransportError as exc:
                if not isinstance(exc, RemoteAgentError):
                    await self._drop_session(host.name)
                raise

        def on_retry(number: int, exc: BaseException, pause: float) -> None:
            n = self.retry.retries
            self.note(f"{host.name}: {exc}; retry {number} of {n} in {pause:.1f} s")

        async def sleep(pause: float) -> None:
            await self.clock.sleep_until(self.clock.now() + pause)

        return await retry_async(attempt, self.retry, transient, sleep=sleep, on_retry=on_retry)

    async def _drop_session(self, name: str) -> None:
        session = self._sessions.pop(name, None)
        if session is not None:
            with contextlib.suppress(FleetwaveError, OSError):
                await session.close()

    async def run(self, action: HostAction) -> Event:
        """Carry out one host step, retrying transient transport errors; its outcome
        is journalled and becomes the next event (``HostFailed`` once the retries are
        spent). A ``JournalError`` is the controller's failure and propagates."""
        host = self.hosts[action.host]
        step = HOST_OP[type(action)]
        dep = self.info.deployment_id
        start = self.clock.now()
        self.emit(HostStep(dep, start, host.name, action.stage_id, step, "start"))
        before: list[BeforeRelease] = []
        attempts = [0]
        try:
            event: Event = await self._retrying(
                host, lambda: self._do(action, host, before), attempts
            )
        except JournalError:
            raise  # the controller's own failure, not the host's: the runner stops
        except FleetwaveError as exc:
            kind = (
                FailureKind.of_name(exc.error_type)
                if isinstance(exc, RemoteAgentError)
                else FailureKind.of_error(exc)
            )
            message = str(exc) if attempts[0] <= 1 else f"after {attempts[0]} attempts: {exc}"
            now = self.clock.now()
            detail = {"kind": kind.value, "error": message, "attempts": attempts[0]}
            self.journal.record_outcome(dep, action, False, detail, now)
            self.emit(
                HostStep(
                    dep,
                    now,
                    host.name,
                    action.stage_id,
                    step,
                    "failed",
                    now - start,
                    kind,
                    message,
                )
            )
            return HostFailed(host.name, step, kind, message, before[0] if before else None)
        now = self.clock.now()
        self.journal.record_outcome(dep, action, True, {}, now)
        self.emit(HostStep(dep, now, host.name, action.stage_id, step, "ok", now - start))
        return event

    async def _do(
        self,
        action: HostAction,
        host: HostRef,
        before: list[BeforeRelease],
    ) -> Event:
        if self.leases is not None:
            await self.leases.ensure(host)  # before anything changes on the host
        if isinstance(action, DrainHost):
            assert host.lb is not None  # the engine drains only hosts with a balancer
            drained = await self.lb(host).drain(host.lb, timeout_s=self.info.drain_timeout_s)
            if drained.state not in (ServerState.MAINT, ServerState.DRAIN):
                raise LoadBalancerError(f"{host.lb}: still {drained.state.value} after drain")
            return HostDrained(host.name)
        session: AgentSession = await self.session(host)
        if self.leases is not None:
            session = self.leases.session(session)  # every mutating call names the lease
        if isinstance(action, InstallOnHost):
            if not before:  # a retry keeps what the first attempt saw
                status = await session.call("status", {"probe_health": False})
                prev = release_version(status.get("current"))
                # Journalled before anything changes: resume compares it with the
                # agent's current release to tell whether the install happened.
                self.journal.record_fact(
                    self.info.deployment_id,
                    host.name,
                    "before",
                    {"release": prev},
                    self.clock.now(),
                )
                before.append(BeforeRelease(prev))
            prev = before[0].release
            await session.ensure_package(self.info.package_path, self.info.package_id)
            result = await session.call("install", {"package_id": self.info.package_id})
            release = result.get("current_version") or result.get("version")
            if not isinstance(release, str):
                raise RemoteAgentError(host.name, "ProtocolError", f"install result: {result}", 8)
            if host.lb is None:  # no return step follows: it serves already
                await self._collect_garbage(host, session)
            return HostInstalled(host.name, release, prev)
        if isinstance(action, ReturnHost):
            status = await session.call("status")
            if status.get("healthy") is False or status.get("current") is None:
                raise RemoteAgentError(
                    host.name, "HealthCheckError", "agent health checks fail; not returning", 7
                )
            current = release_version(status.get("current"))
            if action.restore and action.expect is not None and current != action.expect:
                raise ForeignReleaseError(
                    f"{host.name}: runs {current}, not the release {action.expect} it ran "
                    "before; not returning it"
                )
            assert host.lb is not None
            st = await self.lb(host).ready(host.lb)
            if st.state is not ServerState.READY:
                raise LoadBalancerError(f"{host.lb}: {st.state.value} after ready")
            await self._collect_garbage(host, session)
            return HostReturned(host.name)
        return await self._rollback_host(action, host, session)

    async def _rollback_host(
        self, action: RollbackHost, host: HostRef, session: AgentSession
    ) -> Event:
        status = await session.call("status", {"probe_health": False})
        current = release_version(status.get("current"))
        target = action.to_release
        if current == target:
            return HostRolledBack(host.name)
        package = release_package(status.get("current"))
        if package is not None and package != self.info.package_id:
            # Someone else changed the host since our install: never undo their change.
            raise ForeignReleaseError(
                f"{host.name}: runs {current or 'no release'} (package {package[:12]}), "
                f"neither {target or 'no release'} it ran before nor this deployment's "
                f"package {self.info.package_id[:12]}; left alone"
            )
        if target is None:
            raise RemoteAgentError(host.name, "ReleaseNotFoundError", "no earlier release", 5)
        if release_version(status.get("previous")) == target:
            await session.call("rollback", {})
        else:
            await session.call("activate", {"version": target})
        return HostRolledBack(host.name)

    async def _collect_garbage(self, host: HostRef, session: AgentSession) -> None:
        """Free the host's disk once it serves again (so never while it is out of
        rotation): the agent keeps its ``keep_releases`` releases, always the current,
        the previous and pinned ones, and drops installed uploads. A failure costs
        disk, not the deployment: it is noted, and the next deployment tries again."""
        try:
            result = await session.call("gc", {})
        except FleetwaveError as exc:
            self.note(f"{host.name}: gc failed, old releases stay: {exc}")
            await self._drop_session(host.name)  # a lost session is not reused
            return
        removed = result.get("removed") or []
        if removed:
            freed = int(result.get("freed_bytes") or 0)
            self.note(f"{host.name}: gc removed {len(removed)} old release(s), {freed} bytes")

    def lb(self, host: HostRef) -> LoadBalancer:
        """The balancer ``host`` sits behind (it must sit behind one)."""
        assert host.lb is not None
        try:
            return self.balancers[host.lb.lb]
        except KeyError:
            raise LoadBalancerError(f"{host.lb}: no load balancer named {host.lb.lb!r}") from None

    async def session(self, host: HostRef) -> AgentSession:
        """The host's agent session, opened on first use and kept (one per host)."""
        lock = self._session_locks.setdefault(host.name, asyncio.Lock())
        async with lock:
            session = self._sessions.get(host.name)
            if session is None:
                session = await self.transport.open(host)
                self._sessions[host.name] = session
            return session

    async def close(self) -> None:
        """Close every open agent session."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            with contextlib.suppress(FleetwaveError, OSError):
                await s.close()


__all__ = [
    "DEFAULT_STEP_RETRY",
    "HOST_OP",
    "HostAction",
    "HostSteps",
    "release_package",
    "release_version",
    "transient",
]
