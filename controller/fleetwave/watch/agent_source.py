"""The embedded metric source: poll every agent's ``snapshot``, keep short series.

No Prometheus is needed. :meth:`AgentSource.poll` asks each host's agent for one
small JSON snapshot (the exporter's own standard metrics, ``fleetwave_agent.snapshot``)
over a session of the source's own, opened with ``Transport.open(host)`` and kept
open. Give it a transport *instance of its own* (a transport reuses one session per
host): then polls never queue behind an install running on the engine's session, and
one session per host costs one agent process (or, resident, one socket connection).

Each host's snapshots go into a compact :class:`~fleetwave.watch.ring.HostRing`:
array columns of only the samples the pipeline reads (``keep``), counters stored as
reset-adjusted cumulative totals, bounded by time (``retention``: every row for the
longest alarm window, then one a minute up to the anomaly detector's history; see
:mod:`fleetwave.watch.ring`). :meth:`AgentSource.query` is pure over those rows:
counters become increases (a reset, e.g. an app restart, counts from zero, as
Prometheus' ``increase`` does), histograms are merged bucket by bucket across hosts,
gauges are averaged or maximised. Everything served by another release than the
query's is left out, a period without data is missing, never 0, and a metric the
store does not keep is a MetricQueryError ("not collected").
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetwave.config.alarms import AGENT_METRICS, MetricKind, MetricSpec, Statistic
from fleetwave.errors import FleetwaveError, MetricQueryError
from fleetwave.planning.model import HostRef
from fleetwave.transport.base import AgentSession, Transport
from fleetwave.watch.ring import (
    ALL_SAMPLES,
    SOURCE,
    Histogram,
    HostRing,
    Retention,
    Snapshot,
)
from fleetwave.watch.source import Datapoint, MetricQuery, Series, Window, clean

NAME = SOURCE


def parse_snapshot(data: Mapping[str, Any], at: float) -> Snapshot:
    """Validate an agent's snapshot; a malformed one raises MetricQueryError."""
    try:
        if data.get("v") != 1:
            raise ValueError(f"snapshot version {data.get('v')!r}")
        counters = {str(k): float(v) for k, v in dict(data.get("counters", {})).items()}
        gauges = {
            str(k): tuple(float(x) for x in v) for k, v in dict(data.get("gauges", {})).items()
        }
        hists: dict[str, Histogram] = {}
        for name, h in dict(data.get("histograms", {})).items():
            le = tuple(float(x) for x in h["le"])
            counts = tuple(float(x) for x in h["counts"])
            if len(le) != len(counts) or not le or le[-1] != math.inf:
                raise ValueError(f"histogram {name} is malformed")
            hists[str(name)] = Histogram(le, counts, float(h.get("sum", 0.0)))
        release = data.get("release")
        return Snapshot(at, str(release) if release is not None else None, counters, gauges, hists)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise MetricQueryError(NAME, f"malformed snapshot: {exc}") from None


@dataclass
class _HostSeries:
    ring: HostRing
    session: AgentSession | None = None
    errors: int = 0
    last_error: str = ""


@dataclass(frozen=True)
class PollReport:
    """What one round of polling got: hosts answered, and errors by host."""

    at: float
    answered: int
    failed: Mapping[str, str] = field(default_factory=dict)


