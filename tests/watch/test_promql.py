"""Agent metrics translate to PromQL over the exporter's sample names (pure)."""

from __future__ import annotations

import pytest

from fleetwave.config.alarms import MetricSpec, Statistic
from fleetwave.watch.prometheus_source import PromQL
from fleetwave.watch.source import MetricQuery

pytestmark = pytest.mark.unit

P = PromQL("host")
HOSTS = frozenset({"web-1", "web.2"})


def test_ratio_with_scope_and_samples() -> None:
    q = MetricQuery(MetricSpec("errors", Statistic.RATIO, "requests"), hosts=HOSTS)
    value, samples = P.value(q, 60.0)
    sel = '{host=~"web-1|web\\\\.2"}'
    assert value == (
        f"sum(increase(fleetwave_agent_app_request_errors_total{sel}[60000ms])) / "
        f"sum(increase(fleetwave_agent_app_requests_total{sel}[60000ms]))"
    )
    assert samples == f"sum(increase(fleetwave_agent_app_requests_total{sel}[60000ms]))"


def test_percentile_release_filter_and_raw_promql() -> None:
    q = MetricQuery(MetricSpec("latency", Statistic.P99), release="2.0")
    value, samples = P.value(q, 30.0)
    assert value.startswith("histogram_quantile(0.99, sum by (le) ((increase(")
    assert 'and on(host) fleetwave_agent_release_info{version="2.0"}' in value
    assert samples is not None
    assert 'le="+Inf"' in samples
    raw = MetricQuery(MetricSpec("sum(rate(x{$scope}[1m]))", None, promql=True), hosts=HOSTS)
    assert P.value(raw, 60.0) == ('sum(rate(x{host=~"web-1|web\\\\.2"}[1m]))', None)
