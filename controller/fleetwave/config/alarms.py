"""Alarms as data: the typed definitions the ``alarms:`` section of a pipeline loads into.

Three kinds share one namespace of names:

* a **metric alarm** watches one statistic of an agent metric (:data:`AGENT_METRICS`)
  or of a PromQL query, compared with a threshold over ``evaluation_periods`` periods
  with CloudWatch's M-of-N and missing-data rules (evaluated in ``fleetwave.watch``);
* a **composite alarm** is an expression over other alarms (:mod:`alarm_expr`);
* a **Prometheus alert** is an alerting rule the team already has, read from
  ``ALERTS{alertname=..., alertstate="firing"}`` (a pending alert never fires).

This module is pure data and validation; it imports nothing above ``config``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetwave.config import alarm_expr
from fleetwave.config.alarm_expr import AlarmState
from fleetwave.config.schema import Locator


class Statistic(enum.Enum):
    """How one period's datapoint is computed from a metric."""

    RATE = "rate"  # per-second increase of a counter
    RATIO = "ratio"  # increase of the metric / increase of the denominator
    COUNT = "count"  # increase of a counter over the period (bakes count requests)
    P50 = "p50"
    P90 = "p90"
    P99 = "p99"
    MEAN = "mean"  # mean of a gauge over the period (over hosts: their mean)
    MAX = "max"  # largest value of a gauge over the period and the scope's hosts

    @property
    def quantile(self) -> float | None:
        """0.5, 0.9 or 0.99 for the percentiles; None otherwise."""
        return {"p50": 0.5, "p90": 0.9, "p99": 0.99}.get(self.value)


class Comparison(enum.Enum):
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="

    def breaches(self, value: float, threshold: float) -> bool:
        """Whether ``value`` is on the alarming side of ``threshold``."""
        if self is Comparison.GT:
            return value > threshold
        if self is Comparison.GE:
            return value >= threshold
        if self is Comparison.LT:
            return value < threshold
        return value <= threshold


class TreatMissing(enum.Enum):
    """CloudWatch's ``treat_missing_data`` (``missing`` is the default)."""

    MISSING = "missing"
    NOT_BREACHING = "not_breaching"
    BREACHING = "breaching"
    IGNORE = "ignore"


class ScopeKind(enum.Enum):
    """Which hosts an alarm watches, relative to the stage being deployed."""

    FLEET = "fleet"  # every host of the pipeline's topology
    REGION = "region"  # the stage's region
    AZ = "az"  # the stage's AZ
    CELL = "cell"  # the stage's cell
    STAGE = "stage"  # the stage's hosts (the one-box stage: the one box)
    HOST = "host"  # each host on its own; the alarm is the worst of them


class OnInsufficient(enum.Enum):
    """What a bake does when ``max_bake`` passes before ``min_datapoints`` arrived."""

    HOLD = "hold"  # keep waiting, and say so (never passes on zero traffic)
    ROLLBACK = "rollback"
    PROCEED = "proceed"


