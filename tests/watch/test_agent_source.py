"""The agent source's pure core: counters to rates, resets, ratios, merged histograms,
gauges, release filters, and missing (never 0) periods."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fleetwave.config.alarms import MetricSpec, Statistic
from fleetwave.errors import MetricQueryError
from fleetwave.watch.agent_source import bucket_quantile, compute, parse_snapshot
from fleetwave.watch.ring import HostRing, Snapshot, ring_of
from fleetwave.watch.source import MetricQuery, Window

pytestmark = pytest.mark.unit

REQ = "fleetwave_agent_app_requests_total"
ERR = "fleetwave_agent_app_request_errors_total"
LAT = "fleetwave_agent_app_request_duration_seconds"


def snap(at: float, req: float, err: float = 0.0, *, release: str = "1", **extra: Any) -> Snapshot:
    data: dict[str, Any] = {
        "v": 1,
        "release": release,
        "counters": {REQ: req, ERR: err},
        "gauges": extra.get("gauges", {}),
        "histograms": extra.get("histograms", {}),
    }
    return parse_snapshot(data, at)


def q(metric: str, stat: Statistic, **kw: Any) -> MetricQuery:
    return MetricQuery(MetricSpec(metric, stat, kw.pop("denominator", None)), **kw)


def rings_of(hosts: dict[str, list[Snapshot]]) -> dict[str, HostRing]:
    return {h: ring_of(snaps) for h, snaps in hosts.items()}


W = Window(end=30.0, period_s=10.0, count=3)  # (0,10] (10,20] (20,30]


def test_counter_rate_count_and_reset() -> None:
    rings = rings_of({"h1": [snap(0, 0), snap(5, 50), snap(10, 100), snap(15, 10), snap(20, 60)]})
    count = compute(q("requests", Statistic.COUNT), W, rings)
    # (0,10]: +50 +50; (10,20]: reset counts 10, then +50; (20,30]: nothing.
    assert count.values() == [100.0, 60.0, None]
    rate = compute(q("requests", Statistic.RATE), W, rings)
    assert rate.values()[:2] == [10.0, 6.0]


def test_rate_sums_over_hosts() -> None:
    rings = rings_of({"a": [snap(0, 0), snap(10, 100)], "b": [snap(0, 0), snap(10, 50)]})
    assert compute(q("requests", Statistic.RATE), W, rings).values()[0] == 15.0
    only_b = compute(q("requests", Statistic.RATE, hosts=frozenset({"b"})), W, rings)
    assert only_b.values()[0] == 5.0


def test_ratio_without_requests_is_missing_not_zero() -> None:
    rings = rings_of({"h": [snap(0, 0, 0), snap(10, 100, 5), snap(20, 100, 5)]})
    ratio = compute(q("errors", Statistic.RATIO, denominator="requests"), W, rings)
    assert ratio.values() == [0.05, None, None]
    assert ratio.points[0].samples == 100.0


def test_release_filter_counts_only_the_new_release() -> None:
    rings = rings_of(
        {"h": [snap(0, 0, release="1"), snap(5, 40, release="1"), snap(10, 90, release="2")]}
    )
    new = compute(q("requests", Statistic.COUNT, release="2"), W, rings)
    assert new.values()[0] == 50.0
    assert compute(q("requests", Statistic.COUNT, release="3"), W, rings).values()[0] is None


def hist(counts: list[float], total: float) -> dict[str, Any]:
    return {LAT: {"le": ["0.1", "0.5", "1.0", "+Inf"], "counts": counts, "sum": total}}


def test_histograms_merge_across_hosts_and_give_percentiles() -> None:
    rings = rings_of(
        {
            "a": [
                snap(0, 0, histograms=hist([0, 0, 0, 0], 0)),
                snap(10, 0, histograms=hist([50, 50, 50, 50], 2.5)),
            ],
            "b": [
                snap(0, 0, histograms=hist([0, 0, 0, 0], 0)),
                snap(10, 0, histograms=hist([0, 0, 50, 50], 37.5)),
            ],
        }
    )
    p50 = compute(q("latency", Statistic.P50), W, rings).points[0]
    assert p50.samples == 100.0
    assert p50.value == pytest.approx(0.1)  # the 50th of 100 is the last of the fast ones
    p90 = compute(q("latency", Statistic.P90), W, rings).points[0]
    assert p90.value == pytest.approx(0.5 + 0.5 * 40 / 50)
    mean = compute(q("latency", Statistic.MEAN), W, rings).points[0]
    assert mean.value == pytest.approx(0.4)
    assert compute(q("latency", Statistic.P99), W, rings).values()[1] is None


def test_gauges_mean_and_max() -> None:
    up = "fleetwave_agent_health_check_up"
    rings = rings_of(
        {
            "a": [snap(2, 0, gauges={up: [1.0, 1.0]}), snap(8, 0, gauges={up: [1.0, 0.0]})],
            "b": [snap(5, 0, gauges={up: [1.0, 1.0]})],
        }
    )
    mean = compute(q("health", Statistic.MEAN), W, rings).points[0]
    assert mean.value == pytest.approx(5 / 6)
    assert mean.samples == 6.0
    assert compute(q("health", Statistic.MAX), W, rings).values() == [1.0, None, None]


def test_bucket_quantile_edges() -> None:
    assert bucket_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
    assert bucket_quantile(0.99, [(1.0, 10.0), (math.inf, 20.0)]) == 1.0  # +Inf bucket


def test_bad_snapshots_and_queries_are_typed_errors() -> None:
    with pytest.raises(MetricQueryError, match="malformed"):
        parse_snapshot({"v": 1, "histograms": {LAT: {"le": ["1"], "counts": [1]}}}, 0.0)
    with pytest.raises(MetricQueryError, match="version"):
        parse_snapshot({"v": 2}, 0.0)
    with pytest.raises(MetricQueryError, match="PromQL"):
        compute(MetricQuery(MetricSpec("up", None, promql=True)), W, {})
