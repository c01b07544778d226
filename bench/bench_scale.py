"""Scale benchmark: SshTransport sweeping an in-process fleet of N hosts.

The fleet (N asyncssh servers running the real agent code) runs in a child process, so
the figures printed here are the controller's own: wall time of the sweep, the
controller process's CPU time and peak RSS (``ru_maxrss``). Each run uploads and
installs one small signed package on every host.

    python bench/bench_scale.py                 # 1,000 hosts, 3 runs
    python bench/bench_scale.py --hosts 5000 --runs 1

Targets from the issue: peak controller RSS <= 300 MB at 1,000 hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncssh

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "controller"), str(ROOT / "agent"), str(ROOT)]

from tests.inproc.agents import make_package  # noqa: E402

from fleetwave.config.settings import SshSettings  # noqa: E402
from fleetwave.planning.model import HostRef  # noqa: E402
from fleetwave.transport.ssh import ErrorCounter, SshTransport  # noqa: E402


def start_fleet_process(hosts: int, work: Path, trust: Path) -> subprocess.Popen[str]:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT / "controller"), str(ROOT / "agent"), str(ROOT)]),
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.inproc.fleet",
            "serve",
            "--hosts",
            str(hosts),
            "--dir",
            str(work),
            "--trust",
            str(trust),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise SystemExit(f"fleet did not start: {line!r}")
    return proc


async def sweep(
    info: dict[str, Any], package_path: Path, package_id: str, concurrency: int
) -> tuple[int, dict[str, int]]:
    settings = SshSettings(user="deploy", concurrency=concurrency, connect_timeout_s=60.0)
    errors = ErrorCounter()
    transport = SshTransport(
        settings,
        client_keys=[asyncssh.read_private_key(str(info["client_key"]))],
        known_hosts=Path(str(info["known_hosts"])),
        errors=errors,
    )
    hosts = [
        HostRef(name, addr, "bench", "bench-a", ssh_port=port) for name, addr, port in info["hosts"]
    ]

    async def one(ref: HostRef) -> None:
        session = await transport.open(ref)
        await session.ensure_package(package_path, package_id)
        await session.call("install", {"package_id": package_id})

    results = await asyncio.gather(*(one(h) for h in hosts), return_exceptions=True)
    await transport.close()
    failed = sum(isinstance(r, BaseException) for r in results)
    return failed, errors.snapshot()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 3 * args.hosts + 256)), hard))

    walls, cpus = [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="fw-bench-") as tmp:
            work = Path(tmp)
            package = make_package(work / "pkg", payload_bytes=64 * 1024)
            fleet_dir = work / "fleet"
            fleet_dir.mkdir()
            fleet = start_fleet_process(args.hosts, fleet_dir, package.public_key)
            try:
                info = json.loads((fleet_dir / "fleet.json").read_text())
                cpu0, wall0 = time.process_time(), time.perf_counter()
                failed, errors = asyncio.run(
                    sweep(info, package.path, package.package_id, args.concurrency)
                )
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            finally:
                assert fleet.stdin is not None
                fleet.stdin.close()
                fleet.wait(timeout=120)
        walls.append(wall)
        cpus.append(cpu)
        print(
            f"run {run + 1}: hosts={args.hosts} wall={wall:.2f}s controller_cpu={cpu:.2f}s "
            f"failed={failed} errors={ {k: v for k, v in errors.items() if v} }"
        )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"median wall={statistics.median(walls):.2f}s "
        f"median controller_cpu={statistics.median(cpus):.2f}s "
        f"cpu/host={1000 * statistics.median(cpus) / args.hosts:.2f}ms "
        f"controller peak RSS={rss_mb:.0f} MB (target <= 300 MB at 1,000 hosts)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
