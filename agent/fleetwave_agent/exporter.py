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
import signal
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

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
    from wsgiref.simple_server import WSGIServer

    from fleetwave_agent.operations import Agent
    from fleetwave_agent.release import Release
    from fleetwave_agent.rpcsocket import RpcSocketServer

OPERATIONS = ("install", "activate", "rollback", "recover")

#: What an install imports lazily (kept lazy so `fleetwave-agent rpc` sessions that only
#: ask for status stay cheap). A resident daemon imports them once at start instead, so
#: the first deployment after a restart is not ~50 ms slower than the next ones.
INSTALL_MODULES = (
    "fleetwave_agent.manifest",
    "fleetwave_agent.package",
    "fleetwave_agent.digests",
    "fleetwave_agent.keys",
    "fleetwave_agent.extract",
    "fleetwave_agent.hooks",
    "cryptography.exceptions",
    "cryptography.hazmat.primitives.serialization",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
    "tarfile",
    "gzip",
)
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


def serve(
    agent: Agent,
    *,
    listen: str | None = None,
    port: int | None = None,
    rpc_socket: Path | None = None,
) -> int:
    """Serve ``/metrics`` until SIGTERM or SIGINT; returns the exit status.

    With ``rpc_socket`` (or the config's ``rpc_socket``) the agent RPC protocol is
    served on that unix socket as well (:mod:`rpcsocket`); it is bound first, so a bad
    socket path stops the daemon before anything else has started.
    """
    exporter = agent.config.exporter
    addr = listen or exporter.listen
    _recover_at_start(agent)
    socket_path = rpc_socket or agent.config.rpc_socket
    rpc: RpcSocketServer | None = None
    if socket_path is not None:
        from fleetwave_agent.rpcsocket import RpcSocketServer

        rpc = RpcSocketServer(agent, socket_path)
        rpc.start()
        # In the background: the metrics endpoint and the socket are up meanwhile, and a
        # session that arrives first just waits on the same per-module import locks.
        threading.Thread(target=warm_install_path, name="warm-imports", daemon=True).start()
    try:
        monitor = HealthMonitor(agent, exporter.health_interval_s)
        registry = build_registry(agent, monitor)
        server, thread = _start_http_server(addr, exporter.port if port is None else port, registry)
    except BaseException:
        if rpc is not None:
            rpc.close()
        raise
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    monitor.start()
    print(
        f"fleetwave-agent: serving metrics on http://{addr}:{server.server_port}/metrics",
        file=sys.stderr,
        flush=True,
    )
    if rpc is not None:
        print(f"fleetwave-agent: serving rpc on {rpc.path}", file=sys.stderr, flush=True)
    try:
        while not stop.wait(3600):
            pass
    finally:
        if rpc is not None:
            rpc.close()  # first: no new sessions while the rest shuts down
        monitor.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    return 0


def _recover_at_start(agent: Agent) -> None:
    """Recover from a crash of the previous agent process before serving anything."""
    from fleetwave_core.errors import FleetwaveError, LockedError

    try:
        actions = agent.recover()
    except LockedError:
        return  # an operation is running: it recovered first
    except FleetwaveError as exc:
        print(f"fleetwave-agent: recovery at start failed: {exc}", file=sys.stderr, flush=True)
        return
    for action in actions:
        print(f"fleetwave-agent: recovery: {action}", file=sys.stderr, flush=True)


def warm_install_path(modules: Iterable[str] = INSTALL_MODULES) -> list[str]:
    """Import ``modules`` now; returns the ones that failed (logged, never fatal: the
    install that needs one reports the failure properly)."""
    import importlib

    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a warm-up must never stop the daemon
            failed.append(name)
            print(f"fleetwave-agent: cannot preload {name}: {exc}", file=sys.stderr, flush=True)
    return failed


def _start_http_server(
    addr: str, port: int, registry: CollectorRegistry
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``registry`` over HTTP in a daemon thread.

    Built from wsgiref rather than prometheus_client.start_http_server, whose return
    value changed in 0.20 (Debian 12 ships 0.16), and without HTTPServer's getfqdn()
    in server_bind, which hangs for seconds where reverse DNS does not answer (network
    namespaces, isolated hosts).
    """
    import socket
    import socketserver
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        address_family = family
        daemon_threads = True

        def server_bind(self) -> None:
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = str(addr), self.server_address[1]
            self.setup_environ()

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape would flood the journal

    server = make_server(
        addr, port, make_wsgi_app(registry), server_class=Server, handler_class=QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread
