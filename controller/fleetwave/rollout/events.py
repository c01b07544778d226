"""The engine's input events: what the runner observed (a host drained, a gate
answered, a timer elapsed), as plain frozen data, and their JSON codec.

Events (and the actions of :mod:`fleetwave.rollout.types`) serialise to JSON
(:func:`to_json` / :func:`event_from_json`) so the journal can store every event and
``fleetwave resume`` can replay them. Their JSON forms are the ones the journal always
held, so journals written before the typed values existed still replay.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fleetwave.config.alarm_expr import AlarmState
from fleetwave.config.spec import OverrideTarget
from fleetwave.rollout.types import (
    Action,
    AlarmRole,
    AnomalyOutcome,
    BeforeRelease,
    FailureKind,
    HostFacts,
    HostOp,
    Target,
    TimerKey,
    Verdict,
)

# -- events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentStarted:
    """The first event. ``post_deploy_watch_s``: how long the rollback alarm is still
    watched after the last bake (journalled here, so a resume keeps it)."""

    post_deploy_watch_s: float = 0.0


@dataclass(frozen=True)
class StageProbed:
    """Hosts of the stage that were healthy and in rotation when the stage started, and
    those an operator holds out of rotation (``held``: host -> its balancer state,
    ``maint`` or ``drain``), which the deployment skips."""

    stage_id: str
    serving: frozenset[str]
    held: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HostDrained:
    host: str


@dataclass(frozen=True)
class HostInstalled:
    host: str
    release: str
    before: str | None  # the release that was current before


@dataclass(frozen=True)
class HostReturned:
    host: str


@dataclass(frozen=True)
class HostRolledBack:
    host: str


@dataclass(frozen=True)
class HostFailed:
    host: str
    step: HostOp
    kind: FailureKind
    message: str
    before: BeforeRelease | None = None


@dataclass(frozen=True)
class GateResult:
    target: Target
    purpose: Literal["blockers", "bake"]
    verdict: Verdict


@dataclass(frozen=True)
class TimerElapsed:
    key: TimerKey


@dataclass(frozen=True)
class RollbackRequested:
    reason: str
    by: str
    #: The journal ``requests`` row it came from (another process), if any: a resume
    #: consumes requests whose events were journalled before a crash.
    request_id: int | None = None


@dataclass(frozen=True)
class RollbackContinued:
    """``resume`` or ``rollback`` of a ``rollback_incomplete`` deployment: retry every
    host that is not back on its old release."""

    by: str


@dataclass(frozen=True)
class AlarmChanged:
    """A watched alarm changed state; ``evidence`` is its evaluation record."""

    alarm: str
    role: AlarmRole
    state: AlarmState
    reason: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AnomalyJudged:
    """The anomaly detector's outcome for a stage changed; ``evidence`` is the
    detector's verdict (``Verdict.to_json()``: n, statistic, p, effect, floors)."""

    stage_id: str
    outcome: AnomalyOutcome
    reason: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OverrideGranted:
    """An audited emergency override: the gates it skips, why, and who approved it."""

    skip: frozenset[OverrideTarget]
    reason: str
    approver: str
    by: str


@dataclass(frozen=True)
class Resumed:
    facts: Mapping[str, HostFacts] = field(default_factory=dict)


Event = (
    DeploymentStarted
    | StageProbed
    | HostDrained
    | HostInstalled
    | HostReturned
    | HostRolledBack
    | HostFailed
    | GateResult
    | TimerElapsed
    | RollbackRequested
    | AlarmChanged
    | AnomalyJudged
    | OverrideGranted
    | RollbackContinued
    | Resumed
)

# -- JSON -------------------------------------------------------------------------------

_EVENT_TYPES: dict[str, type[Any]] = {
    t.__name__: t
    for t in (
        DeploymentStarted,
        StageProbed,
        HostDrained,
        HostInstalled,
        HostReturned,
        HostRolledBack,
        HostFailed,
        GateResult,
        TimerElapsed,
        RollbackRequested,
        AlarmChanged,
        AnomalyJudged,
        OverrideGranted,
        RollbackContinued,
        Resumed,
    )
}


def to_json(obj: Event | Action) -> dict[str, Any]:
    """A JSON-able dict naming the type; sets become sorted lists."""
    out: dict[str, Any] = {"type": type(obj).__name__}
    out.update(_fields(obj))
    return out


#: Fields added after journals existed: left out while at their default, so that older
#: journal forms encode back unchanged.
_OMITTED_AT_DEFAULT = frozenset(("inputs", "post_deploy_watch_s"))


def _fields(obj: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in _OMITTED_AT_DEFAULT and value == f.default:
            continue
        out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Target | TimerKey):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    if isinstance(value, frozenset | set):
        return sorted(_plain(v) for v in value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def event_from_json(data: Mapping[str, Any]) -> Event:
    """Rebuild an event written by :func:`to_json`; KeyError/TypeError/ValueError on bad
    input."""
    cls = _EVENT_TYPES[data["type"]]
    args = {k: v for k, v in data.items() if k != "type"}
    if cls is StageProbed:
        args["serving"] = frozenset(args["serving"])
        args["held"] = dict(args.get("held") or {})
    elif cls is GateResult:
        args["target"] = Target.parse(args["target"])
        verdict = dict(args["verdict"])
        verdict["inputs"] = tuple(verdict.get("inputs", ()))
        args["verdict"] = Verdict(**verdict)
    elif cls is TimerElapsed:
        args["key"] = TimerKey.parse(args["key"])
    elif cls is HostFailed:
        args["step"] = HostOp(args["step"])
        args["kind"] = FailureKind.of_name(args["kind"])
        if args.get("before") is not None:
            args["before"] = BeforeRelease(**args["before"])
    elif cls is AlarmChanged:
        args["role"] = AlarmRole(args["role"])
        args["state"] = AlarmState(args["state"])
    elif cls is AnomalyJudged:
        args["outcome"] = AnomalyOutcome(args["outcome"])
    elif cls is OverrideGranted:
        args["skip"] = frozenset(OverrideTarget(t) for t in args["skip"])
    elif cls is Resumed:
        args["facts"] = {k: HostFacts(**v) for k, v in args["facts"].items()}
    event: Event = cls(**args)
    return event
