"""``fleetwave-agent serve``: the resident daemon. It recovers from a crash at start,
serves ``/metrics`` (the collectors of :mod:`exporter`) and, in resident mode, the RPC
protocol on a unix socket (:mod:`rpcsocket`), until SIGTERM or SIGINT."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from fleetwave_agent.exporter import HealthMonitor, build_registry

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from fleetwave_agent.operations import Agent
    from fleetwave_agent.rpcsocket import RpcSocketServer

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
        server, thread = start_http_server(addr, exporter.port if port is None else port, registry)
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


def start_http_server(
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
