"""The runner journals each decision (its event, state change and intents) as one
commit, so an action never starts before its intent is durable, and a crash after the
event never loses the intents (``bench/bench_journal.py`` measures the gain)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fleetwave.rollout.gates import Gates
from fleetwave.rollout.journal import Journal
from fleetwave.rollout.runner import Runner

from .fakes import FakeBalancer, FakeClock, FakeFleet, start_deployment
from .sim import make_plan

pytestmark = pytest.mark.integration

PKG = "b" * 64


def test_a_decision_is_one_commit_its_intents_are_durable_with_its_event(
    tmp_path: Path,
) -> None:
    """A crash right after a decision's event was written never loses its intents: the
    event and the intents are one commit (a crash can only come after both)."""
    from fleetwave.rollout.journal import KillPoint

    class Crash(Exception):
        pass

    def crash() -> None:
        raise Crash

    plan = make_plan([[[2]]], max_out=2)
    journal = Journal(
        tmp_path / "journal.db", kill_at=KillPoint(1, "event", "StageProbed"), on_kill=crash
    )
    runner = Runner(
        start_deployment(journal, plan, "d7", PKG),
        journal=journal,
        transport=FakeFleet(plan.hosts()),
        balancers={"lb": FakeBalancer()},
        gates=Gates(),
        clock=FakeClock(),
        request_poll_s=None,
    )
    with pytest.raises(Crash):
        asyncio.run(asyncio.wait_for(runner.run(), timeout=30))
    steps = journal.steps("d7")
    probed = next(i for i, s in enumerate(steps) if s.name == "StageProbed")
    after = [s.name for s in steps[probed + 1 :]]
    assert after[:2] == ["DrainHost", "DrainHost"], after  # both drains' intents
