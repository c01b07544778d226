"""The rollout engine: a pure state machine over deployment -> wave -> stage -> host.

``decide(state, event, now) -> (new_state, actions)`` is the whole interface. It does
no I/O, reads no clock and knows nothing of asyncio: the runner (``runner.py``) feeds
it events (a host drained, a gate answered, a timer elapsed) and carries out the
actions it returns. Replaying the same events with the same ``now`` values rebuilds
the same state, which is how ``fleetwave resume`` recovers after a crash.

Every host transition lives in :data:`HOST_TRANSITIONS`; the scheduler only decides
*when* a host may start (the sliding window under ``max_out``/``min_serving``), never
*where* it goes next.

Counting rules (documented in docs/engine.md):

* out of service (capped by ``max_out``, or ``rollback_batch`` while rolling back):
  hosts with a step in flight;
* serving (kept at or above ``min_serving``): hosts the stage probe found healthy and
  in rotation, minus those taken out since, plus those returned since. Failed hosts
  and hosts that were unhealthy at stage start do not serve.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from fleetwave.planning.model import Plan, Stage
from fleetwave.rollout.types import (
    Action,
    BeforeRelease,
    CheckBlockers,
    CheckGate,
    DeploymentStarted,
    DrainHost,
    Event,
    Finish,
    GateResult,
    HostDrained,
    HostFailed,
    HostInstalled,
    HostReturned,
    HostRolledBack,
    InstallOnHost,
    ProbeStage,
    Resumed,
    ReturnHost,
    RollbackHost,
    RollbackRequested,
    StageProbed,
    TimerElapsed,
    Verdict,
    WaitUntil,
)

DEFAULT_POLL_S = 5.0


class Phase(enum.Enum):
    """The deployment as a whole."""

    PENDING = "pending"
    RUNNING = "running"
    ROLLING_BACK = "rolling_back"
    FINISHED = "finished"


class Result(enum.Enum):
    SUCCEEDED = "succeeded"
    SUCCEEDED_WITH_FAILURES = "succeeded_with_failures"  # failures inside the budget
    ROLLED_BACK = "rolled_back"
    ROLLBACK_INCOMPLETE = "rollback_incomplete"  # some hosts could not be rolled back


class StagePhase(enum.Enum):
    PENDING = "pending"
    WAITING_START = "waiting_start"  # before Stage.earliest_start
    CHECKING_BLOCKERS = "checking_blockers"
    PROBING = "probing"  # reading LB + agent health of every host
    ROLLING = "rolling"
    BAKING = "baking"
    DONE = "done"


class HostPhase(enum.Enum):
    PENDING = "pending"
    DRAINING = "draining"
    INSTALLING = "installing"
    RETURNING = "returning"
    DONE = "done"
    FAILED = "failed"  # stays drained; reported
    RB_PENDING = "rb_pending"
    RB_DRAINING = "rb_draining"
    RB_ROLLING_BACK = "rb_rolling_back"
    RB_RETURNING = "rb_returning"
    ROLLED_BACK = "rolled_back"
    RB_FAILED = "rb_failed"  # could not be rolled back; stays drained; reported


class Step(enum.Enum):
    """What happened to a host; the input alphabet of :data:`HOST_TRANSITIONS`."""

    START = "start"
    DRAINED = "drained"
    INSTALLED = "installed"
    RETURNED = "returned"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    ROLLBACK = "rollback"  # the deployment began rolling back


H = HostPhase
_FWD_INFLIGHT = (H.DRAINING, H.INSTALLING, H.RETURNING)
_RB_INFLIGHT = (H.RB_DRAINING, H.RB_ROLLING_BACK, H.RB_RETURNING)
INFLIGHT = frozenset(_FWD_INFLIGHT + _RB_INFLIGHT)

#: Every host transition: (phase, step, deployment rolling back?) -> next phase.
#: A pair missing from the table is ignored (a late or duplicated outcome).
HOST_TRANSITIONS: Mapping[tuple[HostPhase, Step, bool], HostPhase] = {
    # forward
    (H.PENDING, Step.START, False): H.DRAINING,
    (H.DRAINING, Step.DRAINED, False): H.INSTALLING,
    (H.INSTALLING, Step.INSTALLED, False): H.RETURNING,
    (H.RETURNING, Step.RETURNED, False): H.DONE,
    **{(p, Step.FAILED, False): H.FAILED for p in _FWD_INFLIGHT},
    # the rollback begins: settled hosts queue up, in-flight ones finish their step
    (H.DONE, Step.ROLLBACK, True): H.RB_PENDING,
    (H.FAILED, Step.ROLLBACK, True): H.RB_PENDING,
    # a forward step that finishes after the rollback began is never continued
    (H.DRAINING, Step.DRAINED, True): H.RB_RETURNING,  # nothing installed yet
    (H.INSTALLING, Step.INSTALLED, True): H.RB_ROLLING_BACK,  # still drained
    (H.RETURNING, Step.RETURNED, True): H.RB_PENDING,
    **{(p, Step.FAILED, True): H.RB_PENDING for p in _FWD_INFLIGHT},
    # rollback
    (H.RB_PENDING, Step.START, True): H.RB_DRAINING,
    (H.RB_DRAINING, Step.DRAINED, True): H.RB_ROLLING_BACK,
    (H.RB_ROLLING_BACK, Step.ROLLED_BACK, True): H.RB_RETURNING,
    (H.RB_RETURNING, Step.RETURNED, True): H.ROLLED_BACK,
    **{(p, Step.FAILED, True): H.RB_FAILED for p in _RB_INFLIGHT},
}


@dataclass(frozen=True)
class HostState:
    name: str
    stage_id: str
    has_lb: bool
    phase: HostPhase = HostPhase.PENDING
    serving: bool = False  # set by the stage probe, then by our own steps
    install_issued: bool = False
    before: BeforeRelease | None = None  # the release it ran before our install
    release: str | None = None  # the release our install left current
    failure: str | None = None  # "step: kind: message" of the last failure

    @property
    def touched(self) -> bool:
        return self.phase is not HostPhase.PENDING


@dataclass(frozen=True)
class StageState:
    id: str
    phase: StagePhase = StagePhase.PENDING
    bake_start: float | None = None
    failures: int = 0


@dataclass(frozen=True)
class State:
    """Everything the engine knows. Treat as immutable: ``decide`` returns a new one."""

    plan: Plan
    phase: Phase
    wave: int  # index into plan.waves of the wave in progress
    wave_bake_start: float | None
    stages: Mapping[str, StageState]
    hosts: Mapping[str, HostState]
    result: Result | None = None
    rollback_reason: str | None = None
    poll_s: float = DEFAULT_POLL_S
    index: Mapping[str, Stage] = field(default_factory=dict, compare=False, repr=False)

    def stage_hosts(self, stage_id: str) -> list[HostState]:
        return [self.hosts[h.name] for h in self.index[stage_id].hosts]

    def stage(self, stage_id: str) -> Stage:
        return self.index[stage_id]


def initial_state(plan: Plan, *, poll_s: float = DEFAULT_POLL_S) -> State:
    """The state of a deployment of ``plan`` that has not started."""
    hosts = {
        h.name: HostState(name=h.name, stage_id=s.id, has_lb=h.lb is not None)
        for s in plan.stages()
        for h in s.hosts
    }
    stages = {s.id: StageState(id=s.id) for s in plan.stages()}
    index = {s.id: s for s in plan.stages()}
    return State(plan, Phase.PENDING, 0, None, stages, hosts, poll_s=poll_s, index=index)


def wave_target(index: int) -> str:
    """The gate target id of the bake after wave ``index``."""
    return f"wave:{index}"


@dataclass
class _Tx:
    """One decision in progress: copy-on-write maps plus the actions emitted."""

    state: State
    now: float
    hosts: dict[str, HostState] = field(default_factory=dict)
    stages: dict[str, StageState] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)

    def host(self, name: str) -> HostState:
        return self.hosts.get(name) or self.state.hosts[name]

    def stage(self, stage_id: str) -> StageState:
        return self.stages.get(stage_id) or self.state.stages[stage_id]

    def set_stage(self, stage_id: str, **changes: object) -> None:
        self.stages[stage_id] = replace(self.stage(stage_id), **changes)  # type: ignore[arg-type]

    def stage_hosts(self, stage_id: str) -> list[HostState]:
        return [self.host(h.name) for h in self.state.stage(stage_id).hosts]

    def commit(self) -> State:
        hosts = self.state.hosts
        if self.hosts:
            hosts = {**hosts, **self.hosts}
        stages = self.state.stages
        if self.stages:
            stages = {**stages, **self.stages}
        return replace(self.state, hosts=hosts, stages=stages)


def decide(state: State, event: Event, now: float) -> tuple[State, list[Action]]:
    """Apply ``event`` at time ``now``; return the new state and the actions to run."""
    tx = _Tx(state, now)
    _dispatch(tx, event)
    new = tx.commit()
    new, more = _settle(new, tx.actions, now)
    return new, more


def _dispatch(tx: _Tx, event: Event) -> None:
    st = tx.state
    if isinstance(event, DeploymentStarted):
        if st.phase is Phase.PENDING:
            tx.state = replace(st, phase=Phase.RUNNING, wave=0)
            _start_wave(tx)
    elif isinstance(event, RollbackRequested):
        _begin_rollback(tx, f"{event.reason} (by {event.by})")
    elif isinstance(event, HostDrained):
        _host_step(tx, event.host, Step.DRAINED)
    elif isinstance(event, HostInstalled):
        tx.hosts[event.host] = replace(
            tx.host(event.host), release=event.release, before=BeforeRelease(event.before)
        )
        _host_step(tx, event.host, Step.INSTALLED)
    elif isinstance(event, HostReturned):
        _host_step(tx, event.host, Step.RETURNED)
    elif isinstance(event, HostRolledBack):
        _host_step(tx, event.host, Step.ROLLED_BACK)
    elif isinstance(event, HostFailed):
        _host_failed(tx, event)
    elif isinstance(event, StageProbed):
        _stage_probed(tx, event)
    elif isinstance(event, GateResult):
        _gate_result(tx, event)
    elif isinstance(event, TimerElapsed):
        _timer(tx, event.key)
    elif isinstance(event, Resumed):
        _resumed(tx, event)


# -- hosts -----------------------------------------------------------------------------


def _host_step(tx: _Tx, name: str, step: Step) -> None:
    """Move one host along :data:`HOST_TRANSITIONS` and emit the next phase's action."""
    rolling_back = tx.state.phase is Phase.ROLLING_BACK
    host = tx.host(name)
    nxt = HOST_TRANSITIONS.get((host.phase, step, rolling_back))
    if nxt is None:
        return
    changes: dict[str, object] = {"phase": nxt}
    if step is Step.START or nxt in (H.DRAINING, H.RB_DRAINING, H.INSTALLING):
        changes["serving"] = False
    if step is Step.RETURNED:
        changes["serving"] = True
    if nxt is H.INSTALLING:
        changes["install_issued"] = True
    tx.hosts[name] = host = replace(host, **changes)  # type: ignore[arg-type]
    _enter(tx, host)


