"""A real asyncssh server on loopback for tests, with keys generated per server.

Tests script the server's sessions with a process factory, as asyncssh's own tests do,
instead of patching client classes. :func:`pump` carries a session's channel to a
child process and back, the way sshd runs a forced command with the channel as its
stdin and stdout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncssh

ProcessFactory = Callable[[asyncssh.SSHServerProcess[bytes]], Awaitable[None]]


@dataclass
class LoopbackSsh:
    server: asyncssh.SSHAcceptor
    port: int
    host_key: asyncssh.SSHKey
    client_key: asyncssh.SSHKey

    @property
    def known_hosts(self) -> asyncssh.SSHKnownHosts:
        """A known_hosts object that trusts exactly this server's host key."""
        key = self.host_key.export_public_key("openssh").decode().strip()
        return asyncssh.import_known_hosts(f"[127.0.0.1]:{self.port} {key}\n")

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_loopback_ssh(process_factory: ProcessFactory) -> LoopbackSsh:
    """Listen on 127.0.0.1, a free port; key authentication only, as in production."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key("openssh").decode())
    server = await asyncssh.create_server(
        asyncssh.SSHServer,
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=authorized,
        process_factory=process_factory,
        encoding=None,
        password_auth=False,
        kbdint_auth=False,
        gss_host=None,
    )
    port = server.sockets[0].getsockname()[1]
    return LoopbackSsh(server, port, host_key, client_key)


async def pump(
    process: asyncssh.SSHServerProcess[bytes], child: asyncio.subprocess.Process
) -> None:
    """Copy the channel into ``child``'s stdin and its stdout back until both end."""
    child_in, child_out = child.stdin, child.stdout
    assert child_in is not None
    assert child_out is not None

    async def pump_in() -> None:
        while data := await process.stdin.read(1 << 16):
            child_in.write(data)
            await child_in.drain()
        child_in.close()

    async def pump_out() -> None:
        while data := await child_out.read(1 << 16):
            process.stdout.write(data)
            await process.stdout.drain()

    await asyncio.gather(pump_in(), pump_out())
