"""The engine's side of watching: hold verdicts, alarm events, the post-deploy watch and
overrides, driven through ``decide`` with no I/O."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from fleetwave.config.alarm_expr import AlarmState
from fleetwave.config.spec import OverrideTarget
from fleetwave.planning.model import Plan, StageKind
from fleetwave.rollout import Phase, StagePhase, State, Target, decide, initial_state
from fleetwave.rollout.events import (
    AlarmChanged,
    DeploymentStarted,
    Event,
    GateResult,
    HostDrained,
    OverrideGranted,
    StageProbed,
    TimerElapsed,
    event_from_json,
    to_json,
)
from fleetwave.rollout.types import (
    Action,
    AlarmRole,
    CheckBlockers,
    CheckGate,
    DrainHost,
    Finish,
    ProbeStage,
    Result,
    TimerKey,
    TimerKind,
    Verdict,
    WaitUntil,
)

from .sim import Driver, World, make_plan

pytestmark = pytest.mark.unit

S0 = "w0/r00/s0"


def _onebox_first(plan: Plan) -> Plan:
    """Make the first stage of the plan a one-box stage."""
    wave = plan.waves[0]
    region = wave.regions[0]
    first = replace(region.stages[0], kind=StageKind.ONEBOX)
    regions = (replace(region, stages=(first, *region.stages[1:])), *wave.regions[1:])
    return replace(plan, waves=(replace(wave, regions=regions), *plan.waves[1:]))


def _world(plan: Plan) -> World:
    names = [h.name for h in plan.hosts()]
    return World(
        plan,
        healthy=dict.fromkeys(names, True),
        release=dict.fromkeys(names, "v1"),
        lb_ready=dict.fromkeys(names, True),
    )


def _feed(state: State, event: Event, now: float) -> tuple[State, list[Action]]:
    return decide(state, event, now)


def _started(plan: Plan, post_watch: float = 0.0) -> tuple[State, list[Action]]:
    return _feed(initial_state(plan), DeploymentStarted(post_watch), 0.0)


def _alarm(state: AlarmState, role: AlarmRole = AlarmRole.ROLLBACK) -> AlarmChanged:
    return AlarmChanged("svc-rollback", role, state, "2 of 3 breach", {"alarm": "svc-rollback"})


def test_a_hold_holds_the_stage_without_failing_and_it_starts_once_clear() -> None:
    state, actions = _started(make_plan([[[2]]]))
    assert actions == [CheckBlockers(S0)]
    held = Verdict.hold("blocker ALARM(x) is true", retry_at=10.0)
    state, actions = _feed(state, GateResult(Target.stage(S0), "blockers", held), 1.0)
    assert state.stages[S0].phase is StagePhase.HELD
    assert state.stages[S0].waiting == "blocker ALARM(x) is true"
    assert state.phase is Phase.RUNNING
    assert actions == [WaitUntil(10.0, TimerKey(TimerKind.BLOCKERS, Target.stage(S0)))]
    # the timer asks again, still held
    timer = TimerElapsed(TimerKey(TimerKind.BLOCKERS, Target.stage(S0)))
    state, actions = _feed(state, timer, 10.0)
    assert actions == [CheckBlockers(S0)]
    assert state.stages[S0].phase is StagePhase.HELD
    state, actions = _feed(state, GateResult(Target.stage(S0), "blockers", Verdict.ok()), 11.0)
    assert state.stages[S0].phase is StagePhase.PROBING
    assert state.stages[S0].waiting is None
    assert actions == [ProbeStage(S0)]


def test_the_rollback_alarm_before_the_first_drain_does_not_roll_back() -> None:
    state, _ = _started(make_plan([[[2]]]))
    state, actions = _feed(state, _alarm(AlarmState.ALARM), 1.0)
    assert state.phase is Phase.RUNNING
    assert actions == []
    # ... but from the first drain on, the same standing ALARM rolls back (the blocker
    # gate, which also holds on the rollback alarm, keeps this from happening at all)
    state, _ = _feed(state, GateResult(Target.stage(S0), "blockers", Verdict.ok()), 2.0)
    state, actions = _feed(state, StageProbed(S0, frozenset({"h1", "h2"})), 3.0)
    assert [a for a in actions if isinstance(a, DrainHost)] == [DrainHost("h1", S0)]
    state, actions = _feed(state, HostDrained("h1"), 4.0)
    assert state.phase is Phase.ROLLING_BACK
    assert "rollback alarm svc-rollback in ALARM" in (state.rollback_reason or "")
    assert not any(isinstance(a, DrainHost) and not a.rollback for a in actions)


def test_a_host_skipped_for_its_operator_does_not_start_the_rollback_watch() -> None:
    # Only the operator's MAINT host was "reached": nothing was deployed, so a standing
    # rollback alarm has nothing to roll back (it holds the next stage as a blocker).
    state, _ = _started(make_plan([[[1, 1]]]))
    state, _ = _feed(state, GateResult(Target.stage(S0), "blockers", Verdict.ok()), 1.0)
    state, actions = _feed(state, StageProbed(S0, frozenset(), {"h1": "maint"}), 2.0)
    assert state.hosts["h1"].phase.value == "skipped"
    assert not any(isinstance(a, DrainHost) for a in actions)
    state, _ = _feed(state, _alarm(AlarmState.ALARM), 3.0)
    assert state.phase is Phase.RUNNING


def _rolling(plan: Plan, post_watch: float = 0.0) -> State:
    state, _ = _started(plan, post_watch)
    state, _ = _feed(state, GateResult(Target.stage(S0), "blockers", Verdict.ok()), 1.0)
    state, actions = _feed(state, StageProbed(S0, frozenset({"h1", "h2"})), 2.0)
    assert any(isinstance(a, DrainHost) for a in actions)
    return state


def test_an_alarm_while_rolling_rolls_back_and_ok_changes_nothing() -> None:
    state = _rolling(make_plan([[[2]]]))
    ok, _ = _feed(state, _alarm(AlarmState.OK), 3.0)
    assert ok.phase is Phase.RUNNING
    unknown, _ = _feed(state, _alarm(AlarmState.INSUFFICIENT_DATA), 3.0)
    assert unknown.phase is Phase.RUNNING  # missing data holds blockers, never rolls back
    bad, _ = _feed(state, _alarm(AlarmState.ALARM), 3.0)
    assert bad.phase is Phase.ROLLING_BACK


def test_the_onebox_alarm_counts_only_during_the_onebox_stage() -> None:
    plan = _onebox_first(make_plan([[[1, 2]]]))
    state = _rolling(plan)
    rolled, _ = _feed(state, _alarm(AlarmState.ALARM, AlarmRole.ONEBOX), 3.0)
    assert rolled.phase is Phase.ROLLING_BACK
    # the one-box stage done, the next stage's rolling: the one-box alarm is not judged
    world = _world(plan)
    driver = Driver(plan, world)
    driver.start()
    for _ in range(200):
        if driver.state.stages["w0/r00/s1"].phase is StagePhase.ROLLING:
            break
        event = world.outcome(driver.pending.pop(0), True)
        if event is not None:
            driver.feed(event)
    assert driver.state.stages["w0/r00/s1"].phase is StagePhase.ROLLING
    later, _ = _feed(driver.state, _alarm(AlarmState.ALARM, AlarmRole.ONEBOX), world.now)
    assert later.phase is Phase.RUNNING


def _run_to_end(plan: Plan, post_watch: float) -> tuple[State, list[Any]]:
    """Drive with every gate ok until the engine stops emitting actions."""
    world = _world(plan)
    driver = Driver(plan, world)
    driver.state, actions = decide(driver.state, DeploymentStarted(post_watch), 0.0)
    pending = list(actions)
    seen: list[Any] = []
    for _ in range(500):
        if not pending:
            break
        action = pending.pop(0)
        seen.append(action)
        if isinstance(action, WaitUntil) and action.key.kind is TimerKind.WATCH:
            return driver.state, seen
        event = world.outcome(action, True)
        if event is not None:
            driver.state, more = decide(driver.state, event, world.now)
            pending += more
    return driver.state, seen


def test_the_post_deploy_watch_keeps_the_deployment_open_and_an_alarm_rolls_it_back() -> None:
    plan = make_plan([[[2]]])
    state, seen = _run_to_end(plan, post_watch=60.0)
    assert state.phase is Phase.RUNNING
    assert state.watch_until is not None
    assert not any(isinstance(a, Finish) for a in seen)
    until = state.watch_until
    bad, _ = _feed(state, _alarm(AlarmState.ALARM), until - 1)
    assert bad.phase is Phase.ROLLING_BACK
    key = TimerKey(TimerKind.WATCH, Target.wave(len(plan.waves)))
    done, actions = _feed(state, TimerElapsed(key), until)
    assert done.phase is Phase.FINISHED
    assert [a.result for a in actions if isinstance(a, Finish)] == [Result.SUCCEEDED]


def test_without_a_post_deploy_watch_the_deployment_finishes_after_the_last_bake() -> None:
    state, seen = _run_to_end(make_plan([[[2]]]), post_watch=0.0)
    assert state.phase is Phase.FINISHED
    assert any(isinstance(a, Finish) for a in seen)


def test_override_is_recorded_in_the_state_and_round_trips() -> None:
    state, _ = _started(make_plan([[[1]]]))
    ev = OverrideGranted(frozenset({OverrideTarget.BLOCKERS}), "sev1 fix", "alice", "bob")
    state, actions = _feed(state, ev, 1.0)
    assert state.override == ev
    assert actions == []
    assert event_from_json(to_json(ev)) == ev


def test_new_events_round_trip_through_json() -> None:
    for ev in (
        _alarm(AlarmState.ALARM),
        DeploymentStarted(30.0),
        GateResult(
            Target.stage(S0), "bake", Verdict.hold("short", 5.0, ({"gate": "bake", "n": 1},))
        ),
    ):
        assert event_from_json(to_json(ev)) == ev


def test_check_gate_after_hold_in_bake_keeps_the_same_window_start() -> None:
    plan = make_plan([[[1]]], bake_s=100.0)
    world = _world(plan)
    driver = Driver(plan, world)
    driver.state, actions = decide(driver.state, DeploymentStarted(), 0.0)
    pending = list(actions)
    for _ in range(100):
        a = pending.pop(0)
        if isinstance(a, CheckGate):
            start = a.window_start
            v = Verdict.hold("max_bake passed with 0 of 5 requests", 50.0)
            driver.state, more = decide(driver.state, GateResult(a.target, "bake", v), 40.0)
            assert driver.state.stages[S0].phase is StagePhase.BAKING
            assert driver.state.stages[S0].verdict == "hold"
            assert more == [WaitUntil(50.0, TimerKey(TimerKind.BAKE, a.target))]
            timer = TimerKey(TimerKind.BAKE, a.target)
            driver.state, again = decide(driver.state, TimerElapsed(timer), 50.0)
            assert again == [CheckGate(a.target, start)]
            return
        ev = world.outcome(a, True)
        if ev is not None:
            driver.state, more = decide(driver.state, ev, world.now)
            pending += more
    raise AssertionError("never baked")
