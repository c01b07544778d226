"""The asyncio driver of the rollout engine: the I/O shell around ``engine.decide``.

One loop takes events from a queue, journals each one, asks the engine what to do,
journals every action's intent, and starts a task per action. Tasks never decide
anything: they carry the action out through the seams (``Transport``,
``LoadBalancer``, ``Gates``, ``Clock``) and turn the outcome into the next event.
Partial failure is data: an error on one host becomes a ``HostFailed`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fleetwave.config.spec import OverrideTarget
from fleetwave.errors import (
    EngineStalledError,
    FleetwaveError,
    LoadBalancerError,
    RemoteAgentError,
    TransportError,
)
from fleetwave.lb.base import LoadBalancer, ServerRef, ServerState
from fleetwave.observe.events import (
    AlarmsEvaluated,
    AlarmStateChanged,
    AnomalyVerdictChanged,
    DeploymentChanged,
    EventSink,
    GateVerdict,
    HostsSummary,
    HostStep,
    Note,
    OverrideRecorded,
    StageChanged,
)
from fleetwave.planning.model import HostRef, Plan
from fleetwave.rollout.engine import decide
from fleetwave.rollout.gates import BakeTarget, Gates
from fleetwave.rollout.journal import Journal
from fleetwave.rollout.state import FAILED, INFLIGHT, HostPhase, Phase, State, initial_state
from fleetwave.rollout.types import (
    Action,
    AlarmChanged,
    AnomalyJudged,
    BeforeRelease,
    CheckBlockers,
    CheckGate,
    DeploymentStarted,
    DrainHost,
    Event,
    FailureKind,
    Finish,
    GateResult,
    HostDrained,
    HostFacts,
    HostFailed,
    HostInstalled,
    HostOp,
    HostReturned,
    HostRolledBack,
    InstallOnHost,
    OverrideGranted,
    ProbeStage,
    Resumed,
    ReturnHost,
    RollbackHost,
    RollbackRequested,
    StageProbed,
    Target,
    TimerElapsed,
    Verdict,
    WaitUntil,
)
from fleetwave.rollout.watching import AlarmReading, Watcher
from fleetwave.transport.base import AgentSession, Transport


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, t: float) -> None: ...


class SystemClock:
    """Wall-clock time (the journal stores it; bakes are measured in it)."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, t: float) -> None:
        await asyncio.sleep(max(0.0, t - time.time()))


@dataclass(frozen=True)
class DeploymentInfo:
    deployment_id: str
    plan: Plan
    package_path: Path
    package_id: str
    drain_timeout_s: float = 60.0


def controller_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def release_version(summary: Any) -> str | None:
    """The version of an agent release summary (``{"version": ...}``), or None."""
    if isinstance(summary, dict):
        v = summary.get("version")
        return v if isinstance(v, str) else None
    return summary if isinstance(summary, str) else None


def replay(plan: Plan, journal: Journal, deployment_id: str) -> State:
    """The engine state a deployment reached, rebuilt from its journalled events."""
    state = initial_state(plan)
    for at, event in journal.events(deployment_id):
        state, _ = decide(state, event, at)
    return state


