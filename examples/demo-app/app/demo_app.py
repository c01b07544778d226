#!/usr/bin/env python3
"""The fleetwave demo app: a small HTTP service whose behaviour comes from the
``behaviour.json`` of the package it was shipped in, so a test can build a "bad"
release by changing one file.

Endpoints: ``/`` (the work), ``/health`` and ``/metrics`` (Prometheus text format).
Standard library only. On SIGTERM it stops accepting, finishes the requests in flight
and exits, so a drained host loses no requests.
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
    if not 0.0 <= float(behaviour["error_rate"]) <= 1.0:
        raise SystemExit(f"demo-app: {path}: error_rate must be within 0..1")
    return behaviour


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


def make_handler(behaviour: dict[str, Any], metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    hostname = socket.gethostname()
    latency = float(behaviour["latency_ms"]) / 1000.0
    error_rate = float(behaviour["error_rate"])
    healthy = behaviour["health"] == "ok"

    class Handler(BaseHTTPRequestHandler):
        server_version = "fleetwave-demo"

        def do_GET(self) -> None:
            started = time.monotonic()
            if self.path == "/health":
                self._reply(200 if healthy else 503, "ok\n" if healthy else "unhealthy\n")
            elif self.path == "/metrics":
                self._reply(200, metrics.render(), "text/plain; version=0.0.4")
            elif self.path == "/" or self.path.startswith("/?"):
                if latency:
                    time.sleep(latency)
                code = 500 if random.random() < error_rate else 200
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--behaviour", type=Path, default=HERE.parent / "behaviour.json")
    parser.add_argument("--bind", default=os.environ.get("DEMO_BIND", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8080")))
    parser.add_argument("--pid-file", type=Path)
    args = parser.parse_args(argv)
    behaviour = load_behaviour(args.behaviour)
    if args.pid_file:
        write_pid_file(args.pid_file)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    time.sleep(float(behaviour["start_delay_ms"]) / 1000.0)
    if stopping.is_set():
        return 0
    metrics = Metrics(str(behaviour["version"]))
    server = Server((args.bind, args.port), make_handler(behaviour, metrics))
    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    worker.start()
    print(f"demo-app {behaviour['version']} listening on {args.bind}:{args.port}", flush=True)
    while not stopping.wait(0.5):
        pass
    server.shutdown()  # stop accepting; serve_forever returns
    worker.join()
    server.server_close()  # waits for the requests in flight
    if args.pid_file:
        with contextlib.suppress(OSError):
            if args.pid_file.read_text().strip() == str(os.getpid()):
                args.pid_file.unlink()
    print("demo-app stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
