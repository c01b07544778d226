"""Benchmark: anomaly detection against a static-threshold alarm, on labelled
deployments of the demo app on the namespace lab, under client load through HAProxy.

Run as root from the project venv (not part of the test suite)::

    python bench/bench_detection.py --quick        # 4 healthy/noisy + 9 faults (~16 min)
    python bench/bench_detection.py                # 20 healthy/noisy + 9 faults (~35 min)
    python bench/bench_detection.py --healthy 6 --only errors-0-2,zero-traffic

Every deployment is a real ``fleetwave deploy`` (a subprocess) of a demo-app release
whose ``behaviour.json`` carries the scenario, on 5 hosts (az1: one-box + 2, az2: 2),
with no rollback alarm: only the detector can roll back. The static baseline (error
ratio > 1% for 3 of 5 periods; p99 > 1.5x its pre-deployment value, both on the
stage's hosts) is configured as two alarms that nothing acts on: the watcher
evaluates them every round on the same agent snapshots as the detector, and the
event log (``AlarmsEvaluated``) says when they would have fired. Time is scaled
down (see ``SETTINGS``): a 5 s evaluation interval, bakes of 10-20 s, the latent
fault 20 s after activation instead of 2 min.

Per scenario: detected or false rollback, fault onset to rollback start (seconds and
intervals), onset to a fully rolled-back fleet, hosts touched before the rollback,
and the static baseline's first ALARM after onset. ``--json FILE`` keeps the raw rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "controller"), str(REPO / "agent")]

from tests.e2e.test_watch_e2e import agent_yaml  # noqa: E402
from tests.engine.test_e2e_lab import Lab  # noqa: E402
from tests.lab import Fleet, LabConfig, lab_unavailable_reason  # noqa: E402
from tests.lab.load import SteadyLoad  # noqa: E402

INTERVAL_S = 5.0
HOSTS = 5
WORKERS = 6
#: The app's normal latency (ms): base, uniform +-jitter, exponential tail.
NORMAL: dict[str, Any] = {"base_latency_ms": 25, "jitter_ms": 4, "tail_ms": 6}
LATENT_S = 20.0  # the latent fault: 2 min scaled down
#: The pipeline's watching and anomaly settings (time scaled down, see the docs).
SETTINGS: dict[str, Any] = {
    "watch": {"source": "agent", "interval": f"{INTERVAL_S:g}s"},
    "anomaly": {
        "warmup": "10s",
        "metrics": {"restarts": {"min_samples": 10}, "memory": {"min_samples": 6}},
    },
    "onebox": {"bake": {"time": "20s"}},
    "stage_bake": {"time": "10s"},
    "override": {"allow": ["blockers", "bakes", "windows"]},
}
STATIC = ("static-5xx", "static-p99")
RUN_DIR = "/srv/fleetwave/agent/run"  # the agent root's run dir, where the pid file is


def bench_agent_yaml(host: Any) -> str:
    """The watch e2e agent config, plus the app's process (for RSS, CPU, restarts)."""
    data = json.loads(agent_yaml(host))
    data["app"]["process"] = {"pid_file": f"{RUN_DIR}/demo-app.pid"}
    return json.dumps(data)


@dataclass(frozen=True)
class Scenario:
    name: str
    behaviour: dict[str, Any]  # the new release, on top of NORMAL
    faulty: bool
    onset_s: float = 0.0  # fault starts this long after the host's activation
    old: dict[str, Any] | None = None  # the old release, installed first (detector off)
    load_change: bool = False  # double the load during the deployment
    fault_hosts: tuple[str, ...] = ()  # the fault applies only here (onset: their return)
    bake: dict[str, Any] = field(default_factory=dict)  # pipeline keys for this run


