"""fleetwave's side of the benchmark: the real deploy path for "install on every host".

One :class:`~fleetwave.transport.ssh.SshTransport` (one connection and one
``fleetwave-agent rpc`` session per host); per host ``ensure_package`` then
``install`` (or, with ``--rollback``, one ``rollback`` call: agent-local, no upload).
Run by ``bench_deploy.py`` as a subprocess of the project venv's Python, so its CPU
is measured like every peer's. ``--profile FILE`` writes a cProfile of the run. The
job's optional ``agent_command`` replaces ``ssh.agent_command`` (``--agent-mode
resident``: ``socat STDIO UNIX-CONNECT:...``, a relay to the host's resident agent).

Usage: ``fw_worker.py JOB.json [--rollback] [--profile FILE]``; prints a JSON line
``{"seconds": ..., "failed": {...}}`` and exits 1 when any host failed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import sys
import time
from pathlib import Path
from typing import Any

from fleetwave.config.settings import SshSettings
from fleetwave.errors import FleetwaveError
from fleetwave.planning.model import HostRef
from fleetwave.transport.ssh import SshTransport


async def _one(transport: SshTransport, host: HostRef, job: dict[str, Any], rollback: bool) -> None:
    session = await transport.open(host)
    if rollback:
        await session.call("rollback", {})
        return
    await session.ensure_package(Path(job["package"]), job["package_id"])
    await session.call("install", {"package_id": job["package_id"]})


async def run(job: dict[str, Any], *, rollback: bool) -> dict[str, Any]:
    """Install (or roll back) on every host of ``job`` at once; per-host failures as data."""
    hosts = [HostRef(name=name, address=ip, region="bench", az="a") for name, ip in job["hosts"]]
    settings = SshSettings(
        user=job["user"],
        identity=Path(job["client_key"]),
        known_hosts=Path(job["known_hosts"]),
        concurrency=len(hosts),
        command_timeout_s=120.0,
        # The agent's hello shares this deadline; 100 Python starts on a 2-core lab
        # machine that also runs every host's sshd can take longer than the default.
        connect_timeout_s=30.0,
        agent_command=job.get("agent_command", SshSettings.agent_command),
    )
    start = time.monotonic()
    transport = SshTransport(settings)
    try:
        results = await asyncio.gather(
            *(_one(transport, h, job, rollback) for h in hosts), return_exceptions=True
        )
    finally:
        await transport.close()
    failed = {
        h.name: f"{type(r).__name__}: {r}"
        for h, r in zip(hosts, results, strict=True)
        if isinstance(r, BaseException)
    }
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, FleetwaveError | OSError):
            raise r  # a bug, not a host failure
    return {"seconds": time.monotonic() - start, "failed": failed}


def main() -> int:
    """Parse the arguments, run, print the JSON result line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("job", type=Path)
    parser.add_argument("--rollback", action="store_true")
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    job = json.loads(args.job.read_text())
    if args.profile is not None:
        profiler = cProfile.Profile()
        result = profiler.runcall(asyncio.run, run(job, rollback=args.rollback))
        profiler.dump_stats(args.profile)
    else:
        result = asyncio.run(run(job, rollback=args.rollback))
    print(json.dumps(result))
    for host, err in result["failed"].items():
        print(f"{host}: {err}", file=sys.stderr)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
