"""Agent benchmarks: local rollback time, the exporter's cost when scraped every second,
and the CPU an ``rpc`` session costs to start.

Run: ``python bench/bench_agent.py [--scrape-seconds 30] [--rollbacks 7] [--startup-runs 21]
[--agent-program PATH] [--only rollback|serve|startup]``

1. Local rollback (switch + stop/start hooks, trivial hooks so the app's own start time
   is excluded), in-process and through the CLI: medians. Target < 1 s.
2. ``fleetwave-agent serve`` scraped every second while an access log grows by 100
   lines a second (request metrics and log errors read from it, the app process found
   by pid file): RSS and CPU% of one core of the exporter process. Targets <= 60 MB
   and < 2%.
3. ``fleetwave-agent rpc`` start-up: CPU (user + system, from ``RUSAGE_CHILDREN``) of
   one session that reads the hello and answers one ``status``, median and min of
   interleaved runs, next to ``python -c pass`` of the same interpreter. Target <= 40
   ms. Give ``--agent-program`` the ``fleetwave-agent`` of a venv the wheel was
   installed into (as hosts get it): an editable install adds its import finder to
   every start (see docs/agent.md).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

AGENT_DIR = Path(__file__).resolve().parents[1] / "agent"
sys.path.insert(0, str(AGENT_DIR))

from fleetwave_agent.config import AgentConfig  # noqa: E402
from fleetwave_agent.keys import generate_keypair  # noqa: E402
from fleetwave_agent.operations import Agent  # noqa: E402
from fleetwave_agent.package import build_package  # noqa: E402

HOOKS_YAML = """\
hooks:
  stop: {argv: [./bin/hook]}
  start: {argv: [./bin/hook]}
health_checks:
  - {name: ok, kind: command, argv: ["true"], interval: 50ms, deadline: 5s}
