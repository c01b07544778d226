"""End-to-end: watching a deployment on the namespace lab, under client load through
HAProxy. ``fleetwave deploy`` runs as a subprocess against real sshd hosts, the real
agent (which reads the demo app's own ``/metrics``), the demo app with faults on cue,
HAProxy and, for the Prometheus source, a real Prometheus scraping the agents'
exporters.

Intervals are short (1 s watch interval, periods of 2-3 s, bakes of seconds) so the
set runs in a few minutes; every wait is bounded. After every test every host is UP
in HAProxy, on one release.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine.test_e2e_lab import AGENT_ROOT, DEPLOY_TIMEOUT_S, Lab
from tests.lab import Fleet, LabConfig, LabHost, lab_unavailable_reason, wait_until

pytestmark = pytest.mark.e2e

EXPORTER_PORT = 9731
ORG_LOG = "/srv/fleetwave/org-alarm.log"  # the org-wide alarm counts ERROR lines here


def agent_yaml(host: LabHost) -> str:
    """Each host's agent: app metrics from the demo app's own endpoint, error lines of
    a log the tests write to, health probed every second, an exporter on the host IP."""
    return json.dumps(
        {
            "root": AGENT_ROOT,
            "exporter": {"listen": host.ip, "port": EXPORTER_PORT, "health_interval": "1s"},
            "app": {
                "metrics": {
                    "prometheus": {
                        "url": "http://127.0.0.1:8080/metrics",
                        "requests_metric": "demo_http_requests_total",
                        "duration_metric": "demo_http_request_duration_seconds",
                        "status_label": "code",
                        "timeout": "1s",
                    }
                },
                "log": {"path": ORG_LOG},
            },
        }
    )


def ratio_alarm(name: str, scope: str, period: str = "2s") -> dict[str, Any]:
    return {
        "name": name,
        "metric": "errors",
        "denominator": "requests",
        "comparison": ">",
        "threshold": 0.2,
        "period": period,
        "evaluation_periods": 2,
        "datapoints_to_alarm": 2,
        "scope": scope,
        "min_samples": 5,
    }


#: The article's shape over the demo app: a fleet-wide 5xx alarm rolls back; the one-box
#: also watches its own 5xx ratio, a fault too small to move the fleet's.
WATCHED: dict[str, Any] = {
    "watch": {"source": "agent", "interval": "1s"},
    "alarms": [
        ratio_alarm("fleet-5xx", "fleet"),
        ratio_alarm("onebox-5xx", "stage"),
        {"name": "rb", "expression": 'ALARM("fleet-5xx")'},
        {"name": "ob", "expression": 'ALARM("rb") OR ALARM("onebox-5xx")'},
    ],
    "rollback_alarm": "rb",
    "onebox_alarm": "ob",
    "onebox": {"bake": {"time": "3s"}},
    "stage_bake": {"time": "1s"},
    "override": {"allow": ["blockers", "bakes", "windows"]},
    # These tests are about the alarms: the anomaly detector (on by default) would race
    # them to the rollback. tests/e2e/test_anomaly_e2e.py covers the detector.
    "anomaly": False,
}


class WatchLab(Lab):
    """A :class:`Lab` whose pipeline watches (``configure`` merges top-level keys)."""

    def configure(self, **keys: Any) -> None:
        data = json.loads(self.pipeline.read_text())
        data.update(keys)
        self.pipeline.write_text(json.dumps(data))

    def latest(self) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(self.cli("status", "--json", check=True).stdout)
        return status

    def explain(self, dep: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(trail entries, journal steps) of deployment ``dep``."""
        lines = self.cli("explain", dep, "--json", check=True).stdout.splitlines()
        head = json.loads(lines[0])
        return head["trail"], [json.loads(line) for line in lines[1:]]

    def settled(self, version: str) -> None:
        """Every host UP in HAProxy, all on ``version``."""
        self.wait_all_up()
        assert set(self.versions().values()) == {version}, self.versions()


@pytest.fixture
def watch_lab(tmp_path: Path) -> Iterator[Callable[..., WatchLab]]:
    """``make(prometheus=False)`` -> a 3-host WatchLab (one-box, then two AZ stages)."""
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with contextlib.ExitStack() as stack:

        def make(**fields: Any) -> WatchLab:
            fields.setdefault("hosts", 3)
            fleet = stack.enter_context(Fleet(LabConfig(agent_config=agent_yaml, **fields)))
            env = WatchLab(fleet, tmp_path)
            env.configure(**WATCHED)
            return env

        yield make


