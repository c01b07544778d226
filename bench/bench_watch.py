"""Watching benchmarks: how fast an alarm rolls a deployment back, and what watching
1,000 hosts costs the controller.

**detect**: the real ``Runner`` and ``Watcher`` with the real agent source, polling
real agents (``RpcServer`` + ``Agent``, each reading its own access log) over real
SSH (an in-process fleet); the runner's own install/drain seams are in-memory fakes
(the fault comes from the metrics, not from the install). A traffic thread writes 50
requests/s per host; at ``T0`` every answer turns 500. The rollback alarm is an error
ratio with period P and M = N, so the M-th breaching datapoint (a full period of
faulty data each) exists at ``T0 + M*P``. Measured: from then to the first rollback
action the runner journals (its intent, written before the drain starts). Target:
at most one evaluation interval + 1 s.

**cost**: 1,000 in-process hosts (real agent code, in a child process so the figures
are the controller's alone) watched by ``AgentSource`` + ``Watcher`` with the lab
pipeline's alarms at a 10 s interval. Measured over the steady rounds (after the first,
which opens the sessions): controller CPU per second of wall time, and RSS above the
process's RSS before the watcher existed. Targets: <= 5 % of one core, <= 50 MB.
Before the rounds, every host's store is filled with ``history_s`` of synthetic
snapshots of the real agent's shape (host metrics plus the app's request counters and
latency histogram) at the interval, so the figures are those of full stores; the
store's own bytes per host are measured with tracemalloc on 100 such stores, for the
lab pipeline's retention and for 1 h bakes. ``--bake S`` runs the rounds with the
retention of a pipeline whose longest bake is S seconds (stored as ``cost_bake_Ss``).

    python bench/bench_watch.py                    # both, 5 detect runs, 6 cost rounds
    python bench/bench_watch.py --only detect --runs 3
    python bench/bench_watch.py --only cost --hosts 1000 --rounds 6
    python bench/bench_watch.py --only cost --hosts 1000 --rounds 6 --bake 3600

Writes ``bench/results/watch.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import asyncssh

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "controller"), str(ROOT / "agent"), str(ROOT)]

from tests.engine.fakes import FakeBalancer, FakeFleet  # noqa: E402
from tests.engine.sim import make_plan  # noqa: E402
from tests.inproc.agents import make_package  # noqa: E402
from tests.inproc.fleet import start_fleet  # noqa: E402
from tests.watch.conformance import access_line  # noqa: E402

from bench.bench_scale import start_fleet_process  # noqa: E402
from fleetwave.cli.deploy_build import agent_storage  # noqa: E402
from fleetwave.config.alarm_expr import parse  # noqa: E402
from fleetwave.config.alarms import (  # noqa: E402
    AlarmDef,
    Comparison,
    CompositeAlarm,
    MetricAlarm,
    MetricSpec,
    ScopeKind,
    Statistic,
)
from fleetwave.config.pipeline import load_pipeline  # noqa: E402
from fleetwave.config.settings import SshSettings  # noqa: E402
from fleetwave.planning.model import HostRef, Plan  # noqa: E402
from fleetwave.rollout import initial_state  # noqa: E402
from fleetwave.rollout.gates import AlarmBlockerGate, BakeGate, Gates  # noqa: E402
from fleetwave.rollout.journal import Journal  # noqa: E402
from fleetwave.rollout.runner import DeploymentInfo, Runner, SystemClock  # noqa: E402
from fleetwave.rollout.types import Finish  # noqa: E402
from fleetwave.rollout.watching import Watcher  # noqa: E402
from fleetwave.transport.ssh import SshTransport  # noqa: E402
from fleetwave.watch.agent_source import AgentSource, parse_snapshot  # noqa: E402
from fleetwave.watch.ring import HostRing, Retention, Snapshot, retention_for  # noqa: E402
from fleetwave_agent.config import AccessLogSource, AgentConfig, AppConfig, ExporterConfig  # noqa: E402
from fleetwave_agent.operations import Agent  # noqa: E402
from fleetwave_agent.rpc import RpcServer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "watch.json"
SETTINGS = SshSettings(user="deploy", connect_timeout_s=30.0, command_timeout_s=30.0)

# ---------------------------------------------------------------------------- detect


class Traffic:
    """Appends one access-log line per host every 20 ms; 500s once ``bad`` is set."""

    def __init__(self, logs: list[Path], max_seconds: float) -> None:
        self.logs = logs
        self.bad = threading.Event()
        self.bad_at = 0.0
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def turn_bad(self) -> None:
        self.bad_at = time.time()
        self.bad.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        handles = [log.open("a") for log in self.logs]
        try:
            while not self._stop.wait(0.02) and time.monotonic() < self._deadline:
                line = access_line(500 if self.bad.is_set() else 200, 0.01)
                for fh in handles:
                    fh.write(line)
                    fh.flush()
        finally:
            for fh in handles:
                fh.close()


def _ratio_alarm(name: str, period_s: float, m: int) -> MetricAlarm:
    spec = MetricSpec("errors", Statistic.RATIO, denominator="requests")
    return MetricAlarm(
        name,
        spec,
        Comparison.GT,
        0.1,
        period_s=period_s,
        evaluation_periods=m,
        datapoints_to_alarm=m,
        scope=ScopeKind.FLEET,
        min_samples=10,
    )


def _renamed(plan: Plan, refs: list[HostRef]) -> list[HostRef]:
    """The fleet's addresses under the plan's host names."""
    return [
        dataclasses.replace(ref, name=h.name) for h, ref in zip(plan.hosts(), refs, strict=True)
    ]


async def detect_once(work: Path, *, interval_s: float, period_s: float, m: int) -> dict[str, Any]:
    hosts = 3
    logs = [work / f"access-{i}.log" for i in range(hosts)]
    for log in logs:
        log.touch()
    it = iter(logs)

    def make_agent(root: Path) -> RpcServer:
        config = AgentConfig(
            root=root,
            app=AppConfig(metrics=AccessLogSource(next(it))),
            exporter=ExporterConfig(health_interval_s=3600.0),
        )
        return RpcServer(Agent(config))

    fleet = await start_fleet(hosts, work / "hosts", make_agent)
    transport = SshTransport(
        SETTINGS, client_keys=[fleet.client_key], known_hosts=fleet.known_hosts()
    )
    traffic = Traffic(logs, max_seconds=120.0)
    try:
        plan = make_plan([[[hosts]]], bake_s=600.0)
        source = AgentSource(transport, _renamed(plan, fleet.refs()), clock=time.time)
        alarms: dict[str, AlarmDef] = {
            "svc-5xx": _ratio_alarm("svc-5xx", period_s, m),
            "rb": CompositeAlarm("rb", parse('ALARM("svc-5xx")')),
        }
        watcher = Watcher(
            plan, alarms, source=source, poller=source, interval_s=interval_s,
            clock=time.time, rollback_alarm="rb",
        )  # fmt: skip
        journal = Journal(work / "journal.db")
        journal.create_deployment(
            deployment_id="d1", pipeline="bench", environment="bench", package_id="p",
            package_path="/p", plan={}, now=time.time(), controller="bench",
        )  # fmt: skip
        gates = Gates(
            blockers=(AlarmBlockerGate(watcher, (), "rb"),),
            bake=(BakeGate(watcher, poll_s=interval_s),),
        )
        runner = Runner(
            DeploymentInfo("d1", plan, Path("/p"), "p", 5.0), journal=journal,
            transport=FakeFleet(plan.hosts()), balancers={"lb": FakeBalancer()}, gates=gates,
            clock=SystemClock(), request_poll_s=None, watcher=watcher,
        )  # fmt: skip
        traffic.start()
        task = asyncio.create_task(runner.run())
        # Good traffic for N periods and more first, so the alarm is OK on real data;
        # then the fault, at a random phase of the watcher's interval.
        await asyncio.sleep((m + 2) * period_s + random.uniform(0.0, interval_s))
        traffic.turn_bad()
        fin = await asyncio.wait_for(task, 120)
        assert isinstance(fin, Finish), fin  # not stopped early
        steps = journal.steps("d1")
        journal.close()
    finally:
        traffic.stop()
        await transport.close()
        await fleet.close()
    fired = next(
        s for s in steps if s.kind == "event" and s.name == "AlarmChanged"
        and s.payload.get("state") == "ALARM"
    )  # fmt: skip
    action = next(
        s for s in steps if s.kind == "intent" and s.seq > fired.seq
        and s.name in ("DrainHost", "RollbackHost")
    )  # fmt: skip
    t_m = traffic.bad_at + m * period_s
    return {
        "result": str(fin.result.value),
        "from_mth_datapoint_s": round(action.at - t_m, 3),
        "from_fault_s": round(action.at - traffic.bad_at, 3),
        "alarm_to_action_s": round(action.at - fired.at, 3),
    }


def bench_detect(runs: int, interval_s: float, period_s: float, m: int) -> dict[str, Any]:
    rows = []
    for run in range(runs):
        with tempfile.TemporaryDirectory(prefix="fw-bench-watch-") as tmp:
            row = asyncio.run(detect_once(Path(tmp), interval_s=interval_s, period_s=period_s, m=m))
        rows.append(row)
        print(f"detect run {run + 1}: {row}", flush=True)
    med = statistics.median(r["from_mth_datapoint_s"] for r in rows)
    target = interval_s + 1.0
    print(
        f"detect: median {med:.2f} s from the M-th breaching datapoint to the first rollback "
        f"action (target <= {target:.1f} s: {'met' if med <= target else 'NOT met'})"
    )
    return {
        "interval_s": interval_s,
        "period_s": period_s,
        "m_of_n": [m, m],
        "runs": rows,
        "median_from_mth_datapoint_s": med,
        "median_from_fault_s": statistics.median(r["from_fault_s"] for r in rows),
        "worst_from_mth_datapoint_s": max(r["from_mth_datapoint_s"] for r in rows),
        "target_s": target,
        "met": max(r["from_mth_datapoint_s"] for r in rows) <= target,
    }


# ------------------------------------------------------------------------------ cost


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


_LE = [*(str(b) for b in (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)), "+Inf"]


def synthetic(at: float, n: int) -> Snapshot:
    """The ``n``-th snapshot of a busy host, shaped like the real agent's (every
    standard sample, the app's 12-bucket latency histogram)."""
    req = 30.0 * 10 * n
    counts = [req * f for f in (0.02, 0.1, 0.3, 0.6, 0.85, 0.95, 0.98, 0.99, 1, 1, 1, 1)]
    data: dict[str, Any] = {
        "v": 1,
        "release": "1",
        "counters": {
            "fleetwave_agent_app_requests_total": req,
            "fleetwave_agent_app_request_errors_total": req * 0.001,
            "fleetwave_agent_app_log_errors_total": float(n // 7),
            "fleetwave_agent_app_cpu_seconds_total": 0.2 * 10 * n,
            "fleetwave_agent_host_cpu_seconds_total": 0.5 * 10 * n,
        },
        "gauges": {
            "fleetwave_agent_app_resident_memory_bytes": [1.5e8 + n],
            "fleetwave_agent_app_up": [1.0],
            "fleetwave_agent_health_check_up": [1.0, 1.0],
            "fleetwave_agent_disk_free_ratio": [0.4],
        },
        "histograms": {
            "fleetwave_agent_app_request_duration_seconds": {
                "le": _LE, "counts": counts, "sum": req * 0.03,
            }
        },
    }  # fmt: skip
    return parse_snapshot(data, at)


def prefill(ring: HostRing, history_s: float, interval_s: float, until: float) -> None:
    rows = int(history_s // interval_s)
    for n in range(rows):
        ring.ingest(synthetic(until - (rows - n) * interval_s, n))


def store_bytes(keep: frozenset[str], retention: Retention, interval_s: float) -> tuple[int, int]:
    """Bytes per host of a full store (tracemalloc over 100 stores)."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    rings = [HostRing(keep, retention) for _ in range(100)]
    for ring in rings:
        prefill(ring, retention.history_s, interval_s, time.time())
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    rows = len(rings[0])
    del rings
    return round(used / 100), rows


async def watch_rounds(
    info: dict[str, Any], known_hosts: str, rounds: int, interval_s: float, bake_s: float
) -> dict[str, Any]:
    pipeline = load_pipeline(ROOT / "examples" / "lab" / "pipeline.yaml")
    pipeline = dataclasses.replace(
        pipeline, watch=dataclasses.replace(pipeline.watch, interval_s=interval_s)
    )
    hosts = len(info["hosts"])
    # The stores' retention follows the bakes: twice the longest (see watch/ring.py).
    plan = make_plan([[[hosts]]], bake_s=bake_s)
    keep, retention = agent_storage(pipeline, plan, detecting=pipeline.anomaly.enabled)
    per_host, rows = store_bytes(keep, retention, interval_s)
    # The lab pipeline with 1 h bakes (a 2 h 10 min history): fine_s less its 2 intervals.
    long = retention_for(retention.fine_s - 2 * interval_s, 3600.0, interval_s)
    per_host_3h, rows_3h = store_bytes(keep, long, interval_s)
    print(
        f"store: {len(keep)} samples kept, {retention}: {rows} rows, {per_host} B/host; "
        f"3 h history: {rows_3h} rows, {per_host_3h} B/host",
        flush=True,
    )
    refs = [
        HostRef(name, addr, "bench", "bench-a", ssh_port=port) for name, addr, port in info["hosts"]
    ]
    rss0 = _rss_mb()
    transport = SshTransport(
        dataclasses.replace(SETTINGS, concurrency=200),
        client_keys=[asyncssh.read_private_key(str(info["client_key"]))],
        known_hosts=asyncssh.import_known_hosts(known_hosts),
    )
    source = AgentSource(
        transport, _renamed(plan, refs), clock=time.time, timeout_s=interval_s,
        keep=keep, retention=retention,
    )  # fmt: skip
    cpu_fill = _cpu_s()
    until = time.time() - interval_s
    for series in source._series.values():
        prefill(series.ring, retention.history_s, interval_s, until)
    cpu_fill = _cpu_s() - cpu_fill
    rss_filled = _rss_mb()
    watcher = Watcher(
        plan, pipeline.alarms, source=source, poller=source, interval_s=interval_s,
        clock=time.time, rollback_alarm=pipeline.rollback_alarm,
    )  # fmt: skip
    state = initial_state(plan)
    per_round = []
    failed = []
    started_cpu = started_wall = 0.0
    for n in range(rounds + 1):
        wall0, cpu0 = time.perf_counter(), _cpu_s()
        if n == 1:
            started_cpu, started_wall = cpu0, wall0
        assert source is watcher.poller
        await watcher.tick(state, time.time())
        failed.append(sum(1 for s in source._series.values() if not s.ring))
        busy_wall, busy_cpu = time.perf_counter() - wall0, _cpu_s() - cpu0
        per_round.append({"wall_s": round(busy_wall, 3), "cpu_s": round(busy_cpu, 3)})
        print(f"cost round {n}: {per_round[-1]}", flush=True)
        await asyncio.sleep(max(0.0, wall0 + interval_s - time.perf_counter()))
    steady_cpu = _cpu_s() - started_cpu
    steady_wall = time.perf_counter() - started_wall
    rss1 = _rss_mb()
    await transport.close()
    steady = per_round[1:]
    return {
        "hosts": hosts,
        "interval_s": interval_s,
        "rounds": rounds,
        "alarms": sorted(pipeline.alarms),
        "first_round": per_round[0],
        "median_round_cpu_s": statistics.median(r["cpu_s"] for r in steady),
        "median_round_wall_s": statistics.median(r["wall_s"] for r in steady),
        "cpu_share_of_one_core": round(steady_cpu / steady_wall, 4),
        "extra_rss_mb": round(rss1 - rss0, 1),
        "rss_of_full_stores_mb": round(rss_filled - rss0, 1),
        "prefill_cpu_s": round(cpu_fill, 2),
        "kept_samples": sorted(keep),
        "retention": dataclasses.asdict(retention),
        "store_rows_per_host": rows,
        "store_bytes_per_host": per_host,
        "store_total_mb": round(per_host * hosts / 1e6, 2),
        "store_3h_rows_per_host": rows_3h,
        "store_3h_bytes_per_host": per_host_3h,
        "store_3h_total_mb": round(per_host_3h * hosts / 1e6, 2),
        "rows_per_host_after": statistics.median(len(s.ring) for s in source._series.values()),
        "hosts_without_data": failed[-1],
    }


def bench_cost(hosts: int, rounds: int, interval_s: float, bake_s: float) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 3 * hosts + 256)), hard))
    with tempfile.TemporaryDirectory(prefix="fw-bench-watch-") as tmp:
        work = Path(tmp)
        package = make_package(work / "pkg", payload_bytes=1024)
        fleet_dir = work / "fleet"
        fleet_dir.mkdir()
        fleet = start_fleet_process(hosts, fleet_dir, package.public_key)
        try:
            info = json.loads((fleet_dir / "fleet.json").read_text())
            known = Path(info["known_hosts"]).read_text()
            out = asyncio.run(watch_rounds(info, known, rounds, interval_s, bake_s))
        finally:
            assert fleet.stdin is not None
            fleet.stdin.close()
            fleet.wait(timeout=120)
    share, rss = out["cpu_share_of_one_core"], out["extra_rss_mb"]
    out["met"] = share <= 0.05 and rss <= 50.0
    print(
        f"cost: {hosts} hosts at {interval_s:g} s: {100 * share:.2f} % of one core "
        f"(target <= 5 %), +{rss:.1f} MB RSS (target <= 50 MB), "
        f"hosts without data: {out['hosts_without_data']}; full stores: "
        f"{out['store_bytes_per_host']} B/host, {out['store_total_mb']} MB "
        f"(3 h history: {out['store_3h_bytes_per_host']} B/host, {out['store_3h_total_mb']} MB)"
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", choices=("detect", "cost"))
    parser.add_argument("--runs", type=int, default=5, help="detect runs")
    parser.add_argument("--interval", type=float, default=1.0, help="detect: watch interval")
    parser.add_argument("--period", type=float, default=2.0, help="detect: alarm period")
    parser.add_argument("--m", type=int, default=2, help="detect: M = N")
    parser.add_argument("--hosts", type=int, default=1000, help="cost: hosts")
    parser.add_argument("--rounds", type=int, default=6, help="cost: steady rounds")
    parser.add_argument("--cost-interval", type=float, default=10.0)
    parser.add_argument(
        "--bake", type=float, default=0.0, help="cost: the pipeline's longest bake, seconds"
    )
    args = parser.parse_args()
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.only in (None, "detect"):
        results["detect"] = bench_detect(args.runs, args.interval, args.period, args.m)
    if args.only in (None, "cost"):
        key = "cost" if not args.bake else f"cost_bake_{args.bake:g}s"
        results[key] = bench_cost(args.hosts, args.rounds, args.cost_interval, args.bake)
    results["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
