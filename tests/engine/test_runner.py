"""The asyncio runner with in-memory seams, a real SQLite journal under tmp_path, and
simulated crashes after every journal write followed by ``resume``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from fleetwave.lb.base import ServerState
from fleetwave.planning.model import Plan
from fleetwave.rollout.gates import Gates
from fleetwave.rollout.journal import Journal
from fleetwave.rollout.runner import DeploymentInfo, Runner
from fleetwave.rollout.types import Finish, Stopped

from .fakes import FakeBalancer, FakeClock, FakeFleet
from .sim import make_plan

pytestmark = pytest.mark.integration  # SQLite files under tmp_path

PKG = "p" * 64


class SimulatedCrash(BaseException):
    """Raised by the journal right after its N-th committed write. A BaseException, as
    a kill is: the runner must not handle it as an error (that would journal more)."""


def _crash() -> None:
    raise SimulatedCrash


def _setup(tmp_path: Path, plan: Plan, deployment_id: str = "d1") -> tuple[Journal, DeploymentInfo]:
    journal = Journal(tmp_path / "journal.db")
    journal.create_deployment(
        deployment_id=deployment_id,
        pipeline="p",
        environment="prod",
        package_id=PKG,
        package_path="/pkg",
        plan={},
        now=0.0,
        controller="test",
    )
    return journal, DeploymentInfo(deployment_id, plan, Path("/pkg"), PKG, 5.0)


def _runner(info, journal, fleet, lb, clock) -> Runner:
    return Runner(
        info,
        journal=journal,
        transport=fleet,
        balancers={"lb": lb},
        gates=Gates(),
        clock=clock,
        request_poll_s=None,
    )


def _run(coro: Coroutine[Any, Any, Finish | Stopped]) -> Finish:
    out = asyncio.run(asyncio.wait_for(coro, timeout=30))
    assert isinstance(out, Finish), out
    return out


def test_rolling_deployment_succeeds_with_sliding_window(tmp_path: Path) -> None:
    plan = make_plan([[[1]], [[3, 4]]], max_out=2, min_serving=1, bake_s=600.0)
    journal, info = _setup(tmp_path, plan)
    fleet, lb, clock = FakeFleet(plan.hosts()), FakeBalancer(), FakeClock()
    start = clock.now()
    fin = _run(_runner(info, journal, fleet, lb, clock).run())
    assert fin.result == "succeeded"
    assert all(a.current == "v2" for a in fleet.agents.values())
    assert all(s is ServerState.READY for s in lb.states.values())
    assert lb.max_out <= 2
    # bakes after 3 stages and 2 waves were honoured on the injected clock
    assert clock.now() - start >= 5 * 600.0
    assert journal.deployment("d1").result == "succeeded"
    kinds = {s.kind for s in journal.steps("d1")}
    assert kinds == {"event", "intent", "outcome", "fact"}


def test_failure_inside_budget_leaves_host_drained_and_reported(tmp_path: Path) -> None:
    plan = make_plan([[[4]]], max_out=1, min_serving=2, budget=1)
    journal, info = _setup(tmp_path, plan)
    fleet, lb, clock = FakeFleet(plan.hosts()), FakeBalancer(), FakeClock()
    fleet.agents["h2"].fail_install = "disk"
    fin = _run(_runner(info, journal, fleet, lb, clock).run())
    assert fin.result == "succeeded_with_failures"
    assert [h for h, _ in fin.failed] == ["h2"]
    assert "StoreError" in fin.failed[0][1]
    h2 = plan.hosts()[1].lb
    assert h2 is not None
    assert lb.states[h2] is ServerState.MAINT
    assert fleet.agents["h2"].current == "v1"


def test_failures_past_budget_roll_back_every_touched_host(tmp_path: Path) -> None:
    plan = make_plan([[[2]], [[4]]], max_out=1, min_serving=1, budget=0, rollback_batch=2)
    journal, info = _setup(tmp_path, plan)
    fleet, lb, clock = FakeFleet(plan.hosts()), FakeBalancer(), FakeClock()
    fleet.agents["h4"].fail_install = "self_rolled_back"
    fin = _run(_runner(info, journal, fleet, lb, clock).run())
    assert fin.result == "rolled_back"
    assert "budget 0" in (fin.rollback_reason or "")
    assert all(a.current == "v1" for a in fleet.agents.values())
    assert all(s is ServerState.READY for s in lb.states.values())
    # rollback is local: no upload happened for it, and untouched hosts saw nothing
    assert set(fleet.agents["h6"].calls) <= {"status"}  # probed, never changed
    assert sum(a.uploads for a in fleet.agents.values()) <= 4


def test_unreachable_host_fails_cleanly(tmp_path: Path) -> None:
    plan = make_plan([[[3]]], max_out=1, min_serving=1, budget=1)
    journal, info = _setup(tmp_path, plan)
    fleet, lb, clock = FakeFleet(plan.hosts()), FakeBalancer(), FakeClock()
    fleet.unreachable.add("h1")
    fin = _run(_runner(info, journal, fleet, lb, clock).run())
    assert fin.result == "succeeded_with_failures"
    assert fin.failed[0][0] == "h1"
    assert "HostUnreachableError" in fin.failed[0][1]


def test_rollback_request_from_another_process_is_picked_up(tmp_path: Path) -> None:
    plan = make_plan([[[2]], [[2]]], max_out=1, bake_s=3600.0)
    journal, info = _setup(tmp_path, plan)
    fleet, lb, clock = FakeFleet(plan.hosts()), FakeBalancer(), FakeClock()
    # The request is already waiting when the runner polls for the first time.
    Journal(tmp_path / "journal.db").request_rollback("d1", "bad metrics", "alice", 1.0)
    runner = Runner(
        info,
        journal=journal,
        transport=fleet,
        balancers={"lb": lb},
        clock=clock,
        request_poll_s=0.001,
    )
    fin = _run(runner.run())
    assert fin.result == "rolled_back"
    assert "alice" in (fin.rollback_reason or "")
    assert all(a.current == "v1" for a in fleet.agents.values())


def _clean_write_count(tmp_path: Path, plan: Plan, fail: str | None) -> int:
    journal, info = _setup(tmp_path / "count", plan)
    fleet, lb, clock = FakeFleet(plan.hosts()), FakeBalancer(), FakeClock()
    if fail:
        fleet.agents[fail].fail_install = "self_rolled_back"
    _run(_runner(info, journal, fleet, lb, clock).run())
    return len(journal.steps("d1")) + 2  # + deployment state updates


@pytest.mark.parametrize("fail", [None, "h3"], ids=["forward", "rollback"])
def test_crash_after_every_journal_write_then_resume(tmp_path: Path, fail: str | None) -> None:
    plan = make_plan([[[1]], [[3]]], max_out=2, min_serving=1, budget=0, bake_s=60.0)
    total = _clean_write_count(tmp_path, plan, fail)
    assert 20 < total < 400
    for kill_at in range(2, total + 1):  # write 1 creates the deployment row
        d = tmp_path / f"k{kill_at}"
        _, info = _setup(d, plan)
        fleet, lb, clock = FakeFleet(plan.hosts()), FakeBalancer(), FakeClock()
        if fail:
            fleet.agents[fail].fail_install = "self_rolled_back"
        crashing = Journal(d / "journal.db", kill_at=kill_at - 1, on_kill=_crash)
        with contextlib.suppress(SimulatedCrash):
            _run(_runner(info, crashing, fleet, lb, clock).run())
        crashing.close()
        # A new controller: everything in memory is gone except the world itself.
        journal = Journal(d / "journal.db")
        fin = _run(_runner(info, journal, fleet, lb, clock).resume())
        assert isinstance(fin, Finish)
        want = "succeeded" if fail is None else "rolled_back"
        assert fin.result == want, (kill_at, fin)
        release = "v2" if fail is None else "v1"
        assert all(a.current == release for a in fleet.agents.values()), kill_at
        assert all(s is ServerState.READY for s in lb.states.values()), kill_at
        assert lb.max_out <= (2 if fail is None else 3)  # rollback: regions in parallel
        journal.close()


def test_finished_rollback_never_rolls_forward_on_resume(tmp_path: Path) -> None:
    plan = make_plan([[[2]]], max_out=1, budget=0)
    journal, info = _setup(tmp_path, plan)
    fleet, lb, clock = FakeFleet(plan.hosts()), FakeBalancer(), FakeClock()
    fleet.agents["h2"].fail_install = "self_rolled_back"
    assert _run(_runner(info, journal, fleet, lb, clock).run()).result == "rolled_back"
    fleet.agents["h2"].fail_install = None
    calls = {n: list(a.calls) for n, a in fleet.agents.items()}
    fin = _run(_runner(info, journal, fleet, lb, clock).resume())
    assert fin.result == "rolled_back"
    assert {n: a.calls for n, a in fleet.agents.items()} == calls


def test_rollback_of_a_finished_deployment(tmp_path: Path) -> None:
    plan = make_plan([[[3]]], max_out=2, rollback_batch=3)
    journal, info = _setup(tmp_path, plan)
    fleet, lb, clock = FakeFleet(plan.hosts()), FakeBalancer(), FakeClock()
    assert _run(_runner(info, journal, fleet, lb, clock).run()).result == "succeeded"
    fin = _run(_runner(info, journal, fleet, lb, clock).rollback("operator", "bob"))
    assert fin.result == "rolled_back"
    assert all(a.current == "v1" for a in fleet.agents.values())
    assert all(s is ServerState.READY for s in lb.states.values())


def test_each_host_collects_garbage_once_it_serves_again(tmp_path: Path) -> None:
    plan = make_plan([[[3]]], max_out=1, min_serving=1)
    journal, info = _setup(tmp_path, plan)
    fleet, lb, clock = FakeFleet(plan.hosts()), FakeBalancer(), FakeClock()
    for agent in fleet.agents.values():
        agent.releases = ["v0", "v1"]  # v0: neither current nor previous after v2
    fin = _run(_runner(info, journal, fleet, lb, clock).run())
    assert fin.result == "succeeded"
    for agent in fleet.agents.values():
        assert agent.calls.index("gc") > agent.calls.index("install")
        assert agent.releases == ["v1", "v2"]


def test_a_failing_gc_costs_disk_not_the_deployment(tmp_path: Path) -> None:
    plan = make_plan([[[2]]], max_out=1, min_serving=1, budget=0)
    journal, info = _setup(tmp_path, plan)
    fleet, lb, clock = FakeFleet(plan.hosts()), FakeBalancer(), FakeClock()
    fleet.agents["h1"].fail_gc = True
    fin = _run(_runner(info, journal, fleet, lb, clock).run())
    assert fin.result == "succeeded"
    assert all(a.current == "v2" for a in fleet.agents.values())
    assert all(s is ServerState.READY for s in lb.states.values())
