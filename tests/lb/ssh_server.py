"""An in-process asyncssh server on loopback that really runs the commands it is sent
(as the current user), for the HAProxy driver's ``ssh:`` mode. It lives on its own
event loop thread, so tests may call ``asyncio.run`` as often as they like."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import asyncssh


async def _run_command(process: asyncssh.SSHServerProcess[bytes]) -> None:
    data = await process.stdin.read()
    proc = await asyncio.create_subprocess_shell(
        process.command or "true",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(data), 30)
    process.stdout.write(out)
    process.stderr.write(err)
    process.exit(proc.returncode or 0)


class LoopbackSshServer:
    """``with LoopbackSshServer(tmp_dir) as srv``: ``srv.port``, ``srv.client_key``,
    ``srv.known_hosts`` (a file pinning this server's key)."""

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        self.client_key = work_dir / "client_key"
        self.known_hosts = work_dir / "known_hosts"
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Any = None

    def __enter__(self) -> LoopbackSshServer:
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key.write_private_key(str(self.client_key))
        authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
        self._thread.start()

        async def start() -> Any:
            return await asyncssh.create_server(
                asyncssh.SSHServer,
                "127.0.0.1",
                0,
                server_host_keys=[host_key],
                authorized_client_keys=authorized,
                process_factory=_run_command,
                encoding=None,
            )

        self._server = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        pub = host_key.export_public_key().decode().strip()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub}\n")
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