class AgentSource:
    """The ``agent`` metric source (see the module doc)."""

    name = NAME

    def __init__(
        self,
        transport: Transport,
        hosts: Iterable[HostRef],
        *,
        clock: Callable[[], float],
        keep: Iterable[str] = ALL_SAMPLES,
        retention: Retention | None = None,
        timeout_s: float = 5.0,
        concurrency: int = 200,
    ) -> None:
        self.transport = transport
        self.hosts = {h.name: h for h in hosts}
        self.clock = clock
        self.timeout_s = timeout_s
        self._limit = asyncio.Semaphore(concurrency)
        self.keep = frozenset(keep)
        self.retention = retention or Retention()
        self._series = {
            name: _HostSeries(HostRing(self.keep, self.retention)) for name in self.hosts
        }

    # ------------------------------------------------------------ I/O shell

    async def poll(self) -> PollReport:
        """Ask every host once, concurrently; failures are data (a gap), not errors."""
        at = self.clock()
        results = await asyncio.gather(*(self._poll_host(name) for name in self.hosts))
        failed = {name: why for name, why in zip(self.hosts, results, strict=True) if why}
        return PollReport(at, len(self.hosts) - len(failed), failed)

    async def _poll_host(self, name: str) -> str:
        state = self._series[name]
        async with self._limit:
            try:
                if state.session is None:
                    state.session = await self.transport.open(self.hosts[name])
                data = await state.session.call("snapshot", {}, timeout_s=self.timeout_s)
                self.ingest(name, data, self.clock())
                return ""
            except FleetwaveError as exc:
                state.errors += 1
                state.last_error = str(exc)
                await self._drop_session(state)
                return str(exc)

    async def _drop_session(self, state: _HostSeries) -> None:
        session, state.session = state.session, None
        if session is not None:
            # It is gone either way; the next poll opens a new one.
            with contextlib.suppress(FleetwaveError):
                await session.close()

    async def close(self) -> None:
        """Close every polling session (the transport's other sessions are untouched)."""
        for state in self._series.values():
            await self._drop_session(state)

    # ------------------------------------------------------------ pure core

    def ingest(self, host: str, data: Mapping[str, Any], at: float) -> None:
        """Store one snapshot of ``host`` received at ``at``."""
        self._series[host].ring.ingest(parse_snapshot(data, at))

    def ring(self, host: str) -> HostRing:
        """``host``'s stored rows (the anomaly detector reads them)."""
        return self._series[host].ring

    async def query(self, query: MetricQuery, window: Window) -> Series:
        """See :class:`fleetwave.watch.source.MetricSource`; pure over the stored rows."""
        return compute(query, window, {h: s.ring for h, s in self._series.items()})


def compute(query: MetricQuery, window: Window, rings: Mapping[str, HostRing]) -> Series:
    """The datapoints of ``query`` over ``window`` from stored rows (pure)."""
    spec = query.metric
    if spec.promql:
        raise MetricQueryError(NAME, "the agent source does not run PromQL")
    metric = AGENT_METRICS.get(spec.metric)
    if metric is None or spec.statistic is None:
        raise MetricQueryError(NAME, f"unknown agent metric {spec.metric!r}")
    hosts = sorted(query.hosts) if query.hosts else sorted(rings)
    chosen = [rings[h] for h in hosts if h in rings]
    points = []
    for start, end in window.bounds():
        value, samples = _period(
            metric.sample, metric.kind, spec, query.release, chosen, start, end
        )
        points.append(Datapoint(end, clean(value), samples))
    return Series(tuple(points))


@dataclass
class _Counted:
    increase: float = 0.0
    rate: float = 0.0  # per second, summed over hosts
    pairs: int = 0


def _counter(
    sample: str, hosts: list[HostRing], start: float, end: float, release: str | None
) -> _Counted:
    out = _Counted()
    for ring in hosts:
        inc, span, pairs = ring.counter(sample, ring.runs(start, end, release))
        out.increase += inc
        out.pairs += pairs
        if span > 0:
            out.rate += inc / span
    return out


def _period(
    sample: str,
    kind: MetricKind,
    spec: MetricSpec,
    release: str | None,
    hosts: list[HostRing],
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
        total, n, top = 0.0, 0, -math.inf
        for ring in hosts:
            s, k, m = ring.gauge(sample, ring.runs(start, end, release, pairs=False))
            total, n, top = total + s, n + k, max(top, m)
        if not n:
            return None, 0.0
        return (top if stat is Statistic.MAX else total / n), float(n)
    return _histogram(sample, stat, hosts, start, end, release)


def _histogram(
    sample: str,
    stat: Statistic | None,
    hosts: list[HostRing],
    start: float,
    end: float,
    release: str | None,
) -> tuple[float | None, float]:
    merged: dict[float, float] = {}
    total_sum = 0.0
    for ring in hosts:
        got = ring.histogram(sample, ring.runs(start, end, release))
        if got is None:
            continue
        le, counts, dsum, _ = got
        for bound, count in zip(le, counts, strict=True):
            merged[bound] = merged.get(bound, 0.0) + count
        total_sum += dsum
    total = merged.get(math.inf, 0.0)
    if total <= 0:
        return None, 0.0
    if stat is Statistic.MEAN:
        return total_sum / total, total
    quantile = stat.quantile if stat is not None else None
    if quantile is None:
        raise MetricQueryError(NAME, f"{stat} does not apply to a histogram")
    return bucket_quantile(quantile, sorted(merged.items())), total


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear interpolation inside the bucket that
    holds the q-th observation; ``buckets`` are cumulative ``(le, count)``, +Inf last."""
    if not buckets or buckets[-1][0] != math.inf:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == math.inf:
                return lower_bound  # Prometheus: the highest finite bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return None
