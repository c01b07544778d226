"""The compact store: on its fine tier every query equals the pair-by-pair reference
(property test); thinning keeps counts; old rows go; columns not kept are not stored."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetwave.config.alarms import AGENT_METRICS, MetricSpec, Statistic
from fleetwave.errors import MetricQueryError
from fleetwave.watch.agent_source import compute, parse_snapshot
from fleetwave.watch.anomaly import host_window
from fleetwave.watch.anomaly.inputs import HostWindow
from fleetwave.watch.ring import (
    ANOMALY_SAMPLES,
    COARSE_ROWS,
    HostRing,
    Retention,
    Snapshot,
    retention_for,
    ring_of,
)
from fleetwave.watch.source import MetricQuery, Series, Window

from .reference import ref_compute, ref_host_window

pytestmark = pytest.mark.unit

REQ, ERR, CPU, LAT, RSS, UP, HEALTH = (
    AGENT_METRICS[n].sample
    for n in ("requests", "errors", "app_cpu", "latency", "app_memory", "app_up", "health")
)
LE = ["0.1", "1", "+Inf"]


@st.composite
def sequences(draw: st.DrawFn) -> list[Snapshot]:
    """Snapshots with gaps, release changes, resets and missing metrics. Counts are
    integers (sums stay exact) and bucket counts only grow between resets, as an
    agent's do."""
    n = draw(st.integers(2, 45))
    at = draw(st.integers(0, 5))
    release: str | None = "1"
    counters = {REQ: 0, ERR: 0, CPU: 0}
    buckets = [0, 0, 0]  # per bucket, not cumulative
    out = []
    for _ in range(n):
        at += draw(st.sampled_from([0, 1, 2, 5, 10, 10, 10, 25, 70]))
        if draw(st.integers(0, 9)) == 0:
            release = draw(st.sampled_from(["1", "2", None]))
        data: dict[str, Any] = {"v": 1, "release": release, "counters": {}, "gauges": {}}
        for name in counters:
            step = draw(st.integers(-1, 40))
            counters[name] = draw(st.integers(0, 5)) if step < 0 else counters[name] + step
            if draw(st.integers(0, 7)):
                data["counters"][name] = counters[name]
        incs = draw(st.lists(st.integers(0, 20), min_size=3, max_size=3))
        if draw(st.integers(0, 8)) == 0 and sum(incs) < sum(buckets):
            buckets = incs  # the app restarted: fewer observations than before
        else:
            buckets = [b + i for b, i in zip(buckets, incs, strict=True)]
        if draw(st.integers(0, 7)):
            cum = [sum(buckets[: i + 1]) for i in range(3)]
            data["histograms"] = {LAT: {"le": LE, "counts": cum, "sum": float(cum[-1])}}
        if draw(st.integers(0, 7)):
            data["gauges"][RSS] = [draw(st.integers(100, 200))]
        if draw(st.integers(0, 7)):
            data["gauges"][UP] = [draw(st.sampled_from([0, 1, 1, 1]))]
        if draw(st.integers(0, 7)):
            data["gauges"][HEALTH] = draw(
                st.lists(st.sampled_from([0, 1, 1]), min_size=1, max_size=2)
            )
        out.append(parse_snapshot(data, float(at)))
    return out


QUERIES = [
    MetricSpec("requests", Statistic.COUNT),
    MetricSpec("requests", Statistic.RATE),
    MetricSpec("errors", Statistic.RATIO, "requests"),
    MetricSpec("app_cpu", Statistic.RATE),
    MetricSpec("latency", Statistic.P50),
    MetricSpec("latency", Statistic.P90),
    MetricSpec("latency", Statistic.MEAN),
    MetricSpec("app_memory", Statistic.MEAN),
    MetricSpec("health", Statistic.MEAN),
    MetricSpec("app_up", Statistic.MAX),
]
FINE = Retention(fine_s=120.0, coarse_s=30.0, history_s=10**6)


def same_series(got: Series, want: Series) -> None:
    assert len(got.points) == len(want.points)
    for g, w in zip(got.points, want.points, strict=True):
        assert g.end == w.end
        assert (g.value is None) == (w.value is None), (g, w)
        if w.value is not None:
            assert g.value == pytest.approx(w.value, rel=1e-9, abs=1e-9)
        assert g.samples == pytest.approx(w.samples, rel=1e-9, abs=1e-9)