def _enter(tx: _Tx, host: HostState) -> None:
    """Emit the action a host's new phase needs, or pass through a step that does not
    apply to it (no balancer: no drain/return; nothing installed: no rollback op)."""
    p = host.phase
    if p in (H.DRAINING, H.RB_DRAINING):
        if not host.has_lb:
            _host_step(tx, host.name, Step.DRAINED)
        else:
            tx.actions.append(DrainHost(host.name, host.stage_id, rollback=p is H.RB_DRAINING))
    elif p is H.INSTALLING:
        tx.actions.append(InstallOnHost(host.name, host.stage_id))
    elif p in (H.RETURNING, H.RB_RETURNING):
        if not host.has_lb:
            _host_step(tx, host.name, Step.RETURNED)
        else:
            tx.actions.append(ReturnHost(host.name, host.stage_id, rollback=p is H.RB_RETURNING))
    elif p is H.RB_ROLLING_BACK:
        # The runner reads the release before installing and reports it with every
        # outcome, so an unknown "before" means nothing was installed.
        if not host.install_issued or host.before is None:
            _host_step(tx, host.name, Step.ROLLED_BACK)
        else:
            tx.actions.append(RollbackHost(host.name, host.stage_id, host.before.release))


def _host_failed(tx: _Tx, event: HostFailed) -> None:
    host = tx.host(event.host)
    if host.phase not in INFLIGHT:
        return
    changes: dict[str, object] = {"failure": f"{event.step}: {event.kind}: {event.message}"}
    if event.before is not None and host.before is None:
        changes["before"] = event.before
    tx.hosts[host.name] = replace(host, **changes)  # type: ignore[arg-type]
    forward_failure = host.phase in _FWD_INFLIGHT and tx.state.phase is Phase.RUNNING
    _host_step(tx, host.name, Step.FAILED)
    if forward_failure:
        stage = tx.stage(host.stage_id)
        tx.set_stage(stage.id, failures=stage.failures + 1)
        budget = tx.state.stage(stage.id).failure_budget
        if stage.failures + 1 > budget:
            _begin_rollback(
                tx, f"stage {stage.id}: {stage.failures + 1} failed hosts, budget {budget}"
            )