FAULTS = (
    Scenario("errors-0-2", {"error_rate": 0.02}, True),
    Scenario("errors-1-5", {"error_rate": 0.05}, True, old={"error_rate": 0.01}),
    # The tail test needs 1000 requests a side: at ~30 requests/s a host, a longer bake.
    Scenario(
        "p99+50",
        {"slow_share": 0.03, "slow_ms": 40},
        True,
        bake={"onebox": {"bake": {"time": "60s"}}},
    ),
    Scenario("p50+20", {"latency_ms": 6}, True),
    Scenario("zero-traffic", {"no_traffic": True}, True),
    Scenario("crash-loop", {"crash_after_s": 3}, True),
    Scenario(
        "memory-leak",
        {"leak_mb_per_s": 4, "leak_cap_mb": 400},
        True,
        # Mann-Kendall needs ~10 points after the warm-up to reach its threshold.
        bake={"onebox": {"bake": {"time": "90s"}}},
    ),
    Scenario(
        "latent-errors",
        {"error_rate": 0.05, "fault_after_s": LATENT_S},
        True,
        onset_s=LATENT_S,
        bake={"onebox": {"bake": {"time": "45s"}}},
    ),
    Scenario("one-az", {"error_rate": 0.05}, True, fault_hosts=("h04", "h05")),
)
GOOD = Scenario("good", {}, False)
NOISY = Scenario("noisy", {"jitter_ms": 8}, False, load_change=True)


@dataclass
class Row:
    scenario: str
    faulty: bool
    result: str = ""
    reason: str = ""
    rolled_back: bool = False
    by_detector: bool = False
    onset: float | None = None
    rollback_at: float | None = None
    finished_at: float | None = None
    touched: list[str] = field(default_factory=list)
    static_at: float | None = None  # the static baseline's first ALARM (after onset)
    static_alarm: str = ""
    static_false: bool = False  # the static baseline fired on a healthy deployment
    detect_s: float | None = None
    restored_s: float | None = None
    static_s: float | None = None
    wall_s: float = 0.0


