"""The anomaly detector's outcomes in the engine (events in, actions out) and in the
bake gate: FAIL rolls back while the stage is rolled or baked, WAIT never does and
keeps the bake from passing (``max_bake`` / ``on_insufficient`` decide), PASS lets it
end. No sockets, no clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fleetwave.config.alarms import OnInsufficient
from fleetwave.planning.model import BakeRequirement, Stage
from fleetwave.rollout import Phase, StagePhase, State, Target, decide, initial_state
from fleetwave.rollout.events import (
    AnomalyJudged,
    DeploymentStarted,
    GateResult,
    HostDrained,
    StageProbed,
    event_from_json,
    to_json,
)
from fleetwave.rollout.gates import AnomalyGate, AnomalyReading, BakeTarget
from fleetwave.rollout.types import AnomalyOutcome, DrainHost, Verdict

from .sim import make_plan

pytestmark = pytest.mark.unit

S0 = "w0/r00/s0"
EVIDENCE = {"kind": "anomaly", "stage": S0, "outcome": "fail", "findings": [{"check": "errors"}]}


def _rolling() -> State:
    state, _ = decide(initial_state(make_plan([[[2, 2]]])), DeploymentStarted(), 0.0)
    state, _ = decide(state, GateResult(Target.stage(S0), "blockers", Verdict.ok()), 1.0)
    state, actions = decide(state, StageProbed(S0, frozenset({"h1", "h2"})), 2.0)
    assert any(isinstance(a, DrainHost) for a in actions)
    state, _ = decide(state, HostDrained("h1"), 3.0)
    return state


def _judged(outcome: AnomalyOutcome, stage: str = S0) -> AnomalyJudged:
    return AnomalyJudged(stage, outcome, "errors: 2% vs 0%", EVIDENCE)


def test_fail_while_rolling_rolls_back_with_the_reason() -> None:
    state, actions = decide(_rolling(), _judged(AnomalyOutcome.FAIL), 4.0)
    assert state.phase is Phase.ROLLING_BACK
    assert state.rollback_reason == f"anomaly detected in {S0}: errors: 2% vs 0%"
    assert state.anomaly[S0] == (AnomalyOutcome.FAIL, "errors: 2% vs 0%")
    assert not any(isinstance(a, DrainHost) and not a.rollback for a in actions)


@pytest.mark.parametrize("outcome", [AnomalyOutcome.WAIT, AnomalyOutcome.PASS])
def test_wait_and_pass_never_roll_back(outcome: AnomalyOutcome) -> None:
    state, actions = decide(_rolling(), _judged(outcome), 4.0)
    assert state.phase is Phase.RUNNING
    assert actions == []
    assert state.anomaly[S0][0] is outcome


def test_a_late_fail_of_a_stage_not_live_is_only_recorded() -> None:
    # the second stage has not started: its FAIL (a late or stray event) rolls nothing back
    state, _ = decide(_rolling(), _judged(AnomalyOutcome.FAIL, "w0/r00/s1"), 4.0)
    assert state.phase is Phase.RUNNING
    assert state.anomaly["w0/r00/s1"][0] is AnomalyOutcome.FAIL
    unknown, _ = decide(_rolling(), _judged(AnomalyOutcome.FAIL, "nope"), 4.0)
    assert unknown.anomaly == {}


def test_anomaly_judged_round_trips_through_json_and_replays() -> None:
    event = _judged(AnomalyOutcome.FAIL)
    data = to_json(event)
    assert data["outcome"] == "fail"
    assert data["evidence"] == EVIDENCE
    assert event_from_json(data) == event


# -- the bake gate -----------------------------------------------------------------------

STAGE = make_plan([[[2]]]).stages()[0]


class View:
    interval_s = 5.0

    def __init__(self, reading: AnomalyReading | None) -> None:
        self.reading = reading

    def anomaly_for(self, stage_id: str) -> AnomalyReading | None:
        return self.reading


def _reading(outcome: AnomalyOutcome, idle: bool = False) -> AnomalyReading:
    return AnomalyReading(S0, 50.0, outcome, "why", idle, {"reason": "why", "findings": []})


def _check(reading: AnomalyReading | None, bake: BakeRequirement, now: float = 100.0) -> Verdict:
    target = BakeTarget(Target.stage(S0), bake, stage=STAGE)
    result: Any = asyncio.run(AnomalyGate(View(reading)).check(target, 0.0, now))
    return result  # type: ignore[no-any-return]


TIMED = BakeRequirement(duration_s=60.0)
COUNTED = BakeRequirement(60.0, min_datapoints=10, metric="requests", max_bake_s=300.0)


def test_pass_passes_fail_fails_wait_waits_for_the_next_round() -> None:
    assert _check(_reading(AnomalyOutcome.PASS), TIMED).kind == "ok"
    failed = _check(_reading(AnomalyOutcome.FAIL), TIMED)
    assert failed.kind == "fail"
    assert failed.reason == "anomaly detection: why"
    waiting = _check(_reading(AnomalyOutcome.WAIT), TIMED)
    assert waiting.kind == "wait"
    assert waiting.retry_at == 105.0
    (record,) = waiting.inputs
    assert record["gate"] == "anomaly"
    assert record["outcome"] == "wait"
    assert record["verdict"]["reason"] == "why"
    assert _check(None, TIMED).kind == "wait"  # not judged yet is not a pass


def test_idle_passes_a_time_only_bake_but_never_a_bake_that_counts_data() -> None:
    assert _check(_reading(AnomalyOutcome.WAIT, idle=True), TIMED).kind == "ok"
    assert _check(_reading(AnomalyOutcome.WAIT, idle=True), COUNTED).kind == "wait"


def test_no_baseline_never_holds_the_bake_but_a_fail_still_fails() -> None:
    # A first install: waiting for a baseline would wait forever; BakeGate still
    # requires the bake's own time and data.
    first = AnomalyReading(S0, 50.0, AnomalyOutcome.WAIT, "why", no_baseline=True)
    assert _check(first, TIMED).kind == "ok"
    assert _check(first, COUNTED).kind == "ok"
    failed = AnomalyReading(S0, 50.0, AnomalyOutcome.FAIL, "why", no_baseline=True)
    assert _check(failed, TIMED).kind == "fail"


def test_no_bake_at_all_is_not_held() -> None:
    assert _check(_reading(AnomalyOutcome.WAIT), BakeRequirement(0.0)).kind == "ok"


@pytest.mark.parametrize(
    ("policy", "kind"),
    [
        (OnInsufficient.HOLD, "hold"),
        (OnInsufficient.ROLLBACK, "fail"),
        (OnInsufficient.PROCEED, "ok"),
    ],
)
def test_waiting_past_max_bake_on_insufficient_decides(policy: OnInsufficient, kind: str) -> None:
    bake = BakeRequirement(60.0, min_datapoints=10, metric="requests", max_bake_s=300.0,
                           on_insufficient=policy)  # fmt: skip
    assert _check(_reading(AnomalyOutcome.WAIT), bake, now=299.0).kind == "wait"
    verdict = _check(_reading(AnomalyOutcome.WAIT), bake, now=300.0)
    assert verdict.kind == kind
    assert verdict.inputs[0]["on_insufficient"] == policy.value


def test_a_stage_waiting_on_the_detector_does_not_finish_its_bake() -> None:
    """Through the engine: the bake gate's wait keeps the stage baking."""
    plan = make_plan([[[1]]], bake_s=10.0)
    stage: Stage = plan.stages()[0]
    state, _ = decide(initial_state(plan), DeploymentStarted(), 0.0)
    state, _ = decide(state, GateResult(Target.stage(stage.id), "blockers", Verdict.ok()), 1.0)
    state, _ = decide(state, StageProbed(stage.id, frozenset({"h1"})), 2.0)
    state = _baking(state)
    wait = _check(_reading(AnomalyOutcome.WAIT), TIMED)
    state, _ = decide(state, GateResult(Target.stage(stage.id), "bake", wait), 70.0)
    assert state.stages[stage.id].phase is StagePhase.BAKING
    assert state.stages[stage.id].waiting == "anomaly detection: why"


