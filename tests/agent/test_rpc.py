"""The RPC server: in-process over byte streams, and over a real SSH connection."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from fleetwave_agent.operations import Agent
from fleetwave_agent.package import read_manifest
from fleetwave_agent.rpc import RpcServer, serve_stdio
from fleetwave_agent.rpc_protocol import (
    Request,
    Response,
    decode_hello,
    decode_response,
    encode_request,
)

from ..sshserver import pump, start_loopback_ssh
from .conftest import AGENT_CMD, AGENT_DIR, PackageBuilder

pytestmark = pytest.mark.integration


def _run_stdio(server: RpcServer, wire: bytes) -> tuple[int, list[bytes]]:
    out = io.BytesIO()
    code = serve_stdio(server, io.BytesIO(wire), out)
    return code, out.getvalue().splitlines(keepends=True)


def test_stdio_upload_install_and_present_package(
    make_agent: Callable[..., Agent], make_package: PackageBuilder
) -> None:
    server = RpcServer(make_agent())
    pkg = make_package("1", {"start": "true"})
    pid = read_manifest(pkg).package_id
    data = pkg.read_bytes()
    wire = (
        encode_request(Request(1, "has_package", {"package_id": pid}))
        + encode_request(Request(2, "upload", {"package_id": pid, "size": len(data)}))
        + data
        + encode_request(Request(3, "has_package", {"package_id": pid}))
        + encode_request(Request(4, "upload", {"package_id": pid, "size": len(data)}))
        + data
        + encode_request(Request(5, "install", {"package_id": pid}))
        + encode_request(Request(6, "status", {}))
        + encode_request(Request(7, "rollback", {}))
        + encode_request(Request(8, "ping", {}))
    )
    code, lines = _run_stdio(server, wire)
    assert code == 0
    decode_hello(lines[0])
    r = [decode_response(line) for line in lines[1:]]
    assert [x.id for x in r] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert r[0].result == {"present": False}
    assert r[1].result["stored"] is True
    assert r[2].result == {"present": True}
    assert r[3].ok
    assert r[3].result["stored"] is False
    assert r[4].ok
    assert r[4].result["version"] == "1"
    assert r[5].result["current"]["version"] == "1"
    assert not r[6].ok
    assert r[6].error_type == "ReleaseNotFoundError"
    assert r[6].exit_code == 5
    assert r[7].result["pong"] is True


def test_stdio_upload_with_wrong_id_is_refused(
    make_agent: Callable[..., Agent], make_package: PackageBuilder
) -> None:
    agent = make_agent()
    data = make_package("1").read_bytes()
    wrong = "0" * 64
    wire = encode_request(Request(1, "upload", {"package_id": wrong, "size": len(data)})) + data
    wire += encode_request(Request(2, "has_package", {"package_id": wrong}))
    _code, lines = _run_stdio(RpcServer(agent), wire)
    first, second = (decode_response(x) for x in lines[1:])
    assert not first.ok
    assert first.error_type == "PackageError"
    assert "not the announced" in first.error_message
    assert second.result == {"present": False}  # the stream stayed in sync after the body
    assert not any(p.name.endswith(".part") for p in agent.store.incoming_dir.iterdir())


def test_stdio_broken_framing_and_truncated_upload(make_agent: Callable[..., Agent]) -> None:
    server = RpcServer(make_agent())
    code, lines = _run_stdio(server, b"not json\n")
    assert code == 8
    assert decode_response(lines[1]).error_type == "RpcProtocolError"
    wire = encode_request(Request(1, "upload", {"package_id": "a" * 64, "size": 1000})) + b"xx"
    code, lines = _run_stdio(server, wire)
    assert code == 8


def test_handle_maps_errors_and_bad_arguments(make_agent: Callable[..., Agent]) -> None:
    server = RpcServer(make_agent())
    bad = server.handle(Request(1, "has_package", {"package_id": "../etc"}), None)
    assert not bad.ok
    assert bad.error_type == "UsageError"
    assert bad.exit_code == 2
    missing = server.handle(Request(2, "activate", {}), None)
    assert missing.error_type == "UsageError"
    assert "version" in missing.error_message
    metrics = server.handle(Request(3, "metrics", {}), None)
    assert metrics.ok
    assert "fleetwave_agent_operations_total" in metrics.result["text"]


# -- over a real SSH connection ----------------------------------------------------------


class _AgentSsh:
    """An in-process SSH server whose sessions run `fleetwave-agent rpc` as a subprocess."""

    def __init__(self, root: Path, pub: Path) -> None:
        self.root, self.pub = root, pub
        self.sessions = 0

    async def handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        self.sessions += 1
        env = dict(os.environ, PYTHONPATH=str(AGENT_DIR))
        proc = await asyncio.create_subprocess_exec(
            *AGENT_CMD,
            "--root",
            str(self.root),
            "--trust",
            str(self.pub),
            "rpc",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        await pump(process, proc)
        process.exit(await proc.wait())


class _Client:
    def __init__(self, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        self.proc = proc
        self.next_id = 0
        self.bytes_sent = 0

    async def call(self, op: str, args: dict[str, Any], body: bytes = b"") -> Response:
        self.next_id += 1
        self.proc.stdin.write(encode_request(Request(self.next_id, op, args)) + body)
        self.bytes_sent += len(body)
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        response = decode_response(line)
        assert response.id == self.next_id
        return response

    async def ensure_package(self, path: Path) -> bool:
        pid = read_manifest(path).package_id
        if (await self.call("has_package", {"package_id": pid})).result["present"]:
            return False
        data = await asyncio.to_thread(path.read_bytes)
        response = await self.call("upload", {"package_id": pid, "size": len(data)}, data)
        assert response.ok, response.error_message
        return True


async def _ssh_scenario(tmp_path: Path, pub: Path, v1: Path, v2: Path) -> dict[str, Any]:
    agent = _AgentSsh(tmp_path / "root", pub)
    ssh = await start_loopback_ssh(agent.handle)
    out: dict[str, Any] = {}
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            ssh.port,
            username="deploy",
            client_keys=[ssh.client_key],
            known_hosts=ssh.known_hosts,
            agent_path=None,
        ) as conn:
            proc = await conn.create_process("fleetwave-agent rpc", encoding=None)
            decode_hello(await asyncio.wait_for(proc.stdout.readline(), 60))
            client = _Client(proc)
            out["uploaded_v1"] = await client.ensure_package(v1)
            out["install_v1"] = await client.call(
                "install", {"package_id": read_manifest(v1).package_id}
            )
            out["uploaded_v2"] = await client.ensure_package(v2)
            sent_before = client.bytes_sent
            out["uploaded_v2_again"] = await client.ensure_package(v2)
            out["bytes_second_time"] = client.bytes_sent - sent_before
            out["install_v2"] = await client.call(
                "install", {"package_id": read_manifest(v2).package_id}
            )
            out["rollback"] = await client.call("rollback", {})
            out["status"] = await client.call("status", {})
            proc.stdin.write_eof()
            await asyncio.wait_for(proc.wait(), 60)
            out["exit_status"] = proc.exit_status
    finally:
        await ssh.close()
    out["sessions"] = agent.sessions
    return out


def test_rpc_over_real_ssh(
    tmp_path: Path, make_package: PackageBuilder, keypair: tuple[Path, Path]
) -> None:
    v1 = make_package("1", {"start": "true", "stop": "true"})
    v2 = make_package("2", {"start": "true", "stop": "true"})
    out = asyncio.run(_ssh_scenario(tmp_path, keypair[1], v1, v2))
    assert out["uploaded_v1"]
    assert out["uploaded_v2"]
    assert out["uploaded_v2_again"] is False
    assert out["bytes_second_time"] == 0
    assert out["install_v1"].ok
    assert out["install_v1"].result["version"] == "1"
    assert out["install_v2"].ok
    assert out["install_v2"].result["previous_version"] == "1"
    assert out["rollback"].ok
    assert out["rollback"].result["version"] == "1"
    assert out["status"].result["current"]["version"] == "1"
    assert out["exit_status"] == 0
    assert out["sessions"] == 1  # one agent process served the whole session
    last = json.loads((tmp_path / "root" / "ops" / "last.json").read_text())
    assert last["op"] == "rollback"
