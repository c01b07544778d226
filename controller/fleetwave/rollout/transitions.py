"""Every transition of the rollout, in two tables, and the pure functions that walk them.

:data:`HOST_TRANSITIONS` maps ``(host phase, step, rolling back?)`` and
:data:`STAGE_TRANSITIONS` maps ``(stage phase, step)`` to the next phase. A pair missing
from a table is ignored (a late or duplicated outcome). Entering a phase emits the
action that phase needs (:data:`_HOST_ENTRY`, :func:`_enter_stage`), so a new phase is
one table row plus, if it needs one, one action.

The scheduler (``scheduler.py``) decides *when* a host may take a step; this module
decides *where* the step leads.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import replace

from fleetwave.config.alarm_expr import AlarmState
from fleetwave.planning.model import Stage, StageKind
from fleetwave.rollout._tx import Tx
from fleetwave.rollout.events import AnomalyJudged, HostFailed
from fleetwave.rollout.state import (
    FORWARD_INFLIGHT,
    INFLIGHT,
    ROLLBACK_INFLIGHT,
    HostPhase,
    HostState,
    Phase,
    StagePhase,
    State,
)
from fleetwave.rollout.types import (
    AlarmRole,
    AnomalyOutcome,
    CheckBlockers,
    CheckGate,
    DrainHost,
    FailureKind,
    HostOp,
    InstallOnHost,
    ProbeStage,
    Result,
    ReturnHost,
    RollbackHost,
    Target,
    TimerKey,
    TimerKind,
    WaitUntil,
)

# -- hosts ------------------------------------------------------------------------------


class Step(enum.Enum):
    """What happened to a host; the input alphabet of :data:`HOST_TRANSITIONS`."""

    START = "start"
    DRAINED = "drained"
    INSTALLED = "installed"
    RETURNED = "returned"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    ROLLBACK = "rollback"  # the deployment began rolling back
    BLOCKED = "blocked"  # the rollback cannot take it out without breaking min_serving
    SKIP = "skip"  # an operator holds it out of rotation at stage start
    #: a step failed, but the host is on a known-good release (its drain failed
    #: before anything changed, or its agent rolled itself back)
    FAILED_SAFE = "failed_safe"
    RETRY = "retry"  # resume/rollback of a rollback_incomplete deployment
    RESTORE = "restore"  # rolling back: put a fit drained host back before its rollback


H = HostPhase

#: Every host transition: (phase, step, deployment rolling back?) -> next phase.
HOST_TRANSITIONS: Mapping[tuple[HostPhase, Step, bool], HostPhase] = {
    # forward
    (H.PENDING, Step.START, False): H.DRAINING,
    (H.DRAINING, Step.DRAINED, False): H.INSTALLING,
    (H.INSTALLING, Step.INSTALLED, False): H.RETURNING,
    (H.RETURNING, Step.RETURNED, False): H.DONE,
    **{(p, Step.FAILED, False): H.FAILED for p in FORWARD_INFLIGHT},
    # the rollback begins: settled hosts queue up, in-flight ones finish their step
    (H.DONE, Step.ROLLBACK, True): H.RB_PENDING,
    (H.FAILED, Step.ROLLBACK, True): H.RB_PENDING,
    # a forward step that finishes after the rollback began is never continued
    (H.DRAINING, Step.DRAINED, True): H.RB_RETURNING,  # nothing installed yet
    (H.INSTALLING, Step.INSTALLED, True): H.RB_ROLLING_BACK,  # still drained
    (H.RETURNING, Step.RETURNED, True): H.RB_PENDING,
    **{(p, Step.FAILED, True): H.RB_PENDING for p in FORWARD_INFLIGHT},
    # rollback
    (H.RB_PENDING, Step.START, True): H.RB_DRAINING,
    (H.RB_DRAINING, Step.DRAINED, True): H.RB_ROLLING_BACK,
    (H.RB_ROLLING_BACK, Step.ROLLED_BACK, True): H.RB_RETURNING,
    (H.RB_RETURNING, Step.RETURNED, True): H.ROLLED_BACK,
    **{(p, Step.FAILED, True): H.RB_FAILED for p in ROLLBACK_INFLIGHT},
    (H.RB_PENDING, Step.BLOCKED, True): H.RB_FAILED,
    # an operator's choice is kept: a host held out at stage start is never touched
    (H.PENDING, Step.SKIP, False): H.SKIPPED,
    # no host left out of rotation without a reason: a failed host that is healthy on
    # a known-good release goes back (RESTORING checks its health and release first)
    (H.DRAINING, Step.FAILED_SAFE, False): H.RESTORING,
    (H.INSTALLING, Step.FAILED_SAFE, False): H.RESTORING,
    **{(p, Step.FAILED_SAFE, True): H.RB_PENDING for p in FORWARD_INFLIGHT},
    (H.RESTORING, Step.RETURNED, False): H.RESTORED,
    (H.RESTORING, Step.FAILED, False): H.FAILED,
    (H.RESTORING, Step.RETURNED, True): H.ROLLED_BACK,  # it already runs the old release
    (H.RESTORING, Step.FAILED, True): H.RB_FAILED,
    # a rollback_incomplete deployment continued: retry every host not yet back
    (H.RB_FAILED, Step.RETRY, True): H.RB_PENDING,
    # rolling back: a healthy host we drained goes back into rotation first (it gives
    # the floor its capacity back); it is rolled back later like any serving host, or,
    # if it cannot go back, at once (it is out anyway)
    (H.RB_PENDING, Step.RESTORE, True): H.RB_RESTORING,
    (H.RB_RESTORING, Step.RETURNED, True): H.RB_PENDING,
    (H.RB_RESTORING, Step.FAILED, True): H.RB_PENDING,
}

#: Failure kinds of a ``return`` that say nothing about the host's health (the
#: balancer or the connection failed): a host that passed health keeps its fitness.
_NOT_ABOUT_HEALTH = frozenset(
    (
        FailureKind.LOAD_BALANCER,
        FailureKind.HOST_UNREACHABLE,
        FailureKind.SESSION_LOST,
        FailureKind.TRANSPORT,
        FailureKind.CALL_TIMEOUT,
    )
)

#: Entering these phases takes a host out of service.
_OUT_ON_ENTRY = frozenset((H.DRAINING, H.RB_DRAINING, H.INSTALLING))


def host_step(tx: Tx, name: str, step: Step) -> None:
    """Move one host along :data:`HOST_TRANSITIONS` and emit the next phase's action."""
    rolling_back = tx.state.phase is Phase.ROLLING_BACK
    host = tx.host(name)
    nxt = HOST_TRANSITIONS.get((host.phase, step, rolling_back))
    if nxt is None:
        return
    changes: dict[str, object] = {"phase": nxt}
    if step is Step.START or nxt in _OUT_ON_ENTRY:
        changes["serving"] = False
        changes["fit"] = False  # a step that changes it: unproven until it ends
    if step is Step.RETURNED:
        changes["serving"] = True
        changes["fit"] = False
    if step is Step.INSTALLED:
        changes["fit"] = True  # the agent's install passed its health checks
    if nxt is H.INSTALLING:
        changes["install_issued"] = True
    enter_host(tx, tx.set_host(name, **changes))


