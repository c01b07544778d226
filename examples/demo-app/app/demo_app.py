#!/usr/bin/env python3
"""The fleetwave demo app: a small HTTP service whose behaviour comes from the
``behaviour.json`` of the package it was shipped in, so a test can build a "bad"
release by changing one file.

Endpoints: ``/`` (the work), ``/health`` and ``/metrics`` (Prometheus text format).
Standard library only. On SIGTERM it stops accepting, finishes the requests in flight
and exits, so a drained host loses no requests.

Faults on cue (all off by default): ``error_rate``, ``latency_ms``, ``no_traffic``
(``/`` hangs up without an answer and counts nothing), ``health: fail``,
``leak_mb_per_s`` (capped at ``leak_cap_mb``), and ``crash_after_s`` (a crash loop:
the app exits 1 after that long and a small supervisor restarts it). With
``fault_after_s`` every fault starts that many seconds after the app started (a
latent fault: the release passes its health check first). ``fault_hosts`` limits
the request faults to some hostnames (a fault in one AZ). The normal latency is
``base_latency_ms`` with a uniform ``jitter_ms`` and an exponential ``tail_ms``;
``slow_share`` of requests are ``slow_ms`` slower under fault (a p99 regression).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DEFAULTS: dict[str, Any] = {
    "version": "0.0.0",
    "health": "ok",
    "error_rate": 0.0,
    "latency_ms": 0,
    "start_delay_ms": 0,
    "no_traffic": False,
    "crash_after_s": 0,
    "leak_mb_per_s": 0,
    "leak_cap_mb": 64,
    "fault_after_s": 0,
    # The app's normal latency: base + uniform +-jitter + an exponential tail (ms).
    "base_latency_ms": 0,
    "jitter_ms": 0,
    "tail_ms": 0,
    # Faults of the tail and of some hosts only.
    "slow_share": 0.0,  # that share of requests is slow_ms slower
    "slow_ms": 0,
    "fault_hosts": [],  # hostnames the faults apply on (empty: every host)
}
#: The most a leak may hold: the lab's hosts share the test machine's memory.
MAX_LEAK_MB = 512
#: A crashed app is restarted after this long.
RESTART_DELAY_S = 0.5
#: Bounds of the numeric keys: (low, high), inclusive.
_RANGES: dict[str, tuple[float, float]] = {
    "error_rate": (0.0, 1.0),
    "latency_ms": (0.0, 60_000.0),
    "start_delay_ms": (0.0, 600_000.0),
    "crash_after_s": (0.0, 86_400.0),
    "leak_mb_per_s": (0.0, float(MAX_LEAK_MB)),
    "leak_cap_mb": (0.0, float(MAX_LEAK_MB)),
    "fault_after_s": (0.0, 86_400.0),
    "base_latency_ms": (0.0, 60_000.0),
    "jitter_ms": (0.0, 60_000.0),
    "tail_ms": (0.0, 60_000.0),
    "slow_share": (0.0, 1.0),
    "slow_ms": (0.0, 60_000.0),
}


def load_behaviour(path: Path) -> dict[str, Any]:
    """Read ``behaviour.json``; unknown keys or bad values stop the app with one line."""
    data = json.loads(path.read_text())
    unknown = set(data) - set(DEFAULTS)
    if unknown:
        raise SystemExit(f"demo-app: {path}: unknown keys {sorted(unknown)}")
    behaviour = {**DEFAULTS, **data}
    if behaviour["health"] not in ("ok", "fail"):
        raise SystemExit(f"demo-app: {path}: health must be 'ok' or 'fail'")
    hosts = behaviour["fault_hosts"]
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise SystemExit(f"demo-app: {path}: fault_hosts must be a list of hostnames")
    if not isinstance(behaviour["no_traffic"], bool):
        raise SystemExit(f"demo-app: {path}: no_traffic must be true or false")
    for key, (low, high) in _RANGES.items():
        value = behaviour[key]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not low <= value <= high:
            raise SystemExit(f"demo-app: {path}: {key} must be a number within {low:g}..{high:g}")
    return behaviour


class Faults:
    """When the behaviour's faults apply: from ``fault_in_s`` after the app started."""

    def __init__(self, behaviour: dict[str, Any], fault_in_s: float):
        self.behaviour = behaviour
        self._at = time.monotonic() + fault_in_s
        self.leaked: list[bytes] = []
        hosts = behaviour.get("fault_hosts") or []
        self._here = not hosts or socket.gethostname() in hosts

    def active(self) -> bool:
        return self._here and time.monotonic() >= self._at

    def leak(self, stopping: threading.Event) -> None:
        """Grow by ``leak_mb_per_s`` until ``leak_cap_mb`` is held (a thread's body)."""
        rate = float(self.behaviour["leak_mb_per_s"]) * (1 << 20)
        cap = float(self.behaviour["leak_cap_mb"]) * (1 << 20)
        held = 0
        while rate > 0 and held < cap and not stopping.wait(0.1):
            if not self.active():
                continue
            chunk = int(min(rate / 10, cap - held))
            self.leaked.append(b"\x01" * chunk)  # written, so resident, not lazily mapped
            held += chunk