class Bench:
    def __init__(self, fleet: Fleet, work: Path) -> None:
        self.lab = Lab(fleet, work)
        self.fleet = fleet
        self.version = 0
        self.events = work / "state" / "events.jsonl"

    # -- the pipeline -----------------------------------------------------------------

    def configure(self, p99_threshold: float, detector: bool, extra: dict[str, Any]) -> None:
        data = json.loads(self.lab.pipeline.read_text())
        for key in ("anomaly", "alarms", "onebox", "stage_bake"):
            data.pop(key, None)
        data.update(SETTINGS)
        data["alarms"] = [
            {"name": "static-5xx", "metric": "errors", "denominator": "requests",
             "comparison": ">", "threshold": 0.01, "period": f"{INTERVAL_S:g}s",
             "evaluation_periods": 5, "datapoints_to_alarm": 3, "scope": "stage",
             "min_samples": 20},
            {"name": "static-p99", "metric": "latency", "statistic": "p99", "comparison": ">",
             "threshold": round(p99_threshold, 6), "period": f"{INTERVAL_S:g}s",
             "evaluation_periods": 1, "datapoints_to_alarm": 1, "scope": "stage"},
        ]  # fmt: skip
        data.update(extra)
        if not detector:
            data["anomaly"] = False
        self.lab.pipeline.write_text(json.dumps(data))

    def package(self, behaviour: dict[str, Any]) -> tuple[str, Path]:
        self.version += 1
        version = f"{self.version}.0.0"
        return version, self.lab.package(version, **{**NORMAL, **behaviour})

    # -- measuring --------------------------------------------------------------------

    def p99_before(self, seconds: float = 8.0) -> float:
        """The fleet's p99 (bucket interpolation) over ``seconds`` of the current load,
        read from every demo app's own /metrics: the static alarm's pre-deployment value."""
        first = self._buckets()
        time.sleep(seconds)
        last = self._buckets()
        inc = {le: last.get(le, 0.0) - first.get(le, 0.0) for le in last}
        return _quantile(0.99, inc)

    def _buckets(self) -> dict[float, float]:
        total: dict[float, float] = {}
        for h in self.fleet.hosts:
            with contextlib.suppress(OSError):
                url = f"http://{h.ip}:8080/metrics"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    text = resp.read().decode()
                for line in text.splitlines():
                    if line.startswith("demo_http_request_duration_seconds_bucket"):
                        le = line.split('le="', 1)[1].split('"', 1)[0]
                        bound = float("inf") if le == "+Inf" else float(le)
                        total[bound] = total.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
        return total

    def deploy(self, scenario: Scenario, *, detector: bool = True) -> Row:
        """One deployment of ``scenario``'s release under load; the measured row."""
        behaviour = dict(scenario.behaviour)
        if scenario.fault_hosts:
            behaviour["fault_hosts"] = list(scenario.fault_hosts)
        _, pkg = self.package(behaviour)
        row = Row(scenario.name, scenario.faulty)
        with self.fleet.load(workers=WORKERS, pause_s=0.005, max_seconds=400) as load:
            load.wait_requests(100, timeout=60)
            p99 = self.p99_before()
            self.configure(1.5 * p99, detector, scenario.bake)
            extra: SteadyLoad | None = None
            timer = None
            if scenario.load_change:
                extra = self.fleet.load(workers=WORKERS, pause_s=0.005, max_seconds=400)
                timer = threading.Timer(25.0, extra.start)
                timer.start()
            start = time.time()
            proc = self.lab.deploy(pkg)
            row.wall_s = time.time() - start
            if timer is not None:
                timer.cancel()
            if extra is not None:
                with contextlib.suppress(RuntimeError):
                    extra.stop()
        dep = json.loads(self.lab.cli("status", "--json", check=True).stdout)["deployment"]
        self._measure(row, scenario, dep["id"], start)
        row.result = dep.get("result") or f"exit {proc.returncode}"
        if row.rolled_back is False and proc.returncode != 0:
            row.reason = (proc.stderr or proc.stdout)[-300:]
        self.lab.wait_all_up()
        return row

    def _measure(self, row: Row, scenario: Scenario, dep: str, start: float) -> None:
        events = [
            e
            for e in (json.loads(line) for line in self.events.read_text().splitlines())
            if e.get("deployment_id") == dep
        ]
        for e in events:
            rolling = e["event"] == "DeploymentChanged" and e["state"] == "rolling_back"
            if rolling and row.rollback_at is None:
                row.rollback_at = e["at"]
                row.reason = e.get("reason") or ""
            if e["event"] == "DeploymentChanged" and e["state"] == "finished":
                row.finished_at = e["at"]
        row.rolled_back = row.rollback_at is not None
        row.by_detector = row.reason.startswith("anomaly detected")
        cut = row.rollback_at if row.rollback_at is not None else float("inf")
        returns = [
            e for e in events
            if e["event"] == "HostStep" and e["step"] == "return" and e["outcome"] == "ok"
            and e["at"] < cut and (not scenario.fault_hosts or e["host"] in scenario.fault_hosts)
        ]  # fmt: skip
        if scenario.faulty and returns:
            row.onset = returns[0]["at"] + scenario.onset_s
        row.touched = sorted(
            {
                e["host"]
                for e in events
                if e["event"] == "HostStep" and e["step"] == "drain" and e["outcome"] == "start"
                and e["at"] < cut
            }
        )  # fmt: skip
        since = row.onset if row.onset is not None else start
        for e in events:
            if e["event"] != "AlarmsEvaluated" or e["at"] < since:
                continue
            fired = [
                r for r in e["readings"]
                if r["alarm"] in STATIC and r["state"] == "ALARM" and r["scope"] != "fleet"
            ]  # fmt: skip
            if fired:
                row.static_at, row.static_alarm = e["at"], fired[0]["alarm"]
                break
        row.static_false = not scenario.faulty and row.static_at is not None
        if row.onset is not None:
            if row.rollback_at is not None:
                row.detect_s = round(max(0.0, row.rollback_at - row.onset), 1)
                if row.finished_at is not None:
                    row.restored_s = round(row.finished_at - row.onset, 1)
            if row.static_at is not None:
                row.static_s = round(max(0.0, row.static_at - row.onset), 1)


def _quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus' histogram_quantile over cumulative ``buckets`` (le -> count)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return 0.0
    rank, lower, below = q * total, 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = le, count
    return lower


def _fmt(v: float | None, unit: str = "s") -> str:
    return "-" if v is None else f"{v:g}{unit}"


