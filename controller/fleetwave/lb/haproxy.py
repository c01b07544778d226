"""HAProxy through its Runtime API (the admin ``stats socket``).

Reached over a unix socket (``socket: /run/haproxy/admin.sock``), TCP
(``tcp: "127.0.0.1:9999"``), or SSH to the balancer's host, where ``socat`` bridges to
the socket (``ssh: {host, user, port, identity, known_hosts, socket}``). Each command
is one connection in HAProxy's non-interactive mode: simple, and no state to lose.

Drain is ``set server B/S state drain`` (no new sessions, in-flight ones finish), then
polling ``show stat`` until the server's current sessions reach 0 or the timeout
passes, then ``state maint``. State comes from ``show servers state B``
(``srv_admin_state`` bits), sessions and health from ``show stat``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from fleetwave.errors import LoadBalancerError
from fleetwave.lb.base import DrainTiming, LoadBalancer, ServerRef, ServerState, ServerStatus
from fleetwave.lb.registry import Options

# srv_admin_state bits (HAProxy's SRV_ADMF_*): forced/inherited/config/resolution/
# hostname maintenance, and forced/inherited drain.
_MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20 | 0x40
_DRAIN_BITS = 0x08 | 0x10


class RuntimeChannel(Protocol):
    """Carries one Runtime API command and returns HAProxy's whole answer."""

    where: str

    async def send(self, command: str, timeout_s: float) -> str: ...

    async def close(self) -> None: ...


class UnixChannel:
    def __init__(self, path: Path):
        self.path = path
        self.where = f"unix socket {path}"

    async def send(self, command: str, timeout_s: float) -> str:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(self.path)), timeout_s
        )
        return await _exchange(reader, writer, command, timeout_s)

    async def close(self) -> None:
        return None


