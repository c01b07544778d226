"""What a running deployment reports to the outside: observability events and the
:class:`EventSink` seam that metrics, the JSON-lines event log and the progress view
plug into. Sinks must not raise and must not block for long: the runner calls them
inline.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from fleetwave.rollout.types import FailureKind, HostOp, Result

if TYPE_CHECKING:
    from fleetwave.rollout.watching import AlarmReading


@dataclass(frozen=True)
class DeploymentChanged:
    deployment_id: str
    at: float
    state: str  # running | rolling_back | finished | aborted
    result: Result | None = None
    reason: str | None = None


@dataclass(frozen=True)
class StageChanged:
    deployment_id: str
    at: float
    stage: str
    phase: str
    duration_s: float | None = None  # set when the stage ends


@dataclass(frozen=True)
class HostStep:
    deployment_id: str
    at: float
    host: str
    stage: str
    step: HostOp
    outcome: Literal["start", "ok", "failed"]
    duration_s: float | None = None
    error_kind: FailureKind | None = None
    message: str = ""


@dataclass(frozen=True)
class HostsSummary:
    """Counts of hosts by engine phase, sent after every decision that changed one;
    ``by_stage`` gives the same counts for each stage that has hosts (the live view)."""

    deployment_id: str
    at: float
    by_phase: tuple[tuple[str, int], ...]
    by_stage: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()


@dataclass(frozen=True)
class Note:
    deployment_id: str
    at: float
    message: str


@dataclass(frozen=True)
class GateVerdict:
    """A gate's verdict with its inputs (the decision trail)."""

    deployment_id: str
    at: float
    target: str
    purpose: str  # blockers | bake
    verdict: str  # ok | wait | hold | fail
    reason: str
    inputs: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class AlarmStateChanged:
    """A watched alarm (rollback or one-box) changed state; evidence is its record."""

    deployment_id: str
    at: float
    alarm: str
    role: str
    state: str
    reason: str
    evidence: Mapping[str, Any]


@dataclass(frozen=True)
class AnomalyVerdictChanged:
    """The anomaly detector's outcome for a stage changed; ``verdict`` is its record
    (``Verdict.to_json()``: every finding's n, statistic, p, effect, floors)."""

    deployment_id: str
    at: float
    stage: str
    outcome: str  # pass | fail | wait
    reason: str
    verdict: Mapping[str, Any]


@dataclass(frozen=True)
class OverrideRecorded:
    deployment_id: str
    at: float
    skip: tuple[str, ...]
    reason: str
    approver: str
    by: str


@dataclass(frozen=True)
class AlarmsEvaluated:
    """One watch round: every alarm's state and newest value, by scope (metrics)."""

    deployment_id: str
    at: float
    readings: tuple[AlarmReading, ...]


@dataclass(frozen=True)
class HostsOutOfRotation:
    """Every host the deployment leaves out of rotation so far, with why:
    ``(host, reason, why)``; reasons ``operator``, ``failed``, ``rollback_failed``,
    ``stopped`` (mid-step when the controller stopped; resume finishes it)."""

    deployment_id: str
    at: float
    hosts: tuple[tuple[str, str, str], ...]


ObservedEvent = (
    DeploymentChanged
    | StageChanged
    | HostStep
    | HostsSummary
    | HostsOutOfRotation
    | Note
    | GateVerdict
    | AlarmStateChanged
    | AnomalyVerdictChanged
    | OverrideRecorded
    | AlarmsEvaluated
)


class EventSink(Protocol):
    def emit(self, event: ObservedEvent) -> None:
        """Record or display one event. Must not raise."""
        ...


def event_dict(event: ObservedEvent) -> dict[str, Any]:
    """The JSON form of an event: its fields plus ``event`` naming its type."""
    out: dict[str, Any] = {"event": type(event).__name__}
    out.update(dataclasses.asdict(event))
    for k, v in out.items():
        if isinstance(v, enum.Enum):
            out[k] = v.value
    if isinstance(event, HostsSummary):
        out["by_phase"] = dict(event.by_phase)
        out["by_stage"] = {stage: dict(counts) for stage, counts in event.by_stage}
    if isinstance(event, AlarmsEvaluated):
        out["readings"] = [
            {"alarm": r.alarm, "scope": r.scope, "state": r.state.value, "value": r.value}
            for r in event.readings
        ]
    return out


class FanOut:
    """Sends every event to several sinks; a failing sink is dropped, not fatal."""

    def __init__(self, sinks: Iterable[EventSink]) -> None:
        self.sinks = list(sinks)

    def emit(self, event: ObservedEvent) -> None:
        for sink in list(self.sinks):
            try:
                sink.emit(event)
            except Exception:
                self.sinks.remove(sink)


class JsonLinesFile:
    """The structured event log: one JSON object per line, appended, flushed per event."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def emit(self, event: ObservedEvent) -> None:
        line = json.dumps(event_dict(event), sort_keys=True, separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode())

    def close(self) -> None:
        os.close(self._fd)


class JsonLinesStream:
    """``--json``: the same JSON lines on a stream (stdout) for scripts."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def emit(self, event: ObservedEvent) -> None:
        self.stream.write(json.dumps(event_dict(event), sort_keys=True) + "\n")
        self.stream.flush()


def describe(event: ObservedEvent) -> str | None:
    """One plain line for a human, or None for events not worth a line."""
    if isinstance(event, DeploymentChanged):
        extra = f" result={event.result}" if event.result else ""
        why = f" ({event.reason})" if event.reason else ""
        return f"deployment {event.deployment_id}: {event.state}{extra}{why}"
    if isinstance(event, StageChanged):
        return f"stage {event.stage}: {event.phase}"
    if isinstance(event, HostStep):
        if event.outcome == "start":
            return None
        tail = f": {event.error_kind}: {event.message}" if event.outcome == "failed" else ""
        return f"host {event.host} [{event.stage}] {event.step} {event.outcome}{tail}"
    if isinstance(event, Note):
        return event.message
    if isinstance(event, GateVerdict) and event.verdict != "ok":
        return f"{event.purpose} {event.target}: {event.verdict}: {event.reason}"
    if isinstance(event, GateVerdict):
        return f"{event.purpose} {event.target}: ok"
    if isinstance(event, AlarmStateChanged):
        return f"alarm {event.alarm} ({event.role}): {event.state}: {event.reason}"
    if isinstance(event, AnomalyVerdictChanged):
        return f"anomaly {event.stage}: {event.outcome}: {event.reason}"
    if isinstance(event, OverrideRecorded):
        return (
            f"override: skipping {', '.join(event.skip)}: {event.reason} "
            f"(approved by {event.approver}, by {event.by})"
        )
    return None


class PlainLines:
    """Plain lines (stdout is not a TTY): one line per noteworthy event."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def emit(self, event: ObservedEvent) -> None:
        line = describe(event)
        if line is not None:
            self.stream.write(line + "\n")
            self.stream.flush()
