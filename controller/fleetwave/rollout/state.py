"""The engine's state: phases as enums, and frozen records of the deployment, its
stages and its hosts. ``decide`` never mutates them; it returns new ones."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from fleetwave.config.alarm_expr import AlarmState
from fleetwave.planning.model import Plan, Stage
from fleetwave.rollout.events import OverrideGranted
from fleetwave.rollout.types import AlarmRole, AnomalyOutcome, BeforeRelease, Result

DEFAULT_POLL_S = 5.0


class Phase(enum.Enum):
    """The deployment as a whole."""

    PENDING = "pending"
    RUNNING = "running"
    ROLLING_BACK = "rolling_back"
    FINISHED = "finished"


class StagePhase(enum.Enum):
    """One stage; its transitions are :data:`~fleetwave.rollout.transitions.STAGE_TRANSITIONS`."""

    PENDING = "pending"
    WAITING_START = "waiting_start"  # before Stage.earliest_start
    CHECKING_BLOCKERS = "checking_blockers"
    HELD = "held"  # a blocker, the rollback alarm or a closed window holds its start
    PROBING = "probing"  # reading LB + agent health of every host
    ROLLING = "rolling"
    BAKING = "baking"
    DONE = "done"


class HostPhase(enum.Enum):
    """One host; its transitions are :data:`~fleetwave.rollout.transitions.HOST_TRANSITIONS`."""

    PENDING = "pending"
    DRAINING = "draining"
    INSTALLING = "installing"
    RETURNING = "returning"
    DONE = "done"
    FAILED = "failed"  # stays drained; reported
    RB_PENDING = "rb_pending"
    RB_DRAINING = "rb_draining"
    RB_ROLLING_BACK = "rb_rolling_back"
    RB_RETURNING = "rb_returning"
    ROLLED_BACK = "rolled_back"
    RB_FAILED = "rb_failed"  # could not be rolled back; stays drained; reported
    SKIPPED = "skipped"  # an operator held it out of rotation at stage start; untouched
    RESTORING = "restoring"  # failed, but on a known-good release: returning it
    RESTORED = "restored"  # failed, back in rotation on a known-good release; reported
    #: rolling back: healthy and out only because we drained it, so it goes back into
    #: rotation before anything else is taken out; its own rollback comes later
    RB_RESTORING = "rb_restoring"


H = HostPhase
FORWARD_INFLIGHT = frozenset((H.DRAINING, H.INSTALLING, H.RETURNING))
ROLLBACK_INFLIGHT = frozenset((H.RB_DRAINING, H.RB_ROLLING_BACK, H.RB_RETURNING))
#: Host phases with a step in flight: the host is out of service and counts
#: against ``max_out`` (or ``rollback_batch``).
INFLIGHT = FORWARD_INFLIGHT | ROLLBACK_INFLIGHT | {H.RESTORING, H.RB_RESTORING}
#: Host phases that end a deployment with the host reported as failed and left out
#: of rotation.
FAILED = frozenset((H.FAILED, H.RB_FAILED))
#: Host phases that end a forward deployment with the host reported as failed.
FORWARD_FAILED = frozenset((H.FAILED, H.RESTORED))


@dataclass(frozen=True)
class HostState:
    name: str
    stage_id: str
    has_lb: bool
    phase: HostPhase = HostPhase.PENDING
    serving: bool = False  # set by the stage probe, then by our own steps
    install_issued: bool = False
    before: BeforeRelease | None = None  # the release it ran before our install
    release: str | None = None  # the release our install left current
    failure: str | None = None  # "step: kind: message" of the last failure
    held: str | None = None  # the balancer state an operator left it in (SKIPPED)
    #: Out of rotation only because we drained it, and healthy: its last step proved
    #: its health (an install passed the agent's checks) and no failure since said
    #: otherwise. Such a host is able to serve (see :func:`able_to_serve`).
    fit: bool = False


@dataclass(frozen=True)
class StageState:
    id: str
    phase: StagePhase = StagePhase.PENDING
    bake_start: float | None = None
    failures: int = 0
    verdict: str | None = None  # the kind of the last gate verdict (ok/wait/hold/fail)
    waiting: str | None = None  # what it waits for, while it waits or holds


@dataclass(frozen=True)
class State:
    """Everything the engine knows. Treat as immutable: ``decide`` returns a new one."""

    plan: Plan
    phase: Phase
    wave: int  # index into plan.waves of the wave in progress
    wave_bake_start: float | None
    stages: Mapping[str, StageState]
    hosts: Mapping[str, HostState]
    result: Result | None = None
    rollback_reason: str | None = None
    poll_s: float = DEFAULT_POLL_S
    #: Latest state of each watched alarm, by (role, alarm name), with its reason.
    alarms: Mapping[tuple[AlarmRole, str], tuple[AlarmState, str]] = field(default_factory=dict)
    #: Latest anomaly outcome of each stage the detector judged, with its reason.
    anomaly: Mapping[str, tuple[AnomalyOutcome, str]] = field(default_factory=dict)
    override: OverrideGranted | None = None
    post_deploy_watch_s: float = 0.0
    watch_until: float | None = None  # the end of the post-deploy watch, once it began
    wave_waiting: str | None = None  # what the current wave's bake waits for
    index: Mapping[str, Stage] = field(default_factory=dict, compare=False, repr=False)

    def stage_hosts(self, stage_id: str) -> list[HostState]:
        return [self.hosts[h.name] for h in self.index[stage_id].hosts]

    def stage(self, stage_id: str) -> Stage:
        return self.index[stage_id]


def able_to_serve(host: HostState) -> bool:
    """What the capacity floor counts while rolling back: a host in rotation, or one
    that fleetwave drained itself and that is healthy on a release that passed its
    health checks, while it waits or is being put back (``RB_PENDING``,
    ``RB_RESTORING``). Such a host can serve again with a return alone, so it is
    returned first rather than left out while the floor blocks everyone else."""
    return host.serving or (host.fit and host.phase in (H.RB_PENDING, H.RB_RESTORING))


def out_of_rotation(state: State) -> tuple[tuple[str, str, str], ...]:
    """Every host the deployment leaves (or has left, so far) out of rotation, in plan
    order: ``(host, reason label, why)``. Reason labels: ``operator`` (held out by an
    operator, skipped), ``failed`` (a forward step failed and it is not healthy on a
    known-good release), ``rollback_failed`` (it could not be rolled back)."""
    out = []
    for h in state.hosts.values():
        if h.phase is H.SKIPPED:
            out.append((h.name, "operator", f"held in {h.held} by an operator; skipped"))
        elif h.phase is H.FAILED:
            out.append((h.name, "failed", h.failure or ""))
        elif h.phase is H.RB_FAILED:
            out.append((h.name, "rollback_failed", h.failure or ""))
    return tuple(out)


def initial_state(plan: Plan, *, poll_s: float = DEFAULT_POLL_S) -> State:
    """The state of a deployment of ``plan`` that has not started."""
    hosts = {
        h.name: HostState(name=h.name, stage_id=s.id, has_lb=h.lb is not None)
        for s in plan.stages()
        for h in s.hosts
    }
    stages = {s.id: StageState(id=s.id) for s in plan.stages()}
    index = {s.id: s for s in plan.stages()}
    return State(plan, Phase.PENDING, 0, None, stages, hosts, poll_s=poll_s, index=index)


__all__ = [
    "DEFAULT_POLL_S",
    "FAILED",
    "FORWARD_FAILED",
    "FORWARD_INFLIGHT",
    "INFLIGHT",
    "ROLLBACK_INFLIGHT",
    "HostPhase",
    "HostState",
    "Phase",
    "StagePhase",
    "StageState",
    "State",
    "able_to_serve",
    "initial_state",
    "out_of_rotation",
]
