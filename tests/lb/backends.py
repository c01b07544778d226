"""Tiny loopback HTTP servers standing in for app hosts behind a real HAProxy.

``GET /health`` answers 200; ``GET /hold/<key>`` blocks until the test releases
``<key>`` (bounded), then answers 200; anything else answers 200 at once.
"""

from __future__ import annotations

import http.client
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOLD_LIMIT_S = 30.0


class BackendServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.holds: dict[str, threading.Event] = {}
        self.arrived: set[str] = set()
        self.holds_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # Skip HTTPServer's getfqdn() lookup (slow without a resolver).
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])

    def hold_event(self, key: str) -> threading.Event:
        with self.holds_lock:
            return self.holds.setdefault(key, threading.Event())

    def start(self) -> BackendServer:
        threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        with self.holds_lock:
            for event in self.holds.values():
                event.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: BackendServer

    def do_GET(self) -> None:
        if self.path.startswith("/hold/"):
            key = self.path.removeprefix("/hold/")
            event = self.server.hold_event(key)
            with self.server.holds_lock:
                self.server.arrived.add(key)
            event.wait(HOLD_LIMIT_S)
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class HttpHeldSession:
    """A ``GET /hold/<key>`` in flight through ``host:port``, on its own thread."""

    def __init__(self, host: str, port: int, backend: BackendServer, key: str):
        self._event = backend.hold_event(key)
        self._status: int | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._request, args=(host, port, key), daemon=True)
        self._thread.start()

    def _request(self, host: str, port: int, key: str) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=HOLD_LIMIT_S + 5)
        try:
            conn.request("GET", f"/hold/{key}")
            resp = conn.getresponse()
            resp.read()
            self._status = resp.status
        except (OSError, http.client.HTTPException) as exc:
            self._error = exc
        finally:
            conn.close()

    def release(self) -> None:
        self._event.set()

    def finished_ok(self) -> bool:
        self._thread.join(HOLD_LIMIT_S + 10)
        return self._status == 200 and self._error is None
