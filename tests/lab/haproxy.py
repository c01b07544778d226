"""A real HAProxy in the root namespace: one HTTP frontend on loopback, one backend
whose servers are given by the test, health-checked with ``GET /health``, and an admin
Runtime API socket (unix, optionally also TCP on loopback)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._proc import LabError, free_port, log_tail, port_open, run, stop_process, wait_until


@dataclass(frozen=True)
class Backend:
    """A server of the lab backend: its name in HAProxy and where it listens."""

    name: str
    host: str
    port: int


class LabHaproxy:
    """``haproxy -db -f cfg``; ``start()``/``stop()``, or use as a context manager."""

    def __init__(
        self,
        work_dir: Path,
        servers: Sequence[Backend],
        *,
        backend: str = "app",
        tcp_admin: bool = False,
        check_inter: str = "1s",
        server_timeout: str = "30s",
        redispatch: bool = False,
    ):
        self.work_dir = work_dir
        self.servers = tuple(servers)
        self.backend = backend
        self.socket_path = work_dir / "admin.sock"
        self.config_path = work_dir / "haproxy.cfg"
        self.log_path = work_dir / "haproxy.log"
        self.frontend_port = free_port()
        self.admin_port: int | None = free_port() if tcp_admin else None
        self._check_inter = check_inter
        self._server_timeout = server_timeout
        self._redispatch = redispatch
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def frontend_url(self) -> str:
        return f"http://127.0.0.1:{self.frontend_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def render_config(self) -> str:
        lines = [
            "global",
            f"    stats socket {self.socket_path} mode 600 level admin",
        ]
        if self.admin_port is not None:
            lines.append(f"    stats socket ipv4@127.0.0.1:{self.admin_port} level admin")
        lines += [
            "    stats timeout 30s",
            "    maxconn 4000",
            "defaults",
            "    mode http",
            "    timeout connect 2s",
            "    timeout client 30s",
            f"    timeout server {self._server_timeout}",
            # No redispatch by default: a request sent to a host that is not drained
            # properly must fail visibly, so zero-failure assertions mean something.
            "    retries 3",
            *(["    option redispatch"] if self._redispatch else []),
            "frontend fe",
            f"    bind 127.0.0.1:{self.frontend_port}",
            f"    default_backend {self.backend}",
            f"backend {self.backend}",
            "    balance roundrobin",
            "    option httpchk GET /health",
            "    http-check expect status 200",
            f"    default-server check inter {self._check_inter} fall 2 rise 2",
        ]
        lines += [f"    server {s.name} {s.host}:{s.port}" for s in self.servers]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, check it, start HAProxy and wait for the admin socket."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.render_config())
        run(["haproxy", "-c", "-q", "-f", str(self.config_path)])
        self.socket_path.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()

        def up() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise LabError(f"haproxy exited: {log_tail(self.log_path)}")
            return self.socket_path.exists() and port_open("127.0.0.1", self.frontend_port)

        wait_until(up, timeout=timeout, what="haproxy admin socket and frontend")

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def restart(self) -> None:
        """Stop and start again without a server-state file: every drain is forgotten,
        as on a careless reload."""
        self.stop()
        self.start()

    def __enter__(self) -> LabHaproxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def admin(self, command: str, timeout: float = 5.0) -> str:
        """Send one Runtime API command over the unix socket; returns the raw answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.socket_path))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_status(self, server: str) -> str:
        """The ``status`` column of ``show stat`` for one server (``UP``, ``DOWN``, ...)."""
        lines = self.admin("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == self.backend and row.get("svname") == server:
                return row["status"]
        raise LabError(f"haproxy has no server {self.backend}/{server}")

    def wait_status(self, server: str, prefix: str, timeout: float = 15.0) -> None:
        """Wait until the server's status starts with ``prefix`` (e.g. ``UP``)."""
        wait_until(
            lambda: self.server_status(server).startswith(prefix),
            timeout=timeout,
            what=f"haproxy {self.backend}/{server} to be {prefix}",
            interval=0.1,
        )
