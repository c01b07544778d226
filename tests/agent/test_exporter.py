"""`fleetwave-agent serve`: scrape it over HTTP; app metrics from Prometheus and access logs."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleetwave_agent.appmetrics import AccessLogCollector, LogTailer, PrometheusAppCollector
from fleetwave_agent.config import AccessLogSource, PrometheusSource
from fleetwave_agent.operations import Agent

from .conftest import AGENT_CMD, PackageBuilder, agent_env, free_port, loopback_http

pytestmark = pytest.mark.integration

APP_METRICS = b"""\
# HELP demo_http_requests_total Requests.
# TYPE demo_http_requests_total counter
demo_http_requests_total{code="200"} 90
demo_http_requests_total{code="503"} 7
demo_http_requests_total{code="500"} 3
# HELP demo_http_request_duration_seconds Latency.
# TYPE demo_http_request_duration_seconds histogram
demo_http_request_duration_seconds_bucket{le="0.1"} 80
demo_http_request_duration_seconds_bucket{le="1.0"} 99
demo_http_request_duration_seconds_bucket{le="+Inf"} 100
demo_http_request_duration_seconds_sum 12.5
demo_http_request_duration_seconds_count 100
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = APP_METRICS if self.path == "/metrics" else b"ok"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def app_port() -> Iterator[int]:
    with loopback_http(_Handler) as port:
        yield port