class Metrics:
    """Request counters and a latency histogram, rendered in Prometheus text format."""

    def __init__(self, version: str):
        self.version = version
        self.lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.errors = 0
        self.buckets = [0] * len(BUCKETS)
        self.count = 0
        self.sum = 0.0

    def observe(self, code: int, seconds: float) -> None:
        with self.lock:
            self.requests[str(code)] = self.requests.get(str(code), 0) + 1
            if code >= 500:
                self.errors += 1
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.buckets[i] += 1
            self.count += 1
            self.sum += seconds

    def render(self) -> str:
        name = "demo_http_request_duration_seconds"
        with self.lock:
            lines = [
                "# HELP demo_build_info The running release.",
                "# TYPE demo_build_info gauge",
                f'demo_build_info{{version="{self.version}"}} 1',
                "# HELP demo_http_requests_total Requests to / by status code.",
                "# TYPE demo_http_requests_total counter",
            ]
            lines += [
                f'demo_http_requests_total{{code="{c}"}} {n}' for c, n in self.requests.items()
            ]
            lines += [
                "# HELP demo_http_errors_total Requests to / answered with a 5xx status.",
                "# TYPE demo_http_errors_total counter",
                f"demo_http_errors_total {self.errors}",
                "# HELP demo_http_request_duration_seconds Latency of requests to /.",
                f"# TYPE {name} histogram",
            ]
            lines += [
                f'{name}_bucket{{le="{b}"}} {n}' for b, n in zip(BUCKETS, self.buckets, strict=True)
            ]
            lines += [
                f'{name}_bucket{{le="+Inf"}} {self.count}',
                f"{name}_sum {self.sum}",
                f"{name}_count {self.count}",
            ]
        return "\n".join(lines) + "\n"


class Server(ThreadingHTTPServer):
    # Non-daemon handler threads: server_close() waits for requests in flight.
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 256

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), whose reverse DNS lookup hangs
        # where there is no resolver (a network namespace): bind without it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


