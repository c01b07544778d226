"""The anomaly detector, run by the watcher: one verdict per stage per round.

At every round, for each stage being rolled or baked, :func:`stage_sample` builds
the detector's input from the agent source's stored rows and the engine's state:

* **new**: the stage's hosts activated on the new release and in rotation (phase
  DONE, serving), each from the first round that saw it so (a host seen half a round
  in rotation would read as a traffic drop);
* **reference**, over the same window: hosts still on the old release (untouched)
  in the same stage or AZ; when none are left, the previous stage's hosts on the new
  release; else none;
* **before**: the same new hosts over a window as long, ending at the last round
  that saw them untouched (before their drain);
* ``planned_rounds = max(1, ceil(bake / interval))``.

:class:`AnomalyWatch` calls :func:`~fleetwave.watch.anomaly.detect`, keeps the latest
reading per stage for the bake gate (:class:`~fleetwave.rollout.gates.AnomalyGate`),
and returns an :class:`~fleetwave.rollout.events.AnomalyJudged` event whenever a
stage's outcome changes: FAIL rolls the deployment back in the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fleetwave.config.anomaly import AnomalySettings
from fleetwave.planning.model import HostRef, Plan, Stage
from fleetwave.rollout.events import AnomalyJudged
from fleetwave.rollout.gates import AnomalyReading
from fleetwave.rollout.state import HostPhase, HostState, Phase, StagePhase, State
from fleetwave.rollout.transitions import ANOMALY_PHASES
from fleetwave.rollout.types import AnomalyOutcome
from fleetwave.watch.anomaly import (
    HostWindow,
    Outcome,
    Reference,
    StageSample,
    detect,
    host_window,
)
from fleetwave.watch.ring import HostRing

Rings = Callable[[str], HostRing]


@dataclass(frozen=True)
class Built:
    """A stage's sample; whether it is *idle* (no request on any side); and whether it
    has *no baseline*: the new hosts serve, but nothing they could be compared with
    ever did (a first install: no old release runs anywhere near them)."""

    sample: StageSample
    idle: bool
    no_baseline: bool = False


def planned_rounds(bake_s: float, interval_s: float) -> int:
    """How many evaluations a bake plans: alpha is split across them."""
    return max(1, math.ceil(bake_s / interval_s)) if interval_s > 0 else 1


def _active(h: HostState) -> bool:
    return h.phase is HostPhase.DONE and h.serving and h.release is not None


def reference_hosts(plan: Plan, state: State, stage: Stage) -> tuple[Reference, list[HostRef]]:
    """The hosts the stage's new hosts are compared with (see the module doc)."""
    mine = {h.name for h in stage.hosts}
    azs = {h.az for h in stage.hosts}
    old = [
        h
        for h in plan.hosts()
        if (h.name in mine or h.az in azs) and state.hosts[h.name].phase is HostPhase.PENDING
    ]
    if old:
        return Reference.OLD_RELEASE, old
    stages = plan.stages()
    idx = next(i for i, s in enumerate(stages) if s.id == stage.id)
    # The previous stage of the same region first, else the previous one in the plan.
    earlier = [s for s in stages[:idx] if s.region == stage.region] or stages[:idx]
    if earlier:
        prev = [h for h in earlier[-1].hosts if _active(state.hosts[h.name])]
        if prev:
            return Reference.PREVIOUS_STAGE, prev
    return Reference.NONE, []


