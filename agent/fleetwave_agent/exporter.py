"""``fleetwave-agent serve``: the agent's Prometheus exporter.

Everything is registered on the exporter's own ``CollectorRegistry`` (never the
global one) through custom collectors whose ``collect()`` reads values on scrape:
release info and operation counters (from ``ROOT/ops/log.jsonl``, so operations run by
the CLI or over RPC are counted), health checks (probed by a background thread every
``exporter.health_interval``), host and app-process metrics, and the app's request
metrics and log errors. ``docs/agent.md`` lists every metric.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from fleetwave_agent import health
from fleetwave_agent.appmetrics import (
    AccessLogCollector,
    LogErrorCollector,
    LogTailer,
    PrometheusAppCollector,
)
from fleetwave_agent.config import PrometheusSource
from fleetwave_agent.hostmetrics import HostCollector

if TYPE_CHECKING:
    from fleetwave_agent.operations import Agent
    from fleetwave_agent.release import Release

OPERATIONS = ("install", "activate", "rollback", "recover")

OUTCOMES = ("ok", "unchanged", "rolled_back", "failed", "interrupted")


class AgentCollector:
    """Release info and install/rollback counters and durations."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.tailer = LogTailer(agent.oplog.log_path, from_start=True)
        self.counts = {(op, outcome): 0 for op in OPERATIONS for outcome in OUTCOMES}
        self.durations: dict[str, list[float]] = {op: [0.0, 0.0] for op in OPERATIONS}
        self.self_rollbacks = 0
        self.last_finished = 0.0
        self._current_cache: tuple[str, Release | None] | None = None

    def _read_log(self) -> None:
        for line in self.tailer.read_lines():
            try:
                entry = json.loads(line)
                op, outcome = str(entry["op"]), str(entry["outcome"])
                duration = float(entry.get("duration_s", 0.0))
            except (ValueError, KeyError, TypeError):
                continue
            if op not in self.durations:
                continue
            self.counts[op, outcome] = self.counts.get((op, outcome), 0) + 1
            self.durations[op][0] += 1
            self.durations[op][1] += duration
            if entry.get("rolled_back"):
                self.self_rollbacks += 1
            self.last_finished = max(self.last_finished, float(entry.get("started", 0)) + duration)

    def _current(self) -> Release | None:
        # Re-read the release only when `current` points elsewhere: scrapes stay cheap.
        try:
            target = os.readlink(self.agent.store.current_link)
        except OSError:
            return None
        if self._current_cache is None or self._current_cache[0] != target:
            self._current_cache = (target, self.agent.store.current())
        return self._current_cache[1]

    def collect(self) -> Iterable[Metric]:
        self._read_log()
        info = GaugeMetricFamily(
            "fleetwave_agent_release_info",
            "The current release (always 1).",
            labels=["name", "version", "package_id"],
        )
        current = self._current()
        if current is not None:
            info.add_metric([current.name, current.version, current.package_id], 1.0)
        yield info
        bad = GaugeMetricFamily(
            "fleetwave_agent_bad_release_info",
            "A release the agent saw fail to install, activate or pass health (always 1).",
            labels=["name", "version", "package_id", "operation"],
        )
        for release in self.agent.store.known_bad.all():
            bad.add_metric([release.name, release.version, release.package_id, release.op], 1.0)
        yield bad
        ops = CounterMetricFamily(
            "fleetwave_agent_operations",
            "Finished operations by kind and outcome.",
            labels=["operation", "outcome"],
        )
        for (op, outcome), count in sorted(self.counts.items()):
            ops.add_metric([op, outcome], count)
        yield ops
        durations = SummaryMetricFamily(
            "fleetwave_agent_operation_duration_seconds",
            "Wall time of finished operations (hooks and health checks included).",
            labels=["operation"],
        )
        for op, (n, total) in sorted(self.durations.items()):
            durations.add_metric([op], count_value=int(n), sum_value=total)
        yield durations
        yield CounterMetricFamily(
            "fleetwave_agent_self_rollbacks",
            "Installs or activations the agent rolled back itself after validate/health failed.",
            value=self.self_rollbacks,
        )
        yield GaugeMetricFamily(
            "fleetwave_agent_last_operation_timestamp_seconds",
            "When the last operation finished (Unix time; 0 if none).",
            value=self.last_finished,
        )