def _begin_rollback(tx: _Tx, reason: str) -> None:
    st = tx.state
    if st.phase is Phase.ROLLING_BACK:
        return
    if st.phase is Phase.FINISHED and st.result not in (
        Result.SUCCEEDED,
        Result.SUCCEEDED_WITH_FAILURES,
    ):
        return
    tx.state = replace(st, phase=Phase.ROLLING_BACK, rollback_reason=reason, result=None)
    for name in st.hosts:
        _host_step(tx, name, Step.ROLLBACK)


# -- stages, waves, gates ------------------------------------------------------------------


def _start_wave(tx: _Tx) -> None:
    wave = tx.state.plan.waves[tx.state.wave]
    for region in wave.regions:
        if region.stages:
            _start_stage(tx, region.stages[0])


def _start_stage(tx: _Tx, stage: Stage) -> None:
    if stage.earliest_start is not None and stage.earliest_start.timestamp() > tx.now:
        tx.set_stage(stage.id, phase=StagePhase.WAITING_START)
        tx.actions.append(WaitUntil(stage.earliest_start.timestamp(), f"start:{stage.id}"))
        return
    tx.set_stage(stage.id, phase=StagePhase.CHECKING_BLOCKERS)
    tx.actions.append(CheckBlockers(stage.id))