class MetricKind(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class AgentMetric:
    """One of the agent's standard metrics: its exporter sample name and kind."""

    name: str  # the short name pipelines use, e.g. "requests"
    sample: str  # the exporter's sample name (histograms: the family name)
    kind: MetricKind
    help: str


#: The standard metrics every agent exports (``docs/agent.md``), by their short names.
#: The one table both metric sources translate from: the agent source reads these
#: sample names from the ``snapshot`` RPC, the Prometheus source from the scraped
#: exporter, so an alarm means the same thing on either.
AGENT_METRICS: dict[str, AgentMetric] = {
    m.name: m
    for m in (
        AgentMetric(
            "requests", "fleetwave_agent_app_requests_total", MetricKind.COUNTER, "requests served"
        ),
        AgentMetric(
            "errors", "fleetwave_agent_app_request_errors_total", MetricKind.COUNTER, "5xx answers"
        ),
        AgentMetric(
            "log_errors",
            "fleetwave_agent_app_log_errors_total",
            MetricKind.COUNTER,
            "error lines in the app's log",
        ),
        AgentMetric(
            "latency",
            "fleetwave_agent_app_request_duration_seconds",
            MetricKind.HISTOGRAM,
            "request latency (seconds)",
        ),
        AgentMetric(
            "app_cpu",
            "fleetwave_agent_app_cpu_seconds_total",
            MetricKind.COUNTER,
            "app CPU (rate: cores busy)",
        ),
        AgentMetric(
            "app_memory",
            "fleetwave_agent_app_resident_memory_bytes",
            MetricKind.GAUGE,
            "app resident memory (bytes)",
        ),
        AgentMetric("app_up", "fleetwave_agent_app_up", MetricKind.GAUGE, "1 if the app runs"),
        AgentMetric(
            "health",
            "fleetwave_agent_health_check_up",
            MetricKind.GAUGE,
            "health checks passing: mean is the share passing (0-1)",
        ),
        AgentMetric(
            "host_cpu",
            "fleetwave_agent_host_cpu_usage_ratio",
            MetricKind.GAUGE,
            "host CPU busy (0-1)",
        ),
        AgentMetric(
            "memory_available",
            "fleetwave_agent_host_memory_available_bytes",
            MetricKind.GAUGE,
            "host memory available (bytes)",
        ),
        AgentMetric(
            "disk_free",
            "fleetwave_agent_volume_free_bytes",
            MetricKind.GAUGE,
            "free bytes on the agent root's volume",
        ),
    )
}

#: Statistics each kind of metric supports.
STATISTICS_FOR: dict[MetricKind, frozenset[Statistic]] = {
    MetricKind.COUNTER: frozenset({Statistic.RATE, Statistic.RATIO, Statistic.COUNT}),
    MetricKind.GAUGE: frozenset({Statistic.MEAN, Statistic.MAX}),
    MetricKind.HISTOGRAM: frozenset({Statistic.P50, Statistic.P90, Statistic.P99, Statistic.MEAN}),
}


def percentile_min_samples(quantile: float) -> int:
    """CloudWatch's rule: a percentile p in [0.5, 1) needs 10/(1-p) samples, one below
    0.5 needs 10/p, before it is statistically meaningful."""
    bound = 10.0 / (1.0 - quantile) if quantile >= 0.5 else 10.0 / quantile
    return math.ceil(bound - 1e-9)


@dataclass(frozen=True)
class MetricSpec:
    """What a metric alarm measures: an agent metric or a PromQL query."""

    metric: str  # agent metric short name, or PromQL text when ``promql``
    statistic: Statistic | None  # None for PromQL (the query computes its own value)
    denominator: str | None = None  # same kind as ``metric``: ratio = metric / denominator
    promql: bool = False


@dataclass(frozen=True)
class MetricAlarm:
    name: str
    source: MetricSpec
    comparison: Comparison
    threshold: float
    period_s: float = 60.0
    evaluation_periods: int = 3  # N
    datapoints_to_alarm: int = 3  # M
    treat_missing: TreatMissing = TreatMissing.MISSING
    scope: ScopeKind = ScopeKind.STAGE
    min_samples: int = 1  # a datapoint with fewer samples is missing

    @property
    def evaluation_range(self) -> int:
        """Datapoints retrieved per evaluation: CloudWatch retrieves more than N (5 for
        N=3) so that a few missing ones can be skipped; fleetwave takes N + 2."""
        return self.evaluation_periods + 2


@dataclass(frozen=True)
class CompositeAlarm:
    name: str
    expression: alarm_expr.Expr

    @property
    def text(self) -> str:
        return alarm_expr.render(self.expression)


@dataclass(frozen=True)
class PrometheusAlert:
    """An alerting rule of the team's Prometheus, ``ALERTS{alertname=alert}``."""

    name: str
    alert: str


AlarmDef = MetricAlarm | CompositeAlarm | PrometheusAlert

__all__ = [
    "AGENT_METRICS",
    "STATISTICS_FOR",
    "AgentMetric",
    "AlarmDef",
    "AlarmState",
    "Comparison",
    "CompositeAlarm",
    "MetricAlarm",
    "MetricKind",
    "MetricSpec",
    "OnInsufficient",
    "PrometheusAlert",
    "PrometheusSettings",
    "ScopeKind",
    "Statistic",
    "TreatMissing",
    "WatchSettings",
    "build_alarms",
    "build_watch",
    "check_references",
    "percentile_min_samples",
]


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class PrometheusSettings:
    url: str
    host_label: str = "host"
    timeout_s: float = 5.0


@dataclass(frozen=True)
class WatchSettings:
    """``watch:`` in a pipeline: which metric source alarms read, and how often."""

    source: str = "agent"  # "agent" or "prometheus"
    interval_s: float = 10.0
    prometheus: PrometheusSettings | None = None


def build_watch(raw: Mapping[str, Any], loc: Locator) -> WatchSettings:
    """The typed ``watch:`` section (``raw`` already checked against the spec)."""
    prom = raw.get("prometheus")
    settings = WatchSettings(
        source=raw.get("source", "agent"),
        interval_s=raw.get("interval", 10.0),
        prometheus=(
            PrometheusSettings(
                url=prom["url"],
                host_label=prom.get("host_label", "host"),
                timeout_s=prom.get("timeout", 5.0),
            )
            if prom is not None
            else None
        ),
    )
    if settings.interval_s <= 0:
        raise loc.error("watch.interval", "the watch interval must be above 0")
    if settings.source == "prometheus" and settings.prometheus is None:
        raise loc.error("watch.source", "source prometheus needs watch.prometheus.url")
    return settings


_METRIC_KEYS = (
    "statistic",
    "denominator",
    "comparison",
    "threshold",
    "period",
    "evaluation_periods",
    "datapoints_to_alarm",
    "treat_missing_data",
    "scope",
    "min_samples",
)


def build_alarms(
    raw: list[Mapping[str, Any]], watch: WatchSettings, loc: Locator
) -> dict[str, AlarmDef]:
    """Typed alarms by name. Checks what the spec cannot: one kind per alarm, its
    required keys, statistic vs metric kind, M <= N, percentile sample floors, unique
    names, composite references that exist and form no cycle."""
    out: dict[str, AlarmDef] = {}
    for i, item in enumerate(raw):
        where = f"alarms[{i}]"
        name = item["name"]
        if name in out:
            raise loc.error(f"{where}.name", f"alarm {name!r} is defined twice")
        out[name] = _alarm(item, where, watch, loc)
    for i, item in enumerate(raw):
        alarm = out[item["name"]]
        if isinstance(alarm, CompositeAlarm):
            for ref in sorted(alarm_expr.alarm_names(alarm.expression)):
                if ref not in out:
                    raise loc.error(f"alarms[{i}].expression", unknown_alarm(ref, out))
    _check_cycles(out, raw, loc)
    return out


def unknown_alarm(name: str, known: Mapping[str, AlarmDef]) -> str:
    """The message for a reference to an alarm that ``alarms:`` does not define."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"unknown alarm {name!r}{hint}: define it under alarms: (a metric alarm, a composite, "
        "or prometheus_alert: for an existing Prometheus alerting rule)"
    )


def _alarm(item: Mapping[str, Any], where: str, watch: WatchSettings, loc: Locator) -> AlarmDef:
    name = item["name"]
    kinds = [k for k in ("metric", "promql", "expression", "prometheus_alert") if k in item]
    if len(kinds) != 1:
        found = ", ".join(kinds) if kinds else "none"
        raise loc.error(
            where,
            f"alarm {name!r} needs exactly one of metric, promql, expression, "
            f"prometheus_alert (found: {found})",
        )
    kind = kinds[0]
    if kind in ("expression", "prometheus_alert"):
        stray = [k for k in _METRIC_KEYS if k in item]
        if stray:
            raise loc.error(f"{where}.{stray[0]}", f"{stray[0]} does not apply to a {kind} alarm")
        if kind == "expression":
            return CompositeAlarm(name, item["expression"])
        if watch.prometheus is None:
            raise loc.error(
                f"{where}.prometheus_alert", "prometheus_alert needs watch.prometheus.url"
            )
        return PrometheusAlert(name, item["prometheus_alert"])
    for key in ("comparison", "threshold"):
        if key not in item:
            raise loc.error(where, f"metric alarm {name!r} needs {key!r}")
    promql = kind == "promql"
    if promql and watch.prometheus is None:
        raise loc.error(f"{where}.promql", "a promql alarm needs watch.prometheus.url")
    statistic = _statistic(item, where, promql, loc)
    source = MetricSpec(
        metric=item[kind],
        statistic=statistic,
        denominator=item.get("denominator"),
        promql=promql,
    )
    n = item.get("evaluation_periods", 3)
    m = item.get("datapoints_to_alarm", n)
    if m > n:
        raise loc.error(
            f"{where}.datapoints_to_alarm",
            f"datapoints_to_alarm ({m}) cannot exceed evaluation_periods ({n})",
        )
    quantile = statistic.quantile if statistic is not None else None
    floor = percentile_min_samples(quantile) if quantile is not None else 1
    min_samples = item.get("min_samples", floor)
    if min_samples < floor:
        raise loc.error(
            f"{where}.min_samples",
            f"a {statistic.value if statistic else ''} needs at least {floor} samples per "
            f"period (10/(1-p)); {min_samples} would judge noise",
        )
    period = item.get("period", 60.0)
    if period <= 0:
        raise loc.error(f"{where}.period", "the period must be above 0")
    return MetricAlarm(
        name=name,
        source=source,
        comparison=Comparison(item["comparison"]),
        threshold=item["threshold"],
        period_s=period,
        evaluation_periods=n,
        datapoints_to_alarm=m,
        treat_missing=TreatMissing(item.get("treat_missing_data", "missing")),
        scope=ScopeKind(item.get("scope", "stage")),
        min_samples=min_samples,
    )


def _statistic(item: Mapping[str, Any], where: str, promql: bool, loc: Locator) -> Statistic | None:
    if promql:
        if "statistic" in item:
            raise loc.error(
                f"{where}.statistic", "a promql alarm computes its own value; drop statistic"
            )
        return None
    metric = AGENT_METRICS[item["metric"]]
    denominator = item.get("denominator")
    default = Statistic.RATIO if denominator else _DEFAULT_STATISTIC[metric.kind]
    statistic = Statistic(item.get("statistic", default.value))
    allowed = STATISTICS_FOR[metric.kind]
    if statistic not in allowed:
        names = ", ".join(sorted(s.value for s in allowed))
        raise loc.error(
            f"{where}.statistic",
            f"{statistic.value} does not apply to {metric.kind.value} {metric.name!r} "
            f"(use {names})",
        )
    if (statistic is Statistic.RATIO) != (denominator is not None):
        raise loc.error(
            f"{where}.denominator" if denominator else f"{where}.statistic",
            "a ratio needs a denominator, and a denominator means a ratio",
        )
    if denominator is not None:
        den = AGENT_METRICS.get(denominator)
        if den is None or den.kind is not MetricKind.COUNTER:
            counters = ", ".join(
                n for n, m in AGENT_METRICS.items() if m.kind is MetricKind.COUNTER
            )
            raise loc.error(
                f"{where}.denominator", f"denominator must be an agent counter ({counters})"
            )
    return statistic


_DEFAULT_STATISTIC = {
    MetricKind.COUNTER: Statistic.RATE,
    MetricKind.GAUGE: Statistic.MEAN,
    MetricKind.HISTOGRAM: Statistic.P99,
}


def _check_cycles(
    alarms: Mapping[str, AlarmDef], raw: list[Mapping[str, Any]], loc: Locator
) -> None:
    index = {item["name"]: i for i, item in enumerate(raw)}
    done: set[str] = set()
    for start in alarms:
        # Iterative depth-first search: the config cannot drive Python's recursion.
        path: list[str] = []
        stack: list[tuple[str, bool]] = [(start, False)]
        on_path: set[str] = set()
        while stack:
            name, leaving = stack.pop()
            if leaving:
                on_path.discard(name)
                path.pop()
                done.add(name)
                continue
            if name in done:
                continue
            if name in on_path:
                cycle = " -> ".join([*path[path.index(name) :], name])
                raise loc.error(f"alarms[{index[start]}].expression", f"alarm cycle: {cycle}")
            alarm = alarms[name]
            on_path.add(name)
            path.append(name)
            stack.append((name, True))
            if isinstance(alarm, CompositeAlarm):
                for ref in sorted(alarm_expr.alarm_names(alarm.expression)):
                    if ref not in done:
                        stack.append((ref, False))


def check_references(
    expr: alarm_expr.Expr, alarms: Mapping[str, AlarmDef], key_path: str, loc: Locator
) -> None:
    """Raise a positioned ConfigError for the first name ``expr`` uses that is undefined."""
    for ref in sorted(alarm_expr.alarm_names(expr)):
        if ref not in alarms:
            raise loc.error(key_path, unknown_alarm(ref, alarms))
