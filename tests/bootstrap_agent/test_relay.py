"""The resident-mode scripts run by a real ``sh``: the deploy key's relay (socat to a
live daemon, else the agent in the session) and the no-systemd supervisor."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from fleetwave.bootstrap import BootstrapOptions
from fleetwave.bootstrap.relay import render_relay, render_supervisor
from tests.agent.conftest import AGENT_DIR, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("socat") is None or shutil.which("flock") is None,
        reason="needs socat and flock",
    ),
]

PING = b'{"id": 1, "op": "ping", "args": {}}\n'


def options(tmp_path: Path) -> BootstrapOptions:
    return BootstrapOptions(
        local_wheel=None,
        local_trusted_keys=(),
        deploy_public_key="",
        venv=PurePosixPath(tmp_path / "venv"),
        config_path=PurePosixPath(tmp_path / "agent.yaml"),
        agent_root=PurePosixPath(tmp_path / "root"),
        supervisor_path=PurePosixPath(tmp_path / "supervise"),
    )


@pytest.fixture
def relay(tmp_path: Path) -> Path:
    """The relay, with a fake session agent that says how it was started."""
    opts = options(tmp_path)
    fake = tmp_path / "venv" / "bin" / "fleetwave-agent"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\necho "session $*"\n')
    fake.chmod(0o755)
    (tmp_path / "root").mkdir(exist_ok=True)
    path = tmp_path / "relay"
    path.write_text(render_relay(opts))
    path.chmod(0o755)
    return path


def run_relay(relay: Path, data: bytes = b"", path: str | None = None) -> bytes:
    env = {**os.environ, "PATH": path or os.environ["PATH"]}
    proc = subprocess.run(
        ["/bin/sh", str(relay)], input=data, capture_output=True, timeout=30, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_no_socket_starts_the_agent_in_the_session_with_its_config(
    tmp_path: Path, relay: Path
) -> None:
    assert run_relay(relay) == f"session --config {tmp_path}/agent.yaml rpc\n".encode()


def test_socket_left_by_a_dead_daemon_means_session(tmp_path: Path, relay: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "root" / "rpc.sock"))
    stale.close()  # the file stays; nobody holds rpc.sock.lock
    assert run_relay(relay).startswith(b"session ")


@pytest.fixture
def daemon(tmp_path: Path, keypair_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``fleetwave-agent serve --rpc-socket`` on the relay's socket."""
    sock = tmp_path / "root" / "rpc.sock"
    cmd = [sys.executable, "-m", "fleetwave_agent.cli", "--root", str(tmp_path / "root")]
    cmd += ["--trust", str(keypair_path), "serve", "--listen", "127.0.0.1"]
    cmd += ["--port", str(free_port()), "--rpc-socket", str(sock)]
    env = {**os.environ, "PYTHONPATH": str(AGENT_DIR), "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    try:
        for _ in range(200):  # bounded: up to 20 s on a loaded machine
            if sock.is_socket() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert sock.is_socket(), proc.stderr.read() if proc.stderr else b""
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
def keypair_path(tmp_path: Path) -> Path:
    from fleetwave_agent.keys import generate_keypair

    return generate_keypair(tmp_path / "keys", "relay")[1]


@pytest.mark.usefixtures("daemon")
def test_live_daemon_gets_the_session_through_socat(tmp_path: Path, relay: Path) -> None:
    lines = run_relay(relay, PING).splitlines()
    assert json.loads(lines[0])["hello"]["protocol"] == 1
    assert json.loads(lines[1])["result"]["pong"] is True


@pytest.mark.usefixtures("daemon")
def test_without_socat_a_live_daemon_is_bypassed(tmp_path: Path, relay: Path) -> None:
    bin_dir = tmp_path / "bin"  # flock only: socat is "not installed"
    bin_dir.mkdir()
    (bin_dir / "flock").symlink_to(shutil.which("flock") or "flock")
    assert run_relay(relay, path=str(bin_dir)).startswith(b"session ")


def test_supervisor_restarts_serve_and_stops_on_term(tmp_path: Path) -> None:
    opts = options(tmp_path)
    fake = tmp_path / "venv" / "bin" / "fleetwave-agent"
    fake.parent.mkdir(parents=True)
    count = tmp_path / "starts"
    # First start exits at once (a crash); the second one keeps running.
    fake.write_text(
        f'#!/bin/sh\necho x >> {count}\n[ "$(wc -l < {count})" -ge 2 ] && exec sleep 30\nexit 3\n'
    )
    fake.chmod(0o755)
    script = tmp_path / "supervise"
    script.write_text(render_supervisor(opts))
    run_dir = tmp_path / "root" / "run"
    log = tmp_path / "supervise.log"
    with log.open("wb") as err_file:
        proc = subprocess.Popen(["/bin/sh", str(script)], stderr=err_file)
    try:
        for _ in range(100):  # the restart comes after a 1 s backoff
            if count.exists() and len(count.read_text().split()) >= 2:
                break
            time.sleep(0.1)
        assert len(count.read_text().split()) == 2
        assert (run_dir / "supervise.pid").read_text().strip() == str(proc.pid)
        child = int((run_dir / "serve.pid").read_text())
        os.kill(child, 0)  # the second serve runs
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert "exited with status 3; restarting in 1s" in log.read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    assert not (run_dir / "supervise.pid").exists()