def _stage_probed(tx: _Tx, event: StageProbed) -> None:
    if tx.state.phase is not Phase.RUNNING:
        return
    if tx.stage(event.stage_id).phase is not StagePhase.PROBING:
        return
    for h in tx.stage_hosts(event.stage_id):
        tx.hosts[h.name] = replace(h, serving=h.name in event.serving)
    tx.set_stage(event.stage_id, phase=StagePhase.ROLLING)


def _gate_result(tx: _Tx, event: GateResult) -> None:
    if tx.state.phase is not Phase.RUNNING:
        return
    target = event.target
    v = event.verdict
    if v.kind == "fail":
        _begin_rollback(tx, f"{event.purpose} gate failed for {target}: {v.reason}")
        return
    is_wave = target.startswith("wave:")
    expected = StagePhase.CHECKING_BLOCKERS if event.purpose == "blockers" else StagePhase.BAKING
    if is_wave:
        if event.purpose != "bake" or tx.state.wave_bake_start is None:
            return
        if target != wave_target(tx.state.plan.waves[tx.state.wave].index):
            return
    elif tx.stage(target).phase is not expected:
        return
    if v.kind == "wait":
        at = v.retry_at if v.retry_at is not None else tx.now + tx.state.poll_s
        tx.actions.append(WaitUntil(max(at, tx.now), f"{event.purpose}:{target}"))
        return
    if event.purpose == "blockers":
        tx.set_stage(target, phase=StagePhase.PROBING)
        tx.actions.append(ProbeStage(target))
    elif is_wave:
        _next_wave(tx)
    else:
        _stage_done(tx, target)


def _timer(tx: _Tx, key: str) -> None:
    if tx.state.phase is not Phase.RUNNING:
        return
    kind, _, target = key.partition(":")
    if kind == "start" and tx.stage(target).phase is StagePhase.WAITING_START:
        _start_stage(tx, tx.state.stage(target))
    elif kind == "blockers" and tx.stage(target).phase is StagePhase.CHECKING_BLOCKERS:
        tx.actions.append(CheckBlockers(target))
    elif kind == "bake":
        if target.startswith("wave:") and tx.state.wave_bake_start is not None:
            tx.actions.append(CheckGate(target, tx.state.wave_bake_start))
        elif not target.startswith("wave:"):
            st = tx.stage(target)
            if st.phase is StagePhase.BAKING and st.bake_start is not None:
                tx.actions.append(CheckGate(target, st.bake_start))