class HealthMonitor:
    """Probes the current release's health checks periodically; a collector of results."""

    def __init__(self, agent: Agent, interval_s: float) -> None:
        self.agent = agent
        self.interval_s = interval_s
        self._results: dict[str, tuple[str, health.ProbeResult, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> None:
        current = self.agent.store.current()
        specs = current.manifest.health_checks if current is not None else ()
        results: dict[str, tuple[str, health.ProbeResult, float]] = {}
        env = self.agent.health_env(current) if current is not None else None
        for spec in specs:
            outcome = health.probe(spec, cwd=current.path if current else None, env=env)
            results[spec.name] = (spec.kind, outcome, time.time())
        with self._lock:
            self._results = results  # checks of a replaced release disappear with it

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # keep probing; a scrape shows the stale state
                print(f"fleetwave-agent: health probe failed: {exc}", file=sys.stderr)
            self._stop.wait(self.interval_s)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            results = dict(self._results)
        up = GaugeMetricFamily(
            "fleetwave_agent_health_check_up",
            "1 if the health check passed on its last run.",
            labels=["check", "kind"],
        )
        latency = GaugeMetricFamily(
            "fleetwave_agent_health_check_duration_seconds",
            "How long the last run of the health check took.",
            labels=["check"],
        )
        when = GaugeMetricFamily(
            "fleetwave_agent_health_check_timestamp_seconds",
            "When the health check last ran (Unix time).",
            labels=["check"],
        )
        for name, (kind, outcome, at) in sorted(results.items()):
            up.add_metric([name, kind], 1.0 if outcome.ok else 0.0)
            latency.add_metric([name], outcome.latency_s)
            when.add_metric([name], at)
        yield up
        yield latency
        yield when


def build_registry(
    agent: Agent, monitor: HealthMonitor | None = None, *, opened: list[LogTailer] | None = None
) -> CollectorRegistry:
    """A fresh registry with every collector the agent's config asks for.

    The log tailers the collectors hold open are appended to ``opened``, so a caller
    that scrapes once can close them.
    """
    registry = CollectorRegistry(auto_describe=False)
    agent_collector = AgentCollector(agent)
    tailers = [agent_collector.tailer]
    registry.register(agent_collector)
    if monitor is not None:
        registry.register(monitor)
    app = agent.config.app
    registry.register(HostCollector(agent.root, app.process))
    ProcessCollector(namespace="fleetwave_agent", registry=registry)
    if app.metrics is not None:
        collector: PrometheusAppCollector | AccessLogCollector
        if isinstance(app.metrics, PrometheusSource):
            collector = PrometheusAppCollector(app.metrics)
        else:
            collector = AccessLogCollector(app.metrics)
            tailers.append(collector.tailer)
        registry.register(collector)
    if app.log is not None:
        log_errors = LogErrorCollector(app.log)
        tailers.append(log_errors.tailer)
        registry.register(log_errors)
    if opened is not None:
        opened.extend(tailers)
    return registry


def render_snapshot(agent: Agent) -> str:
    """One scrape's worth of metrics as Prometheus text (the RPC ``metrics`` op).

    Health checks are probed once, now; log-based counters start from this moment.
    The logs it opens are closed again: a resident agent serves many snapshots.
    """
    monitor = HealthMonitor(agent, interval_s=0)
    monitor.run_once()
    opened: list[LogTailer] = []
    try:
        return generate_latest(build_registry(agent, monitor, opened=opened)).decode()
    finally:
        for tailer in opened:
            tailer.close()
