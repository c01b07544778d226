"""Controller Prometheus metrics, as an :class:`~fleetwave.observe.events.EventSink`.

Everything lives in the sink's own ``CollectorRegistry`` (never the global one);
``serve`` exposes it for ``fleetwave deploy --metrics-port N``.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from fleetwave.observe.events import (
    AlarmsEvaluated,
    AnomalyVerdictChanged,
    DeploymentChanged,
    GateVerdict,
    HostsOutOfRotation,
    HostsSummary,
    HostStep,
    ObservedEvent,
    OverrideRecorded,
    StageChanged,
)

#: ``fleetwave_alarm_state``'s values.
ALARM_STATE_VALUE = {"OK": 0.0, "ALARM": 1.0, "INSUFFICIENT_DATA": -1.0}
VERDICTS = ("ok", "wait", "hold", "fail")
ANOMALY_OUTCOMES = ("pass", "wait", "fail")

#: The ``reason`` label values of ``fleetwave_hosts_out_of_rotation``.
OUT_OF_ROTATION_REASONS = ("operator", "failed", "rollback_failed", "stopped")
_STEP_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
_STAGE_BUCKETS = (10, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400)


class MetricsSink:
    """Turns deployment events into controller metrics (names: ``fleetwave_*``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.deployments = Counter(
            "fleetwave_deployments", "Deployments finished, by result", ["result"], registry=r
        )
        self.rollbacks = Counter("fleetwave_rollbacks", "Rollbacks started", registry=r)
        self.hosts = Gauge(
            "fleetwave_hosts",
            "Hosts of the running deployment by engine phase",
            ["phase"],
            registry=r,
        )
        self.stage_duration = Histogram(
            "fleetwave_stage_duration_seconds",
            "Time from a stage's start to the end of its bake",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.step_duration = Histogram(
            "fleetwave_host_step_duration_seconds",
            "Duration of one host step",
            ["step", "outcome"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.ssh_errors = Counter(
            "fleetwave_ssh_errors", "SSH transport errors by kind", ["kind"], registry=r
        )
        self.alarm_state = Gauge(
            "fleetwave_alarm_state",
            "Alarm state by scope: 1 ALARM, 0 OK, -1 INSUFFICIENT_DATA",
            ["alarm", "scope"],
            registry=r,
        )
        self.alarm_value = Gauge(
            "fleetwave_alarm_value",
            "The newest datapoint behind an alarm (absent while missing)",
            ["alarm", "scope"],
            registry=r,
        )
        self.verdict = Gauge(
            "fleetwave_gate_verdict",
            "The last verdict per target and gate: 1 on the verdict given, 0 on the others",
            ["target", "gate", "verdict"],
            registry=r,
        )
        self.bake_datapoints = Gauge(
            "fleetwave_bake_datapoints",
            "Datapoints a bake has counted so far (served by the new release)",
            ["target", "metric"],
            registry=r,
        )
        self.bake_required = Gauge(
            "fleetwave_bake_datapoints_required",
            "Datapoints a bake needs (min_datapoints)",
            ["target", "metric"],
            registry=r,
        )
        self.anomaly = Gauge(
            "fleetwave_anomaly_verdict",
            "The anomaly detector's last outcome per stage: 1 on it, 0 on the others",
            ["stage", "outcome"],
            registry=r,
        )
        self.overrides = Counter(
            "fleetwave_overrides",
            "Emergency overrides recorded, by gate skipped",
            ["skip"],
            registry=r,
        )
        self.out_of_rotation = Gauge(
            "fleetwave_hosts_out_of_rotation",
            "Hosts the deployment leaves out of rotation, by reason "
            "(operator, failed, rollback_failed, stopped)",
            ["reason"],
            registry=r,
        )
        for reason in OUT_OF_ROTATION_REASONS:
            self.out_of_rotation.labels(reason).set(0)
        self.rotation_time = Histogram(
            "fleetwave_host_out_of_rotation_seconds",
            "Time one host spent out of rotation: from the start of its drain to the end "
            "of its return to the balancer",
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self._stage_start: dict[str, float] = {}
        self._drained_at: dict[str, float] = {}

    def emit(self, event: ObservedEvent) -> None:
        if isinstance(event, DeploymentChanged):
            if event.state == "rolling_back":
                self.rollbacks.inc()
            if event.state == "finished" and event.result:
                self.deployments.labels(event.result).inc()
        elif isinstance(event, HostsSummary):
            counts = dict(event.by_phase)
            for phase in set(counts) | self._seen_phases():
                self.hosts.labels(phase).set(counts.get(phase, 0))
        elif isinstance(event, HostsOutOfRotation):
            counts = {reason: 0 for reason in OUT_OF_ROTATION_REASONS}
            for _host, reason, _why in event.hosts:
                counts[reason] = counts.get(reason, 0) + 1
            for reason, n in counts.items():
                self.out_of_rotation.labels(reason).set(n)
        elif isinstance(event, HostStep):
            self._host_step(event)
        elif isinstance(event, StageChanged):
            if event.phase in ("checking_blockers", "waiting_start"):
                self._stage_start.setdefault(event.stage, event.at)
            elif event.phase == "done" and event.stage in self._stage_start:
                self.stage_duration.observe(event.at - self._stage_start.pop(event.stage))
        elif isinstance(event, AlarmsEvaluated):
            for row in event.readings:
                self.alarm_state.labels(row.alarm, row.scope).set(
                    ALARM_STATE_VALUE[row.state.value]
                )
                if row.value is None:
                    with contextlib.suppress(KeyError):
                        self.alarm_value.remove(row.alarm, row.scope)
                else:
                    self.alarm_value.labels(row.alarm, row.scope).set(row.value)
        elif isinstance(event, GateVerdict):
            for v in VERDICTS:
                self.verdict.labels(event.target, event.purpose, v).set(
                    1.0 if v == event.verdict else 0.0
                )
            for rec in event.inputs:
                if rec.get("gate") == "bake" and "datapoints" in rec:
                    labels = (event.target, str(rec.get("metric")))
                    self.bake_datapoints.labels(*labels).set(rec["datapoints"])
                    self.bake_required.labels(*labels).set(rec["min_datapoints"])
                elif rec.get("gate") == "anomaly" and rec.get("outcome"):
                    self._anomaly(str(rec.get("stage", event.target)), str(rec["outcome"]))
        elif isinstance(event, AnomalyVerdictChanged):
            self._anomaly(event.stage, event.outcome)
        elif isinstance(event, OverrideRecorded):
            for skip in event.skip:
                self.overrides.labels(skip).inc()

    def _host_step(self, event: HostStep) -> None:
        if event.outcome == "start":
            if event.step == "drain":
                self._drained_at.setdefault(event.host, event.at)
            return
        self.step_duration.labels(event.step, event.outcome).observe(event.duration_s or 0.0)
        if event.step == "return" and event.outcome == "ok" and event.host in self._drained_at:
            self.rotation_time.observe(event.at - self._drained_at.pop(event.host))

    def _anomaly(self, stage: str, outcome: str) -> None:
        for o in ANOMALY_OUTCOMES:
            self.anomaly.labels(stage, o).set(1.0 if o == outcome else 0.0)

    def ssh_error(self, kind: Any, host: str) -> None:
        """``ErrorCounter`` listener of the SSH transport."""
        self.ssh_errors.labels(getattr(kind, "value", str(kind))).inc()

    def _seen_phases(self) -> set[str]:
        return {labels["phase"] for m in self.hosts.collect() for _, labels, *_ in m.samples}

    def serve(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Serve ``/metrics`` on ``addr:port`` in a daemon thread; returns the server."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server
