"""Metric-alarm evaluation (CloudWatch's missing-data semantics), composites, evidence."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave.config import alarm_expr
from fleetwave.config.alarm_expr import AlarmState, Truth
from fleetwave.config.alarms import (
    AlarmDef,
    Comparison,
    CompositeAlarm,
    MetricAlarm,
    MetricSpec,
    PrometheusAlert,
    ScopeKind,
    Statistic,
    TreatMissing,
)
from fleetwave.watch.alarms import (
    AlarmInput,
    Mark,
    decide,
    evaluate_all,
    evaluate_metric,
    previous_states,
    worst,
)
from fleetwave.watch.source import Datapoint, Series

pytestmark = pytest.mark.unit

CASES = sorted((Path(__file__).parent / "cases").glob("*.json"))
S = AlarmState


def marks(text: str) -> list[Mark]:
    return [Mark(c) for c in text.split()]


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
@pytest.mark.parametrize("treat", list(TreatMissing), ids=lambda t: t.value)
@pytest.mark.parametrize("previous", [S.OK, S.ALARM, S.INSUFFICIENT_DATA], ids=lambda s: s.value)
def test_missing_data_table(path: Path, treat: TreatMissing, previous: AlarmState) -> None:
    case = json.loads(path.read_text())
    expected = case["expect"][treat.value]
    d = decide(
        marks(case["marks"]),
        case["evaluation_periods"],
        case["datapoints_to_alarm"],
        treat,
        previous,
    )
    want = previous if expected == "keep" else S(expected)
    assert d.state is want, f"{case['marks']} {treat.value}: {d.reason}"


def alarm(**kw: Any) -> MetricAlarm:
    base: dict[str, Any] = dict(
        name="a",
        source=MetricSpec("errors", Statistic.RATE),
        comparison=Comparison.GT,
        threshold=1.0,
        evaluation_periods=3,
        datapoints_to_alarm=3,
    )
    return MetricAlarm(**{**base, **kw})


def series(*values: float | None, samples: float = 100.0) -> Series:
    return Series(tuple(Datapoint(float(i), v, samples) for i, v in enumerate(values)))


def test_evidence_records_values_threshold_m_of_n_and_counts() -> None:
    ev = evaluate_metric(alarm(), series(0.5, None, 2.0, None, 3.0), S.OK, 100.0, "stage")
    assert ev.state is S.OK  # 0 - X - X: three real, two breach
    data = json.loads(json.dumps(ev.to_json()))
    assert data["marks"] == "0 - X - X"
    assert data["values"] == [0.5, None, 2.0, None, 3.0]
    assert data["m_of_n"] == [3, 3]
    assert (data["threshold"], data["comparison"], data["real"]) == (1.0, ">", 3)
    assert data["state"] == "OK"
    assert data["previous"] == "OK"
    assert data["scope"] == "stage"


def test_percentile_with_too_few_samples_is_missing_not_judged() -> None:
    p99 = alarm(source=MetricSpec("latency", Statistic.P99), min_samples=1000)
    ev = evaluate_metric(p99, series(5.0, 5.0, 5.0, 5.0, 5.0, samples=999), S.OK, 0.0)
    assert ev.state is S.INSUFFICIENT_DATA
    assert ev.marks == "- - - - -"
    ev = evaluate_metric(p99, series(5.0, 5.0, 5.0, 5.0, 5.0, samples=1000), S.OK, 0.0)
    assert ev.state is S.ALARM


def test_comparisons() -> None:
    assert Comparison.GE.breaches(1.0, 1.0)
    assert not Comparison.GT.breaches(1.0, 1.0)
    assert Comparison.LE.breaches(1.0, 1.0)
    assert not Comparison.LT.breaches(1.0, 1.0)


def test_evaluate_all_composites_per_host_and_alerts() -> None:
    alarms: dict[str, AlarmDef] = {
        "errs": alarm(name="errs"),
        "mem": alarm(name="mem", scope=ScopeKind.HOST),
        "sev": PrometheusAlert("sev", "Sev2"),
        "agg": CompositeAlarm("agg", alarm_expr.parse('ALARM("errs") OR ALARM("mem")')),
        "top": CompositeAlarm("top", alarm_expr.parse('ALARM("agg") AND NOT ALARM("sev")')),
    }
    inputs: dict[str, AlarmInput] = {
        "errs": series(0.0, 0.0, 0.0),
        "mem": {"h1": series(0.0, 0.0, 0.0), "h2": series(2.0, 2.0, 2.0)},
        "sev": False,
    }
    out = evaluate_all(alarms, inputs, {}, 10.0)
    assert out["errs"].state is S.OK
    assert out["mem"].state is S.ALARM
    assert "h2" in out["mem"].reason
    assert [c.state for c in out["mem"].children] == [S.OK, S.ALARM]
    assert out["sev"].state is S.OK
    assert out["agg"].state is S.ALARM
    assert out["top"].state is S.ALARM
    prev = previous_states(out)
    assert prev["mem@h2"] is S.ALARM
    # Prometheus unreachable: the alert is unknown, so the composite is unknown too.
    again = evaluate_all(alarms, {**inputs, "sev": None}, prev, 20.0)
    assert again["sev"].state is S.INSUFFICIENT_DATA
    assert again["top"].state is S.INSUFFICIENT_DATA
    assert again["top"].previous is S.ALARM
    json.dumps(again["top"].to_json())


def test_a_metric_alarm_without_input_is_insufficient_never_ok() -> None:
    out = evaluate_all({"errs": alarm(name="errs")}, {}, {"errs": S.OK}, 0.0)
    assert out["errs"].state is S.INSUFFICIENT_DATA


def test_worst() -> None:
    assert worst([S.OK, S.INSUFFICIENT_DATA]) is S.INSUFFICIENT_DATA
    assert worst([S.OK, S.ALARM, S.INSUFFICIENT_DATA]) is S.ALARM
    assert worst([S.OK]) is S.OK
    assert worst([]) is S.INSUFFICIENT_DATA


# ---------------------------------------------------------------- properties

mark_lists = st.lists(st.sampled_from(list(Mark)), min_size=0, max_size=9)
nm = st.integers(1, 5).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n)))
states = st.sampled_from(list(AlarmState))


@settings(max_examples=400, deadline=None)
@given(mark_lists, nm, states)
def test_enough_real_data_makes_the_treatment_irrelevant(ms, n_m, previous) -> None:
    n, m = n_m
    window = ([Mark.MISSING] * (n + 2) + ms)[-(n + 2) :]
    if sum(k is not Mark.MISSING for k in window) < n:
        return
    results = {decide(ms, n, m, t, previous).state for t in TreatMissing}
    assert len(results) == 1


@settings(max_examples=400, deadline=None)
@given(mark_lists, nm, states)
def test_missing_is_never_harsher_than_breaching(ms, n_m, previous) -> None:
    n, m = n_m
    if decide(ms, n, m, TreatMissing.MISSING, previous).state is S.ALARM:
        assert decide(ms, n, m, TreatMissing.BREACHING, previous).state is S.ALARM
    nb = decide(ms, n, m, TreatMissing.NOT_BREACHING, previous).state
    assert nb is not S.INSUFFICIENT_DATA
    if nb is S.ALARM:
        assert decide(ms, n, m, TreatMissing.MISSING, previous).state is S.ALARM


@settings(max_examples=400, deadline=None)
@given(mark_lists, nm, st.sampled_from(list(TreatMissing)), states, st.data())
def test_one_more_breach_never_clears_an_alarm(ms, n_m, treat, previous, data) -> None:
    n, m = n_m
    if not ms or decide(ms, n, m, treat, previous).state is not S.ALARM:
        return
    i = data.draw(st.integers(0, len(ms) - 1))
    worse = [*ms[:i], Mark.BREACHING, *ms[i + 1 :]]
    assert decide(worse, n, m, treat, previous).state is S.ALARM


@settings(max_examples=300, deadline=None)
@given(mark_lists, nm, states)
def test_insufficient_only_from_missing_and_ignore(ms, n_m, previous) -> None:
    n, m = n_m
    assert decide(ms, n, m, TreatMissing.BREACHING, previous).state is not S.INSUFFICIENT_DATA
    ignore = decide(ms, n, m, TreatMissing.IGNORE, previous).state
    if ignore is S.INSUFFICIENT_DATA:
        assert previous is S.INSUFFICIENT_DATA


names = st.sampled_from(["a", "b", "c"])
leaves = st.builds(alarm_expr.Alarm, names, st.sampled_from(list(AlarmState)))
exprs = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(alarm_expr.Not, inner),
        st.builds(alarm_expr.And, st.lists(inner, min_size=2, max_size=3).map(tuple)),
        st.builds(alarm_expr.Or, st.lists(inner, min_size=2, max_size=3).map(tuple)),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(exprs, st.fixed_dictionaries({n: states for n in "abc"}))
def test_three_valued_evaluation_is_sound(expr, given_states) -> None:
    """A definite answer holds for every way the unknown alarms could resolve, so an
    unknown can never be what made a composite OK."""
    truth = alarm_expr.evaluate_states(expr, given_states)
    if truth is Truth.UNKNOWN:
        return
    unknown = [n for n, s in given_states.items() if s is S.INSUFFICIENT_DATA]
    for combo in itertools.product([S.OK, S.ALARM], repeat=len(unknown)):
        resolved = {**given_states, **dict(zip(unknown, combo, strict=True))}
        # INSUFFICIENT_DATA("x") is about the unknown itself: it stays as it was.
        if any(
            isinstance(leaf, alarm_expr.Alarm) and leaf.state is S.INSUFFICIENT_DATA
            for leaf in _leaves(expr)
        ):
            return
        assert alarm_expr.evaluate_states(expr, resolved) is truth


def _leaves(expr: alarm_expr.Expr) -> list[alarm_expr.Expr]:
    stack: list[alarm_expr.Expr] = [expr]
    out: list[alarm_expr.Expr] = []
    while stack:
        e = stack.pop()
        if isinstance(e, alarm_expr.Alarm):
            out.append(e)
        elif isinstance(e, alarm_expr.Not):
            stack.append(e.operand)
        else:
            stack.extend(e.operands)
    return out
