"""Alarm evaluation: pure functions from datapoints to an alarm state with its evidence.

A metric alarm follows CloudWatch ("How the CloudWatch alarm evaluates missing data"):

* Each evaluation looks at the alarm's *evaluation range*, the newest
  ``evaluation_periods + 2`` datapoints (CloudWatch's 5 for N=3). A datapoint is
  breaching (X), not breaching (0) or missing (-); one resting on fewer than
  ``min_samples`` samples is missing too.
* With at least N real datapoints in the range, the newest N real ones are judged
  (missing ones are skipped, ``treat_missing_data`` is not consulted): ALARM if at least
  M of them breach, else OK.
* With none: ``missing`` gives INSUFFICIENT_DATA, ``ignore`` keeps the state,
  ``breaching`` gives ALARM, ``not_breaching`` OK.
* With some but fewer than N, every real datapoint is judged plus as few filled ones
  as needed to make N: filled as breaching (``breaching``), as not breaching
  (``not_breaching``), or not at all (``missing``, ``ignore``).
* *Premature alarm state* (``missing`` and ``ignore``): with fewer than M real
  datapoints, the alarm still goes to ALARM (``ignore``: keeps its state) when, among
  the newest N positions, the oldest breaching datapoint is at least M positions old
  and every newer one is breaching or missing: ``- - X - -`` alarms at M=N=3. A
  breach that is younger than that, e.g. a lone breach at the newest end
  ``- - - - X``, does not alarm yet: the state is kept (CloudWatch leaves this case
  unstated; fleetwave neither alarms on it nor calls it OK). Both rules apply only
  while the range holds no real non-breaching datapoint: that is how row 3 of
  CloudWatch's M-of-N table (``0 - X - -``, M=2) stays OK, and it keeps ``missing``
  from ever judging harsher than ``breaching``.

Composite alarms use the three-valued logic of :mod:`fleetwave.config.alarm_expr`: an
alarm in INSUFFICIENT_DATA is unknown, and an unknown never counts as OK.

Every evaluation returns an :class:`Evidence` record (frozen, ``to_json()``) for the
decision trail: the state, the values, the threshold, M of N and the data counts.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetwave.config import alarm_expr
from fleetwave.config.alarm_expr import AlarmState
from fleetwave.config.alarms import (
    AlarmDef,
    CompositeAlarm,
    MetricAlarm,
    PrometheusAlert,
    TreatMissing,
)
from fleetwave.watch.source import Datapoint, Series


class Mark(enum.Enum):
    """One datapoint as the evaluation sees it (CloudWatch's table notation)."""

    OK = "0"
    BREACHING = "X"
    MISSING = "-"


def classify(alarm: MetricAlarm, points: Sequence[Datapoint]) -> list[Mark]:
    """Each datapoint's mark: missing (no value, or fewer than ``min_samples``),
    breaching, or not."""
    marks = []
    for p in points:
        if p.value is None or p.samples < alarm.min_samples:
            marks.append(Mark.MISSING)
        elif alarm.comparison.breaches(p.value, alarm.threshold):
            marks.append(Mark.BREACHING)
        else:
            marks.append(Mark.OK)
    return marks


@dataclass(frozen=True)
class Decision:
    """The pure outcome of judging one evaluation range."""

    state: AlarmState
    reason: str
    breaching: int  # breaching datapoints among those judged (filled ones included)
    judged: int  # datapoints judged: N, or fewer real ones when nothing is filled
    real: int  # real (non-missing) datapoints in the range
    filled: int  # missing datapoints filled in by treat_missing_data


def decide(
    marks: Sequence[Mark],
    n: int,
    m: int,
    treat: TreatMissing,
    previous: AlarmState,
    evaluation_range: int | None = None,
) -> Decision:
    """Judge the newest ``evaluation_range`` marks (default N+2), oldest first.

    Fewer marks than the range (a watch that just started) count as missing at the
    old end.
    """
    width = evaluation_range if evaluation_range is not None else n + 2
    window = list(marks[-width:])
    window = [Mark.MISSING] * (width - len(window)) + window
    real = [k for k in window if k is not Mark.MISSING]
    if len(real) >= n:
        judged = real[-n:]
        b = judged.count(Mark.BREACHING)
        state = AlarmState.ALARM if b >= m else AlarmState.OK
        return Decision(state, f"{b} of the newest {n} real datapoints breach", b, n, len(real), 0)
    if not real:
        if treat is TreatMissing.MISSING:
            return Decision(AlarmState.INSUFFICIENT_DATA, "no data in range", 0, 0, 0, 0)
        if treat is TreatMissing.IGNORE:
            return Decision(previous, "no data in range: state kept (ignore)", 0, 0, 0, 0)
        if treat is TreatMissing.BREACHING:
            return Decision(AlarmState.ALARM, "no data in range, treated as breaching", n, n, 0, n)
        return Decision(AlarmState.OK, "no data in range, treated as not breaching", 0, n, 0, n)
    fill = n - len(real)
    rb = real.count(Mark.BREACHING)
    if treat is TreatMissing.BREACHING:
        b = rb + fill
        state = AlarmState.ALARM if b >= m else AlarmState.OK
        return Decision(
            state, f"{b} of {n} breach ({fill} missing as breaching)", b, n, len(real), fill
        )
    if treat is TreatMissing.NOT_BREACHING:
        state = AlarmState.ALARM if rb >= m else AlarmState.OK
        why = f"{rb} of {n} breach ({fill} missing as not breaching)"
        return Decision(state, why, rb, n, len(real), fill)
    # missing / ignore: only real datapoints are judged.
    if rb >= m:
        return Decision(
            AlarmState.ALARM, f"{rb} real datapoints breach", rb, len(real), len(real), 0
        )
    # The two sparse-data rules need a range without any real good datapoint.
    age = _breach_age(window, n) if Mark.OK not in real else None
    if age is not None and age >= m:
        if treat is TreatMissing.IGNORE:
            why = "premature alarm shape: state kept (ignore)"
            return Decision(previous, why, rb, len(real), len(real), 0)
        why = f"breach {age} datapoints old, nothing newer clears it (premature alarm rule)"
        return Decision(AlarmState.ALARM, why, rb, len(real), len(real), 0)
    if age is not None and age < m:
        why = f"newest breach only {age} datapoint(s) old: not alarming yet, state kept"
        return Decision(previous, why, rb, len(real), len(real), 0)
    if Mark.OK not in real:
        # Only breaching datapoints, too few and too old to alarm: nothing shows the
        # metric is good again, so a sparse range never reads as a pass.
        why = f"{rb} breaching datapoint(s), fewer than {m} and none good: state kept"
        return Decision(previous, why, rb, len(real), len(real), 0)
    why = f"{rb} of {len(real)} real datapoints breach (fewer than {m})"
    return Decision(AlarmState.OK, why, rb, len(real), len(real), 0)


def _breach_age(window: Sequence[Mark], n: int) -> int | None:
    """Among the newest ``n`` positions: the age (1 = newest) of the oldest breaching
    datapoint if every newer one is breaching or missing, else None."""
    last = list(window[-n:])
    if Mark.BREACHING not in last:
        return None
    first = last.index(Mark.BREACHING)
    if Mark.OK in last[first:]:
        return None
    return len(last) - first


@dataclass(frozen=True)
class Evidence:
    """One alarm's evaluation, as the decision trail records it (JSON-serialisable)."""

    alarm: str
    kind: str  # "metric", "composite", "prometheus_alert"
    state: AlarmState
    previous: AlarmState
    at: float
    reason: str
    scope: str = ""
    values: tuple[float | None, ...] = ()  # the evaluation range, oldest first
    samples: tuple[float, ...] = ()
    marks: str = ""  # e.g. "0 - X - X"
    threshold: float | None = None
    comparison: str = ""
    datapoints_to_alarm: int = 0  # M
    evaluation_periods: int = 0  # N
    breaching: int = 0
    real: int = 0
    filled: int = 0
    expression: str = ""
    children: tuple[Evidence, ...] = field(default=())  # hosts, or a composite's inputs

    @property
    def changed(self) -> bool:
        return self.state is not self.previous

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``events.jsonl`` and ``explain --json``."""
        out: dict[str, Any] = {
            "alarm": self.alarm,
            "kind": self.kind,
            "state": self.state.value,
            "previous": self.previous.value,
            "at": self.at,
            "reason": self.reason,
        }
        if self.scope:
            out["scope"] = self.scope
        if self.kind == "metric":
            out.update(
                values=list(self.values),
                samples=list(self.samples),
                marks=self.marks,
                threshold=self.threshold,
                comparison=self.comparison,
                m_of_n=[self.datapoints_to_alarm, self.evaluation_periods],
                breaching=self.breaching,
                real=self.real,
                filled=self.filled,
            )
        if self.expression:
            out["expression"] = self.expression
        if self.children:
            out["children"] = [c.to_json() for c in self.children]
        return out


def evaluate_metric(
    alarm: MetricAlarm,
    series: Series,
    previous: AlarmState,
    at: float,
    scope: str = "",
) -> Evidence:
    """Evaluate one metric alarm over ``series`` (at least its evaluation range)."""
    points = list(series.points[-alarm.evaluation_range :])
    marks = classify(alarm, points)
    d = decide(
        marks,
        alarm.evaluation_periods,
        alarm.datapoints_to_alarm,
        alarm.treat_missing,
        previous,
        alarm.evaluation_range,
    )
    return Evidence(
        alarm=alarm.name,
        kind="metric",
        state=d.state,
        previous=previous,
        at=at,
        reason=d.reason,
        scope=scope,
        values=tuple(p.value for p in points),
        samples=tuple(p.samples for p in points),
        marks=" ".join(k.value for k in marks),
        threshold=alarm.threshold,
        comparison=alarm.comparison.value,
        datapoints_to_alarm=alarm.datapoints_to_alarm,
        evaluation_periods=alarm.evaluation_periods,
        breaching=d.breaching,
        real=d.real,
        filled=d.filled,
    )


def worst(states: Iterable[AlarmState]) -> AlarmState:
    """ALARM if any, else INSUFFICIENT_DATA if any, else OK (an empty set is unknown)."""
    seen = set(states)
    if AlarmState.ALARM in seen:
        return AlarmState.ALARM
    if AlarmState.INSUFFICIENT_DATA in seen or not seen:
        return AlarmState.INSUFFICIENT_DATA
    return AlarmState.OK


def evaluate_per_host(
    alarm: MetricAlarm,
    series_by_host: Mapping[str, Series],
    previous: Mapping[str, AlarmState],
    at: float,
) -> Evidence:
    """A ``scope: host`` alarm: each host judged alone; the alarm is the worst host."""
    children = tuple(
        evaluate_metric(
            alarm, series, previous.get(host, AlarmState.INSUFFICIENT_DATA), at, scope=host
        )
        for host, series in sorted(series_by_host.items())
    )
    state = worst(c.state for c in children)
    bad = [c.scope for c in children if c.state is state and state is not AlarmState.OK]
    reason = f"{state.value} on {', '.join(bad[:5])}" if bad else f"{len(children)} hosts OK"
    if not children:
        reason = "no hosts in scope"
    return Evidence(
        alarm=alarm.name,
        kind="metric",
        state=state,
        previous=previous.get("", AlarmState.INSUFFICIENT_DATA),
        at=at,
        reason=reason,
        scope="host",
        threshold=alarm.threshold,
        comparison=alarm.comparison.value,
        datapoints_to_alarm=alarm.datapoints_to_alarm,
        evaluation_periods=alarm.evaluation_periods,
        children=children,
    )


def evaluate_alert(
    alarm: PrometheusAlert, firing: bool | None, previous: AlarmState, at: float
) -> Evidence:
    """A ``prometheus_alert:`` alarm: ALARM while firing, OK otherwise (a pending alert
    is not firing), INSUFFICIENT_DATA when Prometheus could not be asked (None)."""
    if firing is None:
        state, why = AlarmState.INSUFFICIENT_DATA, "Prometheus did not answer"
    elif firing:
        state, why = AlarmState.ALARM, f"alert {alarm.alert} is firing"
    else:
        state, why = AlarmState.OK, f"alert {alarm.alert} is not firing"
    return Evidence(alarm.name, "prometheus_alert", state, previous, at, why)


def evaluate_composite(
    alarm: CompositeAlarm, inputs: Mapping[str, Evidence], previous: AlarmState, at: float
) -> Evidence:
    """A composite over already-evaluated alarms (three-valued; see the module doc)."""
    names = sorted(alarm_expr.alarm_names(alarm.expression))
    states = {n: inputs[n].state for n in names}
    truth = alarm_expr.evaluate_states(alarm.expression, states)
    state = truth.state()
    listed = ", ".join(f"{n}={states[n].value}" for n in names)
    return Evidence(
        alarm=alarm.name,
        kind="composite",
        state=state,
        previous=previous,
        at=at,
        reason=f"{truth.value} given {listed}",
        expression=alarm.text,
        children=tuple(inputs[n] for n in names),
    )


AlarmInput = Series | Mapping[str, Series] | bool | None


def evaluate_all(
    alarms: Mapping[str, AlarmDef],
    inputs: Mapping[str, AlarmInput],
    previous: Mapping[str, AlarmState],
    at: float,
    *,
    scopes: Mapping[str, str] | None = None,
) -> dict[str, Evidence]:
    """Evaluate every alarm: metric alarms from their Series (``scope: host`` from a
    Series per host), alerts from their firing flag, composites from the results.

    A metric alarm or alert without an input is INSUFFICIENT_DATA (never OK).
    ``previous`` holds last states (per-host ones as ``"name@host"``).
    """
    out: dict[str, Evidence] = {}
    start = AlarmState.INSUFFICIENT_DATA
    for name, alarm in alarms.items():
        before = previous.get(name, start)
        given = inputs.get(name)
        if isinstance(alarm, MetricAlarm):
            scope = (scopes or {}).get(name, alarm.scope.value)
            if isinstance(given, Series):
                out[name] = evaluate_metric(alarm, given, before, at, scope)
            elif isinstance(given, Mapping):
                hosts = {h: previous.get(f"{name}@{h}", start) for h in given}
                per_host = evaluate_per_host(alarm, given, {**hosts, "": before}, at)
                out[name] = per_host
            else:
                out[name] = Evidence(name, "metric", start, before, at, "no data asked for")
        elif isinstance(alarm, PrometheusAlert):
            firing = given if isinstance(given, bool) else None
            out[name] = evaluate_alert(alarm, firing, before, at)
    for name in _composite_order(alarms):
        alarm = alarms[name]
        assert isinstance(alarm, CompositeAlarm)
        out[name] = evaluate_composite(alarm, out, previous.get(name, start), at)
    return out


def _composite_order(alarms: Mapping[str, AlarmDef]) -> list[str]:
    """Composites, each after every composite it names (the loader refused cycles)."""
    pending = {n for n, a in alarms.items() if isinstance(a, CompositeAlarm)}
    order: list[str] = []
    done = {n for n in alarms if n not in pending}
    for _ in range(len(pending) + 1):
        ready = sorted(
            n
            for n in pending
            if alarm_expr.alarm_names(alarms[n].expression) <= done  # type: ignore[union-attr]
        )
        if not ready:
            break
        order.extend(ready)
        done.update(ready)
        pending.difference_update(ready)
    if pending:
        raise ValueError(f"composite alarms in a cycle: {', '.join(sorted(pending))}")
    return order


def previous_states(evidence: Mapping[str, Evidence]) -> dict[str, AlarmState]:
    """The ``previous`` mapping for the next :func:`evaluate_all`, per-host ones included."""
    out: dict[str, AlarmState] = {}
    for name, ev in evidence.items():
        out[name] = ev.state
        if ev.scope == "host":
            for child in ev.children:
                out[f"{name}@{child.scope}"] = child.state
    return out