def enter_host(tx: Tx, host: HostState) -> None:
    """Emit the action ``host``'s phase needs (again, on resume), if it needs one."""
    entry = _HOST_ENTRY.get(host.phase)
    if entry is not None:
        entry(tx, host)


# Steps that do not apply to a host pass straight through: no balancer means no drain
# and no return; nothing installed means no rollback operation.


def _balancer_step(tx: Tx, host: HostState) -> None:
    """Drain a host (or return it) at its balancer; behind none it passes through."""
    draining = host.phase in (H.DRAINING, H.RB_DRAINING)
    if not host.has_lb:
        host_step(tx, host.name, Step.DRAINED if draining else Step.RETURNED)
        return
    action = DrainHost if draining else ReturnHost
    tx.actions.append(action(host.name, host.stage_id, rollback=host.phase in ROLLBACK_INFLIGHT))


def _restore(tx: Tx, host: HostState) -> None:
    if not host.has_lb:
        host_step(tx, host.name, Step.RETURNED)
        return
    # After a self-rollback the host must run the release it ran before our install.
    expect = host.before.release if host.install_issued and host.before is not None else None
    tx.actions.append(
        ReturnHost(host.name, host.stage_id, rollback=True, restore=True, expect=expect)
    )


def _restore_first(tx: Tx, host: HostState) -> None:
    # It must still run the release whose health its install proved.
    tx.actions.append(
        ReturnHost(host.name, host.stage_id, rollback=True, restore=True, expect=host.release)
    )


def _install(tx: Tx, host: HostState) -> None:
    tx.actions.append(InstallOnHost(host.name, host.stage_id))