def _stage_done(tx: _Tx, stage_id: str) -> None:
    tx.set_stage(stage_id, phase=StagePhase.DONE)
    stage = tx.state.stage(stage_id)
    wave = tx.state.plan.waves[tx.state.wave]
    region = next(r for r in wave.regions if r.region == stage.region and stage in r.stages)
    idx = region.stages.index(stage)
    if idx + 1 < len(region.stages):
        _start_stage(tx, region.stages[idx + 1])
        return
    all_done = all(tx.stage(s.id).phase is StagePhase.DONE for r in wave.regions for s in r.stages)
    if all_done:
        tx.state = replace(tx.state, wave_bake_start=tx.now)
        tx.actions.append(CheckGate(wave_target(wave.index), tx.now))


def _next_wave(tx: _Tx) -> None:
    tx.state = replace(tx.state, wave=tx.state.wave + 1, wave_bake_start=None)
    if tx.state.wave < len(tx.state.plan.waves):
        _start_wave(tx)


def _resumed(tx: _Tx, event: Resumed) -> None:
    """Re-issue every half-done step (all idempotent) and every pending check."""
    st = tx.state
    if st.phase is Phase.PENDING:
        return
    # Facts (only for hosts whose agent answered) settle an install or a rollback that
    # happened but whose outcome the crash lost; everything else is simply re-issued.
    settled: set[str] = set()
    for name, fact in event.facts.items():
        host = tx.host(name)
        if host.phase is H.INSTALLING and host.before is None and fact.before_known:
            host = replace(host, before=BeforeRelease(fact.before))
            tx.hosts[name] = host
        before = host.before
        if host.phase is H.INSTALLING and before is not None and fact.current != before.release:
            tx.hosts[name] = replace(host, release=fact.current)
            _host_step(tx, name, Step.INSTALLED)
            settled.add(name)
        elif (
            host.phase is H.RB_ROLLING_BACK
            and before is not None
            and fact.current == before.release
        ):
            _host_step(tx, name, Step.ROLLED_BACK)
            settled.add(name)
    for name in tx.state.hosts:
        host = tx.host(name)
        if name not in settled and host.phase in INFLIGHT:
            _enter(tx, host)
    if tx.state.phase is not Phase.RUNNING:
        return
    for s in st.plan.stages():
        ss = tx.stage(s.id)
        if ss.phase is StagePhase.WAITING_START:
            _start_stage(tx, s)
        elif ss.phase is StagePhase.CHECKING_BLOCKERS:
            tx.actions.append(CheckBlockers(s.id))
        elif ss.phase is StagePhase.PROBING:
            tx.actions.append(ProbeStage(s.id))
        elif ss.phase is StagePhase.BAKING and ss.bake_start is not None:
            tx.actions.append(CheckGate(s.id, ss.bake_start))
    if tx.state.wave_bake_start is not None:
        wave = st.plan.waves[tx.state.wave]
        tx.actions.append(CheckGate(wave_target(wave.index), tx.state.wave_bake_start))


# -- scheduling: the sliding window ----------------------------------------------------


def _settle(state: State, actions: list[Action], now: float) -> tuple[State, list[Action]]:
    """Start every host the window allows, close finished stages, finish the deployment.

    Runs to a fixed point: finishing a stage can start the next one, and so on.
    """
    for _ in range(4 * len(state.stages) + 8):
        tx = _Tx(state, now)
        if state.phase is Phase.RUNNING:
            _schedule_forward(tx)
        elif state.phase is Phase.ROLLING_BACK:
            _schedule_rollback(tx)
        changed = bool(tx.hosts or tx.stages or tx.actions) or tx.state is not state
        actions.extend(tx.actions)
        if not changed:
            break
        state = tx.commit()
    return state, actions


