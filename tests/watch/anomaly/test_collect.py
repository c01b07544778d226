"""HostWindow from agent snapshots: the agent source's own rules (resets, releases),
restarts and flaps, and agreement with ``agent_source.compute``."""

from __future__ import annotations

from typing import Any

import pytest

from fleetwave.config.alarms import MetricSpec, Statistic
from fleetwave.watch.agent_source import compute, parse_snapshot
from fleetwave.watch.anomaly import host_window
from fleetwave.watch.ring import Snapshot, ring_of
from fleetwave.watch.source import MetricQuery, Window

pytestmark = pytest.mark.unit

REQ = "fleetwave_agent_app_requests_total"
ERR = "fleetwave_agent_app_request_errors_total"
CPU = "fleetwave_agent_app_cpu_seconds_total"
LAT = "fleetwave_agent_app_request_duration_seconds"
RSS = "fleetwave_agent_app_resident_memory_bytes"
UP = "fleetwave_agent_app_up"
HEALTH = "fleetwave_agent_health_check_up"


def snap(
    at: float,
    req: float,
    err: float,
    cpu: float,
    lat: list[float],
    *,
    release: str = "2",
    up: float = 1.0,
    health: float = 1.0,
) -> Snapshot:
    data: dict[str, Any] = {
        "v": 1,
        "release": release,
        "counters": {REQ: req, ERR: err, CPU: cpu},
        "gauges": {RSS: [100.0 + at], UP: [up], HEALTH: [health, 1.0]},
        "histograms": {LAT: {"le": ["0.1", "1", "+Inf"], "counts": lat, "sum": 0.0}},
    }
    return parse_snapshot(data, at)


SNAPS = [
    snap(0, 0, 0, 0.0, [0, 0, 0], release="1"),
    snap(10, 100, 1, 1.0, [80, 95, 100]),
    snap(20, 250, 3, 2.0, [200, 240, 250]),
    snap(30, 20, 0, 0.1, [10, 19, 20], health=0.0),  # app restarted: counters reset
    snap(40, 120, 2, 1.1, [70, 110, 120], up=0.0),
    snap(50, 220, 2, 2.1, [150, 210, 220]),
]
RING = ring_of(SNAPS)


def test_counts_with_resets_and_only_the_release() -> None:
    w = host_window("h1", RING, 0.0, 50.0, "2")
    assert w.seconds == 50.0
    assert w.requests == 100 + 150 + 20 + 100 + 100
    assert w.errors == 1 + 2 + 0 + 2 + 0
    assert w.restarts == 2  # the CPU reset at 30, app_up 1 -> 0 at 40
    assert w.flaps == 1  # health passing -> failing at 30
    assert [p.at for p in w.rss] == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert w.latency is not None
    assert w.latency.total == w.requests
    # Only what release "2" served: the pair ending at 10 is the first (its older
    # snapshot was "1"); with release "1" there is nothing.
    assert host_window("h1", RING, 0.0, 50.0, "1").seconds == 0.0


def test_agrees_with_the_agent_source() -> None:
    rings = {"h1": RING}
    window = Window(end=50.0, period_s=50.0, count=1)
    for metric, value in (("requests", "requests"), ("errors", "errors")):
        series = compute(
            MetricQuery(MetricSpec(metric, Statistic.COUNT), release="2"), window, rings
        )
        assert series.points[0].value == getattr(host_window("h1", RING, 0, 50, "2"), value)
    p50 = compute(MetricQuery(MetricSpec("latency", Statistic.P50), release="2"), window, rings)
    lat = host_window("h1", RING, 0, 50, "2").latency
    assert lat is not None
    assert lat.quantile(0.5) == pytest.approx(p50.points[0].value)
