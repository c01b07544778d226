"""The live view fed by the real runner (in-memory fleet and balancer, fake clock):
the per-stage counts it emits add up, and the final frame leaves no stage running."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from rich.console import Console

from fleetwave.observe.events import HostsSummary, ObservedEvent
from fleetwave.observe.live_model import LiveModel, StageStatus
from fleetwave.observe.live_view import LiveView
from fleetwave.rollout.gates import Gates
from fleetwave.rollout.journal import Journal
from fleetwave.rollout.runner import DeploymentInfo, Runner
from fleetwave.rollout.types import Finish
from tests.engine.fakes import FakeBalancer, FakeClock, FakeFleet
from tests.engine.sim import make_plan

pytestmark = pytest.mark.integration  # SQLite journal under tmp_path

PKG = "0" * 64


class Recorder:
    def __init__(self) -> None:
        self.events: list[ObservedEvent] = []

    def emit(self, event: ObservedEvent) -> None:
        self.events.append(event)


def _run(tmp_path: Path, plan, sink, clock, fail: str | None = None) -> Finish:
    journal = Journal(tmp_path / "journal.db")
    journal.create_deployment(
        deployment_id="d1",
        pipeline="p",
        environment="prod",
        package_id=PKG,
        package_path="/pkg",
        plan={},
        now=0.0,
        controller="test",
    )
    fleet = FakeFleet(plan.hosts())
    if fail:
        fleet.agents[fail].fail_install = "self_rolled_back"
    runner = Runner(
        DeploymentInfo("d1", plan, Path("/pkg"), PKG, 5.0),
        journal=journal,
        transport=fleet,
        balancers={"lb": FakeBalancer()},
        gates=Gates(),
        clock=clock,
        sink=sink,
        request_poll_s=None,
    )
    result = asyncio.run(asyncio.wait_for(runner.run(), timeout=30))
    assert isinstance(result, Finish), result  # nothing here stops the runner early
    return result


def test_runner_summaries_count_every_host_once_per_stage(tmp_path: Path) -> None:
    plan = make_plan([[[2]], [[3, 2]]], max_out=1, min_serving=0, budget=0)
    rec = Recorder()
    fin = _run(tmp_path, plan, rec, FakeClock(), fail="h4")
    assert fin.result == "rolled_back"
    summaries = [e for e in rec.events if isinstance(e, HostsSummary)]
    assert summaries
    sizes = {s.id: len(s.hosts) for s in plan.stages()}
    for summary in summaries:
        per_stage = {sid: sum(n for _, n in counts) for sid, counts in summary.by_stage}
        assert per_stage == sizes
        totals: dict[str, int] = {}
        for _, counts in summary.by_stage:
            for phase, n in counts:
                totals[phase] = totals.get(phase, 0) + n
        assert totals == dict(summary.by_phase)


def test_final_frame_after_a_real_rollback_has_no_stage_in_progress(tmp_path: Path) -> None:
    plan = make_plan([[[2]], [[3, 2]]], max_out=1, min_serving=0, budget=0)
    clock = FakeClock()
    out = io.StringIO()
    console = Console(file=out, width=100, height=40, force_terminal=True, color_system=None)
    view = LiveView(plan, console, clock=clock.now, auto_refresh=False)
    rec = Recorder()

    class Both:
        def emit(self, event: ObservedEvent) -> None:
            rec.emit(event)
            view.emit(event)

    fin = _run(tmp_path, plan, Both(), clock, fail="h4")
    assert fin.result == "rolled_back"
    model = LiveModel(plan)
    for event in rec.events:
        model.apply(event)
    snap = model.snapshot(clock.now())
    assert snap.finished
    assert not any(row.status.active for row in snap.stages)
    assert {row.status for row in snap.stages} <= {
        StageStatus.ROLLED_BACK,
        StageStatus.NOT_STARTED,
        StageStatus.STOPPED,
    }
    final = out.getvalue().rsplit("deployment d1  ", 1)[1]
    assert final.startswith("finished: rolled_back")
    assert "rolling" not in final
    assert "baking" not in final
    assert "deployment d1: rolled_back in " in final
