"""The rollout engine: a pure state machine over deployment -> wave -> stage -> host.

``decide(state, event, now) -> (new_state, actions)`` is the whole interface. It does
no I/O, reads no clock and knows nothing of asyncio: the runner (``runner.py``) feeds
it events (a host drained, a gate answered, a timer elapsed) and carries out the
actions it returns. Replaying the same events with the same ``now`` values rebuilds
the same state, which is how ``fleetwave resume`` recovers after a crash.

This module turns each event into steps; the rest lives in its own modules:

* ``state``: the phases and the frozen state records;
* ``transitions``: the host and stage transition tables and the functions that walk
  them;
* ``scheduler``: the sliding window, the failure budget, the end of the deployment;
* ``resume``: settling and re-issuing what a crash left half done.
"""

from __future__ import annotations

from dataclasses import replace

from fleetwave.rollout._tx import Tx
from fleetwave.rollout.events import (
    AlarmChanged,
    AnomalyJudged,
    DeploymentStarted,
    Event,
    GateResult,
    HostDrained,
    HostFailed,
    HostInstalled,
    HostReturned,
    HostRolledBack,
    OverrideGranted,
    Resumed,
    RollbackContinued,
    RollbackRequested,
    StageProbed,
    TimerElapsed,
)
from fleetwave.rollout.resume import resumed
from fleetwave.rollout.scheduler import charge_failure, settle
from fleetwave.rollout.state import Phase, StagePhase, State
from fleetwave.rollout.transitions import (
    StageStep,
    Step,
    anomaly_judged,
    begin_rollback,
    check_alarms,
    continue_rollback,
    current_wave_target,
    host_failed,
    host_step,
    next_wave,
    recheck_stage,
    skip_held,
    stage_step,
    start_wave,
)
from fleetwave.rollout.types import (
    Action,
    BeforeRelease,
    CheckBlockers,
    CheckGate,
    DrainHost,
    InstallOnHost,
    ProbeStage,
    ReturnHost,
    TimerKey,
    TimerKind,
    WaitUntil,
)

#: The stage phase a gate's answer (by purpose) or a timer (by kind) is meant for; an
#: answer that finds its stage in another phase is late, and ignored.
_BLOCKED = frozenset((StagePhase.CHECKING_BLOCKERS, StagePhase.HELD))
_GATE_PHASE = {"blockers": _BLOCKED, "bake": frozenset((StagePhase.BAKING,))}
_TIMER_PHASE = {
    TimerKind.START: frozenset((StagePhase.WAITING_START,)),
    TimerKind.BLOCKERS: _BLOCKED,
    TimerKind.BAKE: frozenset((StagePhase.BAKING,)),
}


def decide(state: State, event: Event, now: float) -> tuple[State, list[Action]]:
    """Apply ``event`` at time ``now``; return the new state and the actions to run."""
    tx = Tx(state, now)
    _dispatch(tx, event)
    check_alarms(tx)
    return settle(tx.commit(), tx.actions, now)


def _dispatch(tx: Tx, event: Event) -> None:
    st = tx.state
    if isinstance(event, DeploymentStarted):
        if st.phase is Phase.PENDING:
            tx.state = replace(
                st, phase=Phase.RUNNING, wave=0, post_deploy_watch_s=event.post_deploy_watch_s
            )
            start_wave(tx)
    elif isinstance(event, AlarmChanged):
        alarms = {**st.alarms, (event.role, event.alarm): (event.state, event.reason)}
        tx.state = replace(st, alarms=alarms)
    elif isinstance(event, AnomalyJudged):
        anomaly_judged(tx, event)
    elif isinstance(event, OverrideGranted):
        tx.state = replace(st, override=event)
    elif isinstance(event, RollbackRequested):
        begin_rollback(tx, f"{event.reason} (by {event.by})")
    elif isinstance(event, RollbackContinued):
        continue_rollback(tx)
    elif isinstance(event, HostDrained):
        host_step(tx, event.host, Step.DRAINED)
    elif isinstance(event, HostInstalled):
        tx.set_host(event.host, release=event.release, before=BeforeRelease(event.before))
        host_step(tx, event.host, Step.INSTALLED)
    elif isinstance(event, HostReturned):
        host_step(tx, event.host, Step.RETURNED)
    elif isinstance(event, HostRolledBack):
        host_step(tx, event.host, Step.ROLLED_BACK)
    elif isinstance(event, HostFailed):
        if host_failed(tx, event):
            charge_failure(tx, tx.host(event.host).stage_id)
    elif isinstance(event, StageProbed):
        _stage_probed(tx, event)
    elif isinstance(event, GateResult):
        _gate_result(tx, event)
    elif isinstance(event, TimerElapsed):
        _timer(tx, event.key)
    elif isinstance(event, Resumed):
        resumed(tx, event)


def _stage_probed(tx: Tx, event: StageProbed) -> None:
    if tx.state.phase is not Phase.RUNNING:
        return
    if tx.stage(event.stage_id).phase is not StagePhase.PROBING:
        return
    for h in tx.stage_hosts(event.stage_id):
        if h.name in event.held:
            skip_held(tx, h.name, event.held[h.name])
        else:
            tx.set_host(h.name, serving=h.name in event.serving)
    stage_step(tx, event.stage_id, StageStep.PROBED)


def _gate_result(tx: Tx, event: GateResult) -> None:
    if tx.state.phase is not Phase.RUNNING:
        return
    target = event.target
    v = event.verdict
    if v.kind == "fail":
        begin_rollback(tx, f"{event.purpose} gate failed for {target}: {v.reason}")
        return
    if target.is_wave:
        if event.purpose != "bake" or tx.state.wave_bake_start is None:
            return
        if target != current_wave_target(tx):
            return
        tx.state = replace(tx.state, wave_waiting=v.reason if v.waits else None)
    elif tx.stage(target.stage_id).phase not in _GATE_PHASE[event.purpose]:
        return
    else:
        tx.set_stage(target.stage_id, verdict=v.kind, waiting=v.reason if v.waits else None)
    if v.waits:
        # hold and wait differ in what they say, not in what they do: ask again later.
        at = v.retry_at if v.retry_at is not None else tx.now + tx.state.poll_s
        key = TimerKey(TimerKind(event.purpose), target)
        if v.kind == "hold" and event.purpose == "blockers":
            stage_step(tx, target.stage_id, StageStep.HOLD)
        tx.actions.append(WaitUntil(max(at, tx.now), key))
    elif target.is_wave:
        next_wave(tx)
    elif event.purpose == "blockers":
        stage_step(tx, target.stage_id, StageStep.CLEARED)
    else:
        stage_step(tx, target.stage_id, StageStep.BAKED)


def _timer(tx: Tx, key: TimerKey) -> None:
    if tx.state.phase is not Phase.RUNNING:
        return
    target = key.target
    if key.kind is TimerKind.WATCH:
        return  # the scheduler finishes the deployment once the watch is over
    if target.is_wave:
        if key.kind is TimerKind.BAKE and tx.state.wave_bake_start is not None:
            tx.actions.append(CheckGate(target, tx.state.wave_bake_start))
        return
    if tx.stage(target.stage_id).phase in _TIMER_PHASE[key.kind]:
        recheck_stage(tx, tx.state.stage(target.stage_id))


def is_forward(action: Action) -> bool:
    """True for actions that move the deployment forward (never emitted once rolling back)."""
    if isinstance(action, DrainHost | ReturnHost):
        return not action.rollback
    return isinstance(action, InstallOnHost | ProbeStage | CheckBlockers | CheckGate)


__all__ = ["decide", "is_forward"]