class Runner:
    """Runs one deployment to its end (or until cancelled)."""

    def __init__(
        self,
        info: DeploymentInfo,
        *,
        journal: Journal,
        transport: Transport,
        balancers: Mapping[str, LoadBalancer],
        gates: Gates | None = None,
        clock: Clock | None = None,
        sink: EventSink | None = None,
        request_poll_s: float | None = 1.0,
        watcher: Watcher | None = None,
        post_deploy_watch_s: float = 0.0,
    ) -> None:
        self.info = info
        self.journal = journal
        self.transport = transport
        self.balancers = balancers
        self.gates = gates or Gates()
        self.clock = clock or SystemClock()
        self.sink = sink
        self.request_poll_s = request_poll_s
        self.watcher = watcher
        #: Closed by the caller with the transport (the watcher's own transport).
        self.closers: list[Callable[[], Awaitable[None]]] = []
        self.post_deploy_watch_s = post_deploy_watch_s
        self.state: State = initial_state(info.plan)
        self._hosts = {h.name: h for h in info.plan.hosts()}
        self._sessions: dict[str, AgentSession] = {}
        self._session_locks: dict[str, asyncio.Lock] = {}
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- entry points ---------------------------------------------------------------------

    async def run(self, extra: list[Event] | None = None) -> Finish:
        """Start a new deployment (already created in the journal); ``extra`` events
        (an override) are decided right after the start."""
        return await self._loop([DeploymentStarted(self.post_deploy_watch_s), *(extra or [])])

    async def resume(self, extra: list[Event] | None = None) -> Finish:
        """Continue from the journal: replay, reconcile with balancers and agents, go on."""
        self.replay()
        if self.state.phase is Phase.FINISHED and not extra:
            return self._finished_action()
        if self.state.phase is Phase.PENDING:
            # The crash came before the first decision: nothing was done yet.
            return await self._loop([DeploymentStarted(self.post_deploy_watch_s), *(extra or [])])
        facts = await self.reconcile()
        return await self._loop([Resumed(facts), *(extra or [])])

    async def rollback(self, reason: str, by: str) -> Finish:
        """Roll back a stopped deployment (crashed, interrupted or finished)."""
        return await self.resume([RollbackRequested(reason, by)])

    def request_rollback(self, reason: str, by: str) -> None:
        """Ask the running loop to roll back (from a signal handler or another task)."""
        self._queue.put_nowait(RollbackRequested(reason, by))

    def replay(self) -> State:
        """Rebuild the engine state from the journal's recorded events."""
        self.state = replay(self.info.plan, self.journal, self.info.deployment_id)
        return self.state

    def _finished_action(self) -> Finish:
        """The end of a deployment whose last decision was already journalled."""
        result = self.state.result
        assert result is not None  # a finished engine state always has its result
        row = self.journal.deployment(self.info.deployment_id)
        if row.state != "finished" or row.result != result.value:
            # The crash came between the engine's Finish and the row update.
            self.journal.set_state(
                self.info.deployment_id,
                "finished",
                now=self.clock.now(),
                result=result.value,
                reason=self.state.rollback_reason,
            )
        failed = tuple(
            (h.name, h.failure or "") for h in self.state.hosts.values() if h.phase in FAILED
        )
        return Finish(result, failed, self.state.rollback_reason)

    # -- reconciliation -------------------------------------------------------------------

    async def reconcile(self) -> dict[str, HostFacts]:
        """Facts for every host a crash may have left half-done, plus a balancer check
        that every settled touched host is where the journal says it is."""
        known = self.journal.facts(self.info.deployment_id)
        inflight = [h for h in self.state.hosts.values() if h.phase in INFLIGHT]

        async def fact(name: str) -> tuple[str, HostFacts | None]:
            before = known.get(name, {}).get("before")
            try:
                session = await self._session(self._hosts[name])
                status = await session.call("status", {"probe_health": False})
            except FleetwaveError as exc:
                self._note(f"resume: {name}: agent unreachable ({exc}); re-issuing its step")
                return name, None
            return name, HostFacts(
                current=release_version(status.get("current")),
                before_known=before is not None,
                before=None if before is None else before.get("release"),
            )

        results = await asyncio.gather(*(fact(h.name) for h in inflight))
        await self._reconcile_balancers()
        return {name: f for name, f in results if f is not None}

    async def _reconcile_balancers(self) -> None:
        """Failed hosts must still be out of rotation (a balancer reload can undo a
        drain); done hosts found out of rotation are only reported, since an operator
        may have taken them out on purpose."""
        expected: dict[str, dict[ServerRef, ServerState]] = {}
        done: list[ServerRef] = []
        for h in self.state.hosts.values():
            ref = self._hosts[h.name].lb
            if ref is None or ref.lb not in self.balancers:
                continue
            if h.phase in FAILED:
                expected.setdefault(ref.lb, {})[ref] = ServerState.MAINT
            elif h.phase in (HostPhase.DONE, HostPhase.ROLLED_BACK):
                done.append(ref)
        for name, refs in expected.items():
            try:
                fixed = await self.balancers[name].reconcile(
                    refs, timeout_s=self.info.drain_timeout_s
                )
            except FleetwaveError as exc:
                self._note(f"resume: balancer {name}: {exc}")
                continue
            for ref in fixed:
                self._note(f"resume: {ref} was back in rotation; drained it again")
        for ref in done:
            try:
                status = await self.balancers[ref.lb].status(ref)
            except FleetwaveError as exc:
                self._note(f"resume: {ref}: {exc}")
                continue
            if status.state is not ServerState.READY:
                self._note(f"resume: {ref} is {status.state.value}; left as it is")

    # -- the loop -------------------------------------------------------------------------

    async def _loop(self, first: list[Event]) -> Finish:
        for e in first:
            self._queue.put_nowait(e)
        dep = self.info.deployment_id
        poller = None
        if self.request_poll_s is not None:
            poller = asyncio.create_task(self._poll_requests(self.request_poll_s))
        watch = None
        if self.watcher is not None:
            watch = asyncio.create_task(self._watch(self.watcher))
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, BaseException):
                    raise item
                now = self.clock.now()
                self.journal.record_event(dep, item, now)
                self._observe_input(item, now)
                before = self.state
                self.state, actions = decide(self.state, item, now)
                self._observe(before, self.state, now)
                for action in actions:
                    self.journal.record_intent(dep, action, now)
                    if isinstance(action, Finish):
                        self.journal.set_state(
                            dep,
                            "finished",
                            now=now,
                            result=action.result.value,
                            reason=action.rollback_reason,
                        )
                        self._emit(
                            DeploymentChanged(
                                dep, now, "finished", action.result, action.rollback_reason
                            )
                        )
                        return action
                    self._spawn(action)
                if not self._tasks and self._queue.empty():
                    raise EngineStalledError(
                        f"deployment {dep}: the engine is waiting with nothing in flight "
                        f"after {type(item).__name__}; the journal is intact, try resume"
                    )
        finally:
            extras = [t for t in (poller, watch) if t is not None]
            for task in [*self._tasks, *extras]:
                task.cancel()
            await asyncio.gather(*self._tasks, *extras, return_exceptions=True)
            await self._close_sessions()

    def _spawn(self, action: Action) -> None:
        task = asyncio.create_task(self._carry_out(action))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._queue.put_nowait(task.exception())  # type: ignore[arg-type]

    async def _carry_out(self, action: Action) -> None:
        event = await self._execute(action)
        if event is not None:
            self._queue.put_nowait(event)

    async def _poll_requests(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            for req in self.journal.take_requests(self.info.deployment_id, self.clock.now()):
                if req.kind == "rollback":
                    self._queue.put_nowait(RollbackRequested(req.reason, req.by))

    async def _watch(self, watcher: Watcher) -> None:
        """The watcher task: its alarm changes are engine events like any other."""

        def readings(at: float, rows: tuple[AlarmReading, ...]) -> None:
            self._emit(AlarmsEvaluated(self.info.deployment_id, at, rows))

        async def sleep(seconds: float) -> None:
            await self.clock.sleep_until(self.clock.now() + seconds)

        try:
            await watcher.run(lambda: self.state, self._queue.put_nowait, readings, sleep)
        except FleetwaveError as exc:
            # Watching must not die silently: without it no alarm can roll back.
            self._queue.put_nowait(exc)

    def _skips(self) -> frozenset[OverrideTarget]:
        override = self.state.override
        return override.skip if override is not None else frozenset()

    # -- actions --------------------------------------------------------------------------

    async def _execute(self, action: Action) -> Event | None:
        if isinstance(action, WaitUntil):
            await self.clock.sleep_until(action.at)
            return TimerElapsed(action.key)
        if isinstance(action, CheckBlockers):
            target = Target.stage(action.stage_id)
            v = await self._gate(
                self.gates.check_blockers(
                    self._bake_target(target), self.clock.now(), self._skips()
                )
            )
            return GateResult(target, "blockers", v)
        if isinstance(action, CheckGate):
            bake_target = self._bake_target(action.target)
            v = await self._gate(
                self.gates.check_bake(
                    bake_target, action.window_start, self.clock.now(), self._skips()
                )
            )
            return GateResult(action.target, "bake", v)
        if isinstance(action, ProbeStage):
            return await self._probe(action.stage_id)
        if isinstance(action, DrainHost | InstallOnHost | ReturnHost | RollbackHost):
            return await self._host_action(action)
        return None

    async def _gate(self, check: Awaitable[Verdict]) -> Verdict:
        try:
            return await check
        except FleetwaveError as exc:
            # A gate that cannot answer is a reason to wait, never to pass.
            return Verdict.wait(f"gate error: {exc}")

    def _bake_target(self, target: Target) -> BakeTarget:
        if target.is_wave:
            wave = next(w for w in self.info.plan.waves if w.index == target.wave_index)
            return BakeTarget(target, wave.bake_after, wave=wave)
        stage = self.state.stage(target.stage_id)
        return BakeTarget(target, stage.bake, stage=stage)

    async def _probe(self, stage_id: str) -> Event:
        stage = self.state.stage(stage_id)

        async def serving(host: HostRef) -> bool:
            if host.lb is not None:
                try:
                    st = await self._lb(host).status(host.lb)
                except FleetwaveError:
                    return False
                if st.state is not ServerState.READY or st.healthy is False:
                    return False
            return await self._agent_healthy(host)

        flags = await asyncio.gather(*(serving(h) for h in stage.hosts))
        return StageProbed(
            stage_id, frozenset(h.name for h, ok in zip(stage.hosts, flags, strict=True) if ok)
        )

    async def _agent_healthy(self, host: HostRef) -> bool:
        try:
            status = await (await self._session(host)).call("status")
        except FleetwaveError as exc:
            if isinstance(exc, TransportError) and not isinstance(exc, RemoteAgentError):
                self._sessions.pop(host.name, None)
            return False
        return status.get("current") is not None and status.get("healthy") is not False

    async def _host_action(
        self, action: DrainHost | InstallOnHost | ReturnHost | RollbackHost
    ) -> Event:
        host = self._hosts[action.host]
        step = _HOST_OP[type(action)]
        dep = self.info.deployment_id
        start = self.clock.now()
        self._emit(HostStep(dep, start, host.name, action.stage_id, step, "start"))
        before: list[BeforeRelease] = []
        try:
            event = await self._do_host(action, host, before)
        except FleetwaveError as exc:
            if isinstance(exc, TransportError) and not isinstance(exc, RemoteAgentError):
                self._sessions.pop(host.name, None)  # reconnect on the next step
            kind = (
                FailureKind.of_name(exc.error_type)
                if isinstance(exc, RemoteAgentError)
                else FailureKind.of_error(exc)
            )
            now = self.clock.now()
            detail = {"kind": kind.value, "error": str(exc)}
            self.journal.record_outcome(dep, action, False, detail, now)
            self._emit(
                HostStep(
                    dep,
                    now,
                    host.name,
                    action.stage_id,
                    step,
                    "failed",
                    now - start,
                    kind,
                    str(exc),
                )
            )
            return HostFailed(host.name, step, kind, str(exc), before[0] if before else None)
        now = self.clock.now()
        self.journal.record_outcome(dep, action, True, {}, now)
        self._emit(HostStep(dep, now, host.name, action.stage_id, step, "ok", now - start))
        return event

    async def _do_host(
        self,
        action: DrainHost | InstallOnHost | ReturnHost | RollbackHost,
        host: HostRef,
        before: list[BeforeRelease],
    ) -> Event:
        if isinstance(action, DrainHost):
            assert host.lb is not None  # the engine drains only hosts with a balancer
            drained = await self._lb(host).drain(host.lb, timeout_s=self.info.drain_timeout_s)
            if drained.state not in (ServerState.MAINT, ServerState.DRAIN):
                raise LoadBalancerError(f"{host.lb}: still {drained.state.value} after drain")
            return HostDrained(host.name)
        session = await self._session(host)
        if isinstance(action, InstallOnHost):
            status = await session.call("status", {"probe_health": False})
            prev = release_version(status.get("current"))
            # Journalled before anything changes: resume compares it with the agent's
            # current release to tell whether the install happened.
            self.journal.record_fact(
                self.info.deployment_id, host.name, "before", {"release": prev}, self.clock.now()
            )
            before.append(BeforeRelease(prev))
            await session.ensure_package(self.info.package_path, self.info.package_id)
            result = await session.call("install", {"package_id": self.info.package_id})
            release = result.get("current_version") or result.get("version")
            if not isinstance(release, str):
                raise RemoteAgentError(host.name, "ProtocolError", f"install result: {result}", 8)
            return HostInstalled(host.name, release, prev)
        if isinstance(action, ReturnHost):
            status = await session.call("status")
            if status.get("healthy") is False or status.get("current") is None:
                raise RemoteAgentError(
                    host.name, "HealthCheckError", "agent health checks fail; not returning", 7
                )
            assert host.lb is not None
            st = await self._lb(host).ready(host.lb)
            if st.state is not ServerState.READY:
                raise LoadBalancerError(f"{host.lb}: {st.state.value} after ready")
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
        if target is None:
            raise RemoteAgentError(host.name, "ReleaseNotFoundError", "no earlier release", 5)
        if release_version(status.get("previous")) == target:
            await session.call("rollback", {})
        else:
            await session.call("activate", {"version": target})
        return HostRolledBack(host.name)

    def _lb(self, host: HostRef) -> LoadBalancer:
        assert host.lb is not None
        try:
            return self.balancers[host.lb.lb]
        except KeyError:
            raise LoadBalancerError(f"{host.lb}: no load balancer named {host.lb.lb!r}") from None

    async def _session(self, host: HostRef) -> AgentSession:
        lock = self._session_locks.setdefault(host.name, asyncio.Lock())
        async with lock:
            session = self._sessions.get(host.name)
            if session is None:
                session = await self.transport.open(host)
                self._sessions[host.name] = session
            return session

    async def _close_sessions(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            with contextlib.suppress(FleetwaveError, OSError):
                await s.close()

    # -- observability --------------------------------------------------------------------

    def _emit(self, event: Any) -> None:
        if self.sink is not None:
            self.sink.emit(event)

    def _observe_input(self, event: Event, now: float) -> None:
        """The decision trail in the event log: verdicts, alarm changes, overrides."""
        dep = self.info.deployment_id
        if isinstance(event, GateResult):
            v = event.verdict
            self._emit(
                GateVerdict(dep, now, str(event.target), event.purpose, v.kind, v.reason, v.inputs)
            )
        elif isinstance(event, AlarmChanged):
            self._emit(
                AlarmStateChanged(
                    dep,
                    now,
                    event.alarm,
                    event.role.value,
                    event.state.value,
                    event.reason,
                    event.evidence,
                )
            )
        elif isinstance(event, AnomalyJudged):
            self._emit(
                AnomalyVerdictChanged(
                    dep, now, event.stage_id, event.outcome.value, event.reason, event.evidence
                )
            )
        elif isinstance(event, OverrideGranted):
            skip = tuple(sorted(t.value for t in event.skip))
            self._emit(OverrideRecorded(dep, now, skip, event.reason, event.approver, event.by))

    def _note(self, message: str) -> None:
        self._emit(Note(self.info.deployment_id, self.clock.now(), message))

    def _observe(self, old: State, new: State, now: float) -> None:
        dep = self.info.deployment_id
        if new.phase is not old.phase and new.phase is not Phase.FINISHED:
            self.journal.set_state(dep, new.phase.value, now=now, reason=new.rollback_reason)
            self._emit(DeploymentChanged(dep, now, new.phase.value, None, new.rollback_reason))
        for sid, st in new.stages.items():
            prev = old.stages[sid]
            if st.phase is not prev.phase:
                self._emit(StageChanged(dep, now, sid, st.phase.value))
        if new.hosts is not old.hosts:
            counts = Counter(h.phase.value for h in new.hosts.values())
            self._emit(HostsSummary(dep, now, tuple(sorted(counts.items()))))


_HOST_OP: Mapping[type[Action], HostOp] = {
    DrainHost: HostOp.DRAIN,
    InstallOnHost: HostOp.INSTALL,
    ReturnHost: HostOp.RETURN,
    RollbackHost: HostOp.ROLLBACK,
}
