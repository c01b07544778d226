"""The controller's event sinks: Prometheus metrics, the JSON-lines log, plain lines and
fed the events a deployment emits."""

from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from fleetwave.observe.events import (
    DeploymentChanged,
    FanOut,
    HostsSummary,
    HostStep,
    JsonLinesFile,
    ObservedEvent,
    PlainLines,
    StageChanged,
    event_dict,
)
from fleetwave.observe.metrics import MetricsSink
from fleetwave.rollout import FailureKind, HostOp, Result

pytestmark = pytest.mark.unit

RUN: list[ObservedEvent] = [
    DeploymentChanged("d1", 0.0, "running"),
    StageChanged("d1", 1.0, "w1/r1/onebox", "checking_blockers"),
    HostsSummary("d1", 1.0, (("pending", 3),)),
    HostStep("d1", 2.0, "h1", "w1/r1/onebox", HostOp.DRAIN, "start"),
    HostStep("d1", 3.5, "h1", "w1/r1/onebox", HostOp.DRAIN, "ok", duration_s=1.5),
    HostStep(
        "d1",
        4.0,
        "h1",
        "w1/r1/onebox",
        HostOp.INSTALL,
        "failed",
        0.5,
        FailureKind.REMOTE_AGENT,
        "x",
    ),
    HostsSummary("d1", 4.0, (("pending", 2), ("failed", 1))),
    StageChanged("d1", 13.0, "w1/r1/onebox", "done"),
    DeploymentChanged("d1", 14.0, "rolling_back", reason="stage w1/r1/onebox: budget"),
    HostsSummary("d1", 15.0, (("rolled_back", 1),)),
    DeploymentChanged("d1", 16.0, "finished", result=Result.ROLLED_BACK),
]


def test_metrics_follow_a_rolled_back_run() -> None:
    registry = CollectorRegistry()
    sink = MetricsSink(registry)
    for event in RUN:
        sink.emit(event)
    sink.ssh_error("unreachable", "h2")
    value = registry.get_sample_value
    assert value("fleetwave_deployments_total", {"result": "rolled_back"}) == 1
    assert value("fleetwave_rollbacks_total") == 1
    # A phase that emptied is reported as 0, not left at its last value.
    assert value("fleetwave_hosts", {"phase": "pending"}) == 0
    assert value("fleetwave_hosts", {"phase": "failed"}) == 0
    assert value("fleetwave_hosts", {"phase": "rolled_back"}) == 1
    assert value("fleetwave_stage_duration_seconds_sum") == 12.0
    assert (
        value("fleetwave_host_step_duration_seconds_sum", {"step": "drain", "outcome": "ok"}) == 1.5
    )
    assert (
        value(
            "fleetwave_host_step_duration_seconds_count", {"step": "install", "outcome": "failed"}
        )
        == 1
    )
    assert value("fleetwave_ssh_errors_total", {"kind": "unreachable"}) == 1


def test_metrics_are_served_over_http() -> None:
    sink = MetricsSink(CollectorRegistry())
    sink.emit(DeploymentChanged("d1", 0.0, "finished", result=Result.SUCCEEDED))
    server = sink.serve(0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'fleetwave_deployments_total{result="succeeded"} 1.0' in text


def test_event_log_is_one_json_object_per_event(tmp_path: Path) -> None:
    log = JsonLinesFile(tmp_path / "state" / "events.jsonl")
    FanOut([log]).emit(RUN[0])
    log.emit(RUN[4])
    log.close()
    lines = (tmp_path / "state" / "events.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records] == ["DeploymentChanged", "HostStep"]
    assert records[1]["host"] == "h1"
    assert records[1]["duration_s"] == 1.5


def test_plain_lines_skip_step_starts_and_name_failures() -> None:
    out = io.StringIO()
    sink = PlainLines(out)
    for event in RUN:
        sink.emit(event)
    lines = out.getvalue().splitlines()
    assert "host h1 [w1/r1/onebox] drain start" not in lines
    assert "host h1 [w1/r1/onebox] drain ok" in lines
    assert "host h1 [w1/r1/onebox] install failed: RemoteAgentError: x" in lines
    assert lines[-1] == "deployment d1: finished result=rolled_back"


def test_event_log_gives_host_counts_by_stage() -> None:
    summary = HostsSummary(
        "d1",
        1.0,
        (("done", 1), ("pending", 2)),
        (("s1", (("done", 1),)), ("s2", (("pending", 2),))),
    )
    record = event_dict(summary)
    assert record["by_phase"] == {"done": 1, "pending": 2}
    assert record["by_stage"] == {"s1": {"done": 1}, "s2": {"pending": 2}}
