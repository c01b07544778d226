"""Health checks against real loopback servers; retries until the deadline."""

from __future__ import annotations

import http.server
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetwave_agent.errors import HealthCheckError
from fleetwave_agent.health import ProbeResult, probe, raise_for, run_checks
from fleetwave_agent.manifest import HealthCheckSpec

from .conftest import free_port, loopback_http

pytestmark = pytest.mark.integration


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(503 if self.path == "/sick" else 200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    with loopback_http(_Handler) as port:
        yield port


def test_http_ok_and_wrong_status(http_port: int) -> None:
    ok = probe(HealthCheckSpec(name="h", kind="http", url=f"http://127.0.0.1:{http_port}/health"))
    assert ok.ok, ok.detail
    sick = probe(HealthCheckSpec(name="h", kind="http", url=f"http://127.0.0.1:{http_port}/sick"))
    assert not sick.ok
    assert "503" in sick.detail
    expect = HealthCheckSpec(
        name="h", kind="http", url=f"http://127.0.0.1:{http_port}/sick", expect_status=503
    )
    assert probe(expect).ok


def test_tcp_connect_and_refused(http_port: int) -> None:
    assert probe(HealthCheckSpec(name="t", kind="tcp", port=http_port)).ok
    closed = probe(HealthCheckSpec(name="t", kind="tcp", port=free_port()))
    assert not closed.ok
    assert "Refused" in closed.detail


def test_command_checks(tmp_path: Path) -> None:
    assert probe(HealthCheckSpec(name="c", kind="command", argv=("true",))).ok
    assert not probe(HealthCheckSpec(name="c", kind="command", argv=("false",))).ok
    slow = HealthCheckSpec(name="c", kind="command", argv=("sleep", "10"), timeout_ms=100)
    result = probe(slow)
    assert not result.ok
    assert "timed out" in result.detail
    missing = probe(HealthCheckSpec(name="c", kind="command", argv=("./nope",)), cwd=tmp_path)
    assert not missing.ok


def test_retries_until_the_server_comes_up() -> None:
    port = free_port()
    holder: list[socket.socket] = []
    attempts: list[int] = []

    def flaky(spec: HealthCheckSpec) -> ProbeResult:
        attempts.append(1)
        if len(attempts) == 3:  # the "app" starts listening after two failed attempts
            listener = socket.socket()
            listener.bind(("127.0.0.1", port))
            listener.listen()
            holder.append(listener)
        return probe(spec)

    spec = HealthCheckSpec(name="t", kind="tcp", port=port, interval_ms=10, deadline_ms=5000)
    try:
        [result] = run_checks([spec], probe_fn=flaky)
    finally:
        for s in holder:
            s.close()
    assert result.ok
    assert result.attempts == 3


def test_gives_up_at_the_deadline_with_a_fake_clock() -> None:
    now = [0.0]
    spec = HealthCheckSpec(name="t", kind="tcp", port=1, interval_ms=500, deadline_ms=2000)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    results = run_checks(
        [spec],
        clock=lambda: now[0],
        sleep=sleep,
        probe_fn=lambda s: ProbeResult(False, 0.0, "refused"),
    )
    assert [r.ok for r in results] == [False]
    assert results[0].attempts == 5  # t=0, 0.5, 1.0, 1.5, 2.0
    with pytest.raises(HealthCheckError, match="'t' failed after 5 attempts: refused"):
        raise_for(results)
