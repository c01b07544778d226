"""The rollout: a pure, table-driven state machine over deployment → wave → stage →
host, and the I/O shell that drives it.

The pure core: ``engine`` (``decide``: events in, actions out) built from ``state``
(phases, frozen records), ``transitions`` (the host and stage transition tables),
``scheduler`` (sliding window, failure budget, the end) and ``resume`` (settling
what a crash left half done); ``types`` holds the events, actions and the typed
values at the boundary (results, failure kinds, gate targets, timer keys).

The shell: the asyncio ``runner`` that feeds the engine events and carries out its
actions, the crash-safe ``journal``, the deployment ``lock`` and the ``gates``
(windows, bakes) that decide when a stage may start or finish.

The names below are the package's public face; import the rest from its module.
"""

from fleetwave.rollout.engine import decide, is_forward
from fleetwave.rollout.events import Event
from fleetwave.rollout.state import (
    INFLIGHT,
    HostPhase,
    HostState,
    Phase,
    StagePhase,
    StageState,
    State,
    initial_state,
)
from fleetwave.rollout.transitions import HOST_TRANSITIONS, STAGE_TRANSITIONS, StageStep, Step
from fleetwave.rollout.types import (
    Action,
    FailureKind,
    Finish,
    HostOp,
    Result,
    Target,
    TargetKind,
    TimerKey,
    TimerKind,
    Verdict,
)

__all__ = [
    "HOST_TRANSITIONS",
    "INFLIGHT",
    "STAGE_TRANSITIONS",
    "Action",
    "Event",
    "FailureKind",
    "Finish",
    "HostOp",
    "HostPhase",
    "HostState",
    "Phase",
    "Result",
    "StagePhase",
    "StageState",
    "StageStep",
    "State",
    "Step",
    "Target",
    "TargetKind",
    "TimerKey",
    "TimerKind",
    "Verdict",
    "decide",
    "initial_state",
    "is_forward",
]
