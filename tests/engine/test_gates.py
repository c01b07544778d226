"""Gates: hold vs wait vs fail, earliest retry, bakes that need data, alarm blockers,
pre-production tests that really run, and the override policy."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fleetwave.config.alarm_expr import AlarmState
from fleetwave.config.alarms import OnInsufficient
from fleetwave.config.pipeline import OverridePolicy
from fleetwave.config.spec import OverrideTarget
from fleetwave.errors import UsageError
from fleetwave.planning.model import BakeRequirement, Stage
from fleetwave.rollout.gates import (
    AlarmBlockerGate,
    BakeGate,
    BakeTarget,
    Gates,
    PreprodTestsGate,
    WindowGate,
    check_override,
    combine,
    run_command,
)
from fleetwave.rollout.types import Target, Verdict

from .sim import make_plan

pytestmark = pytest.mark.unit

STAGE = make_plan([[[2]]]).stages()[0]


def _target(bake: BakeRequirement, stage: Stage = STAGE) -> BakeTarget:
    return BakeTarget(Target.stage(stage.id), bake, stage=stage)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_combine_fail_beats_hold_beats_wait_and_the_earliest_retry_wins() -> None:
    bake = Verdict.wait("baking 1h", 3600.0)
    poll = Verdict.hold("blocker", 10.0)
    assert combine([bake, poll]) == Verdict.hold("baking 1h; blocker", 10.0)
    assert combine([bake, Verdict.fail("x"), poll]).kind == "fail"
    assert combine([bake, Verdict.wait("no time")]).retry_at is None  # poll interval
    assert combine([Verdict.ok(), Verdict.ok()]).kind == "ok"


class Counter:
    def __init__(self, value: float | None) -> None:
        self.value = value
        self.asked: list[tuple[str, frozenset[str], str | None, float, float]] = []

    async def count(
        self, metric: str, hosts: frozenset[str], release: str | None, since: float, now: float
    ) -> float | None:
        self.asked.append((metric, hosts, release, since, now))
        return self.value


DATA = BakeRequirement(duration_s=60.0, min_datapoints=100, metric="requests")


def test_a_bake_waits_its_time_and_its_data() -> None:
    counter = Counter(150.0)
    gate = BakeGate(counter, release="2.0", poll_s=5.0)
    early = run(gate.check(_target(DATA), 0.0, 30.0))
    assert early.kind == "wait"
    assert early.retry_at == 35.0
    assert run(gate.check(_target(DATA), 0.0, 60.0)).kind == "ok"
    assert counter.asked[-1] == ("requests", frozenset({"h1", "h2"}), "2.0", 0.0, 60.0)
    counter.value = 99.0
    short = run(gate.check(_target(DATA), 0.0, 600.0))
    assert short.kind == "wait"
    assert "99 of 100 requests" in short.reason
    assert short.inputs[0]["datapoints"] == 99


def test_a_bake_never_passes_on_zero_traffic_or_missing_data() -> None:
    for value in (None, 0.0):
        v = run(BakeGate(Counter(value)).check(_target(DATA), 0.0, 10_000.0))
        assert v.kind == "wait"
    assert run(BakeGate(None).check(_target(DATA), 0.0, 10_000.0)).kind == "wait"


@pytest.mark.parametrize(
    ("policy", "kind"),
    [
        (OnInsufficient.HOLD, "hold"),
        (OnInsufficient.ROLLBACK, "fail"),
        (OnInsufficient.PROCEED, "ok"),
    ],
)
def test_past_max_bake_on_insufficient_decides(policy: OnInsufficient, kind: str) -> None:
    bake = BakeRequirement(60.0, 100, "requests", max_bake_s=120.0, on_insufficient=policy)
    gate = BakeGate(Counter(3.0))
    assert run(gate.check(_target(bake), 0.0, 119.0)).kind == "wait"
    v = run(gate.check(_target(bake), 0.0, 120.0))
    assert v.kind == kind
    assert v.inputs[0]["on_insufficient"] == policy.value


def test_a_time_only_bake_passes_on_time() -> None:
    gate = BakeGate()
    assert run(gate.check(_target(BakeRequirement(10.0)), 0.0, 5.0)).retry_at == 10.0
    assert run(gate.check(_target(BakeRequirement(10.0)), 0.0, 10.0)).kind == "ok"


class View:
    interval_s = 2.0

    def __init__(self, states: Mapping[str, AlarmState]) -> None:
        self.states = dict(states)

    async def states_for(
        self, stage: Stage | None, now: float
    ) -> tuple[Mapping[str, AlarmState], Mapping[str, Mapping[str, Any]]]:
        return self.states, {n: {"alarm": n, "state": s.value} for n, s in self.states.items()}


def test_a_blocker_holds_when_true_or_unknown_and_clears_when_false() -> None:
    view = View({"sev1": AlarmState.ALARM, "rb": AlarmState.OK})
    gate = AlarmBlockerGate(view, ['ALARM("sev1")'], "rb")
    v = run(gate.check(_target(DATA), 0.0, 100.0))
    assert v.kind == "hold"
    assert v.retry_at == 102.0
    assert {"alarm": "sev1", "state": "ALARM"} in v.inputs
    view.states["sev1"] = AlarmState.INSUFFICIENT_DATA
    v = run(gate.check(_target(DATA), 0.0, 100.0))
    assert v.kind == "hold"
    assert "unknown" in v.reason
    view.states["sev1"] = AlarmState.OK
    assert run(gate.check(_target(DATA), 0.0, 100.0)).kind == "ok"
    view.states["rb"] = AlarmState.ALARM
    v = run(gate.check(_target(DATA), 0.0, 100.0))
    assert v.kind == "hold"
    assert "rollback alarm rb" in v.reason


def test_a_closed_window_holds_until_it_opens() -> None:
    from datetime import UTC, datetime

    opens = datetime(2030, 1, 1, 9, tzinfo=UTC)
    gate = WindowGate(lambda r, t: False, lambda r, t: opens)
    v = run(gate.check(_target(DATA), 0.0, 100.0))
    assert v.kind == "hold"
    assert v.retry_at == opens.timestamp()
    assert v.inputs[0]["open"] is False


def test_an_override_skips_only_the_gates_it_names_and_says_so() -> None:
    gate = WindowGate(lambda r, t: False, lambda r, t: __import__("datetime").datetime.now())
    gates = Gates(blockers=(gate,), bake=(BakeGate(Counter(0.0)),))
    t = _target(DATA)
    assert run(gates.check_blockers(t, 0.0)).kind == "hold"
    skipped = run(gates.check_blockers(t, 0.0, frozenset({OverrideTarget.WINDOWS})))
    assert skipped.kind == "ok"
    assert skipped.inputs == ({"gate": "windows", "skipped": "override"},)
    assert run(gates.check_bake(t, 0.0, 1e6, frozenset({OverrideTarget.WINDOWS}))).kind == "wait"
    assert run(gates.check_bake(t, 0.0, 1e6, frozenset({OverrideTarget.BAKES}))).kind == "ok"


def test_the_override_policy_is_enforced() -> None:
    policy = OverridePolicy(
        allow=frozenset({OverrideTarget.BLOCKERS, OverrideTarget.BAKES}), approvers=("alice",)
    )
    got = check_override(policy, "blockers,bake", "sev1 fix", "alice")
    assert got == {OverrideTarget.BLOCKERS, OverrideTarget.BAKES}
    with pytest.raises(UsageError, match="does not allow skipping windows"):
        check_override(policy, "window", "why", "alice")
    with pytest.raises(UsageError, match="--reason"):
        check_override(policy, "bake", "", "alice")
    with pytest.raises(UsageError, match="may not approve"):
        check_override(policy, "bake", "why", "mallory")
    with pytest.raises(UsageError, match="unknown gate 'alarms'"):
        check_override(policy, "alarms", "why", "alice")


def _preprod(tests: tuple[str, ...]) -> Stage:
    from dataclasses import replace

    return replace(STAGE, tests=tests)


def test_preprod_tests_run_for_real_and_their_exit_status_decides() -> None:
    gate = PreprodTestsGate(timeout_s=5.0)
    ok = run(gate.check(_target(DATA, _preprod(("echo hello $FLEETWAVE_STAGE",))), 1.0, 2.0))
    assert ok.kind == "ok"
    assert ok.inputs[0]["output"].strip() == f"hello {STAGE.id}"
    bad = run(gate.check(_target(DATA, _preprod(("true", "echo nope; exit 3"))), 5.0, 6.0))
    assert bad.kind == "fail"
    assert "exited 3" in bad.reason
    assert [r["exit_status"] for r in bad.inputs] == [0, 3]
    slow = PreprodTestsGate(timeout_s=0.2)
    v = run(slow.check(_target(DATA, _preprod(("sleep 5",))), 1.0, 2.0))
    assert v.kind == "fail"
    assert "timed out" in v.reason


def test_preprod_tests_run_once_per_bake() -> None:
    calls: list[str] = []

    async def fake(command: str, limit_s: float, env: Mapping[str, str]) -> Any:
        from fleetwave.rollout.gates import CommandOutcome

        calls.append(command)
        return CommandOutcome(command, 0, "", 0.0)

    gate = PreprodTestsGate(runner=fake)
    t = _target(DATA, _preprod(("a",)))
    run(gate.check(t, 1.0, 2.0))
    run(gate.check(t, 1.0, 3.0))
    assert calls == ["a"]


def test_a_cancelled_test_command_is_killed_not_orphaned(tmp_path: Path) -> None:
    marker = tmp_path / "pid"

    async def go() -> None:
        task = asyncio.create_task(run_command(f"echo $$ > {marker}; exec sleep 30", 60.0))
        for _ in range(200):  # bounded: until the shell wrote its pid
            if marker.exists() and marker.read_text().strip():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    pid = int(marker.read_text())
    for _ in range(200):  # the kill is asynchronous; a zombie is gone once reaped
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split()[2] == "Z":
                break
        time.sleep(0.01)
    else:
        raise AssertionError(f"test command {pid} still runs after its cancel")


def test_gates_report_the_time_their_tests_may_take() -> None:
    gates = Gates(bake=(BakeGate(), PreprodTestsGate(timeout_s=7.0)))
    assert gates.bake_time_limit_s(_target(DATA, _preprod(("a", "b")))) == 14.0
    assert gates.bake_time_limit_s(_target(DATA)) == 0.0
