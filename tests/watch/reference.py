"""The agent source's queries as they were before the compact store: over plain lists
of :class:`Snapshot`, pair by pair. Kept as the reference the store must agree with
on its fine tier (``test_ring.py``); not used by the product."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleetwave.config.alarms import AGENT_METRICS, MetricKind, MetricSpec, Statistic
from fleetwave.errors import MetricQueryError
from fleetwave.watch.agent_source import NAME, bucket_quantile
from fleetwave.watch.anomaly.inputs import Buckets, HostWindow, Point
from fleetwave.watch.ring import Snapshot
from fleetwave.watch.source import Datapoint, MetricQuery, Series, Window, clean

_REQUESTS = AGENT_METRICS["requests"].sample
_ERRORS = AGENT_METRICS["errors"].sample
_LATENCY = AGENT_METRICS["latency"].sample
_CPU = AGENT_METRICS["app_cpu"].sample
_RSS = AGENT_METRICS["app_memory"].sample
_UP = AGENT_METRICS["app_up"].sample
_HEALTH = AGENT_METRICS["health"].sample


def ref_compute(
    query: MetricQuery, window: Window, rings: Mapping[str, Sequence[Snapshot]]
) -> Series:
    """The datapoints of ``query`` over ``window`` from stored snapshots (pure)."""
    spec = query.metric
    if spec.promql:
        raise MetricQueryError(NAME, "the agent source does not run PromQL")
    metric = AGENT_METRICS.get(spec.metric)
    if metric is None or spec.statistic is None:
        raise MetricQueryError(NAME, f"unknown agent metric {spec.metric!r}")
    hosts = sorted(query.hosts) if query.hosts else sorted(rings)
    chosen = [list(rings.get(h, ())) for h in hosts]
    points = []
    for start, end in window.bounds():
        value, samples = _period(
            metric.sample, metric.kind, spec, query.release, chosen, start, end
        )
        points.append(Datapoint(end, clean(value), samples))
    return Series(tuple(points))


def _in_period(ring: Sequence[Snapshot], start: float, end: float) -> range:
    """Indexes of the snapshots inside (start, end]."""
    times = [s.at for s in ring]
    return range(bisect.bisect_right(times, start), bisect.bisect_right(times, end))


def _pairs(
    ring: Sequence[Snapshot], start: float, end: float, release: str | None
) -> list[tuple[Snapshot, Snapshot]]:
    """Consecutive snapshots (prev, cur) with ``cur`` inside (start, end] and, with a
    release, served by it."""
    return [
        (ring[k - 1], ring[k])
        for k in _in_period(ring, start, end)
        if k > 0 and (release is None or ring[k].release == release)
    ]


def _increase(prev: float | None, cur: float | None) -> float | None:
    """Counter increase; a reset (the value went down) counts from zero."""
    if cur is None or prev is None:
        return None
    return cur if cur < prev else cur - prev


@dataclass
class _Counted:
    increase: float = 0.0
    rate: float = 0.0  # per second, summed over hosts
    pairs: int = 0


def _counter(
    sample: str, hosts: list[list[Snapshot]], start: float, end: float, release: str | None
) -> _Counted:
    out = _Counted()
    for ring in hosts:
        inc = span = 0.0
        for prev, cur in _pairs(ring, start, end, release):
            delta = _increase(prev.counters.get(sample), cur.counters.get(sample))
            if delta is None:
                continue
            inc += delta
            span += cur.at - prev.at
            out.pairs += 1
        out.increase += inc
        if span > 0:
            out.rate += inc / span
    return out


def _period(
    sample: str,
    kind: MetricKind,
    spec: MetricSpec,
    release: str | None,
    hosts: list[list[Snapshot]],
    start: float,
    end: float,
) -> tuple[float | None, float]:
    stat = spec.statistic
    if kind is MetricKind.COUNTER:
        num = _counter(sample, hosts, start, end, release)
        if stat is Statistic.RATIO:
            assert spec.denominator is not None
            den = _counter(AGENT_METRICS[spec.denominator].sample, hosts, start, end, release)
            if not num.pairs or den.increase <= 0:
                return None, den.increase  # no requests: no ratio, never 0
            return num.increase / den.increase, den.increase
        if not num.pairs:
            return None, 0.0
        if stat is Statistic.COUNT:
            return num.increase, float(num.pairs)
        return num.rate, float(num.pairs)
    if kind is MetricKind.GAUGE:
        values = [
            v
            for ring in hosts
            for k in _in_period(ring, start, end)
            if release is None or ring[k].release == release
            for v in ring[k].gauges.get(sample, ())
        ]
        if not values:
            return None, 0.0
        value = max(values) if stat is Statistic.MAX else sum(values) / len(values)
        return value, float(len(values))
    return _histogram(sample, stat, hosts, start, end, release)


def _histogram(
    sample: str,
    stat: Statistic | None,
    hosts: list[list[Snapshot]],
    start: float,
    end: float,
    release: str | None,
) -> tuple[float | None, float]:
    merged: dict[float, float] = {}
    total_sum = 0.0
    for ring in hosts:
        for prev, cur in _pairs(ring, start, end, release):
            now = cur.histograms.get(sample)
            if now is None:
                continue
            old = prev.histograms.get(sample)
            before = dict(zip(old.le, old.counts, strict=True)) if old is not None else {}
            reset = old is None or now.counts[-1] < old.counts[-1]
            for le, count in zip(now.le, now.counts, strict=True):
                delta = count if reset else count - before.get(le, 0.0)
                merged[le] = merged.get(le, 0.0) + max(delta, 0.0)
            total_sum += now.sum if reset or old is None else max(now.sum - old.sum, 0.0)
    total = merged.get(math.inf, 0.0)
    if total <= 0:
        return None, 0.0
    if stat is Statistic.MEAN:
        return total_sum / total, total
    quantile = stat.quantile if stat is not None else None
    if quantile is None:
        raise MetricQueryError(NAME, f"{stat} does not apply to a histogram")
    return bucket_quantile(quantile, sorted(merged.items())), total


def _ref_increase(prev: float | None, cur: float | None) -> float | None:
    if prev is None or cur is None:
        return None
    return cur if cur < prev else cur - prev


def _passing(s: Snapshot) -> bool | None:
    values = s.gauges.get(_HEALTH)
    return None if not values else min(values) >= 1.0


def _up(s: Snapshot) -> bool | None:
    values = s.gauges.get(_UP)
    return None if not values else max(values) >= 1.0


def ref_host_window(
    host: str, ring: Sequence[Snapshot], start: float, end: float, release: str | None
) -> HostWindow:
    """What ``host`` did in ``(start, end]`` on ``release`` (None: any release)."""
    seconds = requests = errors = 0.0
    restarts = flaps = 0
    buckets: dict[float, float] = {}
    rss: list[Point] = []
    cpu: list[Point] = []
    for k in range(1, len(ring)):
        prev, cur = ring[k - 1], ring[k]
        if not start < cur.at <= end or (release is not None and cur.release != release):
            continue
        seconds += cur.at - prev.at
        requests += _ref_increase(prev.counters.get(_REQUESTS), cur.counters.get(_REQUESTS)) or 0.0
        errors += _ref_increase(prev.counters.get(_ERRORS), cur.counters.get(_ERRORS)) or 0.0
        _add_buckets(buckets, prev, cur)
        before, now = prev.counters.get(_CPU), cur.counters.get(_CPU)
        if before is not None and now is not None:
            if now < before:
                restarts += 1  # a new process: its CPU time started again from zero
            elif cur.at > prev.at:
                cpu.append(Point(cur.at, (now - before) / (cur.at - prev.at)))
        if _up(prev) is True and _up(cur) is False:
            restarts += 1
        if _passing(prev) is True and _passing(cur) is False:
            flaps += 1
        for value in cur.gauges.get(_RSS, ()):
            rss.append(Point(cur.at, value))
    latency = None
    if buckets:
        bounds = sorted(buckets)
        latency = Buckets(tuple(bounds), tuple(buckets[b] for b in bounds))
    return HostWindow(
        host=host,
        seconds=seconds,
        requests=requests,
        errors=errors,
        latency=latency if latency is not None and latency.le[-1] == math.inf else None,
        restarts=restarts,
        flaps=flaps,
        rss=tuple(rss),
        cpu=tuple(cpu),
    )


def _add_buckets(out: dict[float, float], prev: Snapshot, cur: Snapshot) -> None:
    """Add the per-bucket increase between two snapshots (cumulative -> per bucket)."""
    now = cur.histograms.get(_LATENCY)
    if now is None:
        return
    old = prev.histograms.get(_LATENCY)
    reset = old is None or now.counts[-1] < old.counts[-1]
    before = dict(zip(old.le, old.counts, strict=True)) if old is not None else {}
    below_now = below_old = 0.0
    for le, count in zip(now.le, now.counts, strict=True):
        was = 0.0 if reset else before.get(le, 0.0)
        out[le] = out.get(le, 0.0) + max((count - below_now) - (was - below_old), 0.0)
        below_now, below_old = count, was