def _roll_back(tx: Tx, host: HostState) -> None:
    # The runner reads the release before installing and reports it with every
    # outcome, so an unknown "before" means nothing was installed.
    if not host.install_issued or host.before is None:
        host_step(tx, host.name, Step.ROLLED_BACK)
    else:
        tx.actions.append(RollbackHost(host.name, host.stage_id, host.before.release))


_HOST_ENTRY: Mapping[HostPhase, Callable[[Tx, HostState], None]] = {
    H.DRAINING: _balancer_step,
    H.RB_DRAINING: _balancer_step,
    H.INSTALLING: _install,
    H.RETURNING: _balancer_step,
    H.RB_RETURNING: _balancer_step,
    H.RB_ROLLING_BACK: _roll_back,
    H.RESTORING: _restore,
    H.RB_RESTORING: _restore_first,
}


def host_failed(tx: Tx, event: HostFailed) -> bool:
    """Record a failed step and move the host on; True when it was a forward step of a
    running deployment (one that counts against the stage's failure budget)."""
    host = tx.host(event.host)
    if host.phase not in INFLIGHT:
        return False
    changes: dict[str, object] = {"failure": f"{event.step}: {event.kind}: {event.message}"}
    # Only a forward return that failed for a reason other than health keeps the
    # fitness its install proved; every other failure leaves its health unknown.
    keeps_fit = host.phase is H.RETURNING and event.kind in _NOT_ABOUT_HEALTH
    changes["fit"] = host.fit and keeps_fit
    if event.before is not None and host.before is None:
        changes["before"] = event.before
    tx.set_host(host.name, **changes)
    forward = host.phase in FORWARD_INFLIGHT and tx.state.phase is Phase.RUNNING
    step = Step.FAILED
    rolling_back = tx.state.phase is Phase.ROLLING_BACK
    if _on_known_good(event) and (host.phase, Step.FAILED_SAFE, rolling_back) in HOST_TRANSITIONS:
        step = Step.FAILED_SAFE
    host_step(tx, host.name, step)
    return forward


def _on_known_good(event: HostFailed) -> bool:
    """The failure left the host on the release it ran before: its drain failed
    (nothing changed yet), or its agent rolled the install back by itself."""
    if event.step is HostOp.DRAIN:
        return True
    return event.step is HostOp.INSTALL and event.kind is FailureKind.SELF_ROLLED_BACK


def skip_held(tx: Tx, name: str, held: str) -> None:
    """Skip a host an operator holds out of rotation (``held``: its balancer state)."""
    if tx.host(name).phase is H.PENDING:
        tx.set_host(name, held=held, serving=False)
        host_step(tx, name, Step.SKIP)


def continue_rollback(tx: Tx) -> None:
    """Continue a ``rollback_incomplete`` deployment: every host that could not be
    rolled back is queued again."""
    st = tx.state
    if st.phase is not Phase.FINISHED or st.result is not Result.ROLLBACK_INCOMPLETE:
        return
    tx.state = replace(st, phase=Phase.ROLLING_BACK, result=None)
    for name in st.hosts:
        host_step(tx, name, Step.RETRY)


def block_rollback(tx: Tx, name: str, min_serving: int) -> None:
    """Give up rolling back a host that cannot leave without breaking ``min_serving``."""
    if tx.host(name).phase is H.RB_PENDING:
        reason = f"rollback: blocked: would leave fewer than {min_serving} hosts serving"
        tx.set_host(name, failure=reason)
        host_step(tx, name, Step.BLOCKED)


# -- the deployment ---------------------------------------------------------------------


def begin_rollback(tx: Tx, reason: str) -> None:
    """Start rolling back (once): every host takes :attr:`Step.ROLLBACK`. A deployment
    that already ended rolled back never rolls back (or forward) again."""
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
        host_step(tx, name, Step.ROLLBACK)


# -- stages -----------------------------------------------------------------------------


class StageStep(enum.Enum):
    """What happened to a stage; the input alphabet of :data:`STAGE_TRANSITIONS`."""

    DEFER = "defer"  # asked to start before its earliest start time
    START = "start"
    CLEARED = "cleared"  # every blocker gate passed
    HOLD = "hold"  # a blocker gate holds the start (not a failure)
    PROBED = "probed"  # the probe answered which hosts serve
    SETTLED = "settled"  # every host finished its steps
    BAKED = "baked"  # every bake gate passed
    RECHECK = "recheck"  # a timer elapsed or the controller resumed: ask again


S = StagePhase