def _fill_window(
    tx: _Tx, hosts: list[HostState], candidates: list[HostState], cap: int, min_serving: int
) -> None:
    """Start candidates while fewer than ``cap`` hosts are in flight and taking one more
    out keeps ``min_serving`` serving. Hosts already out of rotation go first: they cost
    no serving capacity."""
    inflight = sum(1 for h in hosts if h.phase in INFLIGHT)
    serving = sum(1 for h in hosts if h.serving)
    for host in sorted(candidates, key=lambda h: h.serving):
        if inflight >= cap:
            return
        if host.serving and serving - 1 < min_serving:
            continue
        _host_step(tx, host.name, Step.START)
        after = tx.host(host.name)  # steps that do not apply may have passed through
        inflight += after.phase in INFLIGHT
        serving += int(after.serving) - int(host.serving)


def _schedule_forward(tx: _Tx) -> None:
    for stage in tx.state.index.values():
        if tx.state.phase is not Phase.RUNNING:
            return
        if tx.stage(stage.id).phase is not StagePhase.ROLLING:
            continue
        b = stage.batching
        hosts = tx.stage_hosts(stage.id)
        pending = [h for h in hosts if h.phase is H.PENDING]
        if pending:
            _fill_window(tx, hosts, pending, b.max_out, b.min_serving)
            hosts = tx.stage_hosts(stage.id)
        if any(h.phase in INFLIGHT for h in hosts):
            continue
        if any(h.phase is H.PENDING for h in hosts):
            _begin_rollback(
                tx,
                f"stage {stage.id}: cannot take another host out without leaving fewer "
                f"than {b.min_serving} serving",
            )
            return
        tx.set_stage(stage.id, phase=StagePhase.BAKING, bake_start=tx.now)
        tx.actions.append(CheckGate(stage.id, tx.now))
    if tx.state.phase is Phase.RUNNING and tx.state.wave >= len(tx.state.plan.waves):
        failed = _hosts_in(tx, H.FAILED)
        result = Result.SUCCEEDED_WITH_FAILURES if failed else Result.SUCCEEDED
        _finish(tx, result, failed)


def _schedule_rollback(tx: _Tx) -> None:
    # Per region, the latest touched stage first: undo in the reverse order of rollout.
    active_regions: set[str] = set()
    for stage in reversed(list(tx.state.index.values())):
        hosts = tx.stage_hosts(stage.id)
        waiting = [h for h in hosts if h.phase is H.RB_PENDING]
        busy = any(h.phase in INFLIGHT for h in hosts)
        if not waiting and not busy:
            continue
        if stage.region in active_regions:
            continue
        active_regions.add(stage.region)
        b = stage.batching
        if waiting:
            _fill_window(tx, hosts, waiting, b.rollback_batch, b.min_serving)
            hosts = tx.stage_hosts(stage.id)
        if not any(h.phase in INFLIGHT for h in hosts):
            for h in hosts:
                if h.phase is H.RB_PENDING:
                    tx.hosts[h.name] = replace(
                        h,
                        phase=H.RB_FAILED,
                        failure=f"rollback: blocked: would leave fewer than "
                        f"{b.min_serving} hosts serving",
                    )
    if not any(
        tx.host(n).phase in INFLIGHT or tx.host(n).phase is H.RB_PENDING for n in tx.state.hosts
    ):
        failed = _hosts_in(tx, H.RB_FAILED)
        _finish(tx, Result.ROLLBACK_INCOMPLETE if failed else Result.ROLLED_BACK, failed)


def _hosts_in(tx: _Tx, phase: HostPhase) -> tuple[str, ...]:
    return tuple(n for n in tx.state.hosts if tx.host(n).phase is phase)


def _finish(tx: _Tx, result: Result, failed: tuple[str, ...]) -> None:
    tx.state = replace(tx.state, phase=Phase.FINISHED, result=result)
    reasons = tuple((n, tx.host(n).failure or "") for n in failed)
    tx.actions.append(Finish(result.value, reasons, tx.state.rollback_reason))


def is_forward(action: Action) -> bool:
    """True for actions that move the deployment forward (never emitted once rolling back)."""
    if isinstance(action, DrainHost | ReturnHost):
        return not action.rollback
    return isinstance(action, InstallOnHost | ProbeStage | CheckBlockers | CheckGate)


__all__ = [
    "HOST_TRANSITIONS",
    "HostPhase",
    "HostState",
    "Phase",
    "Result",
    "StagePhase",
    "StageState",
    "State",
    "Step",
    "Verdict",
    "decide",
    "initial_state",
    "is_forward",
    "wave_target",
]
