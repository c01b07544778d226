"""An in-process fleet of SSH hosts running the real agent RPC code.

Each host is an ``asyncssh`` server on its own loopback address (127.0.X.Y, port 0)
whose sessions run the agent's ``RpcServer.handle`` in a shared thread pool, bridged
to the channel's stdin/stdout with the real wire format. Every host has its own agent
root. One host key (optionally a CA-signed certificate) is shared by the fleet, and
``known_hosts`` is built once for the controller.

Test knobs model real failures on the server side, never inside the code under test:
``drop_handshakes`` closes the first K connections at once (sshd past MaxStartups),
``hang_ops`` makes the agent never answer those operations (a wedged agent).

Run as a script (``python -m tests.inproc.fleet serve ...``) the fleet lives in its
own process, so a benchmark can measure the controller's process alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncssh

from fleetwave.planning.model import HostRef
from fleetwave_agent import __version__ as agent_version
from fleetwave_agent.rpc_protocol import (
    Request,
    Response,
    decode_request,
    encode_hello,
    encode_response,
)


class RpcHandler(Protocol):
    def handle(self, request: Request, body: Any) -> Response: ...


#: Builds the agent for one host from its root directory.
AgentFactory = Callable[[Path], RpcHandler]


def loopback_address(index: int) -> str:
    """The index-th test address: 127.0.1.1, 127.0.1.2, ... (skips .0 and .255)."""
    third, fourth = divmod(index, 254)
    return f"127.0.{1 + third}.{1 + fourth}"


@dataclass
class FleetHost:
    name: str
    address: str
    port: int
    root: Path
    agent: RpcHandler
    server: asyncssh.SSHAcceptor | None = None
    connections: int = 0  # handshakes that reached the server
    dropped: int = 0
    requests: list[str] = field(default_factory=list)

    def ref(self, *, user: str = "deploy") -> HostRef:
        return HostRef(
            name=self.name,
            address=self.address,
            region="test-1",
            az="test-1a",
            ssh_user=user,
            ssh_port=self.port,
        )


@dataclass
class Fleet:
    hosts: list[FleetHost]
    host_key: asyncssh.SSHKey
    client_key: asyncssh.SSHKey
    known_hosts_text: str
    pool: ThreadPoolExecutor

    def known_hosts(self) -> asyncssh.SSHKnownHosts:
        return asyncssh.import_known_hosts(self.known_hosts_text)

    def refs(self) -> list[HostRef]:
        return [h.ref() for h in self.hosts]

    async def close(self) -> None:
        for host in self.hosts:
            if host.server is not None:
                host.server.close()
        await asyncio.gather(
            *(h.server.wait_closed() for h in self.hosts if h.server is not None),
            return_exceptions=True,
        )
        self.pool.shutdown(wait=True)


class _Server(asyncssh.SSHServer):
    def __init__(self, host: FleetHost, drop_first: int):
        self._host = host
        self._drop_first = drop_first

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._host.connections += 1
        if self._host.connections <= self._drop_first:
            # What sshd does past MaxStartups: close the socket before the handshake.
            self._host.dropped += 1
            conn.abort()


async def _serve_session(
    process: asyncssh.SSHServerProcess[bytes],
    host: FleetHost,
    pool: ThreadPoolExecutor,
    hang_ops: frozenset[str],
) -> None:
    loop = asyncio.get_running_loop()
    stdin, stdout = process.stdin, process.stdout
    try:
        stdout.write(encode_hello(agent_version))
        while True:
            line = await stdin.readline()
            if not line:
                break
            request = decode_request(line)
            body = None
            if request.op == "upload":
                body = io.BytesIO(await stdin.readexactly(int(request.args["size"])))
            host.requests.append(request.op)
            if request.op in hang_ops:
                await asyncio.sleep(3600)
            response = await loop.run_in_executor(pool, host.agent.handle, request, body)
            stdout.write(encode_response(response))
        process.exit(0)
    except (asyncssh.Error, OSError, asyncio.IncompleteReadError):
        process.exit(1)
    except asyncio.CancelledError:
        process.exit(1)
        raise


async def start_fleet(
    count: int,
    root_dir: Path,
    make_agent: AgentFactory,
    *,
    client_key: asyncssh.SSHKey | None = None,
    host_key: asyncssh.SSHKey | None = None,
    host_ca: asyncssh.SSHKey | None = None,
    drop_handshakes: int = 0,
    hang_ops: frozenset[str] = frozenset(),
    first_index: int = 0,
    workers: int = 8,
    root_subdir: str = "",
) -> Fleet:
    """Start ``count`` hosts. With ``host_ca`` the hosts present a certificate signed by
    it and known_hosts holds only an ``@cert-authority`` line. Each host's agent root is
    ``root_dir/NAME``, or ``root_dir/NAME/root_subdir`` (room for a per-host "/etc")."""
    client_key = client_key or asyncssh.generate_private_key("ssh-ed25519")
    host_key = host_key or asyncssh.generate_private_key("ssh-ed25519")
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key("openssh").decode())
    cert = None
    if host_ca is not None:
        cert = host_ca.generate_host_certificate(
            host_key, "fleet", principals=[loopback_address(first_index + i) for i in range(count)]
        )
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inproc-agent")
    hosts: list[FleetHost] = []
    for i in range(count):
        name = f"host-{first_index + i:05d}"
        root = root_dir / name / root_subdir if root_subdir else root_dir / name
        root.mkdir(parents=True, exist_ok=True)
        hosts.append(FleetHost(name, loopback_address(first_index + i), 0, root, make_agent(root)))

    host_keys: list[Any] = [(host_key, cert)] if cert is not None else [host_key]

    async def start(host: FleetHost) -> None:
        async def handler(process: asyncssh.SSHServerProcess[bytes]) -> None:
            await _serve_session(process, host, pool, hang_ops)

        host.server = await asyncssh.create_server(
            lambda: _Server(host, drop_handshakes),
            host.address,
            0,
            server_host_keys=host_keys,
            authorized_client_keys=authorized,
            process_factory=handler,
            encoding=None,
            password_auth=False,
            kbdint_auth=False,
            gss_host=None,
            allow_scp=False,
            compression_algs=["none"],
        )
        host.port = host.server.sockets[0].getsockname()[1]

    await asyncio.gather(*(start(h) for h in hosts))
    public = host_key.export_public_key("openssh").decode().strip()
    if host_ca is not None:
        ca_public = host_ca.export_public_key("openssh").decode().strip()
        known = f"@cert-authority * {ca_public}\n"
    else:
        known = "".join(f"[{h.address}]:{h.port} {public}\n" for h in hosts)
    return Fleet(hosts, host_key, client_key, known, pool)


@contextlib.contextmanager
def raised_fd_limit(wanted: int) -> Iterator[None]:
    """Thousands of servers plus clients need more descriptors than the default 1024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, wanted), hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _serve_main(argv: list[str]) -> int:
    from tests.inproc.agents import real_agent_factory

    parser = argparse.ArgumentParser(prog="python -m tests.inproc.fleet serve")
    parser.add_argument("--hosts", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--trust", type=Path, required=True, help="package signer public key")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)

    async def run() -> None:
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        key_path = args.dir / "client_key"
        client_key.write_private_key(key_path)
        fleet = await start_fleet(
            args.hosts,
            args.dir / "roots",
            real_agent_factory(args.trust),
            client_key=client_key,
            workers=args.workers,
        )
        (args.dir / "known_hosts").write_text(fleet.known_hosts_text)
        info = {
            "client_key": str(key_path),
            "known_hosts": str(args.dir / "known_hosts"),
            "hosts": [[h.name, h.address, h.port] for h in fleet.hosts],
        }
        (args.dir / "fleet.json").write_text(json.dumps(info))
        print("ready", flush=True)
        # Serve until the parent closes our stdin.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await fleet.close()

    with raised_fd_limit(4 * args.hosts + 256):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "serve":
        print("usage: python -m tests.inproc.fleet serve --hosts N --dir DIR --trust KEY")
        sys.exit(2)
    sys.exit(_serve_main(sys.argv[2:]))
