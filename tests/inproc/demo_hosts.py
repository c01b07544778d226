"""In-process SSH hosts that run the demo app, for ``scripts/demo`` without root.

Each host is an :mod:`tests.inproc.fleet` host (an asyncssh server on its own loopback
address running the real agent code) whose agent also reads the demo app's own
``/metrics`` and serves the agent's Prometheus exporter on that address. The hosts
share this process's network stack, so each host's app listens on its own loopback
address; that address lives in the host's "/etc" (``hosts/NAME/etc/demo-app.env``),
which the demo's package reads through ``$FLEETWAVE_ROOT/../etc`` (see
``examples/fleet-demo/inproc/``).

The fleet runs on an event loop in a thread of its own; :meth:`DemoHosts.close` stops
the SSH servers, waits for agent operations in flight, stops every demo app the hosts
started and then the exporters. It is idempotent and bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from fleetwave_agent.config import AgentConfig, AppConfig, ExporterConfig, PrometheusSource
from fleetwave_agent.daemon import start_http_server
from fleetwave_agent.exporter import HealthMonitor, build_registry
from fleetwave_agent.operations import Agent
from fleetwave_agent.rpc import RpcServer

from .fleet import Fleet, loopback_address, start_fleet

#: How long the SSH servers and agent operations in flight get to finish on close.
CLOSE_TIMEOUT_S = 60.0
#: A demo app that ignores SIGTERM this long is killed.
APP_STOP_GRACE_S = 8.0


@dataclass(frozen=True)
class DemoHost:
    """One in-process host as the demo sees it."""

    name: str
    address: str
    ssh_port: int
    root: Path  # the agent root ($FLEETWAVE_ROOT)
    app_port: int
    exporter_port: int

    @property
    def app_url(self) -> str:
        return f"http://{self.address}:{self.app_port}"

    @property
    def exporter_url(self) -> str:
        return f"http://{self.address}:{self.exporter_port}/metrics"


def free_common_port(addresses: list[str]) -> int:
    """A TCP port free on every one of ``addresses`` (bounded number of tries)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = int(probe.getsockname()[1])
        if all(_bindable(a, port) for a in addresses):
            return port
    raise OSError(f"no TCP port free on all of {addresses[0]}..{addresses[-1]}")


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


class DemoHosts:
    """``count`` in-process hosts under ``work/hosts``; use as a context manager."""

    def __init__(self, work: Path, count: int, trust: Path, *, first_index: int = 200) -> None:
        self.work = work
        self.count = count
        self.trust = trust
        self.first_index = first_index  # 127.0.1.201..: clear of the tests' low addresses
        self.client_key = work / "ssh" / "id_ed25519"
        self.known_hosts = work / "ssh" / "known_hosts"
        self.hosts: list[DemoHost] = []
        self._agents: dict[Path, Agent] = {}
        self._fleet: Fleet | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="demo-hosts", daemon=True
        )
        self._exporters: list[tuple[HealthMonitor, Any]] = []
        self._closed = False

    def __enter__(self) -> DemoHosts:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Any, timeout: float) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=timeout)

    def start(self) -> None:
        """Start the SSH servers, write each host's /etc and known_hosts, start exporters."""
        addresses = [loopback_address(self.first_index + i) for i in range(self.count)]
        app_port = free_common_port(addresses)
        exporter_port = free_common_port(addresses)
        roots = self.work / "hosts"
        by_root = {
            roots / f"host-{self.first_index + i:05d}" / "agent": a for i, a in enumerate(addresses)
        }

        def make_agent(root: Path) -> RpcServer:
            address = by_root[root]
            config = AgentConfig(
                root=root,
                trusted_keys=(self.trust,),
                exporter=ExporterConfig(listen=address, port=exporter_port, health_interval_s=1.0),
                app=AppConfig(
                    metrics=PrometheusSource(
                        url=f"http://{address}:{app_port}/metrics",
                        requests_metric="demo_http_requests_total",
                        duration_metric="demo_http_request_duration_seconds",
                        status_label="code",
                        timeout_s=1.0,
                    )
                ),
            )
            agent = Agent(config)
            self._agents[root] = agent
            return RpcServer(agent)

        self._thread.start()
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key.parent.mkdir(parents=True, exist_ok=True)
        client_key.write_private_key(str(self.client_key))
        self.client_key.chmod(0o600)
        self._fleet = self._run(
            start_fleet(
                self.count,
                roots,
                make_agent,
                client_key=client_key,
                first_index=self.first_index,
                root_subdir="agent",
                workers=4,
            ),
            timeout=60,
        )
        self.known_hosts.write_text(self._fleet.known_hosts_text)
        for host in self._fleet.hosts:
            etc = host.root.parent / "etc"
            etc.mkdir(exist_ok=True)
            (etc / "demo-app.env").write_text(f"DEMO_BIND={host.address}\nDEMO_PORT={app_port}\n")
            demo_host = DemoHost(
                host.name, host.address, host.port, host.root, app_port, exporter_port
            )
            self.hosts.append(demo_host)
            agent = self._agents[host.root]
            monitor = HealthMonitor(agent, 1.0)
            server, _thread = start_http_server(
                host.address, exporter_port, build_registry(agent, monitor)
            )
            monitor.start()
            self._exporters.append((monitor, server))

    def close(self) -> None:
        """Stop everything this fleet started (see the module docstring). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._fleet is not None and self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._run(self._fleet.close(), timeout=CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        # Exporters first: their health monitors run the package's check command.
        for monitor, server in self._exporters:
            monitor.stop()
            server.shutdown()
            server.server_close()
        for host in self.hosts:
            stop_app(host.root)

    def app_pids(self) -> list[int]:
        """Pids of demo apps (or their crash-loop supervisors) the hosts' pid files name."""
        pids = []
        for host in self.hosts:
            pid = _pid_from_file(host.root / "run" / "demo-app.pid")
            if pid is not None and _is_demo_app(pid):
                pids.append(pid)
        return pids


def stop_app(root: Path) -> None:
    """Stop the demo app of one agent root: its current release's stop hook, else
    SIGTERM, then SIGKILL after :data:`APP_STOP_GRACE_S`, by the pid file."""
    run_dir = root / "run"
    stop = root / "current" / "bin" / "stop"
    if stop.exists():
        env = {**os.environ, "FLEETWAVE_RUN_DIR": str(run_dir), "FLEETWAVE_ROOT": str(root)}
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [str(stop)], cwd=stop.parent.parent, env=env, timeout=APP_STOP_GRACE_S + 5,
                stdin=subprocess.DEVNULL, capture_output=True, check=False,
            )  # fmt: skip
    pid = _pid_from_file(run_dir / "demo-app.pid")
    if pid is None or not _is_demo_app(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + APP_STOP_GRACE_S
    while _is_demo_app(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        if _is_demo_app(pid):
            os.kill(pid, signal.SIGKILL)


def _pid_from_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_demo_app(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and b"demo_app.py" in cmdline
