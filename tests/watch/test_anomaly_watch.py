"""The anomaly detector in the watcher: which hosts make the sample (new, reference,
before), what reaches the engine, and that too little data never rolls back. No
sockets: snapshots are ingested into an agent source directly."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from fleetwave.config.anomaly import AnomalySettings
from fleetwave.planning.model import Plan, StageKind
from fleetwave.rollout import StagePhase, State, decide, initial_state
from fleetwave.rollout.anomaly_watch import (
    AnomalyWatch,
    planned_rounds,
    reference_hosts,
    stage_sample,
)
from fleetwave.rollout.events import DeploymentStarted
from fleetwave.rollout.state import HostPhase
from fleetwave.rollout.types import AnomalyOutcome
from fleetwave.watch.agent_source import AgentSource
from fleetwave.watch.anomaly import Reference

from ..engine.sim import make_plan

pytestmark = pytest.mark.unit

REQ = "fleetwave_agent_app_requests_total"
ERR = "fleetwave_agent_app_request_errors_total"
LAT = "fleetwave_agent_app_request_duration_seconds"
CPU = "fleetwave_agent_app_cpu_seconds_total"
LE = [0.005, 0.01, 0.025, 0.05, 0.1, math.inf]
SHAPE = [0.0, 0.1, 0.5, 0.9, 1.0, 1.0]  # cumulative share per bucket


def _plan() -> Plan:
    """One region: a one-box (h1) and the rest of az0 (h2, h3), then az1 (h4, h5)."""
    plan = make_plan([[[1, 2, 2]]], bake_s=60.0)
    wave = plan.waves[0]
    region = wave.regions[0]
    s0, s1, s2 = region.stages
    s0 = replace(s0, kind=StageKind.ONEBOX)
    s1 = replace(s1, hosts=tuple(replace(h, az="az0") for h in s1.hosts))
    regions = (replace(region, stages=(s0, s1, s2)),)
    return replace(plan, waves=(replace(wave, regions=regions),))


class NoTransport:
    async def open(self, host: Any) -> Any:
        raise AssertionError("the test ingests snapshots; nothing is polled")


def _source(plan: Plan) -> AgentSource:
    return AgentSource(NoTransport(), plan.hosts(), clock=lambda: 0.0)  # type: ignore[arg-type]


def _feed(
    source: AgentSource, host: str, ts: range, rate: float, err: float, rel: str, *, t0: int = 0
) -> None:
    """Snapshots each second: ``rate`` requests/s with ``err`` of them 5xx."""
    for t in ts:
        n = rate * (t - t0) if t >= t0 else 0.0
        source.ingest(
            host,
            {
                "v": 1,
                "release": rel,
                "counters": {REQ: n, ERR: n * err, CPU: 0.1 * t},
                "histograms": {LAT: {"le": LE, "counts": [n * c for c in SHAPE], "sum": 0.0}},
                "gauges": {"fleetwave_agent_app_up": [1.0]},
            },
            float(t),
        )


def _state(plan: Plan, stage_phase: StagePhase, active: tuple[str, ...]) -> State:
    state, _ = decide(initial_state(plan), DeploymentStarted(), 0.0)
    onebox = plan.stages()[0].id
    stages = {**state.stages, onebox: replace(state.stages[onebox], phase=stage_phase)}
    hosts = dict(state.hosts)
    for name in active:
        hosts[name] = replace(hosts[name], phase=HostPhase.DONE, serving=True, release="v2")
    return replace(state, stages=stages, hosts=hosts)


def test_planned_rounds_split_the_bake_by_the_interval() -> None:
    assert planned_rounds(60.0, 10.0) == 6
    assert planned_rounds(61.0, 10.0) == 7
    assert planned_rounds(0.0, 10.0) == 1


def test_reference_is_the_old_release_in_the_same_az_else_the_previous_stage() -> None:
    plan = _plan()
    onebox, _az0, az1 = plan.stages()
    state = _state(plan, StagePhase.BAKING, ("h1",))
    kind, hosts = reference_hosts(plan, state, onebox)
    assert kind is Reference.OLD_RELEASE
    assert [h.name for h in hosts] == ["h2", "h3"]
    # az1 has no old host left once it rolled: the previous stage (az0) on the new release
    done = _state(plan, StagePhase.DONE, ("h1", "h2", "h3", "h4", "h5"))
    kind, hosts = reference_hosts(plan, done, az1)
    assert kind is Reference.PREVIOUS_STAGE
    assert [h.name for h in hosts] == ["h2", "h3"]
    # the first stage with nothing before it and nothing old in its AZ: none
    kind, hosts = reference_hosts(plan, done, onebox)
    assert kind is Reference.NONE
    assert hosts == []


def test_the_sample_counts_new_hosts_from_activation_and_before_until_the_drain() -> None:
    plan = _plan()
    source = _source(plan)
    _feed(source, "h1", range(0, 20), 20.0, 0.0, "v1")
    _feed(source, "h1", range(20, 41), 20.0, 0.0, "v2")
    for h in ("h2", "h3"):
        _feed(source, h, range(0, 41), 20.0, 0.0, "v1")
    state = _state(plan, StagePhase.BAKING, ("h1",))
    # h1 was last seen untouched at 19 and first seen active at 21
    built = stage_sample(
        plan, state, plan.stages()[0], source.ring, {"h1": 21.0}, {"h1": 19.0}, 40.0, 10.0
    )
    s = built.sample
    assert s.reference_kind is Reference.OLD_RELEASE
    assert [(w.host, w.seconds, w.requests) for w in s.new] == [("h1", 19.0, 380.0)]
    assert [w.host for w in s.reference] == ["h2", "h3"]
    assert s.reference[0].seconds == pytest.approx(19.0)
    # before: a window as long as the new one, ending where h1 was last untouched
    assert [(w.seconds, w.requests) for w in s.before] == [(19.0, 380.0)]
    assert s.planned_rounds == 6
    assert not built.idle
    # a host not yet seen active is not new, whatever its snapshots say
    none = stage_sample(plan, state, plan.stages()[0], source.ring, {}, {}, 40.0, 10.0)
    assert none.sample.new == ()
    assert none.sample.reference == ()
    assert not none.idle


def _watch(plan: Plan, source: AgentSource) -> AnomalyWatch:
    return AnomalyWatch(plan, AnomalySettings(), source.ring, interval_s=10.0)


def _run(plan: Plan, h1_rate: float, h1_err: float, ref_rate: float = 20.0) -> AnomalyWatch:
    """h1 on v2 from t=10 (active from the round at t=10), h2/h3 on v1; judged at 130."""
    source = _source(plan)
    for h in ("h2", "h3"):
        _feed(source, h, range(0, 131), ref_rate, 0.0, "v1")
    _feed(source, "h1", range(0, 10), ref_rate, 0.0, "v1")
    watch = _watch(plan, source)
    watch.track(_state(plan, StagePhase.ROLLING, ()), 5.0)
    for t in range(10, 131):
        source.ingest(
            "h1",
            {
                "v": 1,
                "release": "v2",
                "counters": {REQ: h1_rate * (t - 9), ERR: h1_rate * (t - 9) * h1_err, CPU: t},
                "histograms": {
                    LAT: {"le": LE, "counts": [h1_rate * (t - 9) * c for c in SHAPE], "sum": 0.0}
                },
                "gauges": {"fleetwave_agent_app_up": [1.0]},
            },
            float(t),
        )
        if t == 10:
            watch.track(_state(plan, StagePhase.ROLLING, ("h1",)), 10.0)
    return watch


def test_errors_on_the_onebox_fail_and_the_engine_hears_it_once() -> None:
    plan = _plan()
    watch = _run(plan, 20.0, 0.02)
    state = _state(plan, StagePhase.BAKING, ("h1",))
    events = watch.judge(state, 130.0)
    assert len(events) == 1
    e = events[0]
    assert e.outcome is AnomalyOutcome.FAIL
    assert e.stage_id == plan.stages()[0].id
    errors = next(f for f in e.evidence["findings"] if f["check"] == "errors")
    assert errors["outcome"] == "fail"
    assert errors["basis"] == "old_release"
    assert errors["reference_zero"] is True
    assert errors["p"] <= errors["threshold"]
    assert e.evidence["planned_rounds"] == 6
    reading = watch.anomaly_for(e.stage_id)
    assert reading is not None
    assert reading.outcome is AnomalyOutcome.FAIL
    assert watch.judge(state, 130.0) == []  # unchanged: not sent again


def test_zero_traffic_on_the_new_host_fails_never_waits() -> None:
    plan = _plan()
    watch = _run(plan, 0.0, 0.0)
    events = watch.judge(_state(plan, StagePhase.BAKING, ("h1",)), 130.0)
    assert [e.outcome for e in events] == [AnomalyOutcome.FAIL]
    traffic = next(f for f in events[0].evidence["findings"] if f["check"] == "traffic")
    assert traffic["outcome"] == "fail"


def test_a_healthy_onebox_passes() -> None:
    plan = _plan()
    watch = _run(plan, 20.0, 0.0)
    events = watch.judge(_state(plan, StagePhase.BAKING, ("h1",)), 130.0)
    assert [e.outcome for e in events] == [AnomalyOutcome.PASS]


def test_no_traffic_anywhere_is_idle_and_waits_never_fails() -> None:
    plan = _plan()
    watch = _run(plan, 0.0, 0.0, ref_rate=0.0)
    events = watch.judge(_state(plan, StagePhase.BAKING, ("h1",)), 130.0)
    assert [e.outcome for e in events] == [AnomalyOutcome.WAIT]
    reading = watch.anomaly_for(plan.stages()[0].id)
    assert reading is not None
    assert reading.idle
    assert reading.evidence["idle"] is True


def test_too_little_data_waits_and_stages_not_live_are_not_judged() -> None:
    plan = _plan()
    source = _source(plan)
    for h in ("h1", "h2", "h3"):
        _feed(source, h, range(0, 4), 20.0, 0.5, "v2" if h == "h1" else "v1")
    watch = _watch(plan, source)
    watch.track(_state(plan, StagePhase.ROLLING, ("h1",)), 0.0)
    events = watch.judge(_state(plan, StagePhase.BAKING, ("h1",)), 3.0)
    assert [e.outcome for e in events] == [AnomalyOutcome.WAIT]  # 60 requests: too few
    assert watch.judge(_state(plan, StagePhase.DONE, ("h1",)), 4.0) == []


def test_a_baking_stage_whose_hosts_were_all_skipped_passes() -> None:
    # A stage settles with every host held in MAINT by an operator: at its bake no
    # host serves the new release, and none ever will.
    plan = _plan()
    watch = _run(plan, 20.0, 0.0)
    onebox = plan.stages()[0].id
    rolling = watch.judge(_state(plan, StagePhase.ROLLING, ()), 130.0)
    assert [e.outcome for e in rolling] == [AnomalyOutcome.WAIT]
    baking = watch.judge(_state(plan, StagePhase.BAKING, ()), 131.0)
    assert [e.outcome for e in baking] == [AnomalyOutcome.PASS]
    reading = watch.anomaly_for(onebox)
    assert reading is not None
    assert reading.outcome is AnomalyOutcome.PASS


def test_a_first_install_has_no_baseline() -> None:
    # h1 serves; nothing near it ever did (no old release anywhere, no past traffic).
    plan = _plan()
    watch = _run(plan, 20.0, 0.0, ref_rate=0.0)
    events = watch.judge(_state(plan, StagePhase.BAKING, ("h1",)), 130.0)
    assert [e.outcome for e in events] == [AnomalyOutcome.WAIT]
    reading = watch.anomaly_for(plan.stages()[0].id)
    assert reading is not None
    assert reading.no_baseline
    assert not reading.idle
    assert reading.evidence["no_baseline"] is True
    # with a reference that serves, the same new host has a baseline
    served = _run(plan, 20.0, 0.0)
    served.judge(_state(plan, StagePhase.BAKING, ("h1",)), 130.0)
    again = served.anomaly_for(plan.stages()[0].id)
    assert again is not None
    assert not again.no_baseline
