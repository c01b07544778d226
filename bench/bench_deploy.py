"""Benchmark: deploying a release to a fleet of namespace hosts, fleetwave vs peer tools,
and fleetwave's rollback speed.

Run as root (network namespaces) from the project venv::

    python bench/bench_deploy.py --quick          # N=10,50; 1 MB; 3 runs (~5 min)
    python bench/bench_deploy.py                  # N=10,50,100; 1 and 10 MB (~15 min)
    python bench/bench_deploy.py --rollback-only  # roll back 100 hosts, 5 runs

Every tool does the same work on every host (upload, sha256 on the host, extract into a
new release directory, atomic ``current`` switch, trivial health check; fleetwave does
it with its real transport and agent: ``ensure_package`` + ``install``; the tool
``fleetwave-cli`` runs ``fleetwave deploy`` end to end with a one-wave pipeline, no
one-box, one batch, no bakes and the ``none`` balancer). Each run
deploys a new release, every host is checked afterwards, tools alternate order across
repetitions, and the tables report medians. Peers run from their own venv
(``bench/.venv-peers``, made from ``bench/requirements-peers.txt`` on first use, or
``$FLEETWAVE_PEERS_VENV``). See ``bench/README.md`` for the method.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import pstats
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `tests.lab` and `bench.deploy` importable
    sys.path.insert(0, str(REPO))

from tests.lab import lab_unavailable_reason  # noqa: E402

from bench.deploy import peers  # noqa: E402
from bench.deploy.lab import (  # noqa: E402
    PAYLOAD_NAME,
    RESIDENT_AGENT_COMMAND,
    BenchFleet,
    BenchHost,
    CpuGroup,
    check_agent_release,
    check_all,
    check_peer_release,
    clean_peer_releases,
    file_sha256,
)
from bench.deploy.results import ROLLBACK_100_S, RunResult, markdown, summarise, targets  # noqa: E402
from fleetwave_agent.keys import generate_keypair  # noqa: E402
from fleetwave_agent.package import build_package, read_manifest  # noqa: E402

ALL_TOOLS = ("fleetwave", "asyncssh", "scp", "fabric", "pyinfra", "ansible", "fleetwave-cli")
#: fleetwave itself: through the transport (worker) and end to end (`fleetwave deploy`).
FLEETWAVE_TOOLS = frozenset({"fleetwave", "fleetwave-cli"})
PEERS_DIR = REPO / "bench" / ".venv-peers"
RESULTS_DIR = REPO / "bench" / "results"
WORKER = REPO / "bench" / "deploy" / "fw_worker.py"
PACKAGE_CONFIG = """\
health_checks:
  - {name: payload, kind: command, argv: [test, -f, payload.bin], deadline: 10s}
"""
ROLLBACK_PACKAGE_CONFIG = """\
hooks:
  start: {argv: ["true"], timeout: 10s}
  stop: {argv: ["true"], timeout: 10s}
health_checks:
  - {name: payload, kind: command, argv: [test, -f, payload.bin], deadline: 10s}
