"""One conformance suite every metric source passes (trio's ``check_two_way_stream``
idea): the same traffic, served by a real agent, must read the same through it.

A harness puts a source in front of one real agent whose app writes an access log:
:meth:`Harness.serve` appends request lines, :meth:`Harness.settle` makes the source
see everything so far (a poll, or scrapes) and returns the time to end a window at.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetwave.config.alarms import MetricSpec, Statistic
from fleetwave.watch.source import MetricQuery, MetricSource, Window

#: 90 fast successes and 10 slow failures: error ratio 0.1, p50 in (0.01, 0.025],
#: p99 in (0.25, 0.5] of the agent's access-log buckets.
TRAFFIC = [(200, 0.02)] * 90 + [(500, 0.3)] * 10


def access_line(status: int, duration_s: float) -> str:
    return f'127.0.0.1 - - [01/Jan/2025:00:00:00 +0000] "GET / HTTP/1.1" {status} 5 {duration_s}\n'


def write_traffic(log: Path, traffic: list[tuple[int, float]]) -> None:
    with log.open("a") as fh:
        fh.writelines(access_line(s, d) for s, d in traffic)


@dataclass
class Harness:
    source: MetricSource
    host: str
    serve: Callable[[list[tuple[int, float]]], None]
    settle: Callable[[], Awaitable[float]]


def query(metric: str, stat: Statistic, hosts: frozenset[str], **kw: str) -> MetricQuery:
    return MetricQuery(MetricSpec(metric, stat, kw.get("denominator")), hosts=hosts)


async def check_source(h: Harness) -> None:
    """The suite: ratios, percentiles, counts, scopes, and idle periods as missing."""
    hosts = frozenset({h.host})
    t0 = await h.settle()
    h.serve(TRAFFIC)
    t1 = await h.settle()
    busy = Window(end=t1, period_s=t1 - t0 + 0.5, count=1)

    ratio = (
        await h.source.query(query("errors", Statistic.RATIO, hosts, denominator="requests"), busy)
    ).points[0]
    assert ratio.value == pytest.approx(0.1, abs=0.01)
    assert ratio.samples == pytest.approx(100, rel=0.6)  # Prometheus extrapolates increase()

    count = (await h.source.query(query("requests", Statistic.COUNT, hosts), busy)).points[0]
    assert count.value == pytest.approx(100, rel=0.6)

    p50 = (await h.source.query(query("latency", Statistic.P50, hosts), busy)).points[0]
    assert p50.value is not None
    assert 0.01 < p50.value <= 0.025
    p99 = (await h.source.query(query("latency", Statistic.P99, hosts), busy)).points[0]
    assert p99.value is not None
    assert 0.25 < p99.value <= 0.5
    assert p99.samples == pytest.approx(100, rel=0.6)

    nowhere = await h.source.query(query("requests", Statistic.COUNT, frozenset({"nope"})), busy)
    assert nowhere.values() == [None]

    # No traffic since: a count of zero, but no ratio and no percentile (never 0).
    await h.settle()
    t2 = await h.settle()
    idle = Window(end=t2, period_s=min(2.5, t2 - t1 - 0.2), count=1)
    quiet = (await h.source.query(query("requests", Statistic.COUNT, hosts), idle)).points[0]
    assert quiet.value == 0.0
    idle_ratio = await h.source.query(
        query("errors", Statistic.RATIO, hosts, denominator="requests"), idle
    )
    assert idle_ratio.values() == [None]
    idle_p50 = await h.source.query(query("latency", Statistic.P50, hosts), idle)
    assert idle_p50.values() == [None]


def wall() -> float:
    return time.time()
