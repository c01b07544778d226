"""Peer workload for fabric 3 (run with the peers venv's Python): one ThreadingGroup,
``put`` the tarball, ``run`` the remaining steps. Usage: ``peer_fabric.py JOB.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import paramiko  # type: ignore[import-untyped,import-not-found,unused-ignore]
from fabric import ThreadingGroup


def main() -> int:
    """Deploy to every host of the job; exit 1 naming the hosts that failed."""
    job = json.loads(Path(sys.argv[1]).read_text())
    group = ThreadingGroup(
        *job["hosts"],
        user=job["user"],
        connect_kwargs={"key_filename": job["client_key"], "look_for_keys": False},
    )
    for conn in group:
        conn.client.load_host_keys(job["known_hosts"])
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        failed = {}
        puts = group.put(job["tarball"], remote=job["remote_tarball"])
        failed.update({c.host: e for c, e in puts.failed.items()})
        ok = ThreadingGroup.from_connections([c for c in group if c.host not in failed])
        runs = ok.run(job["script"], hide=True, warn=False)
        failed.update({c.host: e for c, e in runs.failed.items()})
    finally:
        group.close()
    for host, exc in failed.items():
        print(f"{host}: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