def report(rows: list[Row]) -> str:
    lines = [
        "| scenario | result | detector | onset->rollback | intervals | onset->restored "
        "| hosts touched | static baseline (onset->ALARM) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.faulty:
            verdict = "caught" if r.by_detector else ("rolled back (other)" if r.rolled_back
                                                       else "MISSED")  # fmt: skip
            static = (f"{r.static_alarm} after {_fmt(r.static_s)}" if r.static_at is not None
                      else "no ALARM before the rollback")  # fmt: skip
        else:
            verdict = "FALSE ROLLBACK" if r.rolled_back else "passed"
            static = "FALSE ALARM" if r.static_false else "quiet"
        iv = None if r.detect_s is None else round(r.detect_s / INTERVAL_S, 1)
        lines.append(
            f"| {r.scenario} | {r.result} | {verdict} | {_fmt(r.detect_s)} | {_fmt(iv, '')} "
            f"| {_fmt(r.restored_s)} | {len(r.touched)} ({', '.join(r.touched)}) | {static} |"
        )
    healthy = [r for r in rows if not r.faulty]
    faults = [r for r in rows if r.faulty]
    delays = [r.detect_s for r in faults if r.by_detector and r.detect_s is not None]
    static_delays = [r.static_s for r in faults if r.static_s is not None]
    lines += [
        "",
        f"healthy/noisy deployments: {len(healthy)}, false rollbacks: "
        f"{sum(r.rolled_back for r in healthy)} (static baseline false alarms: "
        f"{sum(r.static_false for r in healthy)})",
        f"faults: {len(faults)}, caught by the detector: {sum(r.by_detector for r in faults)}, "
        f"static baseline ALARM by the detector's rollback: {len(static_delays)}",
        f"median onset->rollback: {_fmt(statistics.median(delays) if delays else None)} "
        f"({_fmt(statistics.median(delays) / INTERVAL_S if delays else None, ' intervals')}); "
        f"static baseline median onset->ALARM where it fired: "
        f"{_fmt(statistics.median(static_delays) if static_delays else None)}",
        "faults present from activation caught at the one-box with one host touched: "
        f"{sum(1 for r in faults if r.by_detector and r.onset is not None and len(r.touched) == 1 and r.scenario not in ('latent-errors', 'one-az'))}"  # noqa: E501
        f" of {sum(1 for r in faults if r.scenario not in ('latent-errors', 'one-az'))}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 healthy/noisy runs, not 20")
    ap.add_argument("--healthy", type=int, default=None, help="healthy/noisy runs (default 20)")
    ap.add_argument("--only", default="", help="comma-separated fault scenarios to run")
    ap.add_argument("--json", type=Path, default=None, help="write the raw rows here")
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/fw-bench-detection"))
    args = ap.parse_args(argv)
    reason = lab_unavailable_reason()
    if reason is not None:
        print(f"bench_detection: {reason}", file=sys.stderr)
        return 2
    healthy = args.healthy if args.healthy is not None else (4 if args.quick else 20)
    faults = [s for s in FAULTS if not args.only or s.name in args.only.split(",")]
    work = args.work / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    rows: list[Row] = []
    began = time.time()
    with Fleet(LabConfig(hosts=HOSTS, agent_config=bench_agent_yaml)) as fleet:
        bench = Bench(fleet, work)
        bench.configure(1.0, False, {})
        _, first = bench.package({})
        bench.lab.deploy(first, check=True)  # the first install: no app ran before
        bench.lab.wait_all_up()
        plan: list[Scenario] = []
        for i in range(healthy):
            plan.append(GOOD if i % 2 == 0 else NOISY)
            if faults and i % max(1, healthy // len(faults) or 1) == 0:
                plan.append(faults.pop(0))
        plan += faults
        for n, scenario in enumerate(plan, 1):
            if scenario.old is not None:
                bench.deploy(Scenario("setup", scenario.old, False), detector=False)
            row = bench.deploy(scenario)
            rows.append(row)
            print(f"[{n}/{len(plan)} {time.time() - began:.0f}s] {scenario.name}: "
                  f"{row.result} {row.reason[:120]!r} detect={row.detect_s} "
                  f"static={row.static_s} touched={row.touched}", flush=True)  # fmt: skip
            if scenario.old is not None:
                bench.deploy(Scenario("setup", {}, False), detector=False)
    print()
    print(report(rows))
    print(f"\nwall time: {time.time() - began:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