"""


def _package(work: Path, key: Path, version: str) -> Path:
    src = work / f"src-{version}"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "hook").write_text("#!/bin/sh\nexit 0\n")
    (src / "bin" / "hook").chmod(0o755)
    (src / "data.bin").write_bytes(os.urandom(1 << 20))
    (src / "fleetwave-package.yaml").write_text(HOOKS_YAML)
    return build_package(src, name="bench", version=version, private_key=key, out_dir=work)


def bench_rollback(work: Path, rounds: int) -> None:
    private, public = generate_keypair(work, "bench")
    root = work / "root"
    agent = Agent(AgentConfig(root=root, trusted_keys=(public,)))
    agent.install(_package(work, private, "1"))
    agent.install(_package(work, private, "2"))
    in_process = []
    for _ in range(rounds):
        started = time.perf_counter()
        agent.rollback()
        in_process.append(time.perf_counter() - started)
    env = dict(os.environ, PYTHONPATH=str(AGENT_DIR))
    cmd = [sys.executable, "-m", "fleetwave_agent.cli", "--root", str(root), "rollback"]
    via_cli = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=60)
        via_cli.append(time.perf_counter() - started)
    med, cli = statistics.median(in_process), statistics.median(via_cli)
    print(f"rollback (switch + stop/start hooks + health), in-process: median {med * 1000:.1f} ms")
    print(
        f"rollback via `fleetwave-agent rollback` (+ Python start-up): median {cli * 1000:.1f} ms"
    )
    print(f"  target < 1000 ms: {'OK' if med < 1.0 else 'OVER'} (ratio {med / 1.0:.3f})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_serve(work: Path, seconds: int) -> None:
    root = work / "root"
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(AGENT_DIR))
    cfg = work / "agent.yaml"
    access = work / "access.log"
    access.write_text("")
    pidfile = work / "app.pid"
    pidfile.write_text(str(os.getpid()))  # this process stands in for the app
    cfg.write_text(
        f"root: {root}\nexporter: {{health_interval: 1s}}\n"
        f"app:\n  metrics: {{access_log: {{path: {access}}}}}\n"
        f"  log: {{path: {access}, error_pattern: ' 5[0-9][0-9] '}}\n"
        f"  process: {{pid_file: {pidfile}}}\n"
    )
    line = '127.0.0.1 - - [01/Jan/2025:00:00:00 +0000] "GET / HTTP/1.1" 200 12 "-" "x" 0.012\n'
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetwave_agent.cli",
            "--config",
            str(cfg),
            "serve",
            "--port",
            str(port),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        proc.stderr.readline()  # "serving metrics on ..."
        ps = psutil.Process(proc.pid)
        url = f"http://127.0.0.1:{port}/metrics"
        urllib.request.urlopen(url, timeout=10).read()  # warm-up scrape
        cpu0 = sum(ps.cpu_times()[:2])
        wall0 = time.monotonic()
        rss = []
        for i in range(seconds):
            with access.open("a") as fh:
                fh.write(line * 100)  # 100 requests a second
            urllib.request.urlopen(url, timeout=10).read()
            rss.append(ps.memory_info().rss)
            time.sleep(max(0.0, wall0 + i + 1 - time.monotonic()))
        cpu = sum(ps.cpu_times()[:2]) - cpu0
        wall = time.monotonic() - wall0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
    peak, med = max(rss) / 2**20, statistics.median(rss) / 2**20
    share = 100 * cpu / wall
    print(
        f"serve, scraped every 1 s for {seconds} s: RSS median {med:.1f} MiB, peak {peak:.1f} MiB"
    )
    print(f"  CPU {share:.2f}% of one core ({cpu:.3f} s over {wall:.1f} s)")
    print(
        f"  targets <= 60 MB: {'OK' if peak * 2**20 <= 60e6 else 'OVER'}; < 2%: "
        f"{'OK' if share < 2 else 'OVER'}"
    )


def _child_cpu_ms(cmd: list[str], data: bytes, env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, input=data, capture_output=True, env=env, timeout=60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {proc.stderr.decode(errors='replace')[-500:]}")
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return used * 1000


def bench_startup(work: Path, runs: int, program: Path | None) -> None:
    private, public = generate_keypair(work, "startup")
    del private
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWAVE_AGENT")}
    if program is None:
        agent = [sys.executable, "-m", "fleetwave_agent.cli"]
        python = sys.executable
        env["PYTHONPATH"] = str(AGENT_DIR)
    else:
        agent = [str(program)]
        shebang = program.read_text(errors="replace").splitlines()[0]
        python = shebang.removeprefix("#!").split()[0]
    session = [*agent, "--root", str(work / "startup-root"), "--trust", str(public), "rpc"]
    status = b'{"id": 1, "op": "status", "args": {}}\n'
    _child_cpu_ms(session, status, env)  # the first run creates the root; not counted
    rpc: list[float] = []
    bare: list[float] = []
    for _ in range(runs):  # interleaved, so load on the machine hits both alike
        rpc.append(_child_cpu_ms(session, status, env))
        bare.append(_child_cpu_ms([python, "-c", "pass"], b"", env))
    med = statistics.median(rpc)
    print(
        f"`fleetwave-agent rpc` start, hello and one status: CPU median {med:.1f} ms "
        f"(min {min(rpc):.1f}) over {runs} runs; `python -c pass`: median "
        f"{statistics.median(bare):.1f} ms (min {min(bare):.1f})"
    )
    print(f"  target <= 40 ms: {'OK' if med <= 40 else 'OVER'} ({agent[0]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rollbacks", type=int, default=7)
    parser.add_argument("--scrape-seconds", type=int, default=30)
    parser.add_argument("--startup-runs", type=int, default=21)
    parser.add_argument(
        "--agent-program", type=Path, help="fleetwave-agent to time (default: this checkout)"
    )
    parser.add_argument("--only", choices=("rollback", "serve", "startup"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only in (None, "rollback"):
            bench_rollback(work, args.rollbacks)
        if args.only in (None, "serve"):
            bench_serve(work, args.scrape_seconds)
        if args.only in (None, "startup"):
            bench_startup(work, args.startup_runs, args.agent_program)
        subprocess.run(["chmod", "-R", "u+w", tmp], check=False)  # releases are read-only


if __name__ == "__main__":
    main()
