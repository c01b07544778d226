"""The demo app on loopback: its endpoints, behaviour.json switches and faults on cue
(errors, latency, no traffic, a crash loop, a capped leak, a latent fault), graceful
SIGTERM, its start/stop hooks, and that its fleetwave-package.yaml is valid."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleetwave_agent.package import load_package_config
from tests.lab import free_port, wait_until

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-app"


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def answers(port: int) -> bool:
    try:
        return get(port, "/health")[0] in (200, 503)
    except OSError:
        return False


class App:
    def __init__(self, tmp: Path, behaviour: dict[str, Any]):
        self.dir = tmp / "demo-app"
        shutil.copytree(DEMO, self.dir)
        (self.dir / "behaviour.json").write_text(json.dumps(behaviour))
        self.port = free_port()
        self.pid_file = tmp / "run" / "demo-app.pid"
        self.log = tmp / "demo-app.log"
        with self.log.open("ab") as out:
            self.proc = self._spawn(out)
        wait_until(lambda: answers(self.port), timeout=15, what="demo app")

    def _spawn(self, out: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                *(sys.executable, str(self.dir / "app" / "demo_app.py"), "--bind", "127.0.0.1"),
                *("--port", str(self.port), "--pid-file", str(self.pid_file)),
            ],
            stdout=out,
            stderr=subprocess.PIPE,
        )

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=15)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[Any]:
    apps: list[App] = []

    def make(**behaviour: Any) -> App:
        app = App(tmp_path / str(len(apps)), {"version": "2.0.0", **behaviour})
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


def metrics(port: int) -> dict[str, float]:
    status, text = get(port, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return samples


def test_endpoints_and_metrics(app_factory: Any) -> None:
    app = app_factory()
    assert get(app.port, "/health") == (200, "ok\n")
    for _ in range(3):
        status, body = get(app.port, "/")
        assert status == 200
        assert body.split()[1] == "2.0.0"
    assert get(app.port, "/nope")[0] == 404
    m = metrics(app.port)
    assert m["demo_http_requests_total{code=200}"] == 3
    assert m["demo_http_errors_total{}"] == 0
    assert m["demo_http_request_duration_seconds_count{}"] == 3
    assert m["demo_http_request_duration_seconds_bucket{le=+Inf}"] == 3
    assert m["demo_build_info{version=2.0.0}"] == 1
    assert app.pid_file.read_text().strip() == str(app.proc.pid)


def test_bad_release_behaviour(app_factory: Any) -> None:
    app = app_factory(health="fail", error_rate=1.0)
    assert get(app.port, "/health")[0] == 503
    assert get(app.port, "/")[0] == 500
    m = metrics(app.port)
    assert m["demo_http_requests_total{code=500}"] == 1
    assert m["demo_http_errors_total{}"] == 1


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_added_latency(app_factory: Any) -> None:
    app = app_factory(latency_ms=300)
    started = time.monotonic()
    assert get(app.port, "/")[0] == 200
    assert time.monotonic() - started >= 0.3
    m = metrics(app.port)
    assert m["demo_http_request_duration_seconds_bucket{le=0.25}"] == 0
    assert m["demo_http_request_duration_seconds_bucket{le=0.5}"] == 1
    started = time.monotonic()
    assert get(app.port, "/health")[0] == 200  # only the work is slow
    assert time.monotonic() - started < 0.3


def test_no_traffic_hangs_up_unanswered_and_counts_nothing(app_factory: Any) -> None:
    app = app_factory(no_traffic=True)
    for _ in range(3):
        with pytest.raises(http.client.RemoteDisconnected):
            get(app.port, "/")
    assert get(app.port, "/health") == (200, "ok\n")  # the health check still passes
    m = metrics(app.port)
    assert m["demo_http_request_duration_seconds_count{}"] == 0
    assert not any(k.startswith("demo_http_requests_total") for k in m)


def test_latent_fault_starts_after_fault_after_s(app_factory: Any) -> None:
    app = app_factory(error_rate=1.0, health="fail", fault_after_s=2)
    started = time.monotonic()
    assert get(app.port, "/")[0] == 200
    assert get(app.port, "/health")[0] == 200
    wait_until(lambda: get(app.port, "/")[0] == 500, timeout=15, what="the latent fault")
    assert time.monotonic() - started >= 1.5  # not before its time (less the start-up)
    assert get(app.port, "/health")[0] == 503
    m = metrics(app.port)
    assert m["demo_http_requests_total{code=200}"] >= 1
    assert m["demo_http_errors_total{}"] >= 1


def test_crash_loop_exits_and_is_restarted_until_sigterm(app_factory: Any) -> None:
    app = app_factory(crash_after_s=1)
    supervisor = app.proc.pid
    assert app.pid_file.read_text().strip() == str(supervisor)
    wait_until(lambda: "restart 2" in app.output(), timeout=30, what="two restarts")
    assert "exited 1; restart 1" in app.output()  # a crash (exit 1), not a clean stop
    wait_until(lambda: app.output().count("listening on") >= 3, timeout=15, what="restart")
    wait_until(lambda: answers(app.port), timeout=15, what="the restarted app")
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(timeout=15) == 0
    assert not answers(app.port)  # the child went with its supervisor
    assert not app.pid_file.exists()


def test_memory_leak_grows_to_its_cap_and_stops(app_factory: Any) -> None:
    app = app_factory(leak_mb_per_s=100, leak_cap_mb=40, fault_after_s=0.5)
    base = rss_mb(app.proc.pid)
    wait_until(lambda: rss_mb(app.proc.pid) >= base + 35, timeout=20, what="the leak")
    time.sleep(1.0)  # the leak runs at 100 MB/s: a missing cap would show within 1 s
    assert rss_mb(app.proc.pid) < base + 55
    assert get(app.port, "/")[0] == 200  # a leaking app still serves


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ({"no_traffic": "yes"}, "no_traffic must be true or false"),
        ({"leak_cap_mb": 4096}, "leak_cap_mb must be a number within 0..512"),
        ({"crash_after_s": -1}, "crash_after_s must be a number within 0..86400"),
        ({"fault_after_s": True}, "fault_after_s must be a number within 0..86400"),
    ],
)
def test_bad_fault_values_are_one_line(tmp_path: Path, behaviour: Any, message: str) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(behaviour))
    proc = subprocess.run(
        [sys.executable, str(DEMO / "app" / "demo_app.py"), "--behaviour", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"demo-app: {path}: {message}"


def test_sigterm_finishes_requests_in_flight(app_factory: Any) -> None:
    app = app_factory(latency_ms=1500)
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(get(app.port, "/")[0]))
    worker.start()
    time.sleep(0.3)  # sequencing only: let the request reach the app before SIGTERM
    app.proc.send_signal(signal.SIGTERM)
    worker.join(20)
    assert result == [200]
    assert app.proc.wait(timeout=15) == 0
    assert not app.pid_file.exists()


def test_bad_behaviour_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text('{"health": "meh"}')
    proc = subprocess.run(
        [
            sys.executable,
            str(DEMO / "app" / "demo_app.py"),
            "--behaviour",
            str(tmp_path / "b.json"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"demo-app: {tmp_path / 'b.json'}: health must be 'ok' or 'fail'"


def test_start_and_stop_hooks(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "FLEETWAVE_RUN_DIR": str(tmp_path / "run"),
        "DEMO_PORT": str(port),
        "DEMO_BIND": "127.0.0.1",
    }
    subprocess.run([DEMO / "bin" / "start"], env=env, check=True, timeout=30)
    pid_file = tmp_path / "run" / "demo-app.pid"
    try:
        wait_until(lambda: answers(port), timeout=15, what="demo app started by hook")
        pid = int(pid_file.read_text())
        assert os.getsid(pid) == pid  # its own session: outlives the hook's group
    finally:
        subprocess.run([DEMO / "bin" / "stop"], env=env, check=True, timeout=30)
    assert not pid_file.exists()
    assert not answers(port)
    # Stopping what is not running succeeds (the first install has nothing to stop).
    subprocess.run([DEMO / "bin" / "stop"], env=env, check=True, timeout=30)


def test_package_config_is_valid() -> None:
    hooks, checks = load_package_config(DEMO / "fleetwave-package.yaml")
    assert set(hooks) == {"start", "stop"}
    assert [c.name for c in checks] == ["http"]
