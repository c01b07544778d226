"""The capacity floor while rolling back counts hosts *able* to serve: in rotation, or
drained by us and healthy on a release that passed its health checks. Such a host is
returned first instead of blocking the rollback of the others (issue 8, "faults are
survived"). Driven through ``decide`` with no I/O."""

from __future__ import annotations

import pytest

from fleetwave.rollout import FailureKind, HostOp, HostPhase, Result
from fleetwave.rollout.events import Event, HostFailed
from fleetwave.rollout.state import able_to_serve
from fleetwave.rollout.types import (
    Action,
    BeforeRelease,
    CheckBlockers,
    DrainHost,
    InstallOnHost,
    ProbeStage,
    ReturnHost,
    RollbackHost,
)

from .sim import Driver, World, make_plan

pytestmark = pytest.mark.unit

S0 = "w0/r00/s0"


def _driver(rollback_batch: int = 1) -> Driver:
    # one stage of three hosts; at least two must serve
    plan = make_plan([[[3]]], max_out=1, min_serving=2, rollback_batch=rollback_batch)
    names = [h.name for h in plan.hosts()]
    world = World(
        plan,
        healthy=dict.fromkeys(names, True),
        release=dict.fromkeys(names, "v1"),
        lb_ready=dict.fromkeys(names, True),
    )
    driver = Driver(plan, world)
    driver.start()
    return driver


def _take(driver: Driver, kind: type[Action], host: str | None = None) -> Action:
    for i, a in enumerate(driver.pending):
        if isinstance(a, kind) and (host is None or getattr(a, "host", None) == host):
            return driver.pending.pop(i)
    raise AssertionError(f"no pending {kind.__name__} for {host}: {driver.pending}")


def _ok(driver: Driver, kind: type[Action], host: str | None = None) -> None:
    event = driver.world.outcome(_take(driver, kind, host), True)
    if event is not None:
        driver.feed(event)


def _feed(driver: Driver, action: Action, event: Event) -> None:
    driver.pending.remove(action)
    driver.feed(event)


def _h2_fails_its_return_while_healthy(driver: Driver) -> None:
    """h1 is updated; h2 is installed (health passed) but its return fails at the
    balancer: budget 0, the rollback begins with h2 drained, healthy, on v2."""
    _ok(driver, CheckBlockers)
    _ok(driver, ProbeStage)
    for kind in (DrainHost, InstallOnHost, ReturnHost):
        _ok(driver, kind, "h1")
    _ok(driver, DrainHost, "h2")
    _ok(driver, InstallOnHost, "h2")
    ret = _take(driver, ReturnHost, "h2")
    driver.pending.append(ret)
    _feed(driver, ret, HostFailed("h2", HostOp.RETURN, FailureKind.LOAD_BALANCER, "lb down"))


def test_a_healthy_host_we_drained_is_returned_first_and_counts_as_able() -> None:
    driver = _driver()
    _h2_fails_its_return_while_healthy(driver)
    h2 = driver.state.hosts["h2"]
    assert h2.fit
    assert not h2.serving
    # h2 goes back into rotation first, on the release its install proved healthy;
    # nothing else is taken out yet (rollback_batch 1)
    assert driver.state.hosts["h2"].phase is HostPhase.RB_RESTORING
    assert driver.pending == [ReturnHost("h2", S0, rollback=True, restore=True, expect="v2")]
    assert able_to_serve(driver.state.hosts["h2"])
    _ok(driver, ReturnHost, "h2")
    # now h1 and h2 are rolled back one at a time, two hosts serving throughout
    for _ in range(2):
        name = next(a.host for a in driver.pending if isinstance(a, DrainHost))
        for kind in (DrainHost, RollbackHost, ReturnHost):
            _ok(driver, kind, name)
    assert driver.world.finished is not None
    assert driver.world.finished.result is Result.ROLLED_BACK
    assert all(r == "v1" for r in driver.world.release.values())


def test_its_failed_rollback_no_longer_blocks_the_others() -> None:
    # Before: h2 (drained, not serving) was rolled back first; when that failed, h1
    # could not leave without breaking the floor, and the rollback stopped there.
    driver = _driver()
    _h2_fails_its_return_while_healthy(driver)
    _ok(driver, ReturnHost, "h2")
    # h1 first (both serve; the order of the two is the scheduler's)
    first = next(a.host for a in driver.pending if isinstance(a, DrainHost))
    other = "h2" if first == "h1" else "h1"
    for kind in (DrainHost, RollbackHost, ReturnHost):
        _ok(driver, kind, first)
    _ok(driver, DrainHost, other)
    rb = _take(driver, RollbackHost, other)
    driver.pending.append(rb)
    _feed(driver, rb, HostFailed(other, HostOp.ROLLBACK, FailureKind.HOST_UNREACHABLE, "gone"))
    fin = driver.world.finished
    assert fin is not None
    assert fin.result is Result.ROLLBACK_INCOMPLETE
    assert [h for h, _ in fin.failed] == [other]  # only the host that really failed
    assert driver.world.release[first] == "v1"


def test_with_a_larger_batch_the_others_start_while_it_is_returned() -> None:
    # rollback_batch 2: h2 is being returned and counts as able, so h1 may leave too
    # (able: h2 and h3). Should h2's return then fail, that is a failure, not a
    # decision that broke the floor.
    driver = _driver(rollback_batch=2)
    _h2_fails_its_return_while_healthy(driver)
    kinds = sorted((type(a).__name__, getattr(a, "host", None)) for a in driver.pending)
    assert kinds == [("DrainHost", "h1"), ("ReturnHost", "h2")]


def test_an_unhealthy_or_unproven_host_is_not_able_to_serve() -> None:
    driver = _driver()
    _ok(driver, CheckBlockers)
    _ok(driver, ProbeStage)
    _ok(driver, DrainHost, "h1")
    _ok(driver, InstallOnHost, "h1")
    ret = _take(driver, ReturnHost, "h1")
    driver.pending.append(ret)
    _feed(driver, ret, HostFailed("h1", HostOp.RETURN, FailureKind.HEALTH_CHECK, "503"))
    h1 = driver.state.hosts["h1"]
    assert not h1.fit
    assert not able_to_serve(h1)
    # not returned: rolled back at once (it is out anyway, so it costs no capacity)
    assert [type(a) for a in driver.pending] == [DrainHost]


def test_fitness_comes_only_from_a_passed_install() -> None:
    driver = _driver()
    _ok(driver, CheckBlockers)
    _ok(driver, ProbeStage)
    _ok(driver, DrainHost, "h1")
    assert not driver.state.hosts["h1"].fit  # drained, not yet proven on anything
    _ok(driver, InstallOnHost, "h1")
    assert driver.state.hosts["h1"].fit
    _ok(driver, ReturnHost, "h1")
    h1 = driver.state.hosts["h1"]
    assert not h1.fit
    assert h1.serving
    assert h1.before == BeforeRelease("v1")
