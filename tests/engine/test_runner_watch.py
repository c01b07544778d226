"""The runner with a watcher: alarm changes arrive as events while hosts roll, a blocker
holds a stage until it clears, and the trail lands in the journal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fleetwave.config.alarm_expr import parse
from fleetwave.config.alarms import (
    AlarmDef,
    Comparison,
    CompositeAlarm,
    MetricAlarm,
    MetricSpec,
    ScopeKind,
    Statistic,
)
from fleetwave.observe import trail
from fleetwave.rollout.gates import AlarmBlockerGate, BakeGate, Gates
from fleetwave.rollout.journal import Journal
from fleetwave.rollout.runner import DeploymentInfo, Runner
from fleetwave.rollout.types import Finish
from fleetwave.rollout.watching import Watcher
from fleetwave.watch.source import Datapoint, MetricQuery, Series, Window

from .fakes import FakeBalancer, FakeClock, FakeFleet
from .sim import make_plan

pytestmark = pytest.mark.integration


class ScriptedSource:
    """Errors ratio 0.5 once ``bad()`` says so, else 0; always 100 requests a period."""

    name = "scripted"

    def __init__(self, bad: Any) -> None:
        self.bad = bad

    async def query(self, query: MetricQuery, window: Window) -> Series:
        value = 0.5 if self.bad() else 0.0
        return Series(tuple(Datapoint(end, value, 100.0) for _, end in window.bounds()))


def _alarm(name: str, scope: ScopeKind = ScopeKind.FLEET) -> MetricAlarm:
    spec = MetricSpec("errors", Statistic.RATIO, denominator="requests")
    return MetricAlarm(name, spec, Comparison.GT, 0.05, period_s=10.0, scope=scope)


def _journal(tmp_path: Path, plan: Any) -> tuple[Journal, DeploymentInfo]:
    journal = Journal(tmp_path / "journal.db")
    journal.create_deployment(
        deployment_id="d1", pipeline="p", environment="prod", package_id="pkg",
        package_path="/pkg", plan={}, now=0.0, controller="test",
    )  # fmt: skip
    return journal, DeploymentInfo("d1", plan, Path("/pkg"), "pkg", 5.0)


def test_a_fault_after_the_first_install_is_rolled_back_by_the_rollback_alarm(
    tmp_path: Path,
) -> None:
    plan = make_plan([[[3]]], bake_s=600.0)
    journal, info = _journal(tmp_path, plan)
    fleet, lb, clock = FakeFleet(plan.hosts()), FakeBalancer(), FakeClock()
    alarms: dict[str, AlarmDef] = {
        "svc-5xx": _alarm("svc-5xx"),
        "rb": CompositeAlarm("rb", parse('ALARM("svc-5xx")')),
    }
    source = ScriptedSource(lambda: fleet.agents["h1"].current == "v2")
    watcher = Watcher(
        plan, alarms, source=source, interval_s=10.0, clock=clock.now, rollback_alarm="rb"
    )
    gates = Gates(
        blockers=(AlarmBlockerGate(watcher, (), "rb"),), bake=(BakeGate(watcher, poll_s=10.0),)
    )
    runner = Runner(
        info, journal=journal, transport=fleet, balancers={"lb": lb}, gates=gates,
        clock=clock, request_poll_s=None, watcher=watcher,
    )  # fmt: skip
    fin = asyncio.run(asyncio.wait_for(runner.run(), 30))
    assert isinstance(fin, Finish)
    assert fin.result == "rolled_back"
    assert "rollback alarm rb in ALARM" in (fin.rollback_reason or "")
    assert all(a.current == "v1" for a in fleet.agents.values())
    entries = trail.trail(journal.steps("d1"))
    fired = [e for e in entries if e["type"] == "AlarmChanged" and e["state"] == "ALARM"]
    assert fired[0]["evidence"]["children"][0]["m_of_n"] == [3, 3]
    text = "\n".join(trail.render(entries))
    assert "alarm rb (rollback) -> ALARM" in text


def test_a_blocker_in_alarm_holds_the_stage_and_it_starts_when_the_alarm_clears(
    tmp_path: Path,
) -> None:
    plan = make_plan([[[2]]], bake_s=10.0)
    journal, info = _journal(tmp_path, plan)
    fleet, lb, clock = FakeFleet(plan.hosts()), FakeBalancer(), FakeClock()
    start = clock.now()
    alarms = {"org-sev1": _alarm("org-sev1")}
    source = ScriptedSource(lambda: clock.now() < start + 120.0)  # clears after 2 minutes
    watcher = Watcher(plan, alarms, source=source, interval_s=10.0, clock=clock.now)
    gates = Gates(blockers=(AlarmBlockerGate(watcher, ('ALARM("org-sev1")',), None),))
    runner = Runner(
        info, journal=journal, transport=fleet, balancers={"lb": lb}, gates=gates,
        clock=clock, request_poll_s=None, watcher=watcher,
    )  # fmt: skip
    fin = asyncio.run(asyncio.wait_for(runner.run(), 30))
    assert isinstance(fin, Finish)
    assert fin.result == "succeeded"
    verdicts = [
        e["verdict"]["kind"]
        for e in trail.trail(journal.steps("d1"))
        if e["type"] == "GateResult" and e["purpose"] == "blockers"
    ]
    assert verdicts[0] == "hold"
    assert verdicts[-1] == "ok"
    first_drain = next(s.at for s in journal.steps("d1") if s.name == "DrainHost")
    assert first_drain >= start + 120.0