#: Every stage transition: (phase, step) -> next phase. Entering a phase (also the same
#: one again) emits the action it needs; see :func:`_enter_stage`.
STAGE_TRANSITIONS: Mapping[tuple[StagePhase, StageStep], StagePhase] = {
    (S.PENDING, StageStep.DEFER): S.WAITING_START,
    (S.PENDING, StageStep.START): S.CHECKING_BLOCKERS,
    (S.WAITING_START, StageStep.DEFER): S.WAITING_START,
    (S.WAITING_START, StageStep.START): S.CHECKING_BLOCKERS,
    (S.CHECKING_BLOCKERS, StageStep.CLEARED): S.PROBING,
    (S.CHECKING_BLOCKERS, StageStep.RECHECK): S.CHECKING_BLOCKERS,
    (S.CHECKING_BLOCKERS, StageStep.HOLD): S.HELD,
    (S.HELD, StageStep.HOLD): S.HELD,
    (S.HELD, StageStep.RECHECK): S.HELD,  # asks the blocker gates again
    (S.HELD, StageStep.CLEARED): S.PROBING,
    (S.PROBING, StageStep.PROBED): S.ROLLING,
    (S.PROBING, StageStep.RECHECK): S.PROBING,
    (S.ROLLING, StageStep.SETTLED): S.BAKING,
    (S.BAKING, StageStep.RECHECK): S.BAKING,
    (S.BAKING, StageStep.BAKED): S.DONE,
}


def stage_step(tx: Tx, stage_id: str, step: StageStep) -> None:
    """Move one stage along :data:`STAGE_TRANSITIONS` and emit the next phase's action."""
    stage = tx.stage(stage_id)
    nxt = STAGE_TRANSITIONS.get((stage.phase, step))
    if nxt is None:
        return
    changes: dict[str, object] = {"phase": nxt}
    if nxt is S.BAKING and stage.phase is not S.BAKING:
        changes["bake_start"] = tx.now
    if nxt is S.PROBING:
        changes["waiting"] = None
    tx.set_stage(stage_id, **changes)
    _enter_stage(tx, tx.state.stage(stage_id), step)


def _enter_stage(tx: Tx, stage: Stage, step: StageStep) -> None:
    ss = tx.stage(stage.id)
    p = ss.phase
    if p is S.HELD:
        # Held: the gate's answer already set the retry timer; its recheck asks again.
        if step is StageStep.RECHECK:
            tx.actions.append(CheckBlockers(stage.id))
    elif p is S.WAITING_START:
        assert stage.earliest_start is not None  # only DEFER leads here
        key = TimerKey(TimerKind.START, Target.stage(stage.id))
        tx.actions.append(WaitUntil(stage.earliest_start.timestamp(), key))
    elif p is S.CHECKING_BLOCKERS:
        tx.actions.append(CheckBlockers(stage.id))
    elif p is S.PROBING:
        tx.actions.append(ProbeStage(stage.id))
    elif p is S.BAKING and ss.bake_start is not None:
        tx.actions.append(CheckGate(Target.stage(stage.id), ss.bake_start))
    elif p is S.DONE:
        _after_stage(tx, stage)
    # ROLLING: the scheduler starts hosts as the window allows.


def start_stage(tx: Tx, stage: Stage) -> None:
    """Start ``stage`` now, or wait for its earliest start time."""
    early = stage.earliest_start is not None and stage.earliest_start.timestamp() > tx.now
    stage_step(tx, stage.id, StageStep.DEFER if early else StageStep.START)


def recheck_stage(tx: Tx, stage: Stage) -> None:
    """Ask again what a waiting stage waits for (its start time, gates, probe)."""
    if tx.stage(stage.id).phase is S.WAITING_START:
        start_stage(tx, stage)
    else:
        stage_step(tx, stage.id, StageStep.RECHECK)


def _after_stage(tx: Tx, stage: Stage) -> None:
    """A stage is done: start the next stage of its region, or, once every stage of the
    wave is done, the wave's bake."""
    wave = tx.state.plan.waves[tx.state.wave]
    region = next(r for r in wave.regions if r.region == stage.region and stage in r.stages)
    idx = region.stages.index(stage)
    if idx + 1 < len(region.stages):
        start_stage(tx, region.stages[idx + 1])
        return
    if all(tx.stage(s.id).phase is S.DONE for r in wave.regions for s in r.stages):
        tx.state = replace(tx.state, wave_bake_start=tx.now)
        tx.actions.append(CheckGate(Target.wave(wave.index), tx.now))


