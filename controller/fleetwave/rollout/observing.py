"""What the runner shows of each decision: pure functions from the engine's inputs and
state changes to observed events (the event log, the progress view, the metrics)."""

from __future__ import annotations

from collections import Counter

from fleetwave.observe.events import (
    AlarmStateChanged,
    AnomalyVerdictChanged,
    DeploymentChanged,
    GateVerdict,
    HostsOutOfRotation,
    HostsSummary,
    ObservedEvent,
    OverrideRecorded,
    StageChanged,
)
from fleetwave.rollout.events import AlarmChanged, AnomalyJudged, Event, GateResult, OverrideGranted
from fleetwave.rollout.state import Phase, State, out_of_rotation


def trail_events(deployment_id: str, event: Event, now: float) -> list[ObservedEvent]:
    """The decision trail of one engine input: verdicts, alarm changes, overrides."""
    dep = deployment_id
    if isinstance(event, GateResult):
        v = event.verdict
        return [GateVerdict(dep, now, str(event.target), event.purpose, v.kind, v.reason, v.inputs)]
    if isinstance(event, AlarmChanged):
        role, state = event.role.value, event.state.value
        return [AlarmStateChanged(dep, now, event.alarm, role, state, event.reason, event.evidence)]
    if isinstance(event, AnomalyJudged):
        outcome = event.outcome.value
        return [
            AnomalyVerdictChanged(dep, now, event.stage_id, outcome, event.reason, event.evidence)
        ]
    if isinstance(event, OverrideGranted):
        skip = tuple(sorted(t.value for t in event.skip))
        return [OverrideRecorded(dep, now, skip, event.reason, event.approver, event.by)]
    return []


def state_events(deployment_id: str, old: State, new: State, now: float) -> list[ObservedEvent]:
    """What changed between two engine states: the deployment's phase (not its end,
    which the runner reports with the result), stage phases, host counts, and the
    hosts out of rotation."""
    dep = deployment_id
    out: list[ObservedEvent] = []
    if new.phase is not old.phase and new.phase is not Phase.FINISHED:
        out.append(DeploymentChanged(dep, now, new.phase.value, None, new.rollback_reason))
    for sid, st in new.stages.items():
        if st.phase is not old.stages[sid].phase:
            out.append(StageChanged(dep, now, sid, st.phase.value))
    if new.hosts is not old.hosts:
        counts = Counter(h.phase.value for h in new.hosts.values())
        per_stage = Counter((h.stage_id, h.phase.value) for h in new.hosts.values())
        by_stage: dict[str, dict[str, int]] = {}
        for (sid, phase), n in per_stage.items():
            by_stage.setdefault(sid, {})[phase] = n
        stages = tuple((sid, tuple(sorted(c.items()))) for sid, c in sorted(by_stage.items()))
        out.append(HostsSummary(dep, now, tuple(sorted(counts.items())), stages))
        left = out_of_rotation(new)
        if left != out_of_rotation(old):
            out.append(HostsOutOfRotation(dep, now, left))
    return out


__all__ = ["state_events", "trail_events"]