def same_window(got: HostWindow, want: HostWindow) -> None:
    for name in ("seconds", "requests", "errors", "restarts", "flaps", "rss"):
        assert getattr(got, name) == pytest.approx(getattr(want, name)), name
    assert [p.at for p in got.cpu] == [p.at for p in want.cpu]
    assert [p.value for p in got.cpu] == pytest.approx([p.value for p in want.cpu])
    if want.latency is None:
        assert got.latency is None
    else:
        assert got.latency is not None
        assert got.latency.le == want.latency.le
        assert got.latency.counts == pytest.approx(want.latency.counts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a=sequences(),
    b=sequences(),
    data=st.data(),
)
def test_the_fine_tier_equals_the_reference(
    a: list[Snapshot], b: list[Snapshot], data: st.DataObject
) -> None:
    rings = {"a": ring_of(a, retention=FINE), "b": ring_of(b, retention=FINE)}
    ref = {"a": a, "b": b}
    since = max(r.exact_since for r in rings.values())
    last = max(s.at for s in a + b)
    lo = max(since, min(s.at for s in a + b) - 5)
    for _ in range(4):
        start = data.draw(st.floats(lo, last + 5))
        period = data.draw(st.sampled_from([1.0, 5.0, 10.0, 30.0, 60.0]))
        count = data.draw(st.integers(1, 3))
        window = Window(end=start + period * count, period_s=period, count=count)
        release = data.draw(st.sampled_from([None, "1", "2"]))
        hosts = data.draw(st.sampled_from([frozenset(), frozenset({"b"})]))
        for spec in QUERIES:
            query = MetricQuery(spec, hosts, release)
            same_series(compute(query, window, rings), ref_compute(query, window, ref))
        for host in ("a", "b"):
            if rings[host].exact_since <= start:
                end = window.end
                got = host_window(host, rings[host], start, end, release)
                same_window(got, ref_host_window(host, ref[host], start, end, release))


def _flat(at: float, req: float, rel: str = "1", **gauges: list[float]) -> Snapshot:
    data: dict[str, Any] = {"v": 1, "release": rel, "counters": {REQ: req}, "gauges": gauges}
    return parse_snapshot(data, at)


def _count(ring: HostRing, start: float, end: float, release: str | None = None) -> float:
    return ring.counter(REQ, ring.runs(start, end, release))[0]


def test_thinning_keeps_every_count_and_snaps_to_the_kept_row_after_the_start() -> None:
    ret = Retention(fine_s=60.0, coarse_s=30.0, history_s=10**6)
    snaps = [_flat(float(t), 10.0 * t if t < 100 else 10.0 * (t - 100)) for t in range(0, 400, 5)]
    ring = ring_of(snaps, retention=ret)
    # The coarse tier keeps the last row of each 30 s bucket: 25, 55, 85, ...
    times = ring.times()
    coarse = [t for t in times if t < ring.exact_since]
    assert coarse == [0.0] + [float(t) for t in range(25, int(ring.exact_since), 30)]
    assert all(t2 - t1 == 5 for t1, t2 in itertools.pairwise(times) if t1 >= ring.exact_since)
    # Counts are preserved across thinned rows, the reset at 100 included.
    assert _count(ring, 25.0, 385.0) == pytest.approx(
        ref_compute(
            MetricQuery(MetricSpec("requests", Statistic.COUNT)),
            Window(end=385.0, period_s=360.0, count=1),
            {"h": snaps[5:]},
        ).values()[0]
    )
    # A window starting at 40 (inside the coarse tier) counts from the kept row at 55,
    # the first at or after its start: 15 s less than asked, nothing from before 40.
    assert _count(ring, 40.0, 85.0) == _count(ring, 55.0, 85.0) == 850.0 - 550.0
    assert _count(ring, 25.0, 85.0) == 850.0 - 250.0


def test_thinning_keeps_release_changes_exact() -> None:
    ret = Retention(fine_s=60.0, coarse_s=60.0, history_s=10**6)
    snaps = [_flat(float(t), float(t), "1" if t <= 47 else "2") for t in range(0, 300, 1)]
    ring = ring_of(snaps, retention=ret)
    assert 47.0 in ring.times()
    assert 48.0 in ring.times()
    assert _count(ring, 0.0, 59.0, "1") == 47.0
    assert _count(ring, 0.0, 59.0, "2") == 59.0 - 47.0