def _samples(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def _collect(collector: object) -> dict[str, float]:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    return _samples(generate_latest(registry).decode())


def test_prometheus_app_source(app_port: int) -> None:
    source = PrometheusSource(
        url=f"http://127.0.0.1:{app_port}/metrics",
        requests_metric="demo_http_requests_total",
        duration_metric="demo_http_request_duration_seconds",
    )
    m = _collect(PrometheusAppCollector(source))
    assert m["fleetwave_agent_app_metrics_up"] == 1
    assert m["fleetwave_agent_app_requests_total"] == 100
    assert m["fleetwave_agent_app_request_errors_total"] == 10
    assert m['fleetwave_agent_app_request_duration_seconds_bucket{le="0.1"}'] == 80
    assert m['fleetwave_agent_app_request_duration_seconds_bucket{le="+Inf"}'] == 100
    assert m["fleetwave_agent_app_request_duration_seconds_sum"] == 12.5
    down = PrometheusSource(url=f"http://127.0.0.1:{free_port()}/metrics")
    assert _collect(PrometheusAppCollector(down))["fleetwave_agent_app_metrics_up"] == 0


def _line(status: int, seconds: float) -> str:
    request = '127.0.0.1 - - [01/Jan/2025:00:00:00 +0000] "GET / HTTP/1.1"'
    return f'{request} {status} 12 "-" "x" {seconds}\n'


def test_access_log_source_tails_and_follows_rotation(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(_line(200, 9.0))  # history before the exporter started is not counted
    collector = AccessLogCollector(AccessLogSource(path=log))
    assert _collect(collector)["fleetwave_agent_app_requests_total"] == 0
    with log.open("a") as fh:
        fh.write(_line(200, 0.02) + _line(502, 0.3) + _line(200, 0.004))
        fh.write('127.0.0.1 - - [01/Jan/2025:00:00:00 +0000] "GET / HTTP/1.1" 200')  # partial
    m = _collect(collector)
    assert m["fleetwave_agent_app_requests_total"] == 3
    assert m["fleetwave_agent_app_request_errors_total"] == 1
    assert m['fleetwave_agent_app_request_duration_seconds_bucket{le="0.005"}'] == 1
    assert m['fleetwave_agent_app_request_duration_seconds_bucket{le="0.025"}'] == 2
    assert m['fleetwave_agent_app_request_duration_seconds_bucket{le="+Inf"}'] == 3
    with log.open("a") as fh:
        fh.write(' 12 "-" "x" 0.1\n' + _line(200, 0.1))  # completes the partial line
    log.rename(tmp_path / "access.log.1")
    log.write_text(_line(500, 1.5))  # the new file after rotation is read from its start
    m = _collect(collector)
    assert m["fleetwave_agent_app_requests_total"] == 6
    assert m["fleetwave_agent_app_request_errors_total"] == 2
    collector.tailer.close()


def test_tailer_handles_truncation(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    tailer = LogTailer(path, from_start=True)
    assert tailer.read_lines() == []
    path.write_text("a\nb\n")
    assert tailer.read_lines() == ["a", "b"]
    path.write_text("c\n")  # copytruncate: same inode, smaller
    assert tailer.read_lines() == ["c"]
    tailer.close()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def test_serve_exports_agent_host_health_and_app_metrics(
    tmp_path: Path,
    make_agent: Callable[..., Agent],
    make_package: PackageBuilder,
    keypair: tuple[Path, Path],
    app_port: int,
) -> None:
    agent = make_agent()
    check = {"name": "app", "kind": "http", "url": f"http://127.0.0.1:{app_port}/health"}
    pidfile = tmp_path / "app.pid"
    agent.install(make_package("1", {"start": f"echo $$ > {pidfile}"}, checks=[check]))
    app_log = tmp_path / "app.log"
    app_log.write_text("")
    pidfile.write_text(str(os.getpid()))  # this test process stands in for the app
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"root: {agent.root}\n"
        f"trusted_keys: [{keypair[1]}]\n"
        "exporter: {health_interval: 100ms}\n"
        "app:\n"
        f"  metrics: {{prometheus: {{url: 'http://127.0.0.1:{app_port}/metrics', "
        "requests_metric: demo_http_requests_total, "
        "duration_metric: demo_http_request_duration_seconds}}\n"
        f"  log: {{path: {app_log}, error_pattern: 'ERROR'}}\n"
        f"  process: {{pid_file: {pidfile}}}\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [*AGENT_CMD, "--config", str(cfg), "serve", "--port", str(port)],
        env=agent_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert "serving metrics on" in proc.stderr.readline()
        _scrape(port)  # first scrape opens the log at its end
        app_log.write_text("INFO fine\nERROR boom\nERROR again\n")
        m: dict[str, float] = {}
        for _ in range(100):  # bounded: the health thread probes every 100 ms
            m = _samples(_scrape(port))
            if m.get('fleetwave_agent_health_check_up{check="app",kind="http"}') == 1:
                break
            time.sleep(0.05)
        assert m['fleetwave_agent_health_check_up{check="app",kind="http"}'] == 1
        release = [k for k in m if k.startswith("fleetwave_agent_release_info")]
        assert len(release) == 1
        assert 'version="1"' in release[0]
        assert 'name="app"' in release[0]
        assert m['fleetwave_agent_operations_total{operation="install",outcome="ok"}'] == 1
        assert m['fleetwave_agent_operation_duration_seconds_count{operation="install"}'] == 1
        assert m["fleetwave_agent_app_requests_total"] == 100
        assert m["fleetwave_agent_app_log_errors_total"] == 2
        assert m["fleetwave_agent_app_up"] == 1
        assert m["fleetwave_agent_app_resident_memory_bytes"] > 0
        assert 0 <= m["fleetwave_agent_host_cpu_usage_ratio"] <= 1
        assert m["fleetwave_agent_host_memory_total_bytes"] > 0
        assert any(k.startswith("fleetwave_agent_volume_free_bytes") for k in m)
        assert "fleetwave_agent_process_resident_memory_bytes" in m
        names = {re.sub(r"\{.*", "", k) for k in m}
        assert all(n.startswith("fleetwave_agent_") for n in names)
        # An operation run outside the exporter (CLI, RPC) shows up on the next scrape.
        agent.install(make_package("2", checks=[check]))
        m = _samples(_scrape(port))
        assert m['fleetwave_agent_operations_total{operation="install",outcome="ok"}'] == 2
        assert any('version="2"' in k for k in m if k.startswith("fleetwave_agent_release_info"))
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        if proc.stderr:
            proc.stderr.close()
