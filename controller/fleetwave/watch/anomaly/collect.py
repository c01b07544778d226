"""Build :class:`HostWindow` records from the agent source's stored rows (pure).

The runner holds an :class:`~fleetwave.watch.agent_source.AgentSource`; its
``ring(host)`` is one host's :class:`~fleetwave.watch.ring.HostRing`. :func:`host_window`
reduces the rows inside ``(start, end]`` served by ``release`` with the agent source's
own rules: a counter that went down was reset and counts from zero (as Prometheus'
``increase``); a pair of rows counts only when its newer one was served by
``release``. The ring needs :data:`~fleetwave.watch.ring.ANOMALY_SAMPLES` kept.

Latency buckets are the differences of the ring's cumulative bucket totals: the same
per-bucket increases as summing pair by pair whenever bucket counts only grow between
resets, as the agent's do.
"""

from __future__ import annotations

import math

from fleetwave.config.alarms import AGENT_METRICS
from fleetwave.watch.anomaly.inputs import Buckets, HostWindow, Point
from fleetwave.watch.ring import HostRing

_REQUESTS = AGENT_METRICS["requests"].sample
_ERRORS = AGENT_METRICS["errors"].sample
_LATENCY = AGENT_METRICS["latency"].sample
_RSS = AGENT_METRICS["app_memory"].sample


def host_window(
    host: str, ring: HostRing, start: float, end: float, release: str | None
) -> HostWindow:
    """What ``host`` did in ``(start, end]`` on ``release`` (None: any release).

    Restarts are CPU counter resets and ``app_up`` 1 -> 0; flaps, health 1 -> 0; the
    RSS points are each row's mean (a multi-valued gauge gives one point per row)."""
    runs = ring.runs(start, end, release)
    requests = ring.counter(_REQUESTS, runs)[0]
    errors = ring.counter(_ERRORS, runs)[0]
    restarts, flaps = ring.events(runs)
    latency = None
    got = ring.histogram(_LATENCY, runs)
    if got is not None and got[3] > 0 and got[0][-1] == math.inf:
        le, cumulative, _, _ = got
        per_bucket = [
            max(c - b, 0.0) for c, b in zip(cumulative, [0.0, *cumulative[:-1]], strict=True)
        ]
        latency = Buckets(le, tuple(per_bucket))
    return HostWindow(
        host=host,
        seconds=ring.seconds(runs),
        requests=requests,
        errors=errors,
        latency=latency,
        restarts=restarts,
        flaps=flaps,
        rss=tuple(Point(t, v) for t, v in ring.means(_RSS, runs)),
        cpu=tuple(Point(t, v) for t, v in ring.cpu_rates(runs)),
    )