class TcpChannel:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.where = f"tcp {host}:{port}"

    async def send(self, command: str, timeout_s: float) -> str:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout_s
        )
        return await _exchange(reader, writer, command, timeout_s)

    async def close(self) -> None:
        return None


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, command: str, timeout_s: float
) -> str:
    try:
        writer.write(command.encode() + b"\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
        # Wait for the close: a loop that ends right after would leak the socket.
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return data.decode(errors="replace")


class SshChannel:
    """``socat stdio UNIX-CONNECT:<socket>`` on the balancer host, over one kept
    asyncssh connection (opened on first use)."""

    def __init__(
        self,
        host: str,
        socket_path: str,
        *,
        user: str | None,
        port: int,
        identity: Path | None,
        known_hosts: Path | None,
    ):
        self.host, self.socket_path, self.user, self.port = host, socket_path, user, port
        self.identity, self.known_hosts = identity, known_hosts
        self.where = f"ssh {host}:{socket_path}"
        self._conn: Any = None
        # Concurrent first calls (a drain polling while status is read) must share
        # one connection, not each open their own and leak all but the last.
        self._connecting: asyncio.Lock | None = None

    async def send(self, command: str, timeout_s: float) -> str:
        import asyncssh  # only balancers reached over SSH pay for the import

        try:
            if self._connecting is None:
                self._connecting = asyncio.Lock()
            async with self._connecting:
                if self._conn is None:
                    self._conn = await self._connect(timeout_s)
            result = await self._conn.run(
                f"socat stdio UNIX-CONNECT:{self.socket_path}",
                input=command + "\n",
                check=False,
                timeout=timeout_s,
            )
        except (asyncssh.Error, OSError) as exc:
            await self.close()
            raise ConnectionError(str(exc) or type(exc).__name__) from None
        if result.exit_status != 0:
            tail = " | ".join(str(result.stderr or "").strip().splitlines()[-2:])
            raise ConnectionError(f"socat exited {result.exit_status}: {tail}")
        return str(result.stdout or "")

    async def _connect(self, timeout_s: float) -> Any:
        import asyncssh

        kwargs: dict[str, Any] = {"port": self.port, "connect_timeout": timeout_s}
        if self.user:
            kwargs["username"] = self.user
        if self.identity:
            kwargs["client_keys"] = [str(self.identity)]
        if self.known_hosts:
            kwargs["known_hosts"] = str(self.known_hosts)
        return await asyncssh.connect(self.host, **kwargs)

    async def close(self) -> None:
        self._connecting = None
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()
            self._conn = None


def parse_admin_state(text: str, backend: str, server: str) -> int:
    """``srv_admin_state`` of one server from ``show servers state <backend>``."""
    lines = [line for line in text.splitlines() if line.strip()]
    header: list[str] | None = None
    for line in lines:
        if line.startswith("#"):
            header = line.lstrip("# ").split()
            continue
        if header is None:
            continue  # the format version line
        row = dict(zip(header, line.split(), strict=False))
        if row.get("be_name") == backend and row.get("srv_name") == server:
            return int(row["srv_admin_state"])
    if header is None:
        raise LookupError(" ".join(lines).strip() or "empty answer")
    raise LookupError("No such server.")


def parse_stat_row(text: str, backend: str, server: str) -> dict[str, str]:
    """The ``show stat`` CSV row of one server, as column -> value."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise LookupError(" ".join(lines).strip() or "empty answer")
    header = lines[0][2:].split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == backend and row.get("svname") == server:
            return row
    raise LookupError("No such server.")


def state_from_admin(admin_state: int) -> ServerState:
    if admin_state & _MAINT_BITS:
        return ServerState.MAINT
    if admin_state & _DRAIN_BITS:
        return ServerState.DRAIN
    return ServerState.READY


def health_from_status(status: str) -> bool | None:
    """HAProxy's check verdict: ``UP``/``DRAIN``/``NOLB`` (and ``UP 1/2``) is healthy,
    ``DOWN`` is not; ``MAINT`` (checks stopped) and ``no check`` say nothing."""
    word = status.split()[0] if status.split() else ""
    if word in ("UP", "DRAIN", "NOLB"):
        return True
    if word == "DOWN":
        return False
    return None


class HaproxyLoadBalancer(LoadBalancer):
    """``driver: haproxy`` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        channel: RuntimeChannel,
        *,
        command_timeout_s: float = 5.0,
        poll_interval_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.name = name
        self.channel = channel
        self._timeout = command_timeout_s
        self.drain_timing = DrainTiming(poll_interval_s, clock)

    async def _command(self, ref: ServerRef, command: str) -> str:
        try:
            return await self.channel.send(command, self._timeout)
        except TimeoutError:
            raise LoadBalancerError(
                f"{ref}: {self.channel.where}: no answer within {self._timeout:g}s"
            ) from None
        except OSError as exc:
            raise LoadBalancerError(f"{ref}: {self.channel.where}: {exc}") from None

    async def _set_state(self, ref: ServerRef, state: str) -> None:
        answer = await self._command(ref, f"set server {ref.backend}/{ref.server} state {state}")
        if answer.strip():
            raise LoadBalancerError(f"{ref}: set state {state}: {answer.strip()}")

    async def status(self, ref: ServerRef) -> ServerStatus:
        """Admin state from ``show servers state``, sessions and health from ``show stat``."""
        states = await self._command(ref, f"show servers state {ref.backend}")
        stats = await self._command(ref, f"show stat {ref.backend} 4 -1")
        try:
            admin = parse_admin_state(states, ref.backend, ref.server)
            row = parse_stat_row(stats, ref.backend, ref.server)
            # Requests queued for this very server will also be served by it.
            sessions = int(row.get("scur") or 0) + int(row.get("qcur") or 0)
        except (LookupError, ValueError) as exc:
            raise LoadBalancerError(f"{ref}: {exc}") from None
        return ServerStatus(
            ref=ref,
            state=state_from_admin(admin),
            sessions=sessions,
            healthy=health_from_status(row.get("status", "")),
        )

    async def _begin_drain(self, ref: ServerRef) -> None:
        """``state drain``: no new sessions, in-flight ones finish."""
        await self._set_state(ref, "drain")

    async def _hold_out(self, ref: ServerRef) -> bool:
        """``state maint``: out of rotation, health checks stopped."""
        await self._set_state(ref, "maint")
        return True

    async def ready(self, ref: ServerRef) -> ServerStatus:
        """``state ready`` (clears both drain and maint)."""
        await self._set_state(ref, "ready")
        return await self.status(ref)

    async def close(self) -> None:
        await self.channel.close()


def from_options(name: str, options: Mapping[str, Any]) -> HaproxyLoadBalancer:
    """Validate ``haproxy`` options: exactly one of ``socket``, ``tcp`` or ``ssh``."""
    opts = Options(
        name, options, allowed=("socket", "tcp", "ssh", "command_timeout_s", "poll_interval_s")
    )
    given = [k for k in ("socket", "tcp", "ssh") if k in options]
    if len(given) != 1:
        raise opts.error(
            "socket", "give exactly one of socket (path), tcp (host:port) or ssh (mapping)"
        )
    channel: RuntimeChannel
    if given[0] == "socket":
        path = opts.path("socket")
        assert path is not None
        channel = UnixChannel(path)
    elif given[0] == "tcp":
        addr = opts.string("tcp") or ""
        host, sep, port = addr.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise opts.error("tcp", f"must be host:port, got {addr!r}")
        channel = TcpChannel(host.strip("[]"), int(port))
    else:
        ssh = Options(
            name,
            opts.mapping("ssh") or {},
            allowed=("host", "user", "port", "identity", "known_hosts", "socket"),
            prefix=f"{opts.prefix}.ssh",
        )
        host_s = ssh.string("host")
        sock = ssh.string("socket")
        if host_s is None:
            raise ssh.error("host", "is required")
        if sock is None:
            raise ssh.error("socket", "is required: the admin socket path on that host")
        channel = SshChannel(
            host_s,
            sock,
            user=ssh.string("user"),
            port=ssh.integer("port", 22, minimum=1, maximum=65535),
            identity=ssh.path("identity"),
            known_hosts=ssh.path("known_hosts"),
        )
    return HaproxyLoadBalancer(
        name,
        channel,
        command_timeout_s=opts.number("command_timeout_s", 5.0, minimum=0.1),
        poll_interval_s=opts.number("poll_interval_s", 0.2, minimum=0.01),
    )
