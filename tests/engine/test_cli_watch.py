"""The watching side of the command line, over real journals: a refused ``--override``
(one line, exit CONFIG, nothing recorded), ``explain`` readable and as ``--json``,
``status`` showing what a held stage waits for and a bake's counts, and ``validate``
refusing a bake metric that is not an agent counter."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fleetwave.cli import main
from fleetwave.config.pipeline import BakeRequirement
from fleetwave.config.spec import OverrideTarget
from fleetwave.planning.codec import plan_to_dict
from fleetwave.planning.model import Plan
from fleetwave.rollout.events import (
    DeploymentStarted,
    Event,
    GateResult,
    HostDrained,
    HostInstalled,
    HostReturned,
    OverrideGranted,
    StageProbed,
)
from fleetwave.rollout.gates import AlarmBlockerGate, BakeGate, BakeTarget, Gates
from fleetwave.rollout.journal import Journal
from fleetwave.rollout.runner import DeploymentInfo, Runner
from fleetwave.rollout.types import Finish, Target, Verdict
from fleetwave.rollout.watching import Watcher
from fleetwave_core.exitcodes import ExitCode

from .fakes import FakeBalancer, FakeClock, FakeFleet
from .sim import make_plan
from .test_runner_watch import ScriptedSource, _alarm

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    for name in ("pipeline.yaml", "topology.yaml"):
        shutil.copy(REPO / "examples" / "lab" / name, tmp_path / name)
    return tmp_path / "pipeline.yaml"


def _journal(pipeline: Path, plan: Plan, dep: str = "dep-1") -> Journal:
    journal = Journal(pipeline.parent / ".fleetwave" / "journal.db")
    journal.create_deployment(
        deployment_id=dep, pipeline="lab-app", environment="lab", package_id="a" * 64,
        package_path="/pkg", plan=plan_to_dict(plan), now=time.time(), controller="x:1",
    )  # fmt: skip
    return journal


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "controller"), str(REPO / "agent")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "fleetwave.cli", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_a_refused_override_is_one_line_exit_config_and_records_nothing(
    pipeline: Path, tmp_path: Path
) -> None:
    from tests.inproc.agents import make_package

    text = pipeline.read_text()
    assert "allow: [windows, blockers, bakes]" in text
    pipeline.write_text(text.replace("allow: [windows, blockers, bakes]", "allow: [windows]"))
    pkg = make_package(tmp_path / "pkg")
    # A package the pipeline trusts: the override, not the signature, is what is refused.
    (pipeline.parent / "keys").mkdir()
    shutil.copy(pkg.public_key, pipeline.parent / "keys" / "release.pub")
    proc = _cli(
        *("deploy", "-f", str(pipeline), str(pkg.path), "--yes", "--override", "blockers"),
        *("--reason", "sev1", "--approver", "alice"),
        cwd=tmp_path,
    )
    assert proc.returncode == ExitCode.CONFIG
    assert proc.stderr.strip() == (
        "fleetwave: error: --override: the pipeline's override policy does not allow "
        "skipping blockers (it allows: windows)"
    )
    assert proc.stdout == ""
    state = pipeline.parent / ".fleetwave"
    if (state / "journal.db").exists():
        journal = Journal(state / "journal.db")
        try:
            assert journal.latest("lab-app", "lab") is None
        finally:
            journal.close()
    events = state / "events.jsonl"
    assert not events.exists() or "Override" not in events.read_text()
    assert not any(state.glob("locks/*"))  # no lock was taken either


def _held_then_cleared_run(pipeline: Path) -> None:
    """A real runner (in-memory seams, fake clock) into the CLI's journal: a blocker in
    ALARM holds the stage for two minutes, then it rolls; the bakes are overridden."""
    plan = make_plan([[[2]]], bake_s=600.0)
    journal = _journal(pipeline, plan)
    info = DeploymentInfo("dep-1", plan, Path("/pkg"), "a" * 64, 5.0)
    fleet, lb, clock = FakeFleet(plan.hosts()), FakeBalancer(), FakeClock()
    start = clock.now()
    alarms = {"org-sev1": _alarm("org-sev1")}
    source = ScriptedSource(lambda: clock.now() < start + 120.0)
    watcher = Watcher(plan, alarms, source=source, interval_s=10.0, clock=clock.now)
    gates = Gates(
        blockers=(AlarmBlockerGate(watcher, ('ALARM("org-sev1")',), None),),
        bake=(BakeGate(watcher, poll_s=10.0),),
    )
    runner = Runner(
        info, journal=journal, transport=fleet, balancers={"lb": lb}, gates=gates,
        clock=clock, request_poll_s=None, watcher=watcher,
    )  # fmt: skip
    override = OverrideGranted(
        frozenset({OverrideTarget.BAKES}), "sev1 fix for TICKET-1", "alice", "bob"
    )
    try:
        fin = asyncio.run(asyncio.wait_for(runner.run([override]), 30))
        assert isinstance(fin, Finish), fin
        assert fin.result == "succeeded"
    finally:
        journal.close()


def test_explain_prints_the_trail_readably(
    pipeline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _held_then_cleared_run(pipeline)
    assert main(["explain", "dep-1", "-f", str(pipeline)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("deployment dep-1 of lab-app (lab) started ")
    assert lines[1] == "decision trail:"
    trail = lines[2 : lines.index("steps:")]
    assert (
        "OVERRIDE skip bakes: 'sev1 fix for TICKET-1' approved by alice (run by bob)" in (trail[0])
    )
    held = next(i for i, line in enumerate(trail) if " hold blockers " in line)
    assert 'ALARM("org-sev1")' in trail[held]
    assert trail[held + 1].strip() == 'blocker ALARM("org-sev1"): true'
    assert any(" ok   blockers " in line for line in trail[held + 1 :])
    assert any(line.strip() == "bakes: skipped by override" for line in trail)
    rotation = next(line for line in lines if line.startswith("time out of rotation: "))
    assert re.match(r"time out of rotation: median \d+\.\d\ds, longest .* over \d+ host", rotation)
    assert lines[-1] == "=> finished succeeded"


def test_explain_json_is_the_trail_then_every_step(
    pipeline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _held_then_cleared_run(pipeline)
    assert main(["explain", "dep-1", "--json", "-f", str(pipeline)]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = json.loads(lines[0])
    assert head["deployment"]["id"] == "dep-1"
    kinds = [(e["type"], e.get("purpose"), e.get("verdict", {}).get("kind")) for e in head["trail"]]
    assert kinds[0] == ("OverrideGranted", None, None)
    assert ("GateResult", "blockers", "hold") in kinds
    assert kinds.index(("GateResult", "blockers", "hold")) < kinds.index(
        ("GateResult", "blockers", "ok")
    )
    hold = next(e for e in head["trail"] if e.get("verdict", {}).get("kind") == "hold")
    evidence = next(r for r in hold["verdict"]["inputs"] if r.get("gate") == "blocker")
    assert evidence["truth"] == "true"
    assert head["out_of_rotation"]  # every host was drained, then returned
    for spent in head["out_of_rotation"].values():
        assert spent["seconds"] >= 0
        assert spent["intervals"] >= 1
    steps = [json.loads(line) for line in lines[1:]]
    assert [s["seq"] for s in steps] == sorted(s["seq"] for s in steps)
    assert {"event", "intent", "outcome"} <= {s["kind"] for s in steps}


class Counter:
    """A bake's data source that has seen ``n`` requests."""

    def __init__(self, n: float | None) -> None:
        self.n = n

    async def count(self, *_: Any) -> float | None:
        return self.n


