"""The two fleets the demo can run on, behind one small interface.

- :class:`NamespaceFleet` (root): network-namespace hosts with real sshd, the real
  agent, HAProxy in front and, when ``prometheus`` is installed, a real Prometheus
  scraping each agent's exporter (``tests.lab``).
- :class:`InprocFleet` (no root): in-process SSH hosts running the real agent code,
  each host's demo app on its own loopback address (``tests.inproc.demo_hosts``),
  behind HAProxy when ``haproxy`` is on PATH, else behind no balancer (``none``).

The story in ``demo.py`` only uses what :class:`DemoFleet` offers, and drives the
deployer through the ``fleetwave`` CLI as a user would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tests.inproc.demo_hosts import DemoHosts
from tests.lab import Backend, Fleet, LabConfig, LabHaproxy, LabHost, LoadReport, SteadyLoad

AGENT_ROOT = "/srv/fleetwave/agent"  # inside each namespace host
TRUST = "/srv/fleetwave/trusted.pub"
EXPORTER_PORT = 9731
#: The agent's config cache would land in the deploy user's home, outside demo-out.
NO_CACHE = "FLEETWAVE_AGENT_NO_CONFIG_CACHE=1"


@dataclass(frozen=True)
class Host:
    """One host as the pipeline and the story see it."""

    name: str
    address: str
    ssh_port: int | None
    az: str
    lb: str | None  # balancer:backend/server, None behind no balancer
    exporter_url: str
    current_link: Path  # the agent root's `current`, read from outside the host


class DemoFleet(Protocol):
    kind: str
    balancer: str  # "HAProxy" or "none"
    hosts: list[Host]

    def describe(self) -> list[str]: ...
    def ssh(self) -> dict[str, Any]: ...
    def load_balancers(self) -> list[dict[str, Any]]: ...
    def load(self, max_seconds: float) -> contextlib.AbstractContextManager[Load]: ...
    def lb_status(self, host: str) -> str | None: ...
    def wait_ready(self, timeout: float = 30.0) -> None: ...
    def prometheus_url(self) -> str | None: ...
    def scrape(self, target: str) -> None: ...
    def prometheus_query(self, promql: str) -> list[dict[str, Any]]: ...


class Load:
    """Steady client load: through the balancer's frontend, or (no balancer) straight
    to every host's app, one worker each."""

    def __init__(self, urls: list[str], max_seconds: float) -> None:
        workers = 2 if len(urls) == 1 else 1
        self._loads = [SteadyLoad(u, workers=workers, max_seconds=max_seconds) for u in urls]
        self.target = urls[0] if len(urls) == 1 else f"{len(urls)} hosts directly"
        self._report: LoadReport | None = None

    def start(self) -> None:
        for load in self._loads:
            load.start()

    def wait_requests(self, count: int) -> None:
        for load in self._loads:
            load.wait_requests(max(1, count // len(self._loads)))

    def stop(self) -> LoadReport:
        """Stop every worker (once) and merge their reports."""
        if self._report is not None:
            return self._report
        merged = LoadReport()
        for load in self._loads:
            report = load.stop()
            merged.requests += report.requests
            merged.failures.extend(report.failures)
            for name, n in report.by_server.items():
                merged.by_server[name] = merged.by_server.get(name, 0) + n
        self._report = merged
        return merged


def _az(index: int, count: int) -> str:
    return "demo-az1" if index < (count + 1) // 2 else "demo-az2"


def _read_version(link: Path) -> str | None:
    # The link target is a path in the host's own view: read it, never resolve it.
    return Path(os.readlink(link)).name.split("-")[0] if link.is_symlink() else None


def current_versions(fleet: DemoFleet) -> dict[str, str | None]:
    """Each host's current release, from its agent root's ``current`` link."""
    return {h.name: _read_version(h.current_link) for h in fleet.hosts}


def _agent_yaml(host: LabHost) -> str:
    """A namespace host's agent: the demo app's own metrics, an exporter on the host IP."""
    return json.dumps(
        {
            "root": AGENT_ROOT,
            "exporter": {"listen": host.ip, "port": EXPORTER_PORT, "health_interval": "1s"},
            "app": {
                "metrics": {
                    "prometheus": {
                        "url": "http://127.0.0.1:8080/metrics",
                        "requests_metric": "demo_http_requests_total",
                        "duration_metric": "demo_http_request_duration_seconds",
                        "status_label": "code",
                        "timeout": "1s",
                    }
                }
            },
        }
    )


class NamespaceFleet:
    """Namespace hosts behind HAProxy, with Prometheus when it is installed."""

    kind = "namespace"
    balancer = "HAProxy"

    def __init__(self, stack: contextlib.ExitStack, count: int, public_key: Path) -> None:
        with_prometheus = shutil.which("prometheus") is not None
        self.lab = stack.enter_context(
            Fleet(LabConfig(hosts=count, agent_config=_agent_yaml, prometheus=with_prometheus))
        )
        assert self.lab.haproxy is not None
        backend = self.lab.haproxy.backend
        self.hosts = [
            Host(
                h.name,
                h.ip,
                None,
                _az(i, count),
                f"lab:{backend}/{h.name}",
                f"http://{h.ip}:{EXPORTER_PORT}/metrics",
                h.path(f"{AGENT_ROOT}/current"),
            )
            for i, h in enumerate(self.lab.hosts)
        ]
        for h in self.lab.hosts:
            dest = h.path(TRUST)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(public_key, dest)
            dest.chmod(0o644)
            # The exporter, detached in the host's namespaces; the teardown stops it.
            h.exec(
                f"{NO_CACHE} setsid -f {self.lab.agent_path} --root {AGENT_ROOT} serve "
                f">{AGENT_ROOT}-serve.log 2>&1 </dev/null"
            )
        prom = self.lab.prometheus
        if prom is not None:
            for h in self.lab.hosts:
                prom.set_targets(f"agent-{h.name}", [f"{h.ip}:{EXPORTER_PORT}"], {"host": h.name})

    def describe(self) -> list[str]:
        assert self.lab.haproxy is not None
        lines = [
            f"  {h.name:<16} {h.address:<14} {h.az}  sshd :22, netns {self.lab.host(h.name).netns}"
            for h in self.hosts
        ]
        lines.append(
            f"  HAProxy frontend {self.lab.haproxy.frontend_url}/ "
            f"(runtime API {self.lab.haproxy.socket_path})"
        )
        lines.append(f"  deploy user '{self.lab.config.user}' (not root), agent root {AGENT_ROOT}")
        return lines

    def ssh(self) -> dict[str, Any]:
        agent = f"env {NO_CACHE} {self.lab.agent_path} --root {AGENT_ROOT} --trust {TRUST} rpc"
        return {
            "user": self.lab.config.user,
            "identity": str(self.lab.client_key),
            "known_hosts": str(self.lab.known_hosts),
            "connect_timeout": "5s",
            "command_timeout": "2m",
            "agent_command": agent,
        }

    def load_balancers(self) -> list[dict[str, Any]]:
        assert self.lab.haproxy is not None
        return [
            {
                "name": "lab",
                "driver": "haproxy",
                "options": {"socket": str(self.lab.haproxy.socket_path)},
            }
        ]

    @contextlib.contextmanager
    def load(self, max_seconds: float) -> Iterator[Load]:
        assert self.lab.haproxy is not None
        load = Load([self.lab.haproxy.frontend_url + "/"], max_seconds)
        load.start()
        try:
            yield load
        finally:
            load.stop()

    def lb_status(self, host: str) -> str | None:
        assert self.lab.haproxy is not None
        return self.lab.haproxy.server_status(host)

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.lab.haproxy is not None
        for h in self.hosts:
            self.lab.haproxy.wait_status(h.name, "UP", timeout=timeout)

    def prometheus_url(self) -> str | None:
        return self.lab.prometheus.url if self.lab.prometheus is not None else None

    def scrape(self, target: str) -> None:
        if self.lab.prometheus is not None:
            self.lab.prometheus.set_targets("controller", [target], {"job": "fleetwave"})

    def prometheus_query(self, promql: str) -> list[dict[str, Any]]:
        assert self.lab.prometheus is not None
        return self.lab.prometheus.wait_for(promql, timeout=30)

    def leftovers(self) -> dict[str, list[str]]:
        return {k: v for k, v in self.lab.leftovers().items() if v}


class InprocFleet:
    """In-process SSH hosts; HAProxy when it is on PATH, else the ``none`` balancer."""

    kind = "in-process"

    def __init__(
        self, stack: contextlib.ExitStack, count: int, public_key: Path, work: Path
    ) -> None:
        self.demo_hosts = stack.enter_context(DemoHosts(work, count, public_key))
        self.haproxy: LabHaproxy | None = None
        if shutil.which("haproxy") is not None:
            self.haproxy = LabHaproxy(
                work / "haproxy",
                [Backend(h.name, h.address, h.app_port) for h in self.demo_hosts.hosts],
            )
            self.haproxy.start()
            stack.callback(self.haproxy.stop)
        self.balancer = "HAProxy" if self.haproxy is not None else "none"
        self.hosts = [
            Host(
                h.name,
                h.address,
                h.ssh_port,
                _az(i, count),
                f"lab:{self.haproxy.backend}/{h.name}" if self.haproxy is not None else None,
                h.exporter_url,
                h.root / "current",
            )
            for i, h in enumerate(self.demo_hosts.hosts)
        ]

    def describe(self) -> list[str]:
        lines = [
            f"  {h.name:<16} {h.address:<14} {h.az}  ssh :{d.ssh_port} (asyncssh, in this "
            f"process), app :{d.app_port}"
            for h, d in zip(self.hosts, self.demo_hosts.hosts, strict=True)
        ]
        if self.haproxy is not None:
            lines.append(
                f"  HAProxy frontend {self.haproxy.frontend_url}/ (haproxy found on PATH; "
                f"runtime API {self.haproxy.socket_path})"
            )
        else:
            lines.append(
                "  no load balancer: haproxy is not on PATH, so the pipeline uses the 'none' "
                "driver (nothing is drained; clients talk to each host directly)"
            )
        return lines

    def ssh(self) -> dict[str, Any]:
        return {
            "user": "demo",
            "identity": str(self.demo_hosts.client_key),
            "known_hosts": str(self.demo_hosts.known_hosts),
            "connect_timeout": "5s",
            "command_timeout": "2m",
        }

    def load_balancers(self) -> list[dict[str, Any]]:
        if self.haproxy is None:
            return []
        return [
            {
                "name": "lab",
                "driver": "haproxy",
                "options": {"socket": str(self.haproxy.socket_path)},
            }
        ]

    @contextlib.contextmanager
    def load(self, max_seconds: float) -> Iterator[Load]:
        if self.haproxy is not None:
            urls = [self.haproxy.frontend_url + "/"]
        else:
            urls = [f"{h.app_url}/" for h in self.demo_hosts.hosts]
        load = Load(urls, max_seconds)
        load.start()
        try:
            yield load
        finally:
            load.stop()

    def lb_status(self, host: str) -> str | None:
        return self.haproxy.server_status(host) if self.haproxy is not None else None

    def wait_ready(self, timeout: float = 30.0) -> None:
        if self.haproxy is not None:
            for h in self.hosts:
                self.haproxy.wait_status(h.name, "UP", timeout=timeout)

    def prometheus_url(self) -> str | None:
        return None

    def scrape(self, target: str) -> None:
        pass  # no Prometheus without root: the addresses are printed to scrape yourself

    def prometheus_query(self, promql: str) -> list[dict[str, Any]]:
        raise RuntimeError("no Prometheus in the in-process fleet")

    def leftovers(self) -> dict[str, list[str]]:
        apps = [str(p) for p in self.demo_hosts.app_pids()]
        return {"demo apps": apps} if apps else {}
