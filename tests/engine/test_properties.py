"""Hypothesis drives the engine with random plans, policies, host outcomes and
completion orders; the safety invariants are checked after every decision."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetwave.rollout import Phase, Result
from fleetwave.rollout.events import RollbackRequested

from .sim import Driver, World, check_final, make_plan

pytestmark = pytest.mark.unit

MAX_STEPS = 3000

shapes = st.lists(
    st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=3), min_size=1, max_size=2),
    min_size=1,
    max_size=3,
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Driver, st.DataObject | None]:
    shape = draw(shapes)
    plan = make_plan(
        shape,
        max_out=draw(st.integers(1, 3)),
        min_serving=draw(st.integers(0, 4)),
        rollback_batch=draw(st.integers(1, 4)),
        budget=draw(st.integers(0, 2)),
        bake_s=draw(st.sampled_from([0.0, 30.0])),
        lb=draw(st.booleans()),
        feasible=draw(st.booleans()),
    )
    names = [h.name for h in plan.hosts()]
    world = World(
        plan,
        healthy={n: draw(st.sampled_from([True, True, True, False])) for n in names},
        release={n: draw(st.sampled_from(["v1", "v1", None])) for n in names},
        lb_ready={n: True for n in names},
    )
    return Driver(plan, world), None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_invariants_hold_under_random_outcomes(scenario, data) -> None:
    driver, _ = scenario
    world = driver.world
    fail_rate = data.draw(st.sampled_from([0.0, 0.1, 0.4]))
    driver.start()
    for _ in range(MAX_STEPS):
        if world.finished is not None:
            break
        if not driver.pending:
            raise AssertionError(f"stuck with no pending action in {driver.state.phase}")
        i = data.draw(st.integers(0, len(driver.pending) - 1), label="which")
        action = driver.pending.pop(i)
        ok = data.draw(st.floats(0, 1), label="luck") >= fail_rate
        verdict = data.draw(
            st.sampled_from(["ok", "ok", "ok", "wait", "fail" if fail_rate else "ok"])
        )
        healthy = data.draw(st.booleans(), label="healthy")  # a failed return's cause
        event = world.outcome(action, ok, verdict, healthy)
        if event is not None:
            driver.feed(event)
        if (
            driver.state.phase is Phase.RUNNING
            and data.draw(st.integers(0, 200), label="operator") == 0
        ):
            driver.feed(RollbackRequested("operator", "test"))
    else:
        raise AssertionError("did not finish within the step bound")
    check_final(world, driver.state)


@settings(max_examples=100, deadline=None)
@given(shapes, st.data())
def test_no_failures_means_success_and_everything_on_new(shape, data) -> None:
    plan = make_plan(
        shape, max_out=data.draw(st.integers(1, 3)), min_serving=1, budget=0, feasible=True
    )
    names = [h.name for h in plan.hosts()]
    world = World(
        plan, {n: True for n in names}, {n: "v1" for n in names}, {n: True for n in names}
    )
    driver = Driver(plan, world)
    driver.start()
    for _ in range(MAX_STEPS):
        if world.finished is not None or not driver.pending:
            break
        action = driver.pending.pop(data.draw(st.integers(0, len(driver.pending) - 1)))
        event = world.outcome(action, True)
        if event is not None:
            driver.feed(event)
    assert world.finished is not None
    assert world.finished.result is Result.SUCCEEDED
    assert all(world.release[n] == "v2" and world.lb_ready[n] for n in names)