# -- waves ------------------------------------------------------------------------------


def start_wave(tx: Tx) -> None:
    """Start the first stage of every region of the current wave."""
    wave = tx.state.plan.waves[tx.state.wave]
    for region in wave.regions:
        if region.stages:
            start_stage(tx, region.stages[0])


def next_wave(tx: Tx) -> None:
    """The current wave baked: start the next one. After the last, the post-deploy
    watch begins (if any); the scheduler finishes once it is over."""
    tx.state = replace(tx.state, wave=tx.state.wave + 1, wave_bake_start=None, wave_waiting=None)
    if tx.state.wave < len(tx.state.plan.waves):
        start_wave(tx)
    elif tx.state.post_deploy_watch_s > 0 and tx.state.watch_until is None:
        tx.state = replace(tx.state, watch_until=tx.now + tx.state.post_deploy_watch_s)
        watch_timer(tx)


def watch_timer(tx: Tx) -> None:
    """The timer that ends the post-deploy watch (again, on resume)."""
    if tx.state.watch_until is not None:
        key = TimerKey(TimerKind.WATCH, Target.wave(len(tx.state.plan.waves)))
        tx.actions.append(WaitUntil(tx.state.watch_until, key))


def watching(state: State) -> bool:
    """The last wave baked and the post-deploy watch has not ended."""
    return state.watch_until is not None and state.phase is Phase.RUNNING


def onebox_active(tx: Tx) -> bool:
    """A one-box stage is being probed, rolled or baked: its alarm is judged now."""
    live = (S.PROBING, S.ROLLING, S.BAKING)
    return any(
        s.kind is StageKind.ONEBOX and tx.stage(s.id).phase in live for s in tx.state.index.values()
    )


def touched(tx: Tx) -> bool:
    """Some host has left PENDING: the watch that rolls back is on (from the first drain).
    A host skipped for its operator was never touched."""
    return any(tx.host(n).phase not in (H.PENDING, H.SKIPPED) for n in tx.state.hosts)


def check_alarms(tx: Tx) -> None:
    """Roll back when a rollback alarm (or, during a one-box stage, the one-box alarm)
    is in ALARM once the deployment touched a host. Before that, the same alarm only
    holds the first stage (as a blocker)."""
    st = tx.state
    if st.phase is not Phase.RUNNING:
        return
    firing = [
        (role, name, why)
        for (role, name), (state, why) in st.alarms.items()
        if state is AlarmState.ALARM
    ]
    for role, name, why in firing:
        if role is AlarmRole.ONEBOX and not onebox_active(tx):
            continue
        if not touched(tx):
            return
        begin_rollback(tx, f"{role} alarm {name} in ALARM: {why}")
        return


#: Stage phases in which the anomaly detector judges a stage (and its FAIL rolls back).
ANOMALY_PHASES = frozenset((S.ROLLING, S.BAKING))


def anomaly_judged(tx: Tx, event: AnomalyJudged) -> None:
    """Record a stage's anomaly outcome; FAIL rolls back while the stage is rolled or
    baked (a late FAIL of a stage already done, or of a deployment already rolling
    back, is only recorded). WAIT never rolls back: the bake gate waits on it."""
    st = tx.state
    if event.stage_id not in st.stages:
        return
    anomaly = {**st.anomaly, event.stage_id: (event.outcome, event.reason)}
    tx.state = replace(st, anomaly=anomaly)
    if event.outcome is not AnomalyOutcome.FAIL or st.phase is not Phase.RUNNING:
        return
    if tx.stage(event.stage_id).phase in ANOMALY_PHASES:
        begin_rollback(tx, f"anomaly detected in {event.stage_id}: {event.reason}")


def current_wave_target(tx: Tx) -> Target:
    """The gate target of the current wave's bake."""
    return Target.wave(tx.state.plan.waves[tx.state.wave].index)


__all__ = [
    "ANOMALY_PHASES",
    "HOST_TRANSITIONS",
    "STAGE_TRANSITIONS",
    "StageStep",
    "Step",
    "anomaly_judged",
    "begin_rollback",
    "block_rollback",
    "check_alarms",
    "continue_rollback",
    "current_wave_target",
    "enter_host",
    "host_failed",
    "host_step",
    "next_wave",
    "onebox_active",
    "recheck_stage",
    "skip_held",
    "stage_step",
    "start_stage",
    "start_wave",
    "touched",
    "watch_timer",
    "watching",
]