"""


class BenchError(RuntimeError):
    """The benchmark cannot run as asked (one line for the operator)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N=10,50; 1 MB; 3 runs")
    parser.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated")
    parser.add_argument("--hosts", default="10,50,100", help="comma-separated Ns")
    parser.add_argument("--sizes", default="1,10", help="package sizes in MB, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="repetitions (median of these)")
    parser.add_argument(
        "--ansible-max-n",
        type=int,
        default=50,
        help="skip ansible above this N (LAB.md: ~54 s at N=50 and >2 min at N=100)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="cap per tool run, s")
    parser.add_argument("--rollback", action="store_true", help="also run the rollback bench")
    parser.add_argument("--rollback-only", action="store_true", help="only the rollback bench")
    parser.add_argument("--rollback-hosts", type=int, default=100)
    parser.add_argument("--rollback-runs", type=int, default=5)
    parser.add_argument(
        "--profile", type=Path, help="write cProfile stats of fleetwave's runs into this dir"
    )
    parser.add_argument("--json", type=Path, help="result file (default bench/results/...)")
    parser.add_argument("--keep-work", action="store_true", help="keep the work dir (logs)")
    parser.add_argument(
        "--agent-mode",
        choices=("session", "resident"),
        default="session",
        help="fleetwave's agent: one `fleetwave-agent rpc` per SSH session (default), or "
        "a resident `fleetwave-agent serve --rpc-socket` per host reached through socat",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.hosts, args.sizes = "10,50", "1"
        args.runs = 3
    try:
        args.tool_list = [t for t in args.tools.split(",") if t]
        args.host_list = sorted({int(n) for n in args.hosts.split(",") if n})
        args.size_list = sorted({int(s) for s in args.sizes.split(",") if s})
    except ValueError as exc:
        parser.error(f"--hosts/--sizes must be comma-separated integers: {exc}")
    unknown = set(args.tool_list) - set(ALL_TOOLS)
    if unknown:
        parser.error(f"unknown tool(s) {', '.join(sorted(unknown))}; known: {', '.join(ALL_TOOLS)}")
    if any(n < 1 or n > 500 for n in args.host_list) or args.rollback_hosts < 1:
        parser.error("host counts must be 1..500")
    if any(s < 1 or s > 200 for s in args.size_list):
        parser.error("sizes must be 1..200 MB")
    if args.runs < 1 or args.rollback_runs < 1:
        parser.error("--runs and --rollback-runs must be at least 1")
    return args


def peers_python(needed: bool) -> Path:
    """The peers venv's interpreter, creating ``bench/.venv-peers`` on first use."""
    env_dir = os.environ.get("FLEETWAVE_PEERS_VENV")
    venv = Path(env_dir) if env_dir else PEERS_DIR
    python = venv / "bin" / "python"
    if python.exists() or not needed:
        return python
    if env_dir:
        raise BenchError(f"FLEETWAVE_PEERS_VENV={env_dir} has no bin/python")
    print(f"creating the peers venv {venv} (bench/requirements-peers.txt)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    req = REPO / "bench" / "requirements-peers.txt"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(req)], check=True)
    return python


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every namespace and process is cleaned up."""

    def handler(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class Bench:
    """Owns the work directory, the fleet, the controller's CPU group and the results."""

    def __init__(self, args: argparse.Namespace, fleet: BenchFleet, work: Path, key: Path):
        self.args = args
        self.fleet = fleet
        self.work = work
        self.signing_key = key
        self.peers_python = peers_python(any(t not in FLEETWAVE_TOOLS for t in args.tool_list))
        self.ctl = CpuGroup(f"fwbench-ctl-{os.getpid()}")
        self._compile_bytecode()
        self.results: list[RunResult] = []
        self._serial = 0

    def close(self) -> None:
        self.ctl.kill_all()
        self.ctl.remove()

    def _compile_bytecode(self) -> None:
        """Byte-compile fleetwave's own modules (``__pycache__``, git-ignored).

        An installed wheel ships .pyc files; this source tree may have none (e.g. under
        PYTHONDONTWRITEBYTECODE) and the hosts' non-root user cannot write them, so
        without this every agent start compiles its modules from source (~0.2 s of CPU
        per host per deploy here), a cost no real installation pays."""
        subprocess.run(
            [
                sys.executable,
                "-m",
                "compileall",
                "-q",
                str(REPO / "controller" / "fleetwave"),
                str(REPO / "agent" / "fleetwave_agent"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    # -- inputs ---------------------------------------------------------------------

    def release_name(self, tool: str, size: int, n: int, rep: int) -> str:
        self._serial += 1
        return f"r{self._serial:03d}-{tool}-{size}m-n{n}-{rep}"

    def make_payload(self, size_mb: int, tag: str) -> tuple[Path, Path, str]:
        """A source dir with ``size_mb`` of random (incompressible) bytes, its tarball,
        and the payload's sha256 (the content digest every host is checked against)."""
        src = self.work / "src" / tag
        src.mkdir(parents=True)
        with (src / PAYLOAD_NAME).open("wb") as fh:
            for _ in range(size_mb):
                fh.write(os.urandom(1 << 20))
        tarball = self.work / "tarballs" / f"{tag}.tar.gz"
        tarball.parent.mkdir(exist_ok=True)
        with tarfile.open(tarball, "w:gz", compresslevel=6) as tar:
            tar.add(src / PAYLOAD_NAME, arcname=PAYLOAD_NAME)
        tarball.chmod(0o644)
        return src, tarball, file_sha256(src / PAYLOAD_NAME)

    def fleetwave_package(self, src: Path, version: str, config: str) -> tuple[Path, str]:
        (src / "fleetwave-package.yaml").write_text(config)
        try:
            path = build_package(
                src,
                name="benchapp",
                version=version,
                private_key=self.signing_key,
                out_dir=self.work / "packages",
            )
        finally:
            (src / "fleetwave-package.yaml").unlink()
        return path, read_manifest(path).package_id

    # -- one timed run --------------------------------------------------------------

    def timed(
        self, argv: list[str], env: dict[str, str], run_dir: Path, timeout: float
    ) -> tuple[float, float, float, float, str]:
        """Run ``argv`` to completion in the controller's CPU group.

        Returns wall, controller CPU (cgroup), controller CPU (RUSAGE_CHILDREN), host
        CPU, and an error ('' on exit 0)."""
        assert self.fleet.cpu is not None
        self.fleet.wait_idle()
        host0, ctl0 = self.fleet.cpu.seconds(), self.ctl.seconds()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        error = ""
        with (run_dir / "stdout").open("wb") as out, (run_dir / "stderr").open("wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(
                argv,
                cwd=run_dir,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=self.ctl.join_self,  # no threads in this process
            )
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.ctl.kill_all()
                rc = proc.wait(timeout=10)
                error = f"no exit within {timeout:g} s"
            except BaseException:
                self.ctl.kill_all()
                proc.wait(timeout=10)
                raise
            wall = time.perf_counter() - start
        # Daemonised helpers (ssh ControlPersist masters) would outlive the run.
        self.ctl.kill_all()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        rusage = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        self.fleet.wait_idle()
        host = self.fleet.cpu.seconds() - host0
        if rc != 0 and not error:
            tail = (run_dir / "stderr").read_text(errors="replace").strip().splitlines()
            tail = tail or (run_dir / "stdout").read_text(errors="replace").strip().splitlines()
            error = f"exit {rc}: {' | '.join(tail[-3:])[:300]}"
        return wall, self.ctl.seconds() - ctl0, rusage, host, error

    def run_tool(
        self,
        tool: str,
        size: int,
        hosts: list[BenchHost],
        rep: int,
        src: Path,
        tarball: Path,
        sha: str,
    ) -> RunResult:
        """Deploy a new release with ``tool`` to ``hosts``, time it, check every host."""
        n = len(hosts)
        release = self.release_name(tool, size, n, rep)
        run_dir = self.work / "runs" / release
        run_dir.mkdir(parents=True)
        host_pairs = tuple((h.name, h.ip) for h in hosts)
        check: Callable[[BenchHost], str | None]
        env: dict[str, str] = {}
        if tool == "fleetwave-cli":
            package, _pid = self.fleetwave_package(src, release, PACKAGE_CONFIG)
            pipeline = self._cli_pipeline(host_pairs, run_dir)
            argv = [sys.executable, "-m", "fleetwave.cli", "deploy", str(package), "--yes"]
            argv += ["-f", str(pipeline)]

            def check(h: BenchHost) -> str | None:
                return check_agent_release(h, release, sha)
        elif tool == "fleetwave":
            package, package_id = self.fleetwave_package(src, release, PACKAGE_CONFIG)
            job = self._worker_job(host_pairs, package, package_id)
            argv = [sys.executable, str(WORKER), str(job)]
            if self.args.profile is not None:
                self.args.profile.mkdir(parents=True, exist_ok=True)
                argv += ["--profile", str(self.args.profile / f"{release}.prof")]

            def check(h: BenchHost) -> str | None:
                return check_agent_release(h, release, sha)
        else:
            job_spec = peers.Job(
                tool=tool,
                hosts=host_pairs,
                release=release,
                tarball=tarball,
                sha256=file_sha256(tarball),
                user=self.fleet.user,
                client_key=self.fleet.client_key,
                known_hosts=self.fleet.known_hosts,
                run_dir=run_dir,
                peers_python=self.peers_python,
            )
            build, env_of = peers.PEERS[tool]
            argv, env = build(job_spec), env_of(job_spec)

            def check(h: BenchHost) -> str | None:
                return check_peer_release(h, tool, release, sha)

        load1 = os.getloadavg()[0]
        wall, ctl, ctl_ru, host_cpu, error = self.timed(argv, env, run_dir, self.args.timeout)
        problems = check_all(hosts, check)
        if problems and not error:
            error = f"{len(problems)} host(s) wrong: {'; '.join(problems[:3])}"
        if tool not in FLEETWAVE_TOOLS:
            clean_peer_releases(hosts, tool, keep=release)
        result = RunResult(tool, n, size, rep, wall, ctl, ctl_ru, host_cpu, error, load1)
        status = f"FAILED: {error}" if error else "ok"
        print(
            f"  {tool:<9} N={n:<3} {size:>3} MB run {rep + 1}: wall {wall:6.2f} s  "
            f"ctrl CPU {ctl:6.2f} s  host CPU {host_cpu:6.2f} s  {status}",
            flush=True,
        )
        return result

    def _cli_pipeline(self, hosts: tuple[tuple[str, str], ...], run_dir: Path) -> Path:
        """A one-wave, one-AZ pipeline: no one-box, every host in one batch, no bakes,
        the ``none`` balancer; a fresh state dir per run (journal and lock)."""
        topology = {
            "regions": {
                "bench-1": {
                    "traffic": "low",
                    "timezone": "UTC",
                    "azs": {"bench-az1": [{"name": n, "address": ip} for n, ip in hosts]},
                }
            }
        }
        pipeline = {
            "name": "bench",
            "service": "benchapp",
            "environment": "bench",
            "topology": "topology.yaml",
            "deploy": {
                "ssh": {
                    "user": self.fleet.user,
                    "identity": str(self.fleet.client_key),
                    "known_hosts": str(self.fleet.known_hosts),
                    "connect_timeout": "30s",
                    "command_timeout": "2m",
                    "concurrency": len(hosts),
                    **self._agent_command(),
                },
                "load_balancers": [{"name": "none", "driver": "none"}],
                "state_dir": "state",
                "trust": [str(self.work / "keys" / "bench.pub")],  # deploy verifies first
            },
            "unit": "az",
            "rolling": {"max_batch": "100%", "min_healthy": "0%", "failure_budget": 0},
            "onebox": {"enabled": False},
            "stage_bake": {"time": "0s"},
            "windows": {"default": {"days": ["all"], "hours": "00:00-24:00"}},
            "waves": [{"name": "all", "regions": ["bench-1"], "bake": {"time": "0s"}}],
        }
        (run_dir / "topology.yaml").write_text(json.dumps(topology))
        path = run_dir / "pipeline.yaml"
        path.write_text(json.dumps(pipeline))  # JSON is YAML
        return path

    def _agent_command(self) -> dict[str, str]:
        """The ssh ``agent_command`` override of ``--agent-mode resident`` (else none)."""
        if self.args.agent_mode == "resident":
            return {"agent_command": RESIDENT_AGENT_COMMAND}
        return {}

    def _worker_job(self, hosts: tuple[tuple[str, str], ...], package: Path, pid: str) -> Path:
        path = self.work / "runs" / f"fw-job-{self._serial}.json"
        path.write_text(
            json.dumps(
                {
                    "hosts": hosts,
                    "user": self.fleet.user,
                    "client_key": str(self.fleet.client_key),
                    "known_hosts": str(self.fleet.known_hosts),
                    "package": str(package),
                    "package_id": pid,
                    **self._agent_command(),
                }
            )
        )
        return path

    # -- the matrix -----------------------------------------------------------------

    def deploy_matrix(self) -> None:
        args = self.args
        for size in args.size_list:
            for n in args.host_list:
                tools = [
                    t for t in args.tool_list if not (t == "ansible" and n > args.ansible_max_n)
                ]
                if len(tools) < len(args.tool_list):
                    print(f"  (ansible skipped at N={n} > --ansible-max-n {args.ansible_max_n})")
                for rep in range(args.runs):
                    src, tarball, sha = self.make_payload(size, f"s{size}-n{n}-{rep}")
                    # Rotate the order so no tool always runs first (or last).
                    order = tools[rep % len(tools) :] + tools[: rep % len(tools)]
                    for tool in order:
                        hosts = self.fleet.hosts[:n]
                        self.results.append(
                            self.run_tool(tool, size, hosts, rep, src, tarball, sha)
                        )

    def rollback_bench(self) -> list[dict[str, float | str]]:
        """Install a new release (untimed), then time an agent-local rollback on every host."""
        n = min(self.args.rollback_hosts, len(self.fleet.hosts))
        hosts = self.fleet.hosts[:n]
        pairs = tuple((h.name, h.ip) for h in hosts)
        out: list[dict[str, float | str]] = []
        print(f"rollback: {n} hosts, {self.args.rollback_runs} runs", flush=True)
        previous: tuple[str, str] | None = None
        for rep in range(self.args.rollback_runs + 1):
            src, _tarball, sha = self.make_payload(1, f"rb-{rep}")
            version = f"rb{rep}-{self._serial}"
            self._serial += 1
            package, package_id = self.fleetwave_package(src, version, ROLLBACK_PACKAGE_CONFIG)
            run_dir = self.work / "runs" / f"rollback-install-{rep}"
            run_dir.mkdir(parents=True)
            job = self._worker_job(pairs, package, package_id)
            _w, _c, _r, _h, err = self.timed(
                [sys.executable, str(WORKER), str(job)], {}, run_dir, self.args.timeout
            )
            if err:
                raise BenchError(f"rollback bench: installing {version} failed: {err}")
            if previous is not None:
                run_dir = self.work / "runs" / f"rollback-{rep}"
                run_dir.mkdir()
                argv = [sys.executable, str(WORKER), str(job), "--rollback"]
                wall, ctl, _ru, host_cpu, err = self.timed(argv, {}, run_dir, self.args.timeout)
                prev_version, prev_sha = previous
                problems = [
                    p
                    for p in (check_agent_release(h, prev_version, prev_sha) for h in hosts)
                    if p is not None
                ]
                if problems and not err:
                    err = f"{len(problems)} host(s) wrong: {'; '.join(problems[:3])}"
                print(
                    f"  rollback N={n} run {rep}: wall {wall:.2f} s  ctrl CPU {ctl:.2f} s  "
                    f"host CPU {host_cpu:.2f} s  {'FAILED: ' + err if err else 'ok'}",
                    flush=True,
                )
                out.append(
                    {
                        "hosts": n,
                        "wall_s": wall,
                        "controller_cpu_s": ctl,
                        "host_cpu_s": host_cpu,
                        "error": err,
                    }
                )
                # The rolled-back-to release is current again: the next install's "previous".
                version, sha = prev_version, prev_sha
            previous = (version, sha)
        return out


def print_profile(directory: Path) -> None:
    """The top of the cumulative profile over every fleetwave run."""
    files = sorted(directory.glob("*.prof"))
    if not files:
        return
    stats = pstats.Stats(str(files[0]))
    for f in files[1:]:
        stats.add(str(f))
    print(f"\n## cProfile of fleetwave's controller over {len(files)} runs (cumulative)")
    stats.sort_stats("cumulative").print_stats(30)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = lab_unavailable_reason()
    if reason is not None:
        print(f"bench_deploy: {reason}", file=sys.stderr)
        return 2
    max_n = max(
        [*args.host_list, args.rollback_hosts if args.rollback or args.rollback_only else 0]
    )
    work = Path(tempfile.mkdtemp(prefix="fw-bench-", dir="/var/tmp"))
    work.chmod(0o755)  # the hosts' non-root user reads the agent's trusted key from here
    started = dt.datetime.now(dt.UTC)
    results: list[RunResult] = []
    rollbacks: list[dict[str, float | str]] = []
    try:
        with sigterm_as_interrupt():
            (work / "keys").mkdir(mode=0o755)
            private, public = generate_keypair(work / "keys", "bench")
            public.chmod(0o644)
            print(f"building {max_n} namespace hosts...", flush=True)
            with BenchFleet(max_n, work, public) as fleet:
                fleet.prepare_tools([t for t in args.tool_list if t not in FLEETWAVE_TOOLS])
                if args.agent_mode == "resident":
                    print("starting a resident agent in every host...", flush=True)
                    fleet.start_resident_agents()
                bench = Bench(args, fleet, work, private)
                try:
                    if not args.rollback_only:
                        bench.deploy_matrix()
                    if args.rollback or args.rollback_only:
                        rollbacks = bench.rollback_bench()
                finally:
                    results = bench.results
                    bench.close()
    except BenchError as exc:
        print(f"bench_deploy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_deploy: interrupted; fleet torn down", file=sys.stderr)
        return 130
    finally:
        if args.keep_work:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(args, started, results, rollbacks)
    return 0


def report(
    args: argparse.Namespace,
    started: dt.datetime,
    results: list[RunResult],
    rollbacks: list[dict[str, float | str]],
) -> None:
    """Print the tables and write the JSON result file."""
    import statistics

    summaries = summarise(results)
    command = "python bench/bench_deploy.py " + " ".join(sys.argv[1:])
    print(f"\n# Fleet deploy benchmark, {started:%Y-%m-%d %H:%M} UTC")
    print(f"fleetwave agent mode: {args.agent_mode}")
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"command: {command}\n")
    if summaries:
        print(markdown(summaries))
        print("## Targets\n")
        print("\n".join(targets(summaries)))
    good = [float(r["wall_s"]) for r in rollbacks if not r["error"]]
    if rollbacks:
        median = statistics.median(good) if good else float("nan")
        print(
            f"\n## Rollback\n\n{rollbacks[0]['hosts']} hosts: median {median:.2f} s over "
            f"{len(good)} runs ({len(rollbacks) - len(good)} failed); "
            f"target < {ROLLBACK_100_S:g} s: {'met' if median < ROLLBACK_100_S else 'NOT met'}"
        )
    if args.profile is not None:
        print_profile(args.profile)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = args.json or RESULTS_DIR / f"deploy-{started:%Y%m%dT%H%M%S}.json"
    out.write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "command": command,
                "agent_mode": args.agent_mode,
                "machine": {
                    "node": platform.node(),
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                },
                "runs": [r.as_json() for r in results],
                "summary": [s.as_json() for s in summaries],
                "targets": targets(summaries) if summaries else [],
                "rollback": rollbacks,
            },
            indent=1,
        )
    )
    print(f"\nresults: {out}")


if __name__ == "__main__":
    sys.exit(main())
