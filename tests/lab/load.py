"""Steady client load through the balancer: a bounded loop of HTTP requests that
records every failure (a status other than 200, or a connection error)."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Failure:
    at: float  # seconds since the load started
    what: str  # "HTTP 502" or the exception


@dataclass
class LoadReport:
    requests: int = 0
    failures: list[Failure] = field(default_factory=list)
    by_server: dict[str, int] = field(default_factory=dict)  # X-Served-By / body host


class SteadyLoad:
    """Requests ``url`` from ``workers`` threads until stopped, ``max_requests`` are sent,
    or ``max_seconds`` pass; whichever comes first. Use as a context manager."""

    def __init__(
        self,
        url: str,
        *,
        workers: int = 2,
        pause_s: float = 0.01,
        max_requests: int = 200_000,
        max_seconds: float = 300.0,
        request_timeout_s: float = 10.0,
    ):
        parsed = urllib.parse.urlsplit(url)
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or 80
        self._path = parsed.path or "/"
        self._workers = workers
        self._pause = pause_s
        self._max_requests = max_requests
        self._max_seconds = max_seconds
        self._timeout = request_timeout_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._started = 0.0
        self.report = LoadReport()

    def start(self) -> None:
        self._started = time.monotonic()
        for i in range(self._workers):
            thread = threading.Thread(target=self._loop, name=f"lab-load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> LoadReport:
        """Stop, wait for in-flight requests (bounded by the request timeout)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self._timeout + 5)
        return self.report

    def __enter__(self) -> SteadyLoad:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_requests(self, count: int, timeout: float = 30.0) -> None:
        """Block until at least ``count`` more requests completed (bounded)."""
        with self._lock:
            goal = self.report.requests + count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            with self._lock:
                if self.report.requests >= goal:
                    return
            time.sleep(0.02)
        raise TimeoutError(f"steady load: fewer than {count} requests in {timeout}s")

    def _loop(self) -> None:
        while not self._stop.is_set():
            elapsed = time.monotonic() - self._started
            with self._lock:
                if self.report.requests >= self._max_requests:
                    return
            if elapsed > self._max_seconds:
                return
            failure, server = self._one()
            with self._lock:
                self.report.requests += 1
                if failure is not None:
                    self.report.failures.append(Failure(round(elapsed, 3), failure))
                if server:
                    self.report.by_server[server] = self.report.by_server.get(server, 0) + 1
            time.sleep(self._pause)

    def _one(self) -> tuple[str | None, str | None]:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            conn.request("GET", self._path)
            resp = conn.getresponse()
            resp.read()
            server = resp.getheader("X-Served-By")
            if resp.status != 200:
                return f"HTTP {resp.status}", server
            return None, server
        except (OSError, http.client.HTTPException) as exc:
            return f"{type(exc).__name__}: {exc}", None
        finally:
            conn.close()
