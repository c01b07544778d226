"""Data-driven transition cases: ``cases/<name>.json`` feeds events to the engine and
lists the actions each decision must return (each expected action is a subset of the
action's JSON form)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetwave.rollout import decide, initial_state
from fleetwave.rollout.events import event_from_json, to_json

from .sim import make_plan

pytestmark = pytest.mark.unit

CASES = sorted((Path(__file__).parent / "cases").glob("*.json"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path) -> None:
    case: dict[str, Any] = json.loads(path.read_text())
    opts = dict(case["plan"])
    shape = opts.pop("shape")
    state = initial_state(make_plan(shape, **opts), poll_s=5.0)
    now = 0.0
    for i, step in enumerate(case["steps"]):
        now = float(step.get("now", now))
        state, actions = decide(state, event_from_json(step["event"]), now)
        got = [to_json(a) for a in actions]
        want = step["actions"]
        assert len(got) == len(want), f"step {i}: {got}"
        for g, w in zip(got, want, strict=True):
            assert {k: g.get(k) for k in w} == w, f"step {i}: {got}"


def test_there_are_cases() -> None:
    assert len(CASES) >= 5
