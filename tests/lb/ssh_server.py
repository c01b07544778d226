"""An in-process asyncssh server on loopback that really runs the commands it is sent
(as the current user), for the HAProxy driver's ``ssh:`` mode. It lives on its own
event loop thread, so tests may call ``asyncio.run`` as often as they like."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import asyncssh

from tests.sshserver import LoopbackSsh, start_loopback_ssh


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
        self._ssh: LoopbackSsh | None = None

    def __enter__(self) -> LoopbackSshServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_loopback_ssh(_run_command), self._loop)
        self._ssh = future.result(10)
        self.port = self._ssh.port
        self._ssh.client_key.write_private_key(str(self.client_key))
        pub = self._ssh.host_key.export_public_key().decode().strip()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub}\n")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._ssh is not None
        asyncio.run_coroutine_threadsafe(self._ssh.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
