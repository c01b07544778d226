"""The Python floor: a bare asyncssh script (run with the peers venv's Python). One
connection per host, SFTP upload, one exec for the rest. ``peer_asyncssh.py JOB.json``."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import asyncssh


async def deploy(
    ip: str, job: dict[str, Any], options: asyncssh.SSHClientConnectionOptions
) -> None:
    """Upload and install on one host; raises on any failure."""
    async with asyncssh.connect(ip, options=options) as conn:
        async with conn.start_sftp_client() as sftp:
            await sftp.put(job["tarball"], job["remote_tarball"])
        await conn.run(job["script"], check=True)


async def main(job: dict[str, Any]) -> int:
    """Deploy to every host at once; exit 1 naming the hosts that failed."""
    options = asyncssh.SSHClientConnectionOptions(
        username=job["user"],
        client_keys=[asyncssh.read_private_key(job["client_key"])],
        # Parsed once: a path would be re-parsed on every connect (LAB.md).
        known_hosts=asyncssh.read_known_hosts(job["known_hosts"]),
        connect_timeout=10,
        config=None,
    )
    results = await asyncio.gather(
        *(deploy(ip, job, options) for ip in job["hosts"]), return_exceptions=True
    )
    failed = [(ip, r) for ip, r in zip(job["hosts"], results, strict=True) if r is not None]
    for ip, exc in failed:
        print(f"{ip}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(json.loads(Path(sys.argv[1]).read_text()))))
