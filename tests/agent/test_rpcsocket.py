"""The resident agent's RPC socket: ``serve --rpc-socket`` reached through a real socat.

Every session goes through ``socat STDIO UNIX-CONNECT:PATH`` as a subprocess, the relay
an SSH forced command runs, and the last test drives it through the controller's real
``SshTransport`` via an in-process asyncssh server whose sessions run that command.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from fleetwave.config.settings import SshSettings
from fleetwave.planning.model import HostRef
from fleetwave.transport.retry import RetryPolicy
from fleetwave.transport.ssh import SshTransport
from fleetwave_agent import __version__
from fleetwave_agent.config import load_config_file
from fleetwave_agent.operations import Agent
from fleetwave_agent.package import read_manifest
from fleetwave_agent.rpc_protocol import (
    Request,
    Response,
    decode_response,
    encode_hello,
    encode_request,
)
from fleetwave_agent.rpcsocket import RpcSocketServer
from fleetwave_core.errors import ConfigError, LockedError

from ..sshserver import pump, start_loopback_ssh
from .conftest import AGENT_CMD, PackageBuilder, agent_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed"),
]

#: Bound on every wait in this module (start-up, a response, shutdown).
DEADLINE_S = 30.0


class Daemon:
    """``fleetwave-agent serve --rpc-socket PATH`` as a subprocess."""

    def __init__(self, root: Path, pub: Path, sock: Path, log: Path) -> None:
        self.sock = sock
        self.log = log
        self._log_fh = log.open("wb")
        argv = [*AGENT_CMD, "--root", str(root), "--trust", str(pub)]
        argv += ["serve", "--listen", "127.0.0.1", "--port", "0", "--rpc-socket", str(sock)]
        self.proc = subprocess.Popen(
            argv, env=agent_env(), stdout=subprocess.DEVNULL, stderr=self._log_fh
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while b"serving rpc" not in self.log.read_bytes():
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited: {self.log.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError("daemon did not start in time")
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=DEADLINE_S)
            raise AssertionError("daemon ignored SIGTERM") from None
        finally:
            self._log_fh.close()


@pytest.fixture
def sock_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def start_daemon(
    tmp_path: Path, keypair: tuple[Path, Path], sock_dir: Path
) -> Iterator[Callable[[], Daemon]]:
    started: list[Daemon] = []

    def start() -> Daemon:
        n = len(started)
        daemon = Daemon(
            tmp_path / "root", keypair[1], sock_dir / "rpc.sock", tmp_path / f"serve-{n}.log"
        )
        started.append(daemon)
        daemon.wait_ready()
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


class Relay:
    """One RPC session through ``socat STDIO UNIX-CONNECT:PATH``."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.next_id = 0
        assert proc.stdin is not None
        assert proc.stdout is not None
        self.stdin, self.stdout = proc.stdin, proc.stdout

    @classmethod
    async def open(cls, sock: Path) -> tuple[Relay, bytes]:
        proc = await asyncio.create_subprocess_exec(
            "socat",
            "STDIO",
            f"UNIX-CONNECT:{sock}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        relay = cls(proc)
        return relay, await relay.line()

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.stdout.readline(), DEADLINE_S)

    async def call(self, op: str, args: dict[str, Any], body: bytes = b"") -> Response:
        self.next_id += 1
        self.stdin.write(encode_request(Request(self.next_id, op, args)) + body)
        await self.stdin.drain()
        response = decode_response(await self.line())
        assert response.id == self.next_id
        return response

    async def close(self) -> int:
        self.stdin.close()
        await asyncio.wait_for(self.stdout.read(), DEADLINE_S)
        return await _reap(self.proc)


