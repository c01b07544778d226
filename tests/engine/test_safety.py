"""Issue 8's safety promises at the runner layer (in-memory seams, a real SQLite
journal): operators' choices kept, no host left out of rotation without a reason,
faults retried, clean stops, checked resume/rollback, no lost rollback requests."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from fleetwave.config.spec import OverrideTarget
from fleetwave.errors import JournalError
from fleetwave.lb.base import ServerState
from fleetwave.observe.events import HostsOutOfRotation
from fleetwave.observe.metrics import MetricsSink
from fleetwave.rollout import decide, initial_state
from fleetwave.rollout.events import (
    DeploymentStarted,
    GateResult,
    HostDrained,
    Resumed,
    StageProbed,
)
from fleetwave.rollout.gates import BakeGate, Gates, PreprodTestsGate
from fleetwave.rollout.journal import Journal, KillPoint
from fleetwave.rollout.runner import DeploymentInfo, Runner
from fleetwave.rollout.state import HostPhase
from fleetwave.rollout.types import Finish, HostFacts, Stopped, Target, Verdict
from fleetwave.transport.retry import RetryPolicy

from .fakes import FakeBalancer, FakeClock, FakeFleet, start_deployment
from .sim import make_plan

pytestmark = pytest.mark.integration

PKG = "p" * 64
FAST = RetryPolicy(retries=3, base_delay_s=0.01, max_delay_s=0.05)


def _setup(tmp_path: Path, plan: Any, **kw: Any) -> tuple[Journal, DeploymentInfo]:
    journal = Journal(tmp_path / "journal.db", **kw)
    return journal, start_deployment(journal, plan, "d1", PKG)


def _runner(info: DeploymentInfo, journal: Journal, fleet: Any, lb: Any, **kw: Any) -> Runner:
    kw.setdefault("request_poll_s", None)
    kw.setdefault("clock", FakeClock())
    return Runner(info, journal=journal, transport=fleet, balancers={"lb": lb}, retry=FAST, **kw)


def _run(coro: Coroutine[Any, Any, Finish | Stopped]) -> Finish | Stopped:
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def _ref(plan: Any, name: str) -> Any:
    return next(h.lb for h in plan.hosts() if h.name == name)


# -- 1. operators' choices kept -----------------------------------------------------


def test_hosts_in_maint_or_drain_at_stage_start_are_skipped(tmp_path: Path) -> None:
    plan = make_plan([[[4]]], max_out=1, min_serving=1)
    journal, info = _setup(tmp_path, plan)
    fleet, lb = FakeFleet(plan.hosts()), FakeBalancer()
    lb.states[_ref(plan, "h2")] = ServerState.MAINT
    lb.states[_ref(plan, "h3")] = ServerState.DRAIN
    fin = _run(_runner(info, journal, fleet, lb).run())
    assert isinstance(fin, Finish)
    assert fin.result == "succeeded"
    assert [h for h, _ in fin.skipped] == ["h2", "h3"]
    assert "maint" in fin.skipped[0][1]
    assert [h for h, _ in fin.out_of_rotation] == ["h2", "h3"]
    # untouched: not deployed, not returned
    assert fleet.agents["h2"].current == "v1"
    assert fleet.agents["h3"].current == "v1"
    assert "install" not in fleet.agents["h2"].calls
    assert lb.states[_ref(plan, "h2")] is ServerState.MAINT
    assert lb.states[_ref(plan, "h3")] is ServerState.DRAIN
    assert fleet.agents["h1"].current == "v2"
    assert fleet.agents["h4"].current == "v2"


# -- 2. no host left out of rotation without a reason ----------------------------------


def test_self_rolled_back_host_goes_back_into_rotation(tmp_path: Path) -> None:
    plan = make_plan([[[3]]], max_out=1, min_serving=1, budget=1)
    journal, info = _setup(tmp_path, plan)
    fleet, lb = FakeFleet(plan.hosts()), FakeBalancer()
    fleet.agents["h2"].fail_install = "self_rolled_back"
    fin = _run(_runner(info, journal, fleet, lb).run())
    assert isinstance(fin, Finish)
    assert fin.result == "succeeded_with_failures"
    assert [h for h, _ in fin.failed] == ["h2"]
    assert "self_rolled_back" in fin.failed[0][1]
    assert fin.out_of_rotation == ()
    assert lb.states[_ref(plan, "h2")] is ServerState.READY
    assert fleet.agents["h2"].current == "v1"


def test_failed_drain_goes_back_into_rotation(tmp_path: Path) -> None:
    plan = make_plan([[[3]]], max_out=1, min_serving=1, budget=1)
    journal, info = _setup(tmp_path, plan)
    fleet, lb = FakeFleet(plan.hosts()), FakeBalancer()
    lb.fail.add("h1")  # the drain fails; the return must still work
    real_drain = lb._begin_drain

    async def drain_once(ref: Any) -> None:
        await real_drain(ref)
        lb.fail.discard(ref.server)

    lb._begin_drain = drain_once  # type: ignore[method-assign]
    fin = _run(_runner(info, journal, fleet, lb).run())
    assert isinstance(fin, Finish)
    assert [h for h, _ in fin.failed] == ["h1"]
    assert fin.out_of_rotation == ()
    assert lb.states.get(_ref(plan, "h1"), ServerState.READY) is ServerState.READY


def test_unhealthy_failed_host_stays_out_and_is_named_with_a_metric(tmp_path: Path) -> None:
    plan = make_plan([[[3]]], max_out=1, min_serving=1, budget=1)
    journal, info = _setup(tmp_path, plan)
    fleet, lb = FakeFleet(plan.hosts()), FakeBalancer()
    fleet.agents["h2"].fail_install = "self_rolled_back"
    fleet.agents["h2"].healthy = False  # on the old release, but unhealthy
    metrics = MetricsSink()
    fin = _run(_runner(info, journal, fleet, lb, sink=metrics).run())
    assert isinstance(fin, Finish)
    assert [h for h, _ in fin.out_of_rotation] == ["h2"]
    assert lb.states[_ref(plan, "h2")] is ServerState.MAINT
    got = metrics.registry.get_sample_value("fleetwave_hosts_out_of_rotation", {"reason": "failed"})
    assert got == 1


def test_out_of_rotation_metric_counts_by_reason() -> None:
    m = MetricsSink()
    hosts = (("a", "operator", ""), ("b", "failed", ""), ("c", "failed", ""))
    m.emit(HostsOutOfRotation("d", 0.0, hosts))
    get = m.registry.get_sample_value
    assert get("fleetwave_hosts_out_of_rotation", {"reason": "failed"}) == 2
    assert get("fleetwave_hosts_out_of_rotation", {"reason": "operator"}) == 1
    m.emit(HostsOutOfRotation("d", 1.0, ()))
    assert get("fleetwave_hosts_out_of_rotation", {"reason": "failed"}) == 0


# -- 7. faults survived -----------------------------------------------------------------


def test_transient_transport_errors_are_retried_on_every_step(tmp_path: Path) -> None:
    plan = make_plan([[[3]]], max_out=1, min_serving=1, budget=0)
    journal, info = _setup(tmp_path, plan)
    fleet, lb = FakeFleet(plan.hosts()), FakeBalancer()
    fleet.refuse["h2"] = 2  # sshd down for a moment: refused connects
    fleet.agents["h3"].lose_session = 2  # sessions reset mid-call
    fin = _run(_runner(info, journal, fleet, lb).run())
    assert isinstance(fin, Finish)
    assert fin.result == "succeeded", fin
    assert all(a.current == "v2" for a in fleet.agents.values())
    assert all(s is ServerState.READY for s in lb.states.values())


def test_a_host_fails_only_after_the_retries_are_spent(tmp_path: Path) -> None:
    plan = make_plan([[[3]]], max_out=1, min_serving=1, budget=1)
    journal, info = _setup(tmp_path, plan)
    fleet, lb = FakeFleet(plan.hosts()), FakeBalancer()
    fleet.refuse["h1"] = 100
    fin = _run(_runner(info, journal, fleet, lb).run())
    assert isinstance(fin, Finish)
    assert fin.failed[0][0] == "h1"
    assert "after 4 attempts: " in fin.failed[0][1]
    assert "HostUnreachableError" in fin.failed[0][1]


def test_rollback_incomplete_is_continued_by_resume(tmp_path: Path) -> None:
    plan = make_plan([[[3]]], max_out=1, min_serving=0, budget=0, rollback_batch=3)
    journal, info = _setup(tmp_path, plan)
    fleet, lb = FakeFleet(plan.hosts()), FakeBalancer()
    fleet.agents["h2"].fail_install = "disk"
    fleet.agents["h1"].fail_rollback = 1
    fin = _run(_runner(info, journal, fleet, lb).run())
    assert isinstance(fin, Finish)
    assert fin.result == "rollback_incomplete"
    assert fleet.agents["h1"].current == "v2"
    fin = _run(_runner(info, journal, fleet, lb).resume())
    assert isinstance(fin, Finish)
    assert fin.result == "rolled_back", fin
    assert all(a.current == "v1" for a in fleet.agents.values())
    assert all(s is ServerState.READY for s in lb.states.values())


# -- 3. resume and rollback check the hosts -----------------------------------------------


def _installing_state() -> Any:
    plan = make_plan([[[1]]], max_out=1)
    st = initial_state(plan)
    for ev in (
        DeploymentStarted(),
        GateResult(Target.stage("w0/r00/s0"), "blockers", Verdict.ok()),
        StageProbed("w0/r00/s0", frozenset({"h1"})),
        HostDrained("h1"),
    ):
        st, _ = decide(st, ev, 1.0)
    assert st.hosts["h1"].phase is HostPhase.INSTALLING
    from dataclasses import replace

    from fleetwave.rollout.types import BeforeRelease

    hosts = {**st.hosts, "h1": replace(st.hosts["h1"], before=BeforeRelease("v1"))}
    return replace(st, hosts=hosts)


def test_resume_marks_an_install_done_only_when_the_host_runs_our_package() -> None:
    st = _installing_state()
    # Someone else activated v9: neither ours nor the one before.
    foreign, actions = decide(st, Resumed({"h1": HostFacts("v9", True, "v1", False)}), 2.0)
    h1 = foreign.hosts["h1"]
    assert h1.phase is HostPhase.FAILED
    assert "ForeignReleaseError" in (h1.failure or "")
    assert "left alone" in (h1.failure or "")
    assert not any(type(a).__name__ in ("ReturnHost", "InstallOnHost") for a in actions)
    ours, _ = decide(st, Resumed({"h1": HostFacts("v2", True, "v1", True)}), 2.0)
    assert ours.hosts["h1"].phase is HostPhase.RETURNING


def test_rollback_leaves_a_host_running_something_else_alone(tmp_path: Path) -> None:
    plan = make_plan([[[2]]], max_out=1, rollback_batch=2)
    journal, info = _setup(tmp_path, plan)
    fleet, lb = FakeFleet(plan.hosts()), FakeBalancer()
    assert _run(_runner(info, journal, fleet, lb).run()).result == "succeeded"  # type: ignore[union-attr]
    a = fleet.agents["h1"]
    a.switch("v9")  # an operator deployed a hotfix since
    fin = _run(_runner(info, journal, fleet, lb).rollback("operator", "bob"))
    assert isinstance(fin, Finish)
    assert fin.result == "rollback_incomplete"
    assert fin.failed[0][0] == "h1"
    assert "left alone" in fin.failed[0][1]
    assert a.current == "v9"
    assert fleet.agents["h2"].current == "v1"


# -- 4. no lost rollback requests ---------------------------------------------------------


class Crash(BaseException):
    pass


def _crash() -> None:
    raise Crash


def test_rollback_request_is_consumed_in_the_commit_of_its_event(tmp_path: Path) -> None:
    # One commit per decision (the journal's transaction): the request's event and its
    # consumption are durable together or not at all, so no crash can lose it. A crash
    # right after the commit leaves it consumed, its event journalled; resume rolls back.
    plan = make_plan([[[2]]], max_out=1, bake_s=3600.0)
    kill = KillPoint(nth=1, kind="event", name="RollbackRequested")
    journal, info = _setup(tmp_path, plan, kill_at=kill, on_kill=_crash)
    fleet, lb = FakeFleet(plan.hosts()), FakeBalancer()
    Journal(tmp_path / "journal.db").request_rollback("d1", "bad metrics", "alice", 1.0)
    runner = _runner(info, journal, fleet, lb, request_poll_s=0.001)
    with pytest.raises(Crash):
        _run(runner.run())
    db = sqlite3.connect(tmp_path / "journal.db")
    (pending,) = db.execute("SELECT COUNT(*) FROM requests WHERE consumed_at IS NULL").fetchone()
    (events,) = db.execute(
        "SELECT COUNT(*) FROM steps WHERE kind = 'event' AND name = 'RollbackRequested'"
    ).fetchone()
    assert (pending, events) == (0, 1)
    journal2 = Journal(tmp_path / "journal.db")
    fin = _run(_runner(info, journal2, fleet, lb, request_poll_s=0.001).resume())
    assert isinstance(fin, Finish)
    assert fin.result == "rolled_back"
    assert journal2.pending_requests("d1") == []


def test_a_failing_request_poller_stops_the_deployment_and_says_why(tmp_path: Path) -> None:
    plan = make_plan([[[3]]], max_out=1, bake_s=3600.0)
    journal, info = _setup(tmp_path, plan)
    fleet, lb = FakeFleet(plan.hosts()), FakeBalancer()

    def broken(_dep: str) -> list[Any]:
        raise RuntimeError("database is locked")

    journal.pending_requests = broken  # type: ignore[method-assign,assignment]
    out = _run(_runner(info, journal, fleet, lb, request_poll_s=0.001).run())
    assert isinstance(out, Stopped)
    assert out.state == "aborted"
    assert "poller failed" in out.reason
    assert "database is locked" in out.reason
    assert journal.deployment("d1").state == "aborted"
    assert all(s is ServerState.READY for s in lb.states.values())


# -- 5/6. clean stop, runner errors ------------------------------------------------------


def test_stop_finishes_in_flight_hosts_then_resume_continues(tmp_path: Path) -> None:
    plan = make_plan([[[4]]], max_out=2, min_serving=1)
    journal, info = _setup(tmp_path, plan)
    fleet, lb = FakeFleet(plan.hosts()), FakeBalancer()
    gate = asyncio.Event()
    for a in fleet.agents.values():
        a.block = gate

    async def main() -> Finish | Stopped:
        runner = _runner(info, journal, fleet, lb)
        task = asyncio.create_task(runner.run())
        for _ in range(200):
            await asyncio.sleep(0)
            if "install" in fleet.agents["h1"].calls:
                break
        runner.request_stop("SIGTERM")
        for _ in range(20):
            await asyncio.sleep(0)
        gate.set()
        return await task

    out = asyncio.run(asyncio.wait_for(main(), 30))
    assert isinstance(out, Stopped)
    assert out.state == "interrupted", out
    assert out.out_of_rotation == ()
    assert all(s is ServerState.READY for s in lb.states.values())
    assert fleet.agents["h1"].current == "v2"
    assert fleet.agents["h4"].calls == ["status"]  # probed, never started
    assert journal.deployment("d1").state == "interrupted"
    fin = _run(_runner(info, journal, fleet, lb).resume())
    assert isinstance(fin, Finish)
    assert fin.result == "succeeded"
    assert all(a.current == "v2" for a in fleet.agents.values())


def test_unexpected_error_stops_returns_hosts_and_records_the_traceback(
    tmp_path: Path,
) -> None:
    plan = make_plan([[[3]]], max_out=2, min_serving=0)
    journal, info = _setup(tmp_path, plan)
    fleet, lb = FakeFleet(plan.hosts()), FakeBalancer()
    fleet.bug_on_upload.add("h2")
    out = _run(_runner(info, journal, fleet, lb).run())
    assert isinstance(out, Stopped)
    assert out.state == "aborted"
    assert isinstance(out.error, KeyError)
    assert [h for h, _ in out.out_of_rotation] == ["h2"]  # named, not silently drained
    assert lb.states[_ref(plan, "h1")] is ServerState.READY  # in flight: finished, returned
    audit = [s for s in journal.steps("d1") if s.kind == "audit" and s.name == "stopped"]
    assert "KeyError" in audit[0].payload["traceback"]
    assert not any(s.name == "HostFailed" for s in journal.steps("d1"))
    fleet.bug_on_upload.clear()
    fin = _run(_runner(info, journal, fleet, lb).resume())
    assert isinstance(fin, Finish)
    assert fin.result == "succeeded"


def test_a_journal_error_is_never_a_host_failure(tmp_path: Path) -> None:
    plan = make_plan([[[2]]], max_out=1)
    journal, info = _setup(tmp_path, plan)
    fleet, lb = FakeFleet(plan.hosts()), FakeBalancer()
    real = journal.record_fact

    def broken(*a: Any, **kw: Any) -> None:
        raise JournalError("disk I/O error")

    journal.record_fact = broken  # type: ignore[method-assign]
    out = _run(_runner(info, journal, fleet, lb).run())
    journal.record_fact = real  # type: ignore[method-assign]
    assert isinstance(out, Stopped)
    assert isinstance(out.error, JournalError)
    assert not any(s.name == "HostFailed" for s in journal.steps("d1"))


def test_a_gate_without_an_answer_is_a_wait(tmp_path: Path) -> None:
    plan = make_plan([[[1]]], max_out=1)
    journal, info = _setup(tmp_path, plan)
    fleet, lb = FakeFleet(plan.hosts()), FakeBalancer()
    calls: list[int] = []

    class Hangs:
        kind: OverrideTarget | None = None

        async def check(self, target: Any, window_start: float, now: float) -> Verdict:
            calls.append(1)
            if len(calls) == 1:
                await asyncio.Event().wait()  # never answers
            return Verdict.ok()

    gates = Gates(blockers=(Hangs(),))
    fin = _run(_runner(info, journal, fleet, lb, gates=gates, gate_timeout_s=0.05).run())
    assert isinstance(fin, Finish)
    assert fin.result == "succeeded"
    waits = [
        s
        for s in journal.steps("d1")
        if s.name == "GateResult" and s.payload["verdict"]["kind"] == "wait"
    ]
    assert "no answer within" in waits[0].payload["verdict"]["reason"]


def test_the_gate_deadline_leaves_pre_production_tests_their_own_timeout(
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    plan = make_plan([[[1]]], max_out=1)
    wave = plan.waves[0]
    region = wave.regions[0]
    stage = replace(region.stages[0], tests=("sleep 0.3",))
    plan = replace(plan, waves=(replace(wave, regions=(replace(region, stages=(stage,)),)),))
    journal, info = _setup(tmp_path, plan)
    fleet, lb = FakeFleet(plan.hosts()), FakeBalancer()
    gates = Gates(bake=(BakeGate(), PreprodTestsGate(timeout_s=5.0)))
    fin = _run(_runner(info, journal, fleet, lb, gates=gates, gate_timeout_s=0.05).run())
    assert isinstance(fin, Finish)
    assert fin.result == "succeeded"
    bakes = [s.payload["verdict"] for s in journal.steps("d1") if s.name == "GateResult"]
    assert not any("no answer within" in v["reason"] for v in bakes)