def _first_release(env: WatchLab) -> None:
    env.first_install()
    env.settled("1.0.0")


def _drained(steps: list[dict[str, Any]]) -> list[str]:
    return [s["host"] for s in steps if s["kind"] == "intent" and s["name"] == "DrainHost"]


def _installed(steps: list[dict[str, Any]]) -> set[str]:
    return {s["host"] for s in steps if s["kind"] == "intent" and s["name"] == "InstallOnHost"}


def _fired(trail: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    return [
        e
        for e in trail
        if e["type"] == "AlarmChanged" and e["role"] == role and e["state"] == "ALARM"
    ]


def _assert_onebox_rollback(env: WatchLab, proc: subprocess.CompletedProcess[str]) -> None:
    """Rolled back by the one-box alarm before any host but the one-box was drained."""
    assert proc.returncode == 20, proc.stdout + proc.stderr
    dep = env.latest()["deployment"]["id"]
    trail, steps = env.explain(dep)
    fired = _fired(trail, "onebox")
    assert fired, trail
    assert fired[0]["alarm"] == "ob"
    assert not _fired(trail, "rollback")  # the fleet-wide alarm never saw the fault
    assert len(_installed(steps)) == 1, _installed(steps)
    assert len(set(_drained(steps))) == 1, _drained(steps)
    env.settled("1.0.0")


def test_onebox_error_rate_is_rolled_back_by_the_onebox_alarm_agent_source(
    watch_lab: Callable[..., WatchLab],
) -> None:
    env = watch_lab()
    _first_release(env)
    env.configure(onebox={"bake": {"time": "30s"}})
    bad = env.package("2.0.0", error_rate=0.45)  # health still passes
    with env.fleet.load(workers=2, max_seconds=DEPLOY_TIMEOUT_S) as load:
        load.wait_requests(50)
        proc = env.deploy(bad)
        report = load.stop()
    _assert_onebox_rollback(env, proc)
    # Only the one-box's 500s reached clients: no connection ever failed.
    assert {f.what for f in report.failures} <= {"HTTP 500"}
    assert env.fleet.prometheus is None  # no Prometheus in this fleet


def _start_exporters(env: WatchLab) -> None:
    prom = env.fleet.prometheus
    assert prom is not None
    for h in env.fleet.hosts:
        # Detached, in the host's namespaces; the fleet's teardown stops it.
        h.exec(
            f"setsid -f {env.fleet.agent_path} --root {AGENT_ROOT} serve "
            f">{AGENT_ROOT}-serve.log 2>&1 </dev/null"
        )
        prom.set_targets(f"agent-{h.name}", [f"{h.ip}:{EXPORTER_PORT}"], {"host": h.name})
    prom.wait_for(
        "fleetwave_agent_app_requests_total", lambda r: len(r) == len(env.fleet.hosts), timeout=60
    )


def _load_rules(env: WatchLab, rules: dict[str, Any]) -> None:
    prom = env.fleet.prometheus
    assert prom is not None
    path = prom.work_dir / "rules.yml"
    path.write_text(json.dumps(rules))
    config = json.loads(prom.config_path.read_text())
    config["rule_files"] = [str(path)]
    prom.config_path.write_text(json.dumps(config))
    request = urllib.request.Request(f"{prom.url}/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def test_onebox_error_rate_is_rolled_back_with_the_prometheus_source_and_an_alert_rule(
    watch_lab: Callable[..., WatchLab],
) -> None:
    env = watch_lab(prometheus=True)
    prom = env.fleet.prometheus
    assert prom is not None
    _first_release(env)
    _start_exporters(env)
    prom_watch = {"source": "prometheus", "interval": "1s", "prometheus": {"url": prom.url}}
    alarms = [ratio_alarm("fleet-5xx", "fleet", "3s"), ratio_alarm("onebox-5xx", "stage", "3s")]
    env.configure(
        watch=prom_watch,
        alarms=[*alarms, *WATCHED["alarms"][2:]],
        onebox={"bake": {"time": "30s"}},
    )
    with env.fleet.load(workers=2, max_seconds=DEPLOY_TIMEOUT_S) as load:
        load.wait_requests(50)
        proc = env.deploy(env.package("2.0.0", error_rate=0.45))
        _assert_onebox_rollback(env, proc)
        # The team's own alerting rule, named by ALARM(): a host answering 5xx.
        _load_rules(
            env,
            {
                "groups": [
                    {
                        "name": "demo",
                        "rules": [
                            {
                                "alert": "DemoHost5xx",
                                "expr": "sum by (host) (rate("
                                "fleetwave_agent_app_request_errors_total[3s])) > 1",
                            }
                        ],
                    }
                ]
            },
        )
        env.configure(
            alarms=[
                {"name": "demo-5xx-rule", "prometheus_alert": "DemoHost5xx"},
                {"name": "rb", "expression": 'ALARM("demo-5xx-rule")'},
                {"name": "ob", "expression": 'ALARM("demo-5xx-rule")'},
            ]
        )
        proc = env.deploy(env.package("3.0.0", error_rate=0.45))
        load.stop()
    assert proc.returncode == 20, proc.stdout + proc.stderr
    trail, steps = env.explain(env.latest()["deployment"]["id"])
    fired = _fired(trail, "onebox") + _fired(trail, "rollback")
    assert fired, trail
    assert fired[0]["evidence"]["children"][0]["alarm"] == "demo-5xx-rule"
    assert len(_installed(steps)) == 1
    env.settled("1.0.0")


def test_a_latent_fault_that_starts_during_the_bake_rolls_back(
    watch_lab: Callable[..., WatchLab],
) -> None:
    env = watch_lab()
    _first_release(env)
    env.configure(onebox={"bake": {"time": "40s"}})
    # 45% on the one-box is ~15% fleet-wide (one host of three): above the one-box
    # alarm's 20%, below the fleet's (60% made the fleet ratio sit on its threshold).
    latent = env.package("2.0.0", error_rate=0.45, fault_after_s=8)
    with env.fleet.load(workers=2, max_seconds=DEPLOY_TIMEOUT_S) as load:
        load.wait_requests(50)
        proc = env.deploy(latent)
        load.stop()
    _assert_onebox_rollback(env, proc)
    trail, _steps = env.explain(env.latest()["deployment"]["id"])
    bake_waits = [e for e in trail if e["type"] == "GateResult" and e["purpose"] == "bake"]
    fired = _fired(trail, "onebox")[0]
    # The release had passed its health check and was baking when the fault began.
    assert bake_waits
    assert bake_waits[0]["verdict"]["kind"] == "wait"
    assert bake_waits[0]["at"] < fired["at"]


class LogWriter:
    """Appends ERROR lines to a host's log every 0.2 s until stopped (bounded)."""

    def __init__(self, path: Path, max_seconds: float = 120.0) -> None:
        self.path = path
        self.max_seconds = max_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> LogWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.wait(0.2) and time.monotonic() < deadline:
            with self.path.open("a") as fh:
                fh.write("ERROR org-wide incident\n")


def test_a_blocker_in_alarm_holds_the_stage_until_it_clears(
    watch_lab: Callable[..., WatchLab],
) -> None:
    env = watch_lab()
    org_alarm = {
        "name": "org-sev1",
        "metric": "log_errors",
        "statistic": "count",
        "comparison": ">",
        "threshold": 0,
        "period": "2s",
        "evaluation_periods": 1,
        "scope": "fleet",
        "treat_missing_data": "not_breaching",
    }
    env.configure(alarms=[*WATCHED["alarms"], org_alarm], blockers=['ALARM("org-sev1")'])
    _first_release(env)
    log = env.fleet.hosts[-1].path(ORG_LOG)
    with env.fleet.load(workers=2, max_seconds=DEPLOY_TIMEOUT_S) as load:
        load.wait_requests(50)
        proc = env.start("deploy", str(env.package("2.0.0")), "--yes")
        try:
            with LogWriter(log) as incident:
                held: dict[str, Any] = {}

                def is_held() -> bool:
                    if proc.poll() is not None:
                        out, err = proc.communicate()
                        raise AssertionError(f"ended while it should hold: {out}{err}")
                    waiting = env.latest().get("waiting", {})
                    held.update({k: w for k, w in waiting.items() if w.get("phase") == "held"})
                    return bool(held)

                wait_until(is_held, timeout=90, what="a held stage", interval=0.5)
                before = env.latest()["hosts"]
                time.sleep(3.0)  # it stays held while the alarm is in ALARM (3 rounds)
                assert proc.poll() is None  # held, not failed
                assert env.latest()["hosts"] == before  # nothing moves while held
                assert before.get("pending", 0) >= 1
                incident.stop()
            out, err = proc.communicate(timeout=DEPLOY_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
        load.stop()
    assert proc.returncode == 0, out + err
    (stage, why), *_ = held.items()
    assert "org-sev1" in why["for"]
    trail, steps = env.explain(env.latest()["deployment"]["id"])
    blockers = [
        e
        for e in trail
        if e["type"] == "GateResult" and e["purpose"] == "blockers" and e["target"] == stage
    ]
    assert blockers[0]["verdict"]["kind"] == "hold"
    cleared = next(e for e in blockers if e["verdict"]["kind"] == "ok")
    # Nothing was drained from the first hold until the alarm cleared; then it rolled.
    later = [
        s
        for s in steps
        if s["kind"] == "intent" and s["name"] == "DrainHost" and s["at"] > blockers[0]["at"]
    ]
    assert later
    assert min(s["at"] for s in later) >= cleared["at"]
    env.settled("2.0.0")


def test_a_bake_with_min_datapoints_waits_without_traffic_and_passes_with_it(
    watch_lab: Callable[..., WatchLab],
) -> None:
    env = watch_lab()
    _first_release(env)
    env.configure(onebox={"bake": {"time": "2s", "min_datapoints": 40, "metric": "requests"}})
    proc = env.start("deploy", str(env.package("2.0.0")), "--yes")
    try:
        seen: list[str] = []

        def short_of_data() -> bool:
            assert proc.poll() is None, "the bake passed without traffic"
            waiting = env.latest().get("waiting", {})
            seen[:] = [w["for"] for w in waiting.values() if "of 40 requests" in w["for"]]
            return bool(seen)

        wait_until(short_of_data, timeout=90, what="a bake short of data", interval=0.5)
        time.sleep(6.0)  # three times the bake's own time, with no traffic at all
        status = env.latest()
        assert proc.poll() is None
        assert status["hosts"].get("done") == 1, status  # only the one-box, still baking
        assert any("0 of 40 requests" in w["for"] for w in status["waiting"].values()), status
        with env.fleet.load(workers=2, max_seconds=DEPLOY_TIMEOUT_S) as load:
            out, err = proc.communicate(timeout=DEPLOY_TIMEOUT_S)
            load.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, out + err
    trail, _steps = env.explain(env.latest()["deployment"]["id"])
    bakes = [e for e in trail if e["type"] == "GateResult" and e["purpose"] == "bake"]
    passed = next(e for e in bakes if e["verdict"]["kind"] == "ok")
    record = next(r for r in passed["verdict"]["inputs"] if r.get("gate") == "bake")
    assert record["datapoints"] >= 40
    before = [e for e in bakes if e["at"] < passed["at"]]
    assert before
    assert all(e["verdict"]["kind"] != "ok" for e in before)
    env.settled("2.0.0")


def test_an_override_is_recorded_and_shown_by_explain(
    watch_lab: Callable[..., WatchLab],
) -> None:
    env = watch_lab()
    _first_release(env)
    env.configure(onebox={"bake": {"time": "10m"}}, stage_bake={"time": "10m"})
    started = time.monotonic()
    with env.fleet.load(workers=2, max_seconds=DEPLOY_TIMEOUT_S) as load:
        load.wait_requests(50)
        proc = env.cli(
            *("deploy", str(env.package("2.0.0")), "--yes", "--override", "bake"),
            *("--reason", "sev1 fix for TICKET-1", "--approver", "alice"),
        )
        report = load.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - started < 300  # the 10-minute bakes were skipped
    assert report.failures == []
    dep = env.latest()["deployment"]["id"]
    text = env.cli("explain", dep, check=True).stdout
    assert "OVERRIDE skip bakes: 'sev1 fix for TICKET-1' approved by alice" in text
    assert "bakes: skipped by override" in text
    trail, _steps = env.explain(dep)
    granted = [e for e in trail if e["type"] == "OverrideGranted"]
    assert [(e["skip"], e["approver"]) for e in granted] == [(["bakes"], "alice")]
    assert "override bakes by alice" in env.cli("history", check=True).stdout
    env.settled("2.0.0")
