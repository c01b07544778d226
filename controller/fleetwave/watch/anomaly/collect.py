"""Build :class:`HostWindow` records from the agent source's snapshot rings (pure).

The runner holds an :class:`~fleetwave.watch.agent_source.AgentSource`; its
``snapshots(host)`` is one host's ring. :func:`host_window` reduces the snapshots
inside ``(start, end]`` served by ``release`` with the agent source's own rules: a
counter that went down was reset and counts from zero (as Prometheus' ``increase``);
a pair of snapshots counts only when its newer one was served by ``release``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fleetwave.config.alarms import AGENT_METRICS
from fleetwave.watch.agent_source import Snapshot
from fleetwave.watch.anomaly.inputs import Buckets, HostWindow, Point

_REQUESTS = AGENT_METRICS["requests"].sample
_ERRORS = AGENT_METRICS["errors"].sample
_LATENCY = AGENT_METRICS["latency"].sample
_CPU = AGENT_METRICS["app_cpu"].sample
_RSS = AGENT_METRICS["app_memory"].sample
_UP = AGENT_METRICS["app_up"].sample
_HEALTH = AGENT_METRICS["health"].sample


def _increase(prev: float | None, cur: float | None) -> float | None:
    if prev is None or cur is None:
        return None
    return cur if cur < prev else cur - prev


def _passing(s: Snapshot) -> bool | None:
    values = s.gauges.get(_HEALTH)
    return None if not values else min(values) >= 1.0


def _up(s: Snapshot) -> bool | None:
    values = s.gauges.get(_UP)
    return None if not values else max(values) >= 1.0


def host_window(
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
        requests += _increase(prev.counters.get(_REQUESTS), cur.counters.get(_REQUESTS)) or 0.0
        errors += _increase(prev.counters.get(_ERRORS), cur.counters.get(_ERRORS)) or 0.0
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
