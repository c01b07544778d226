"""Time out of rotation per host, from journal steps and from the event stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from fleetwave.observe.events import HostStep
from fleetwave.observe.metrics import MetricsSink
from fleetwave.observe.rotation import Rotation, rotations, summary
from fleetwave.rollout.types import HostOp

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Step:
    at: float
    kind: str
    name: str
    host: str | None
    payload: dict[str, Any] | None = None


def _forward(host: str, drained: float, returned: float) -> list[Step]:
    return [
        Step(drained, "intent", "DrainHost", host),
        Step(drained + 0.1, "event", "HostDrained", host),
        Step(drained + 0.2, "intent", "InstallOnHost", host),
        Step(returned - 0.1, "intent", "ReturnHost", host),
        Step(returned, "event", "HostReturned", host),
    ]


def test_each_interval_runs_from_the_drain_intent_to_the_return_event() -> None:
    steps = [
        *_forward("h1", 10.0, 12.5),
        *_forward("h2", 13.0, 14.0),
        # h1 again, for a rollback: a second interval adds up
        *_forward("h1", 20.0, 21.0),
        Step(30.0, "intent", "DrainHost", "h3"),  # failed: never returned
        Step(31.0, "event", "DeploymentFinished", None),
    ]
    found = rotations(steps)
    assert list(found) == ["h1", "h2", "h3"]
    assert found["h1"] == Rotation("h1", pytest.approx(3.5), 2)  # type: ignore[arg-type]
    assert found["h2"].seconds == pytest.approx(1.0)
    assert found["h3"] == Rotation("h3", 0.0, 0, out_since=30.0)
    assert summary(found) == "median 2.25s, longest 3.50s over 2 host(s); not returned: h3"


def test_a_retried_drain_is_one_interval_and_nothing_drained_says_so() -> None:
    steps = [Step(1.0, "intent", "DrainHost", "h1"), *_forward("h1", 2.0, 4.0)]
    assert rotations(steps)["h1"].seconds == pytest.approx(3.0)
    assert summary(rotations([])) == "no host was drained"


def test_the_controller_metric_observes_each_return() -> None:
    registry = CollectorRegistry()
    sink = MetricsSink(registry)
    for at, step, outcome in (
        (1.0, HostOp.DRAIN, "start"),
        (1.5, HostOp.DRAIN, "ok"),
        (2.0, HostOp.INSTALL, "start"),
        (3.0, HostOp.INSTALL, "ok"),
        (3.1, HostOp.RETURN, "start"),
        (3.25, HostOp.RETURN, "ok"),
    ):
        sink.emit(HostStep("d1", at, "h1", "s1", step, outcome))  # type: ignore[arg-type]
    name = "fleetwave_host_out_of_rotation_seconds"
    assert registry.get_sample_value(f"{name}_count") == 1.0
    assert registry.get_sample_value(f"{name}_sum") == pytest.approx(2.25)