def _baking(state: State) -> State:
    from fleetwave.rollout.events import HostInstalled, HostReturned

    state, _ = decide(state, HostDrained("h1"), 3.0)
    state, _ = decide(state, HostInstalled("h1", "v2", "v1"), 4.0)
    state, _ = decide(state, HostReturned("h1"), 5.0)
    assert state.stages["w0/r00/s0"].phase is StagePhase.BAKING
    return state


# -- the trail and the metric --------------------------------------------------------------

FULL = {
    "kind": "anomaly",
    "reference": "old_release",
    "sensitivity": "medium",
    "alpha": 0.01,
    "round_alpha": 0.00167,
    "planned_rounds": 6,
    "findings": [
        {
            "check": "errors",
            "basis": "old_release",
            "outcome": "fail",
            "test": "conditional binomial",
            "n": [2400, 4800],
            "statistic": 48,
            "p": 1.2e-23,
            "threshold": 0.00024,
            "effect": 0.02,
            "relative_effect": None,
            "reference_zero": True,
            "floor": {"absolute": 0.002, "relative": 0.5},
            "unit": "ratio",
        }
    ],
}


def test_explain_prints_n_statistic_p_threshold_effect_and_floors() -> None:
    from fleetwave.observe import trail

    entry = {"type": "AnomalyJudged", "at": 0.0, "stage_id": S0, "outcome": "fail",
             "reason": "errors (old_release): 2% vs 0%", "evidence": FULL}  # fmt: skip
    lines = trail.render([entry])
    assert lines[0].endswith(f"anomaly {S0} -> fail: errors (old_release): 2% vs 0%")
    text = "\n".join(lines)
    parts = ("n 2.4e+03/4.8e+03", "statistic 48", "p 1.2e-23 vs threshold 0.00024",
             "effect 0.02 ratio (relative inf;", "floors 0.002 and 0.5", "6 rounds")  # fmt: skip
    for part in parts:
        assert part in text, text
    gate = {"type": "GateResult", "at": 0.0, "target": S0, "purpose": "bake",
            "verdict": {"kind": "wait", "reason": "anomaly detection: waiting",
                        "inputs": [{"gate": "anomaly", "outcome": "wait", "idle": True,
                                    "verdict": {"reason": "waiting for data"}}]}}  # fmt: skip
    assert "anomaly: wait (idle: no request anywhere" in "\n".join(trail.render([gate]))


def test_the_metric_carries_the_last_outcome_per_stage() -> None:
    from fleetwave.observe.events import AnomalyVerdictChanged, GateVerdict, event_dict
    from fleetwave.observe.metrics import MetricsSink

    sink = MetricsSink()
    sink.emit(AnomalyVerdictChanged("d1", 1.0, S0, "wait", "too few", FULL))
    sink.emit(GateVerdict("d1", 2.0, S0, "bake", "fail", "x", ({"gate": "anomaly",
              "stage": S0, "outcome": "fail"},)))  # fmt: skip
    got = {
        s.labels["outcome"]: s.value
        for m in sink.anomaly.collect()
        for s in m.samples
        if s.labels["stage"] == S0
    }
    assert got == {"pass": 0.0, "wait": 0.0, "fail": 1.0}
    assert event_dict(AnomalyVerdictChanged("d1", 1.0, S0, "fail", "r", FULL))["verdict"] == FULL
