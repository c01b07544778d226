"""When hosts may move: the sliding window, the failure budget and the end of the
deployment.

Counting rules (documented in docs/engine.md):

* out of service (capped by ``max_out``, or ``rollback_batch`` while rolling back):
  hosts with a step in flight;
* serving (kept at or above ``min_serving``): hosts the stage probe found healthy and
  in rotation, minus those taken out since, plus those returned since. Failed hosts
  and hosts that were unhealthy at stage start do not serve. While rolling back the
  floor counts hosts *able* to serve (:func:`~fleetwave.rollout.state.able_to_serve`):
  also a healthy host we drained ourselves, which is returned first.

The scheduler only says *when* a host takes :attr:`~Step.START`; where each step leads
is :mod:`fleetwave.rollout.transitions`.
"""

from __future__ import annotations

from dataclasses import replace

from fleetwave.rollout._tx import Tx
from fleetwave.rollout.state import (
    FORWARD_FAILED,
    INFLIGHT,
    HostPhase,
    HostState,
    Phase,
    StagePhase,
    State,
    able_to_serve,
    out_of_rotation,
)
from fleetwave.rollout.transitions import (
    StageStep,
    Step,
    begin_rollback,
    block_rollback,
    host_step,
    stage_step,
)
from fleetwave.rollout.types import Action, Finish, Result

H = HostPhase


def settle(state: State, actions: list[Action], now: float) -> tuple[State, list[Action]]:
    """Start every host the window allows, close finished stages, finish the deployment.

    Runs to a fixed point: finishing a stage can start the next one, and so on.
    """
    for _ in range(4 * len(state.stages) + 8):
        tx = Tx(state, now)
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


def charge_failure(tx: Tx, stage_id: str) -> None:
    """Count a failed forward step against its stage; one past the budget rolls back."""
    failures = tx.stage(stage_id).failures + 1
    tx.set_stage(stage_id, failures=failures)
    budget = tx.state.stage(stage_id).failure_budget
    if failures > budget:
        begin_rollback(tx, f"stage {stage_id}: {failures} failed hosts, budget {budget}")


def _fill_window(
    tx: Tx, hosts: list[HostState], candidates: list[HostState], cap: int, min_serving: int
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
        host_step(tx, host.name, Step.START)
        after = tx.host(host.name)  # steps that do not apply may have passed through
        inflight += after.phase in INFLIGHT
        serving += int(after.serving) - int(host.serving)


def _fill_rollback_window(
    tx: Tx, hosts: list[HostState], waiting: list[HostState], cap: int, min_serving: int
) -> None:
    """The rollback's window: the floor counts hosts :func:`able_to_serve`. A fit host
    we drained goes back into rotation first (a return costs no capacity and gives it
    back) instead of being rolled back while it is out; hosts out of rotation go next;
    serving hosts only while the floor allows."""
    inflight = sum(1 for h in hosts if h.phase in INFLIGHT)
    able = sum(1 for h in hosts if able_to_serve(h))

    def order(h: HostState) -> int:
        return 0 if _restorable(h) else 1 if not h.serving else 2

    for host in sorted(waiting, key=order):
        if inflight >= cap:
            return
        if _restorable(host):
            host_step(tx, host.name, Step.RESTORE)
            inflight += 1
            continue
        if host.serving and able - 1 < min_serving:
            continue
        host_step(tx, host.name, Step.START)
        after = tx.host(host.name)  # steps that do not apply may have passed through
        inflight += after.phase in INFLIGHT
        able += int(able_to_serve(after)) - int(able_to_serve(host))


def _restorable(host: HostState) -> bool:
    return host.fit and host.has_lb and not host.serving and host.phase is H.RB_PENDING


def _schedule_forward(tx: Tx) -> None:
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
            begin_rollback(
                tx,
                f"stage {stage.id}: cannot take another host out without leaving fewer "
                f"than {b.min_serving} serving",
            )
            return
        stage_step(tx, stage.id, StageStep.SETTLED)
    st = tx.state
    if st.phase is Phase.RUNNING and st.wave >= len(st.plan.waves):
        if st.watch_until is not None and tx.now < st.watch_until:
            return  # the post-deploy watch: the rollback alarm is still judged
        failed = tx.hosts_in(FORWARD_FAILED)
        _finish(tx, Result.SUCCEEDED_WITH_FAILURES if failed else Result.SUCCEEDED, failed)


def _schedule_rollback(tx: Tx) -> None:
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
            _fill_rollback_window(tx, hosts, waiting, b.rollback_batch, b.min_serving)
            hosts = tx.stage_hosts(stage.id)
        if not any(h.phase in INFLIGHT for h in hosts):
            for h in hosts:
                if h.phase is H.RB_PENDING:
                    block_rollback(tx, h.name, b.min_serving)
    if not tx.hosts_in(INFLIGHT | {H.RB_PENDING}):
        failed = tx.hosts_in({H.RB_FAILED})
        _finish(tx, Result.ROLLBACK_INCOMPLETE if failed else Result.ROLLED_BACK, failed)


def _finish(tx: Tx, result: Result, failed: tuple[str, ...]) -> None:
    tx.state = replace(tx.state, phase=Phase.FINISHED, result=result)
    tx.actions.append(finish_action(tx.commit(), failed))


def finish_action(state: State, failed: tuple[str, ...]) -> Finish:
    """The :class:`Finish` of a finished ``state``, naming ``failed`` hosts, the hosts
    an operator held out, and every host left out of rotation."""
    assert state.result is not None
    out = out_of_rotation(state)
    return Finish(
        state.result,
        tuple((n, state.hosts[n].failure or "") for n in failed),
        state.rollback_reason,
        skipped=tuple((n, why) for n, label, why in out if label == "operator"),
        out_of_rotation=tuple((n, why) for n, _, why in out),
    )


__all__ = ["charge_failure", "finish_action", "settle"]
