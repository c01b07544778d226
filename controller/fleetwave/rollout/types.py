"""The engine's input events and output actions: plain frozen data.

Events are what the runner observed (a host drained, a gate answered, a timer
elapsed); actions are what the engine wants done. Both serialise to JSON
(:func:`to_json` / :func:`event_from_json`) so the journal can store every event and
``fleetwave resume`` can replay them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# -- gate verdicts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A gate's answer: ``ok``, ``wait`` (ask again at ``retry_at``) or ``fail``."""

    kind: Literal["ok", "wait", "fail"]
    reason: str = ""
    retry_at: float | None = None

    @classmethod
    def ok(cls) -> Verdict:
        return cls("ok")

    @classmethod
    def wait(cls, reason: str, retry_at: float | None = None) -> Verdict:
        return cls("wait", reason, retry_at)

    @classmethod
    def fail(cls, reason: str) -> Verdict:
        return cls("fail", reason)


@dataclass(frozen=True)
class BeforeRelease:
    """The release a host ran before our install (``None``: it had none)."""

    release: str | None


@dataclass(frozen=True)
class HostFacts:
    """What resume learned about one host from its agent (and balancer)."""

    current: str | None  # the agent's current release, None if it has none or is unreachable
    before_known: bool = False  # the journal recorded the release before our install
    before: str | None = None


# -- events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentStarted:
    pass


@dataclass(frozen=True)
class StageProbed:
    """Hosts of the stage that were healthy and in rotation when the stage started."""

    stage_id: str
    serving: frozenset[str]


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
    step: str  # drain | install | return | rollback
    kind: str  # an error class name, e.g. HostUnreachableError, or self_rolled_back
    message: str
    before: BeforeRelease | None = None


@dataclass(frozen=True)
class GateResult:
    target: str  # a stage id, or wave:<index>
    purpose: Literal["blockers", "bake"]
    verdict: Verdict


@dataclass(frozen=True)
class TimerElapsed:
    key: str


@dataclass(frozen=True)
class RollbackRequested:
    reason: str
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
    | Resumed
)

# -- actions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckBlockers:
    stage_id: str


@dataclass(frozen=True)
class ProbeStage:
    """Read every host's balancer state and agent health; answer with StageProbed."""

    stage_id: str


@dataclass(frozen=True)
class DrainHost:
    host: str
    stage_id: str
    rollback: bool = False


@dataclass(frozen=True)
class InstallOnHost:
    """Upload the package unless present, then install (health checks included)."""

    host: str
    stage_id: str


@dataclass(frozen=True)
class ReturnHost:
    """Check the agent's health, then put the host back in rotation."""

    host: str
    stage_id: str
    rollback: bool = False


@dataclass(frozen=True)
class RollbackHost:
    """Make ``to_release`` current again on the agent, locally (no upload)."""

    host: str
    stage_id: str
    to_release: str | None


@dataclass(frozen=True)
class CheckGate:
    target: str
    window_start: float


@dataclass(frozen=True)
class WaitUntil:
    at: float
    key: str


@dataclass(frozen=True)
class Finish:
    result: str
    failed: tuple[tuple[str, str], ...]  # (host, "step: kind: message")
    rollback_reason: str | None = None


Action = (
    CheckBlockers
    | ProbeStage
    | DrainHost
    | InstallOnHost
    | ReturnHost
    | RollbackHost
    | CheckGate
    | WaitUntil
    | Finish
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
        Resumed,
    )
}


def to_json(obj: Event | Action) -> dict[str, Any]:
    """A JSON-able dict naming the type; sets become sorted lists."""
    out: dict[str, Any] = {"type": type(obj).__name__}
    for f in dataclasses.fields(obj):
        out[f.name] = _plain(getattr(obj, f.name))
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def event_from_json(data: Mapping[str, Any]) -> Event:
    """Rebuild an event written by :func:`to_json`; KeyError/TypeError on bad input."""
    cls = _EVENT_TYPES[data["type"]]
    args = {k: v for k, v in data.items() if k != "type"}
    if cls is StageProbed:
        args["serving"] = frozenset(args["serving"])
    elif cls is GateResult:
        args["verdict"] = Verdict(**args["verdict"])
    elif cls is HostFailed and args.get("before") is not None:
        args["before"] = BeforeRelease(**args["before"])
    elif cls is Resumed:
        args["facts"] = {k: HostFacts(**v) for k, v in args["facts"].items()}
    event: Event = cls(**args)
    return event
