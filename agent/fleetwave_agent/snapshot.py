"""The ``snapshot`` RPC operation: the agent's standard metrics as one small JSON object.

The controller's embedded metric source polls this on a session of its own, every
few seconds, on every host, so it must be cheap: the values come from the very
collectors the exporter registers (:mod:`hostmetrics`, :mod:`appmetrics`, the health
monitor of :mod:`exporter`), read as the exporter reads them, and nothing else.

The collectors live as long as the :class:`~fleetwave_agent.operations.Agent` they were
made for, so counters read from logs keep counting across snapshots: in a
``fleetwave-agent rpc`` process that is the polling session; in the resident daemon
it is the daemon. Health checks are probed at most once per
``exporter.health_interval`` (the exporter's own pace), not once per poll.

Shape (``v`` 1)::

    {"v": 1, "time": 1700000000.0, "release": "1.2.0" | null,
     "counters": {"fleetwave_agent_app_requests_total": 1234.0, ...},
     "gauges": {"fleetwave_agent_health_check_up": [1.0, 1.0], ...},
     "histograms": {"fleetwave_agent_app_request_duration_seconds":
                    {"le": ["0.005", ..., "+Inf"], "counts": [cumulative...], "sum": 12.5}}}

Sample names are the exporter's, so a snapshot and a Prometheus scrape of the same
agent say the same thing.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from fleetwave_agent.operations import Agent

SNAPSHOT_VERSION = 1

_LOCK = threading.Lock()
_SNAPSHOTTERS: weakref.WeakKeyDictionary[Agent, _Snapshotter] = weakref.WeakKeyDictionary()


def snapshot(agent: Agent) -> dict[str, Any]:
    """One snapshot of ``agent``'s standard metrics (see the module doc)."""
    with _LOCK:
        taker = _SNAPSHOTTERS.get(agent)
        if taker is None:
            taker = _SNAPSHOTTERS[agent] = _Snapshotter(agent)
    return taker.take()


class _Snapshotter:
    """The exporter's collectors for one agent, read on demand (thread-safe)."""

    def __init__(self, agent: Agent) -> None:
        from fleetwave_agent.appmetrics import (
            AccessLogCollector,
            LogErrorCollector,
            PrometheusAppCollector,
        )
        from fleetwave_agent.config import PrometheusSource
        from fleetwave_agent.exporter import HealthMonitor
        from fleetwave_agent.hostmetrics import HostCollector

        self.agent = agent
        app = agent.config.app
        self.collectors: list[Any] = [HostCollector(agent.root, app.process)]
        if app.metrics is not None:
            if isinstance(app.metrics, PrometheusSource):
                self.collectors.append(PrometheusAppCollector(app.metrics))
            else:
                self.collectors.append(AccessLogCollector(app.metrics))
        if app.log is not None:
            self.collectors.append(LogErrorCollector(app.log))
        self.monitor = HealthMonitor(agent, interval_s=agent.config.exporter.health_interval_s)
        self._probed = float("-inf")
        self._release: tuple[str, str | None] | None = None
        self._lock = threading.Lock()

    def take(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if now - self._probed >= self.monitor.interval_s:
                self.monitor.run_once()
                self._probed = now
            families: list[Metric] = []
            for collector in (*self.collectors, self.monitor):
                families.extend(collector.collect())
            out = _flatten(families)
            out["release"] = self._current_version()
            out["time"] = time.time()
            return out

    def _current_version(self) -> str | None:
        try:
            target = os.readlink(self.agent.store.current_link)
        except OSError:
            return None
        if self._release is None or self._release[0] != target:
            current = self.agent.store.current()
            self._release = (target, current.version if current is not None else None)
        return self._release[1]


def _flatten(families: Iterable[Metric]) -> dict[str, Any]:
    counters: dict[str, float] = {}
    gauges: dict[str, list[float]] = {}
    histograms: dict[str, dict[str, Any]] = {}
    for family in families:
        if family.type == "histogram":
            le: list[str] = []
            counts: list[float] = []
            total = 0.0
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    le.append(s.labels.get("le", "+Inf"))
                    counts.append(float(s.value))
                elif s.name.endswith("_sum"):
                    total = float(s.value)
            if le:
                histograms[family.name] = {"le": le, "counts": counts, "sum": total}
            continue
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            if family.type == "counter":
                counters[s.name] = counters.get(s.name, 0.0) + float(s.value)
            elif family.type == "gauge":
                gauges.setdefault(s.name, []).append(float(s.value))
    return {
        "v": SNAPSHOT_VERSION,
        "counters": counters,
        "gauges": gauges,
        "histograms": histograms,
    }