def stage_sample(
    plan: Plan,
    state: State,
    stage: Stage,
    rings: Rings,
    active_since: Mapping[str, float],
    untouched_until: Mapping[str, float],
    now: float,
    interval_s: float,
) -> Built:
    """The detector's input for ``stage`` at ``now`` (pure; see the module doc)."""
    new: list[HostWindow] = []
    before: list[HostWindow] = []
    starts: list[float] = []
    for h in stage.hosts:
        hs = state.hosts[h.name]
        start = active_since.get(h.name)
        if not _active(hs) or start is None:
            continue
        ring = rings(h.name)
        new.append(host_window(h.name, ring, start, now, hs.release))
        starts.append(start)
        end = untouched_until.get(h.name)
        if end is not None:
            length = max(now - start, interval_s)
            before.append(host_window(h.name, ring, end - length, end, None))
    kind, ref_hosts = reference_hosts(plan, state, stage)
    reference: list[HostWindow] = []
    if starts and ref_hosts:
        since = min(starts)
        for h in ref_hosts:
            hs = state.hosts[h.name]
            release = hs.release if kind is Reference.PREVIOUS_STAGE else None
            reference.append(host_window(h.name, rings(h.name), since, now, release))
    sample = StageSample(
        stage=stage.id,
        at=now,
        new=tuple(new),
        reference=tuple(reference),
        reference_kind=kind if reference else Reference.NONE,
        before=tuple(before),
        planned_rounds=planned_rounds(stage.bake.duration_s, interval_s),
        settled=state.stages[stage.id].phase is StagePhase.BAKING,
    )
    served_new = sum(w.requests for w in new)
    served_baseline = sum(w.requests for w in (*reference, *before))
    return Built(
        sample,
        idle=bool(new) and served_new + served_baseline == 0,
        no_baseline=served_new > 0 and served_baseline == 0,
    )


_OUTCOME = {
    Outcome.PASS: AnomalyOutcome.PASS,
    Outcome.FAIL: AnomalyOutcome.FAIL,
    Outcome.WAIT: AnomalyOutcome.WAIT,
}


class AnomalyWatch:
    """Runs the detector each round (see the module doc); the bake gate's view."""

    def __init__(
        self, plan: Plan, settings: AnomalySettings, rings: Rings, *, interval_s: float
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.rings = rings
        self.interval_s = interval_s
        self.active_since: dict[str, float] = {}
        self.untouched_until: dict[str, float] = {}
        self.latest: dict[str, AnomalyReading] = {}
        self._emitted: dict[str, AnomalyOutcome] = {}

    def anomaly_for(self, stage_id: str) -> AnomalyReading | None:
        return self.latest.get(stage_id)

    def track(self, state: State, now: float) -> None:
        """Note which hosts are untouched and which became active, as of ``now``
        (the round's start, read before this round's poll)."""
        for name, h in state.hosts.items():
            if h.phase is HostPhase.PENDING:
                self.untouched_until[name] = now
            elif _active(h) and name not in self.active_since:
                # The newest snapshot came from this round's poll, after `now`: the
                # first pair counted starts there, when the host already served.
                last = self.rings(name).last_at
                last = now if last is None else last
                self.active_since[name] = max(last, now)
            elif not _active(h):
                self.active_since.pop(name, None)

    def judge(self, state: State, now: float) -> list[AnomalyJudged]:
        """One round (after the poll): a reading per live stage, and the changes."""
        if state.phase is not Phase.RUNNING or not self.settings.enabled:
            return []
        self.track(state, now)
        events: list[AnomalyJudged] = []
        for sid, ss in state.stages.items():
            if ss.phase not in ANOMALY_PHASES:
                continue
            built = stage_sample(
                self.plan,
                state,
                state.stage(sid),
                self.rings,
                self.active_since,
                self.untouched_until,
                now,
                self.interval_s,
            )
            verdict = detect(built.sample, self.settings)
            outcome = _OUTCOME[verdict.outcome]
            evidence = {**verdict.to_json(), "idle": built.idle}
            if built.no_baseline:
                evidence["no_baseline"] = True
            self.latest[sid] = AnomalyReading(
                sid, now, outcome, verdict.reason, built.idle, evidence, built.no_baseline
            )
            if self._emitted.get(sid) is not outcome:
                self._emitted[sid] = outcome
                events.append(AnomalyJudged(sid, outcome, verdict.reason, evidence))
        return events


__all__ = ["AnomalyWatch", "Built", "planned_rounds", "reference_hosts", "stage_sample"]
