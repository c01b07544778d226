"""The asyncio driver of the rollout engine: the I/O shell around ``engine.decide``.

One loop takes events from a queue, journals each one, asks the engine what to do,
journals every action's intent, and starts a task per action. Tasks never decide
anything: they carry the action out through the seams (``Transport``,
``LoadBalancer``, ``Gates``, ``Clock``) and turn the outcome into the next event.
Partial failure is data: an error on one host becomes a ``HostFailed`` event.

The host steps themselves (and their retries) are in ``hoststeps.py``; what resume
learns from the fleet before it goes on is in ``reconcile.py``.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fleetwave.config.spec import OverrideTarget
from fleetwave.errors import EngineStalledError, FleetwaveError, JournalError, LeaseRefusedError
from fleetwave.lb.base import LoadBalancer
from fleetwave.observe.events import (
    AlarmsEvaluated,
    DeploymentChanged,
    EventSink,
    HostsOutOfRotation,
    Note,
)
from fleetwave.planning.model import Plan
from fleetwave.rollout.engine import decide
from fleetwave.rollout.events import (
    DeploymentStarted,
    Event,
    GateResult,
    Resumed,
    RollbackContinued,
    RollbackRequested,
    TimerElapsed,
)
from fleetwave.rollout.gates import BakeTarget, Gates
from fleetwave.rollout.hoststeps import DEFAULT_STEP_RETRY, HostAction, HostSteps
from fleetwave.rollout.journal import Journal
from fleetwave.rollout.lease import LeaseKeeper
from fleetwave.rollout.observing import state_events, trail_events
from fleetwave.rollout.reconcile import reconcile
from fleetwave.rollout.scheduler import finish_action
from fleetwave.rollout.seams import Clock, DeploymentInfo, SystemClock, controller_id
from fleetwave.rollout.state import (
    FAILED,
    FORWARD_FAILED,
    INFLIGHT,
    Phase,
    State,
    initial_state,
    out_of_rotation,
)
from fleetwave.rollout.types import (
    Action,
    CheckBlockers,
    CheckGate,
    DrainHost,
    Finish,
    HostFacts,
    InstallOnHost,
    ProbeStage,
    Result,
    ReturnHost,
    RollbackHost,
    Stopped,
    Target,
    Verdict,
    WaitUntil,
)
from fleetwave.rollout.watching import AlarmReading, Watcher
from fleetwave.transport.base import Transport
from fleetwave.transport.retry import RetryPolicy

DEFAULT_GATE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class _StopRequest:
    reason: str


@dataclass(frozen=True)
class _Wake:
    """Wakes the loop once the last task of a stopping runner is gone."""


@dataclass(frozen=True)
class _Failure:
    """A task or the request poller raised: the runner stops (never silently)."""

    what: str
    error: BaseException


@dataclass(frozen=True)
class _FromRequest:
    """A rollback request from another process; consumed once its event is journalled."""

    event: RollbackRequested
    request_id: int


def _by(events: list[Event]) -> str:
    for e in events:
        if isinstance(e, RollbackRequested):
            return e.by
    return "resume"


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
        retry: RetryPolicy = DEFAULT_STEP_RETRY,
        gate_timeout_s: float = DEFAULT_GATE_TIMEOUT_S,
        leases: LeaseKeeper | None = None,
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
        self.gate_timeout_s = gate_timeout_s
        self.state: State = initial_state(info.plan)
        self.steps = HostSteps(
            info,
            journal=journal,
            transport=transport,
            balancers=balancers,
            clock=self.clock,
            retry=retry,
            emit=self._emit,
            leases=leases,
        )
        self._queue: asyncio.Queue[
            Event | _StopRequest | _Wake | _Failure | _FromRequest | BaseException
        ] = asyncio.Queue()
        self._tasks: dict[asyncio.Task[None], Action] = {}
        # Set once the runner stops early: (reason, journal state, error).
        self._stopping: tuple[str, str, BaseException | None] | None = None
        self._finishing: set[str] = set()  # hosts whose steps run on while stopping

    @property
    def leases(self) -> LeaseKeeper | None:
        """The host leases (None: not leased); the host steps carry them."""
        return self.steps.leases

    @leases.setter
    def leases(self, keeper: LeaseKeeper | None) -> None:
        self.steps.leases = keeper

    # -- entry points ---------------------------------------------------------------------

    async def run(self, extra: list[Event] | None = None) -> Finish | Stopped:
        """Start a new deployment (already created in the journal); ``extra`` events
        (an override) are decided right after the start."""
        try:
            await self._take_leases()
        except LeaseRefusedError as exc:
            # Nothing was done: the row says so, and ``resume`` can start it later.
            dep = self.info.deployment_id
            self.journal.set_state(dep, "refused", now=self.clock.now(), reason=str(exc))
            raise
        return await self._loop([DeploymentStarted(self.post_deploy_watch_s), *(extra or [])])

    async def resume(self, extra: list[Event] | None = None) -> Finish | Stopped:
        """Continue from the journal: replay, reconcile with balancers and agents, go on.
        A ``rollback_incomplete`` deployment continues its rollback."""
        self.replay()
        self._consume_journalled_requests()
        st = self.state
        if st.phase is Phase.FINISHED and st.result is Result.ROLLBACK_INCOMPLETE:
            by = _by(extra or [])
            extra = [e for e in extra or [] if not isinstance(e, RollbackRequested)]
            extra.append(RollbackContinued(by))
        if st.phase is Phase.FINISHED and not extra:
            return self._finished_action()
        await self._take_leases()
        if st.phase is Phase.PENDING:
            # The crash came before the first decision: nothing was done yet.
            return await self._loop([DeploymentStarted(self.post_deploy_watch_s), *(extra or [])])
        if st.phase is not Phase.FINISHED:
            # An interrupted or aborted row is running again.
            self.journal.set_state(self.info.deployment_id, st.phase.value, now=self.clock.now())
        facts = await self.reconcile()
        return await self._loop([Resumed(facts), *(extra or [])])

    async def rollback(self, reason: str, by: str) -> Finish | Stopped:
        """Roll back a stopped deployment (crashed, interrupted or finished), or continue
        the rollback of a ``rollback_incomplete`` one."""
        return await self.resume([RollbackRequested(reason, by)])

    def request_rollback(self, reason: str, by: str) -> None:
        """Ask the running loop to roll back (from a signal handler or another task)."""
        self._queue.put_nowait(RollbackRequested(reason, by))

    def request_stop(self, reason: str) -> None:
        """Ask the running loop to stop cleanly (SIGTERM): no new steps; in-flight hosts
        finish their steps and are returned; the deployment stays resumable."""
        self._queue.put_nowait(_StopRequest(reason))

    async def _take_leases(self) -> None:
        """Lease every host before the first step (LeaseRefusedError: another
        deployment holds one; nothing was touched)."""
        if self.leases is not None:
            await self.leases.start(self.steps.hosts.values(), self.steps.session)

    def _consume_journalled_requests(self) -> None:
        """A crash between journalling a request's event and consuming the request
        leaves it pending: its event is replayed, so it is consumed now."""
        pending = {r.id for r in self.journal.pending_requests(self.info.deployment_id)}
        if not pending:
            return
        done = [
            e.request_id
            for _, e in self.journal.events(self.info.deployment_id)
            if isinstance(e, RollbackRequested) and e.request_id in pending
        ]
        self.journal.consume_requests([i for i in done if i is not None], self.clock.now())

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
        phases = FAILED if result.rolled_back else FORWARD_FAILED
        failed = tuple(h.name for h in self.state.hosts.values() if h.phase in phases)
        return finish_action(self.state, failed)

    # -- reconciliation -------------------------------------------------------------------

    async def reconcile(self) -> dict[str, HostFacts]:
        """What the agents and balancers say about the hosts a crash left half-done."""
        return await reconcile(self.state, self.steps)

    # -- the loop -------------------------------------------------------------------------

    async def _loop(self, first: list[Event]) -> Finish | Stopped:
        for e in first:
            self._queue.put_nowait(e)
        dep = self.info.deployment_id
        poller = None
        if self.request_poll_s is not None:
            poller = asyncio.create_task(self._poll_requests(self.request_poll_s))
            poller.add_done_callback(self._helper_done("the rollback-request poller"))
        watch = None
        if self.watcher is not None:
            watch = asyncio.create_task(self._watch(self.watcher))
            watch.add_done_callback(self._helper_done("the watcher"))
        renewer = None
        if self.leases is not None:
            renewer = asyncio.create_task(self.leases.renew_forever())
            renewer.add_done_callback(self._helper_done("the lease renewer"))
        try:
            while True:
                if self._stopping is not None and not self._tasks and self._queue.empty():
                    return self._stopped()
                item = await self._queue.get()
                if isinstance(item, _Wake):
                    continue
                if isinstance(item, BaseException):
                    raise item  # not an Exception (a kill, an exit): nothing to save
                if isinstance(item, _StopRequest):
                    self._begin_stop(item.reason, "interrupted", None)
                    continue
                if isinstance(item, _Failure):
                    self._begin_stop(item.what, "aborted", item.error)
                    continue
                request_id = item.request_id if isinstance(item, _FromRequest) else None
                if isinstance(item, _FromRequest):
                    item = item.event
                now = self.clock.now()
                self._observe_input(item, now)
                actions = self._decide(item, now, request_id)  # durable before any runs
                for action in actions:
                    if isinstance(action, Finish):
                        self._emit(
                            DeploymentChanged(
                                dep, now, "finished", action.result, action.rollback_reason
                            )
                        )
                        if self.leases is not None:
                            await self.leases.release_all()
                        return action
                    self._spawn(action)
                if self._stopping is not None:
                    self._finishing &= {
                        n for n in self._finishing if self.state.hosts[n].phase in INFLIGHT
                    }
                elif not self._tasks and self._queue.empty():
                    raise EngineStalledError(
                        f"deployment {dep}: the engine is waiting with nothing in flight "
                        f"after {type(item).__name__}; the journal is intact, try resume"
                    )
        finally:
            background = [t for t in (poller, watch, renewer) if t is not None]
            for task in [*background, *self._tasks]:
                task.cancel()
            await asyncio.gather(*self._tasks, *background, return_exceptions=True)
            await self.steps.close()

    def _decide(self, item: Event, now: float, request_id: int | None) -> list[Action]:
        """One decision, journalled as one commit: the event, the request it consumes
        (journalled with it, so a crash before the commit replays the request), the
        state change, and the intent of every action that will run, up to the Finish.
        While stopping, only the steps of hosts in flight run; resume re-issues the
        rest."""
        dep = self.info.deployment_id
        taken: list[Action] = []
        with self.journal.transaction():
            self.journal.record_event(dep, item, now)
            if request_id is not None:
                self.journal.consume_requests([request_id], now)
            before = self.state
            self.state, actions = decide(self.state, item, now)
            self._observe(before, self.state, now)
            for action in actions:
                if isinstance(action, Finish):
                    self.journal.record_intent(dep, action, now)
                    self.journal.set_state(
                        dep,
                        "finished",
                        now=now,
                        result=action.result.value,
                        reason=action.rollback_reason,
                    )
                    taken.append(action)
                    break
                if self._stopping is not None and not self._continues(action):
                    continue
                self.journal.record_intent(dep, action, now)
                taken.append(action)
        return taken

    # -- stopping early -------------------------------------------------------------------

    def _begin_stop(self, reason: str, state: str, error: BaseException | None) -> None:
        """Stop starting anything new: timers, gates and probes are cancelled; hosts with
        a step in flight carry on until they are settled (returned, or failed)."""
        if self._stopping is not None:
            self._note(f"while stopping: {reason}")
            return
        self._stopping = (reason, state, error)
        self._finishing = {n for n, h in self.state.hosts.items() if h.phase in INFLIGHT}
        for task, action in list(self._tasks.items()):
            if not isinstance(action, HostAction):
                task.cancel()
        self._note(
            f"stopping: {reason}: no new steps; {len(self._finishing)} host(s) in flight "
            "finish theirs"
        )

    def _continues(self, action: Action) -> bool:
        """While stopping, only the steps of hosts that were in flight go on."""
        return isinstance(action, HostAction) and action.host in self._finishing

    def _stopped(self) -> Stopped:
        assert self._stopping is not None
        reason, state, error = self._stopping
        dep = self.info.deployment_id
        now = self.clock.now()
        left = [(n, r, why) for n, r, why in out_of_rotation(self.state)]
        # Hosts whose step died with the error (others started after the stop never
        # ran a step: resume issues it).
        left += [
            (n, "stopped", f"stopped during {self.state.hosts[n].phase.value}; resume finishes it")
            for n in sorted(self._finishing)
            if self.state.hosts[n].phase in INFLIGHT
        ]
        detail: dict[str, Any] = {"reason": reason, "state": state}
        if error is not None:
            detail["error"] = f"{type(error).__name__}: {error}"
            detail["traceback"] = "".join(traceback.format_exception(error))
        try:
            self.journal.audit(dep, "stopped", detail, now)
            self.journal.set_state(dep, state, now=now, reason=reason)
        except JournalError as exc:  # the journal may be what broke
            self._note(f"could not journal the stop: {exc}")
        if "traceback" in detail:
            self._note(f"{state}: {detail['error']}\n{detail['traceback']}")
        self._emit(HostsOutOfRotation(dep, now, tuple(left)))
        self._emit(DeploymentChanged(dep, now, state, None, reason))
        return Stopped(reason, state, error, tuple((n, why) for n, _, why in left))  # type: ignore[arg-type]

    def _spawn(self, action: Action) -> None:
        task = asyncio.create_task(self._carry_out(action))
        self._tasks[task] = action
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        action = self._tasks.pop(task, None)
        if self._stopping is not None and not self._tasks:
            self._queue.put_nowait(_Wake())
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, Exception):
            self._queue.put_nowait(exc)
        elif exc is not None:
            what = type(action).__name__ if action is not None else "a task"
            if isinstance(action, HostAction):
                what += f" on {action.host}"
            self._queue.put_nowait(_Failure(f"{what} failed: {type(exc).__name__}: {exc}", exc))

    def _helper_done(self, what: str) -> Callable[[asyncio.Task[None]], None]:
        """A done callback for a helper task (the request poller, the watcher): its
        failure stops the deployment and says why. Without the poller a rollback
        request is lost; without the watcher no alarm can roll back."""

        def done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                assert exc is not None
                why = f"{what} failed: {type(exc).__name__}: {exc}"
                self._queue.put_nowait(_Failure(why, exc))

        return done

    async def _carry_out(self, action: Action) -> None:
        event = await self._execute(action)
        if event is not None:
            self._queue.put_nowait(event)

    async def _poll_requests(self, every: float) -> None:
        seen: set[int] = set()
        while True:
            await asyncio.sleep(every)
            for req in self.journal.pending_requests(self.info.deployment_id):
                if req.kind == "rollback" and req.id not in seen:
                    seen.add(req.id)
                    event = RollbackRequested(req.reason, req.by, req.id)
                    self._queue.put_nowait(_FromRequest(event, req.id))

    async def _watch(self, watcher: Watcher) -> None:
        """The watcher task: its alarm changes are engine events like any other."""

        def readings(at: float, rows: tuple[AlarmReading, ...]) -> None:
            self._emit(AlarmsEvaluated(self.info.deployment_id, at, rows))

        async def sleep(seconds: float) -> None:
            await self.clock.sleep_until(self.clock.now() + seconds)

        await watcher.run(lambda: self.state, self._queue.put_nowait, readings, sleep)

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
                ),
                self.gates.bake_time_limit_s(bake_target),
            )
            return GateResult(action.target, "bake", v)
        if isinstance(action, ProbeStage):
            return await self.steps.probe(self.state.stage(action.stage_id))
        if isinstance(action, DrainHost | InstallOnHost | ReturnHost | RollbackHost):
            return await self.steps.run(action)
        return None

    async def _gate(self, check: Awaitable[Verdict], own_limit_s: float = 0.0) -> Verdict:
        # A gate that cannot answer (in time) is a reason to wait, never to pass. Gates
        # with limits of their own (pre-production tests) get them on top.
        deadline = self.gate_timeout_s + own_limit_s
        try:
            async with asyncio.timeout(deadline):
                return await check
        except TimeoutError:
            return Verdict.wait(f"gate gave no answer within {deadline:g} s")
        except FleetwaveError as exc:
            return Verdict.wait(f"gate error: {exc}")

    def _bake_target(self, target: Target) -> BakeTarget:
        if target.is_wave:
            wave = next(w for w in self.info.plan.waves if w.index == target.wave_index)
            return BakeTarget(target, wave.bake_after, wave=wave)
        stage = self.state.stage(target.stage_id)
        return BakeTarget(target, stage.bake, stage=stage)

    # -- observability --------------------------------------------------------------------

    def _emit(self, event: Any) -> None:
        if self.sink is not None:
            self.sink.emit(event)

    def _observe_input(self, event: Event, now: float) -> None:
        """The decision trail in the event log: verdicts, alarm changes, overrides."""
        for observed in trail_events(self.info.deployment_id, event, now):
            self._emit(observed)

    def _note(self, message: str) -> None:
        self._emit(Note(self.info.deployment_id, self.clock.now(), message))

    def _observe(self, old: State, new: State, now: float) -> None:
        dep = self.info.deployment_id
        if new.phase is not old.phase and new.phase is not Phase.FINISHED:
            self.journal.set_state(dep, new.phase.value, now=now, reason=new.rollback_reason)
        for observed in state_events(dep, old, new, now):
            self._emit(observed)


__all__ = [
    "DEFAULT_GATE_TIMEOUT_S",
    "DEFAULT_STEP_RETRY",
    "Clock",
    "DeploymentInfo",
    "Runner",
    "SystemClock",
    "controller_id",
    "replay",
]