def make_handler(
    behaviour: dict[str, Any], metrics: Metrics, faults: Faults
) -> type[BaseHTTPRequestHandler]:
    hostname = socket.gethostname()
    latency = float(behaviour["latency_ms"]) / 1000.0
    error_rate = float(behaviour["error_rate"])
    sick = behaviour["health"] == "fail"
    no_traffic = bool(behaviour["no_traffic"])
    base = float(behaviour["base_latency_ms"]) / 1000.0
    jitter = float(behaviour["jitter_ms"]) / 1000.0
    tail = float(behaviour["tail_ms"]) / 1000.0
    slow_share = float(behaviour["slow_share"])
    slow = float(behaviour["slow_ms"]) / 1000.0

    def normal_latency() -> float:
        extra = base + random.uniform(-jitter, jitter)
        return max(0.0, extra + (random.expovariate(1.0 / tail) if tail else 0.0))

    class Handler(BaseHTTPRequestHandler):
        server_version = "fleetwave-demo"

        def do_GET(self) -> None:
            started = time.monotonic()
            faulty = faults.active()
            if self.path == "/health":
                healthy = not (sick and faulty)
                self._reply(200 if healthy else 503, "ok\n" if healthy else "unhealthy\n")
            elif self.path == "/metrics":
                self._reply(200, metrics.render(), "text/plain; version=0.0.4")
            elif self.path == "/" or self.path.startswith("/?"):
                if faulty and no_traffic:
                    self.close_connection = True  # hang up unanswered: nothing served
                    return
                pause = normal_latency()
                if faulty and latency:
                    pause += latency
                if faulty and slow_share and random.random() < slow_share:
                    pause += slow
                if pause:
                    time.sleep(pause)
                code = 500 if faulty and random.random() < error_rate else 200
                self._reply(code, f"{hostname} {behaviour['version']}\n")
                metrics.observe(code, time.monotonic() - started)
            else:
                self._reply(404, "not found\n")

        def _reply(self, code: int, body: str, ctype: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Served-By", hostname)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # /metrics carries the numbers; a per-request log would fill small disks

    return Handler


def write_pid_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


def supervise(args: argparse.Namespace, behaviour: dict[str, Any]) -> int:
    """The crash loop's parent: runs the app as a child, restarts it whenever it exits,
    forwards SIGTERM and exits 0 once the child has stopped."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    started = time.monotonic()
    restarts = 0
    while not stopping.is_set():
        fault_in = max(0.0, float(behaviour["fault_after_s"]) - (time.monotonic() - started))
        child = subprocess.Popen(
            [
                *(sys.executable, str(Path(__file__).resolve())),
                *("--behaviour", str(args.behaviour)),
                *("--bind", args.bind, "--port", str(args.port), "--fault-in", f"{fault_in:.3f}"),
                "--crash-in",
                str(fault_in + float(behaviour["crash_after_s"])),
            ]
        )
        while child.poll() is None and not stopping.wait(0.1):
            pass
        if stopping.is_set():
            child.terminate()
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            break
        restarts += 1
        print(f"demo-app: exited {child.returncode}; restart {restarts}", flush=True)
        stopping.wait(RESTART_DELAY_S)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--behaviour", type=Path, default=HERE.parent / "behaviour.json")
    parser.add_argument("--bind", default=os.environ.get("DEMO_BIND", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8080")))
    parser.add_argument("--pid-file", type=Path)
    # Set by the crash loop's supervisor for its child; not for manual use.
    parser.add_argument("--fault-in", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--crash-in", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    behaviour = load_behaviour(args.behaviour)
    if args.pid_file:
        write_pid_file(args.pid_file)
    if behaviour["crash_after_s"] and args.crash_in is None:
        code = supervise(args, behaviour)
        _remove_pid_file(args.pid_file)
        return code
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    time.sleep(float(behaviour["start_delay_ms"]) / 1000.0)
    if stopping.is_set():
        return 0
    metrics = Metrics(str(behaviour["version"]))
    fault_in = args.fault_in if args.fault_in is not None else float(behaviour["fault_after_s"])
    faults = Faults(behaviour, fault_in)
    crash_at = None if args.crash_in is None else time.monotonic() + args.crash_in
    server = Server((args.bind, args.port), make_handler(behaviour, metrics, faults))
    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    worker.start()
    leaker = threading.Thread(target=faults.leak, args=(stopping,), daemon=True)
    leaker.start()
    print(f"demo-app {behaviour['version']} listening on {args.bind}:{args.port}", flush=True)
    while not stopping.wait(0.1):
        if crash_at is not None and time.monotonic() >= crash_at:
            print("FATAL demo-app: crashing on cue (crash_after_s)", file=sys.stderr, flush=True)
            os._exit(1)  # a crash: no graceful shutdown, requests in flight are cut
    server.shutdown()  # stop accepting; serve_forever returns
    worker.join()
    server.server_close()  # waits for the requests in flight
    _remove_pid_file(args.pid_file)
    print("demo-app stopped", flush=True)
    return 0


def _remove_pid_file(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()


if __name__ == "__main__":
    sys.exit(main())