def test_gauges_of_thinned_rows_are_merged_into_the_kept_row() -> None:
    ret = Retention(fine_s=20.0, coarse_s=30.0, history_s=10**6)
    snaps = [_flat(float(t), 0.0, "1", **{RSS: [float(t)]}) for t in range(0, 100, 10)]
    ring = ring_of(snaps, retention=ret)
    assert ring.times()[:3] == (0.0, 20.0, 50.0)
    total, n, top = ring.gauge(RSS, ring.runs(-1.0, 50.0, None, pairs=False))
    assert (total, n, top) == (0 + 10 + 20 + 30 + 40 + 50, 6, 50.0)


def test_rows_older_than_the_history_go() -> None:
    ret = Retention(fine_s=100.0, coarse_s=50.0, history_s=500.0)
    ring = HostRing(retention=ret)
    for t in range(0, 5000, 10):
        ring.ingest(_flat(float(t), float(t)))
        assert ring.times()[0] >= t - ret.history_s - ret.coarse_s
    assert len(ring) <= 25  # ~10 fine rows, ~11 coarse ones


def test_a_column_not_kept_is_not_stored_and_not_queryable() -> None:
    ring = ring_of([_flat(0.0, 1.0), _flat(10.0, 5.0)], keep={REQ})
    assert _count(ring, 0.0, 10.0) == 4.0
    query = MetricQuery(MetricSpec("errors", Statistic.RATIO, "requests"))
    with pytest.raises(MetricQueryError, match="errors_total is not collected"):
        compute(query, Window(end=10.0, period_s=10.0, count=1), {"h": ring})
    with pytest.raises(MetricQueryError, match="not collected"):
        host_window("h", ring, 0.0, 10.0, None)
    full = ring_of([_flat(0.0, 1.0)], keep=ANOMALY_SAMPLES)
    assert host_window("h", full, -1.0, 10.0, None).requests == 0.0
    assert ring.stored == {REQ}


def test_retention_from_the_pipeline_numbers() -> None:
    r = retention_for(longest_alarm_s=15.0, longest_bake_s=20.0, interval_s=10.0)
    assert (r.fine_s, r.coarse_s, r.history_s) == (60.0, 60.0, 640.0)
    # A 1 s interval and short alarms: coarse rows never further apart than the fine
    # tier is long, so a 20 s reference window is not cut to a few seconds.
    quick = retention_for(longest_alarm_s=6.0, longest_bake_s=15.0, interval_s=1.0)
    assert (quick.fine_s, quick.coarse_s) == (8.0, 8.0)
    snaps = [_flat(float(t), 10.0 * t, "1") for t in range(0, 200)]
    ring = ring_of(snaps, retention=quick)
    assert _count(ring, 170.0, 199.0) >= 10.0 * (29 - quick.coarse_s)
    long = retention_for(longest_alarm_s=900.0, longest_bake_s=7200.0, interval_s=10.0)
    assert (long.fine_s, long.history_s) == (920.0, 3 * 3600.0)
    # the coarse tier holds at most COARSE_ROWS rows, however long the history
    assert long.coarse_s == pytest.approx((3 * 3600.0 - 920.0) / COARSE_ROWS)
    hour = retention_for(longest_alarm_s=300.0, longest_bake_s=3600.0, interval_s=10.0)
    snaps = [_flat(float(t), 10.0 * t) for t in range(0, int(hour.history_s) + 3600, 10)]
    ring = ring_of(snaps, retention=hour)
    assert len(ring) <= (hour.fine_s / 10) + COARSE_ROWS + 3
    assert math.isinf(-HostRing().exact_since)
    with pytest.raises(ValueError, match="retention"):
        Retention(fine_s=100.0, history_s=50.0)


def test_the_store_keeps_what_the_lab_pipeline_reads() -> None:
    from fleetwave.cli.deploy_build import agent_storage
    from fleetwave.config.pipeline import load_pipeline
    from fleetwave.planning.planner import plan_pipeline

    pipeline = load_pipeline(Path(__file__).resolve().parents[2] / "examples/lab/pipeline.yaml")
    plan = plan_pipeline(pipeline)
    keep, retention = agent_storage(pipeline, plan, detecting=False)
    # Its alarms read errors / requests and latency; its bakes count requests. No host
    # metric is stored: no alarm reads one.
    assert keep == {REQ, ERR, LAT}
    # Longest alarm window 30 s (10 s x 3) + two 2 s intervals; history twice the
    # one-box's 20 s bake + 10 minutes; coarse rows no further apart than the fine tier.
    assert retention == Retention(fine_s=34.0, coarse_s=34.0, history_s=640.0)
    detecting, _ = agent_storage(pipeline, plan, detecting=True)
    assert detecting == keep | ANOMALY_SAMPLES