def test_status_shows_what_a_held_stage_waits_for_and_a_bakes_counts(
    pipeline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = make_plan([[[1]]])
    (first,) = plan.stages()
    bake = BakeRequirement(duration_s=60.0, min_datapoints=100, metric="requests")
    journal = _journal(pipeline, plan)
    now = time.time()
    counted = asyncio.run(
        BakeGate(Counter(12.0), release="2.0.0", poll_s=10.0).check(
            BakeTarget(Target.stage(first.id), bake, stage=replace(first, bake=bake)),
            now - 30.0,
            now,
        )
    )
    host = first.hosts[0].name
    events: list[Event] = [
        DeploymentStarted(),
        GateResult(Target.stage(first.id), "blockers", Verdict.ok()),
        StageProbed(first.id, frozenset({host})),
        HostDrained(host),
        HostInstalled(host, "2.0.0", "1.0.0"),
        HostReturned(host),
        GateResult(Target.stage(first.id), "bake", counted),
    ]
    try:
        for event in events:
            journal.record_event("dep-1", event, now)
    finally:
        journal.close()
    assert main(["status", "-f", str(pipeline)]) == 0
    out = capsys.readouterr().out
    assert f"waiting: {first.id}: wait: baking: 12 of 100 requests, until " in out
    assert main(["status", "--json", "-f", str(pipeline)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["waiting"][first.id]["phase"] == "baking"


def test_status_shows_a_held_stage(pipeline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = make_plan([[[1]]])
    (stage,) = plan.stages()
    journal = _journal(pipeline, plan)
    now = time.time()
    hold = Verdict.hold('blocker ALARM("org-sev1") is in ALARM', now + 10.0)
    try:
        journal.record_event("dep-1", DeploymentStarted(), now)
        journal.record_event("dep-1", GateResult(Target.stage(stage.id), "blockers", hold), now)
    finally:
        journal.close()
    assert main(["status", "-f", str(pipeline)]) == 0
    out = capsys.readouterr().out
    assert f'waiting: {stage.id}: hold: blocker ALARM("org-sev1") is in ALARM' in out
    assert "hosts: pending=1" in out
    assert main(["status", "--json", "-f", str(pipeline)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["waiting"][stage.id] == {
        "phase": "held",
        "verdict": "hold",
        "for": 'blocker ALARM("org-sev1") is in ALARM',
    }


@pytest.mark.parametrize("where", ["stage_bake", "onebox: {bake"])
def test_validate_refuses_a_bake_metric_that_is_not_an_agent_counter(
    pipeline: Path, tmp_path: Path, where: str
) -> None:
    text = pipeline.read_text()
    if where == "stage_bake":
        old = "stage_bake: {time: 15s, min_datapoints: 5, metric: requests}"
        new, key = "stage_bake: {time: 15s, min_datapoints: 5, metric: latency}", "stage_bake"
    else:
        old = "  bake: {time: 20s, min_datapoints: 5, metric: requests}"
        new, key = "  bake: {time: 20s, min_datapoints: 5, metric: health}", "onebox.bake"
    assert old in text
    pipeline.write_text(text.replace(old, new))
    line = text.splitlines().index(old) + 1
    proc = _cli("validate", "-f", str(pipeline), cwd=tmp_path)
    assert proc.returncode == ExitCode.CONFIG
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith(f"fleetwave: error: {pipeline}:{line}: {key}.metric: invalid value")
    assert "expected one of requests, errors, log_errors, app_cpu" in err[0]
