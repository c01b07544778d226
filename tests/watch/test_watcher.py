"""The watcher over stored agent snapshots: which alarm changes reach the engine, in
which scope, and the counts a bake gets. No sockets: snapshots are ingested directly."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from fleetwave.config.alarm_expr import AlarmState, parse
from fleetwave.config.alarms import (
    Comparison,
    CompositeAlarm,
    MetricAlarm,
    MetricSpec,
    ScopeKind,
    Statistic,
)
from fleetwave.planning.model import Plan, StageKind
from fleetwave.rollout import StagePhase, State, decide, initial_state
from fleetwave.rollout.events import DeploymentStarted
from fleetwave.rollout.types import AlarmRole
from fleetwave.rollout.watching import Watcher
from fleetwave.watch.agent_source import AgentSource

from ..engine.sim import make_plan

pytestmark = pytest.mark.unit

REQ = "fleetwave_agent_app_requests_total"
ERR = "fleetwave_agent_app_request_errors_total"


def _plan() -> Plan:
    plan = make_plan([[[1, 2]]])
    wave = plan.waves[0]
    region = wave.regions[0]
    first = replace(region.stages[0], kind=StageKind.ONEBOX)
    regions = (replace(region, stages=(first, *region.stages[1:])),)
    return replace(plan, waves=(replace(wave, regions=regions),))


def _ratio(name: str, scope: ScopeKind) -> MetricAlarm:
    return MetricAlarm(
        name,
        MetricSpec("errors", Statistic.RATIO, denominator="requests"),
        Comparison.GT,
        0.05,
        period_s=1.0,
        evaluation_periods=3,
        datapoints_to_alarm=2,
        scope=scope,
        min_samples=5,
    )


ALARMS: dict[str, Any] = {
    "fleet-5xx": _ratio("fleet-5xx", ScopeKind.FLEET),
    "stage-5xx": _ratio("stage-5xx", ScopeKind.STAGE),
    "rollback": CompositeAlarm("rollback", parse('ALARM("fleet-5xx")')),
    "onebox": CompositeAlarm("onebox", parse('ALARM("rollback") OR ALARM("stage-5xx")')),
}


class NoTransport:
    async def open(self, host: Any) -> Any:
        raise AssertionError("the test ingests snapshots; nothing is polled")


def _source(plan: Plan) -> AgentSource:
    return AgentSource(NoTransport(), plan.hosts(), clock=lambda: 0.0)  # type: ignore[arg-type]


def _feed(source: AgentSource, host: str, t: float, req: float, err: float, rel: str) -> None:
    source.ingest(host, {"v": 1, "release": rel, "counters": {REQ: req, ERR: err}}, t)


def _state_with(plan: Plan, phases: dict[str, StagePhase]) -> State:
    state, _ = decide(initial_state(plan), DeploymentStarted(), 0.0)
    stages = {sid: replace(s, phase=phases.get(sid, s.phase)) for sid, s in state.stages.items()}
    return replace(state, stages=stages)


def _watcher(plan: Plan, source: AgentSource) -> Watcher:
    return Watcher(
        plan,
        ALARMS,
        source=source,
        interval_s=1.0,
        clock=lambda: 0.0,
        rollback_alarm="rollback",
        onebox_alarm="onebox",
    )


def test_a_onebox_fault_reaches_the_engine_as_the_onebox_alarm_only() -> None:
    plan = _plan()
    source = _source(plan)
    onebox = plan.stages()[0]
    # the one box (h1) answers 50% errors; h2 and h3 are clean and busy: the fleet-wide
    # ratio stays under 5 %, the one-box-scoped alarm does not.
    for t in range(0, 8):
        _feed(source, "h1", float(t), 10.0 * t, 5.0 * t, "v2")
        _feed(source, "h2", float(t), 100.0 * t, 0.0, "v1")
        _feed(source, "h3", float(t), 100.0 * t, 0.0, "v1")
    watcher = _watcher(plan, source)
    state = _state_with(plan, {onebox.id: StagePhase.ROLLING})
    events, rows = asyncio.run(watcher.tick(state, 7.0))
    by_role = {e.role: e for e in events}
    assert by_role[AlarmRole.ONEBOX].state is AlarmState.ALARM
    assert by_role[AlarmRole.ROLLBACK].state is AlarmState.OK
    ev = by_role[AlarmRole.ONEBOX].evidence
    stage = next(c for c in ev["children"] if c["alarm"] == "stage-5xx")
    assert stage["m_of_n"] == [2, 3]
    assert stage["marks"].endswith("X X X")
    assert any(r.alarm == "stage-5xx" and r.state is AlarmState.ALARM for r in rows)
    # unchanged states are not sent again
    again, _ = asyncio.run(watcher.tick(state, 7.0))
    assert again == []


def test_the_onebox_alarm_is_not_sent_outside_a_onebox_stage() -> None:
    plan = _plan()
    source = _source(plan)
    for t in range(0, 8):
        for h in ("h1", "h2", "h3"):
            _feed(source, h, float(t), 10.0 * t, 5.0 * t, "v2")
    second = plan.stages()[1]
    events, _ = asyncio.run(
        _watcher(plan, source).tick(_state_with(plan, {second.id: StagePhase.BAKING}), 7.0)
    )
    assert [(e.role, e.state) for e in events] == [(AlarmRole.ROLLBACK, AlarmState.ALARM)]


def test_no_data_is_insufficient_never_ok() -> None:
    plan = _plan()
    events, _ = asyncio.run(_watcher(plan, _source(plan)).tick(_state_with(plan, {}), 7.0))
    assert [(e.role, e.state) for e in events] == [
        (AlarmRole.ROLLBACK, AlarmState.INSUFFICIENT_DATA)
    ]


def test_a_bake_counts_only_what_the_new_release_served() -> None:
    plan = _plan()
    source = _source(plan)
    for t in range(0, 11):
        rel = "v1" if t < 5 else "v2"
        _feed(source, "h1", float(t), 10.0 * t, 0.0, rel)
    watcher = _watcher(plan, source)
    got = asyncio.run(watcher.count("requests", frozenset({"h1"}), "v2", 5.0, 10.0))
    assert got == pytest.approx(50.0)
    none = asyncio.run(watcher.count("requests", frozenset({"h1"}), "v3", 5.0, 10.0))
    assert not none  # nothing served by v3: no progress