async def _reap(proc: asyncio.subprocess.Process) -> int:
    """Wait for ``proc`` (killing it after the deadline) and let its transport close."""
    try:
        code = await asyncio.wait_for(proc.wait(), DEADLINE_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # The transport closes in a callback scheduled by the exit; run it before the loop ends.
    for _ in range(3):
        await asyncio.sleep(0)
    return code


async def _upload(relay: Relay, pkg: Path) -> str:
    pid = read_manifest(pkg).package_id
    data = await asyncio.to_thread(pkg.read_bytes)
    assert (await relay.call("has_package", {"package_id": pid})).result == {"present": False}
    response = await relay.call("upload", {"package_id": pid, "size": len(data)}, data)
    assert response.ok, response.error_message
    assert (await relay.call("has_package", {"package_id": pid})).result == {"present": True}
    return pid


def test_full_session_through_socat(
    start_daemon: Callable[[], Daemon], make_package: PackageBuilder
) -> None:
    daemon = start_daemon()
    v1, v2 = make_package("1"), make_package("2")

    async def scenario() -> list[Response]:
        relay, hello = await Relay.open(daemon.sock)
        # Byte for byte the hello of `fleetwave-agent rpc`: the controller cannot tell.
        assert hello == encode_hello(__version__)
        out = []
        for pkg in (v1, v2):
            out.append(await relay.call("install", {"package_id": await _upload(relay, pkg)}))
        out.append(await relay.call("rollback", {}))
        out.append(await relay.call("status", {"probe_health": False}))
        assert await relay.close() == 0
        return out

    install1, install2, rollback, status = asyncio.run(scenario())
    assert install1.ok, install1.error_message
    assert install1.result["version"] == "1"
    assert install2.ok, install2.error_message
    assert install2.result["version"] == "2"
    assert rollback.ok, rollback.error_message
    assert rollback.result["version"] == "1"
    assert status.result["current"]["version"] == "1"
    assert status.result["previous"]["version"] == "2"


def test_sessions_are_independent(
    start_daemon: Callable[[], Daemon], make_package: PackageBuilder
) -> None:
    daemon = start_daemon()
    pkg = make_package("1")

    async def scenario() -> None:
        (a, _), (b, _), (bad, _) = await asyncio.gather(
            Relay.open(daemon.sock), Relay.open(daemon.sock), Relay.open(daemon.sock)
        )
        # Interleaved on two live sessions.
        pid = await _upload(a, pkg)
        assert (await b.call("has_package", {"package_id": pid})).result == {"present": True}
        assert (await a.call("ping", {})).result["pong"] is True
        # A session that breaks the framing is answered once and closed ...
        bad.stdin.write(b"this is not json\n")
        await bad.stdin.drain()
        error = decode_response(await bad.line())
        assert error.error_type == "RpcProtocolError"
        assert await bad.line() == b""
        await bad.close()
        # ... and one that ends mid-upload loses only its own upload.
        a.stdin.write(encode_request(Request(99, "upload", {"package_id": "0" * 64, "size": 10})))
        a.stdin.write(b"12345")
        await a.close()
        install = await b.call("install", {"package_id": pid})
        assert install.ok, install.error_message
        assert install.result["version"] == "1"
        assert await b.close() == 0

    asyncio.run(scenario())


def test_socket_is_private_and_unlinked_on_sigterm(start_daemon: Callable[[], Daemon]) -> None:
    daemon = start_daemon()
    st = os.lstat(daemon.sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert daemon.stop() == 0
    assert not daemon.sock.exists()


def test_stale_socket_is_replaced(start_daemon: Callable[[], Daemon], sock_dir: Path) -> None:
    stale = sock_dir / "rpc.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))  # closed without unlink: what a killed daemon leaves behind
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe,
        pytest.raises(ConnectionRefusedError),
    ):
        probe.connect(str(stale))
    daemon = start_daemon()

    async def hello() -> bytes:
        relay, line = await Relay.open(daemon.sock)
        await relay.close()
        return line

    assert asyncio.run(hello()) == encode_hello(__version__)


def test_world_writable_directory_is_refused(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    argv = [*AGENT_CMD, "--root", str(tmp_path / "root"), "--trust", str(keypair[1])]
    argv += ["serve", "--port", "0", "--rpc-socket", str(shared / "rpc.sock")]
    done = subprocess.run(
        argv, env=agent_env(), capture_output=True, text=True, timeout=DEADLINE_S, check=False
    )
    assert done.returncode == ConfigError.exit_code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "world-writable" in lines[0]
    assert str(shared) in lines[0]
    assert list(shared.iterdir()) == []


def test_in_process_refusals_leave_nothing_behind(
    make_agent: Callable[..., Agent], sock_dir: Path
) -> None:
    agent = make_agent()
    path = sock_dir / "rpc.sock"
    with RpcSocketServer(agent, path):
        # A second daemon on the same path would steal the first one's sessions.
        with pytest.raises(LockedError, match="already serving"):
            RpcSocketServer(agent, path).start()
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(ConfigError, match="not a socket"):
        RpcSocketServer(agent, path).start()
    assert path.read_text() == "not a socket"
    with pytest.raises(ConfigError, match="socket directory is not usable"):
        RpcSocketServer(agent, sock_dir / "missing" / "rpc.sock").start()


def test_connection_cap_refuses_extra_sessions(
    make_agent: Callable[..., Agent], sock_dir: Path
) -> None:
    path = sock_dir / "rpc.sock"

    def connect() -> tuple[socket.socket, Any]:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(DEADLINE_S)
        conn.connect(str(path))
        return conn, conn.makefile("rb")

    with RpcSocketServer(make_agent(), path, max_connections=1) as server:
        first, first_in = connect()
        assert first_in.readline() == encode_hello(__version__)
        second, second_in = connect()
        assert second_in.readline() == b""  # closed unanswered: over the cap
        second_in.close()
        second.close()
        first_in.close()
        first.close()
        deadline = time.monotonic() + DEADLINE_S
        while server.active_sessions() and time.monotonic() < deadline:
            time.sleep(0.02)
        third, third_in = connect()
        assert third_in.readline() == encode_hello(__version__)
        third_in.close()
        third.close()


async def _relay_session(process: asyncssh.SSHServerProcess[bytes], commands: list[str]) -> None:
    # What sshd does with a forced command: run it with the channel as its stdio.
    command = process.command or ""
    commands.append(command)
    proc = await asyncio.create_subprocess_shell(
        command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    try:
        await pump(process, proc)
    finally:
        code = await _reap(proc)
    process.exit(code)


async def _transport_scenario(sock: Path, v1: Path, v2: Path) -> dict[str, Any]:
    commands: list[str] = []
    finished: list[asyncio.Event] = []

    async def session(process: asyncssh.SSHServerProcess[bytes]) -> None:
        done = asyncio.Event()
        finished.append(done)
        try:
            await _relay_session(process, commands)
        finally:
            done.set()

    ssh = await start_loopback_ssh(session)
    settings = SshSettings(user="deploy", agent_command=f"socat STDIO UNIX-CONNECT:{sock}")
    transport = SshTransport(
        settings,
        client_keys=[ssh.client_key],
        known_hosts=ssh.known_hosts,
        retry=RetryPolicy(retries=0, base_delay_s=0.01, max_delay_s=0.01),
    )
    host = HostRef("h1", "127.0.0.1", "r", "a", ssh_user="deploy", ssh_port=ssh.port)
    out: dict[str, Any] = {"commands": commands}
    try:
        async with asyncio.timeout(DEADLINE_S * 2):
            session_ = await transport.open(host)
            out["hello"] = session_.hello
            for pkg in (v1, v2):
                pid = read_manifest(pkg).package_id
                out[f"sent-{pkg.name}"] = await session_.ensure_package(pkg, pid)
                out[f"resent-{pkg.name}"] = await session_.ensure_package(pkg, pid)
                out[f"install-{pkg.name}"] = await session_.call("install", {"package_id": pid})
            out["rollback"] = await session_.call("rollback", {})
            out["status"] = await session_.call("status", {"probe_health": False})
    finally:
        await transport.close()
        for done in finished:  # each relay sees EOF and exits once the client is gone
            await asyncio.wait_for(done.wait(), DEADLINE_S)
        await ssh.close()
    return out


def test_ssh_transport_through_the_socat_relay(
    start_daemon: Callable[[], Daemon], make_package: PackageBuilder
) -> None:
    daemon = start_daemon()
    v1, v2 = make_package("1"), make_package("2")
    out = asyncio.run(_transport_scenario(daemon.sock, v1, v2))
    assert out["commands"] == [f"socat STDIO UNIX-CONNECT:{daemon.sock}"]
    assert out["hello"]["agent_version"] == __version__
    assert out[f"sent-{v1.name}"] is True
    assert out[f"resent-{v1.name}"] is False
    assert out[f"install-{v2.name}"]["version"] == "2"
    assert out["rollback"]["version"] == "1"
    assert out["status"]["current"]["version"] == "1"


def test_config_key_rpc_socket(tmp_path: Path) -> None:
    good = tmp_path / "agent.yaml"
    good.write_text("root: root\nrpc_socket: run/rpc.sock\n")
    assert load_config_file(good).rpc_socket == tmp_path / "run" / "rpc.sock"
    assert load_config_file(good).root == tmp_path / "root"
    bad = tmp_path / "bad.yaml"
    bad.write_text("keep_releases: 3\nrpc_socket: 7\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2.*rpc_socket.*non-empty string"):
        load_config_file(bad)


#: Runs ``daemon.serve`` in the main thread of a fresh interpreter (it installs signal
#: handlers); a watcher thread records which install modules were loaded before the
#: daemon started and stops it once they all are (or after a bounded wait).
_WARM_SCRIPT = """
import json, os, signal, sys, threading, time
from pathlib import Path
from fleetwave_agent.config import AgentConfig
from fleetwave_agent.daemon import INSTALL_MODULES, serve
from fleetwave_agent.operations import Agent

root, sock = Path(sys.argv[1]), Path(sys.argv[2])
before = [m for m in INSTALL_MODULES if m in sys.modules]

def watch():
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(m in sys.modules for m in INSTALL_MODULES):
        time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=watch, daemon=True).start()
code = serve(Agent(AgentConfig(root=root)), listen="127.0.0.1", port=0, rpc_socket=sock)
after = [m for m in INSTALL_MODULES if m in sys.modules]
print(json.dumps({"code": code, "before": before, "after": after}))
"""


def test_serve_with_rpc_socket_preloads_the_install_path(tmp_path: Path, sock_dir: Path) -> None:
    import json
    import sys

    from fleetwave_agent.daemon import INSTALL_MODULES

    proc = subprocess.run(
        [sys.executable, "-c", _WARM_SCRIPT, str(tmp_path / "root"), str(sock_dir / "rpc.sock")],
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["code"] == 0
    # Not loaded by starting up; loaded by the daemon's warm-up.
    assert set(out["before"]) < set(INSTALL_MODULES)
    assert out["after"] == list(INSTALL_MODULES)
