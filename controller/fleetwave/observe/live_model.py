"""The live view's model: deployment events folded into what an operator needs to see.

Pure: :class:`LiveModel` keeps what the events said and when; :meth:`LiveModel.snapshot`
turns it into a frozen :class:`Snapshot` for a given ``now``, so everything that depends
on time (elapsed, ETA, bake countdowns) is computed at render time, not event time. The
rendering lives in ``live_view``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetwave.observe.events import (
    AlarmsEvaluated,
    AlarmStateChanged,
    DeploymentChanged,
    GateVerdict,
    HostsSummary,
    HostStep,
    ObservedEvent,
    StageChanged,
    describe,
)
from fleetwave.planning.model import BakeRequirement, Plan, Stage
from fleetwave.rollout.state import INFLIGHT, ROLLBACK_INFLIGHT, HostPhase, StagePhase
from fleetwave.rollout.types import HostOp, Result

#: How many recent event lines and host failures a snapshot keeps.
RECENT = 3
_WAVE_PREFIX = "wave:"


class StageStatus(enum.Enum):
    """What the view says a stage is doing (engine phases, plus how it ended)."""

    PENDING = "pending"
    WAITING = "waiting"  # waiting_start or checking_blockers
    HELD = "held"
    PROBING = "probing"
    ROLLING = "rolling"
    BAKING = "baking"
    DONE = "done"
    ROLLING_BACK = "rolling back"
    ROLLED_BACK = "rolled back"
    ROLLBACK_FAILED = "rollback failed"
    STOPPED = "stopped"  # the deployment ended before this stage did
    NOT_STARTED = "not started"  # the deployment ended before this stage began

    @property
    def active(self) -> bool:
        """The stage is under way (neither waiting to begin nor over)."""
        return self in _ACTIVE


_ACTIVE = frozenset(
    (
        StageStatus.WAITING,
        StageStatus.HELD,
        StageStatus.PROBING,
        StageStatus.ROLLING,
        StageStatus.BAKING,
        StageStatus.ROLLING_BACK,
    )
)
_PHASE_STATUS = {
    StagePhase.PENDING: StageStatus.PENDING,
    StagePhase.WAITING_START: StageStatus.WAITING,
    StagePhase.CHECKING_BLOCKERS: StageStatus.WAITING,
    StagePhase.HELD: StageStatus.HELD,
    StagePhase.PROBING: StageStatus.PROBING,
    StagePhase.ROLLING: StageStatus.ROLLING,
    StagePhase.BAKING: StageStatus.BAKING,
    StagePhase.DONE: StageStatus.DONE,
}


@dataclass(frozen=True)
class HostCounts:
    """A stage's (or the fleet's) hosts by what they are doing."""

    total: int
    done: int = 0
    in_flight: int = 0
    failed: int = 0
    rolled_back: int = 0
    rollback_failed: int = 0
    rollback_in_flight: int = 0
    rollback_pending: int = 0  # queued for the rollback

    @classmethod
    def of(cls, total: int, phases: Mapping[str, int]) -> HostCounts:
        """Counts from a ``{host phase value: n}`` map of the engine."""

        def n(*ps: HostPhase) -> int:
            return sum(phases.get(p.value, 0) for p in ps)

        return cls(
            total=total,
            done=n(HostPhase.DONE),
            in_flight=n(*(INFLIGHT - ROLLBACK_INFLIGHT)),
            failed=n(HostPhase.FAILED),
            rolled_back=n(HostPhase.ROLLED_BACK),
            rollback_failed=n(HostPhase.RB_FAILED),
            rollback_in_flight=n(*ROLLBACK_INFLIGHT),
            rollback_pending=n(HostPhase.RB_PENDING),
        )

    def __add__(self, other: HostCounts) -> HostCounts:
        mine, theirs = dataclasses.astuple(self), dataclasses.astuple(other)
        return HostCounts(*(a + b for a, b in zip(mine, theirs, strict=True)))


@dataclass(frozen=True)
class BakeProgress:
    """A running bake at ``now``: time left and, when it counts data, how much."""

    left_s: float
    metric: str | None = None
    datapoints: int | None = None  # None: not counted yet
    required: int = 0


@dataclass(frozen=True)
class StageRow:
    id: str
    status: StageStatus
    hosts: HostCounts
    bake: BakeProgress | None = None
    duration_s: float | None = None  # from its start to done (or to the end)


@dataclass(frozen=True)
class Waiting:
    target: str  # a stage id or "wave:N"
    verdict: str  # wait | hold
    reason: str


@dataclass(frozen=True)
class AlarmLine:
    alarm: str
    scope: str
    state: str
    value: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything one frame shows, at one instant."""

    deployment_id: str
    state: str  # starting | running | rolling_back | finished
    result: Result | None
    reason: str | None
    elapsed_s: float
    eta_s: float | None  # None: unknown (no host finished yet) or not moving forward
    stages: tuple[StageRow, ...]
    hosts: HostCounts
    wave_bakes: tuple[tuple[int, BakeProgress], ...]
    waiting: tuple[Waiting, ...]
    alarms: tuple[AlarmLine, ...]  # the newest watch round, by (alarm, scope)
    role_alarms: tuple[tuple[str, str, str, str], ...]  # (role, alarm, state, reason)
    failures: tuple[str, ...]  # the newest host failures
    failure_count: int
    recent: tuple[str, ...]  # the newest event lines

    @property
    def finished(self) -> bool:
        return self.state == "finished"


@dataclass
class _Bake:
    """The newest bake verdict of a target (its inputs carry elapsed time and counts)."""

    at: float
    verdict: str
    record: Mapping[str, Any]


class LiveModel:
    """Folds deployment events; :meth:`snapshot` renders nothing and reads no clock."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._stages: dict[str, Stage] = {s.id: s for s in plan.stages()}
        self._wave_of = {s.id: w.index for w in plan.waves for r in w.regions for s in r.stages}
        self._has_lb = {h.name: h.lb is not None for h in plan.hosts()}
        self.deployment_id = "-"
        self.state = "starting"
        self.result: Result | None = None
        self.reason: str | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.phase: dict[str, StagePhase] = {}
        self.phase_at: dict[str, float] = {}
        self.stage_start: dict[str, float] = {}
        self.stage_end: dict[str, float] = {}
        self.by_stage: dict[str, dict[str, int]] = {}
        self.bakes: dict[str, _Bake] = {}
        self.waiting: dict[str, Waiting] = {}
        self.alarms: dict[tuple[str, str], AlarmLine] = {}
        self.role_alarms: dict[tuple[str, str], tuple[str, str]] = {}
        self.failures: deque[str] = deque(maxlen=RECENT)
        self.failure_count = 0
        self.recent: deque[str] = deque(maxlen=RECENT)
        self.waves_baked: set[int] = set()
        self._host_busy: dict[str, float] = {}  # host -> summed forward step time
        self.host_times: list[float] = []  # per completed host: its forward step time

    # -- folding ------------------------------------------------------------------------

    def apply(self, event: ObservedEvent) -> None:
        """Take one event into account (unknown ones only update the recent lines)."""
        self.deployment_id = event.deployment_id
        if self.started_at is None:
            self.started_at = event.at
        if isinstance(event, DeploymentChanged):
            self.state = event.state
            self.reason = event.reason or self.reason
            if event.state == "finished":
                self.result = event.result
                self.finished_at = event.at
        elif isinstance(event, StageChanged):
            self._stage_changed(event)
        elif isinstance(event, HostsSummary):
            if event.by_stage:
                self.by_stage = {sid: dict(counts) for sid, counts in event.by_stage}
        elif isinstance(event, HostStep):
            self._host_step(event)
        elif isinstance(event, GateVerdict):
            self._verdict(event)
        elif isinstance(event, AlarmsEvaluated):
            self.alarms = {
                (r.alarm, r.scope): AlarmLine(r.alarm, r.scope, r.state.value, r.value)
                for r in event.readings
            }
        elif isinstance(event, AlarmStateChanged):
            self.role_alarms[(event.role, event.alarm)] = (event.state, event.reason)
        line = describe(event)
        if line:
            self.recent.append(line)

    def _stage_changed(self, event: StageChanged) -> None:
        try:
            phase = StagePhase(event.phase)
        except ValueError:
            return  # a phase this view does not know: keep the last one
        sid = event.stage
        self.phase[sid] = phase
        self.phase_at[sid] = event.at
        if phase is not StagePhase.PENDING:
            self.stage_start.setdefault(sid, event.at)
        if phase is StagePhase.DONE:
            self.stage_end[sid] = event.at
            self.bakes.pop(sid, None)
        if phase in (StagePhase.PROBING, StagePhase.ROLLING, StagePhase.DONE):
            self.waiting.pop(sid, None)

    def _host_step(self, event: HostStep) -> None:
        if event.outcome == "failed":
            self.failure_count += 1
            self.failures.append(f"{event.host}: {event.step}: {event.error_kind}: {event.message}")
            return
        if event.outcome != "ok" or self.state == "rolling_back" or event.step is HostOp.ROLLBACK:
            return
        busy = self._host_busy.get(event.host, 0.0) + (event.duration_s or 0.0)
        self._host_busy[event.host] = busy
        last = HostOp.RETURN if self._has_lb.get(event.host, True) else HostOp.INSTALL
        if event.step is last:
            self.host_times.append(busy)

    def _verdict(self, event: GateVerdict) -> None:
        target = event.target
        if event.verdict in ("wait", "hold") and (
            event.purpose != "bake" or event.verdict == "hold"
        ):
            self.waiting[target] = Waiting(target, event.verdict, event.reason)
        else:
            self.waiting.pop(target, None)
        if event.purpose != "bake":
            return
        record = next((r for r in event.inputs if r.get("gate") == "bake"), None)
        if event.verdict == "ok":
            self.bakes.pop(target, None)
            if target.startswith(_WAVE_PREFIX):
                self.waves_baked.add(int(target[len(_WAVE_PREFIX) :]))
        elif record is not None:
            self.bakes[target] = _Bake(event.at, event.verdict, record)

    # -- reading ------------------------------------------------------------------------

    def snapshot(self, now: float) -> Snapshot:
        """What the view shows at ``now`` (a time on the events' clock)."""
        end = self.finished_at if self.finished_at is not None else now
        start = self.started_at if self.started_at is not None else end
        rows = tuple(self._row(s, end) for s in self.plan.stages())
        total = HostCounts(0)
        for row in rows:
            total = total + row.hosts
        wave_bakes = []
        for w in () if self.finished else self.plan.waves:
            bake = self._bake_progress(f"{_WAVE_PREFIX}{w.index}", w.bake_after, None, end)
            if bake is not None:
                wave_bakes.append((w.index, bake))
        return Snapshot(
            deployment_id=self.deployment_id,
            state=self.state,
            result=self.result,
            reason=self.reason,
            elapsed_s=max(0.0, end - start),
            eta_s=self._eta(rows, dict(wave_bakes)),
            stages=rows,
            hosts=total,
            wave_bakes=tuple(wave_bakes),
            waiting=tuple(self.waiting[t] for t in sorted(self.waiting)),
            alarms=tuple(self.alarms[k] for k in sorted(self.alarms)),
            role_alarms=tuple(
                (role, alarm, *self.role_alarms[(role, alarm)])
                for role, alarm in sorted(self.role_alarms)
            ),
            failures=tuple(self.failures),
            failure_count=self.failure_count,
            recent=tuple(self.recent),
        )

    def _row(self, stage: Stage, now: float) -> StageRow:
        hosts = HostCounts.of(len(stage.hosts), self.by_stage.get(stage.id, {}))
        phase = self.phase.get(stage.id)
        if phase is None and hosts.total and hosts.done == hosts.total:
            phase = StagePhase.DONE  # done before a resume: no StageChanged this run
        status = self._status(phase or StagePhase.PENDING, hosts)
        bake = None
        if phase is StagePhase.BAKING and not self.finished:
            bake = self._bake_progress(stage.id, stage.bake, self.phase_at.get(stage.id), now)
        started = self.stage_start.get(stage.id)
        ended = self.stage_end.get(stage.id, now if self.finished else None)
        duration = ended - started if started is not None and ended is not None else None
        return StageRow(stage.id, status, hosts, bake, duration)

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    def _status(self, phase: StagePhase, hosts: HostCounts) -> StageStatus:
        if hosts.rollback_failed:
            return StageStatus.ROLLBACK_FAILED
        if hosts.rollback_in_flight or hosts.rollback_pending:
            return StageStatus.STOPPED if self.finished else StageStatus.ROLLING_BACK
        if hosts.rolled_back:
            return StageStatus.ROLLED_BACK
        status = _PHASE_STATUS[phase]
        if self.finished and status is StageStatus.PENDING:
            return StageStatus.NOT_STARTED
        if self.finished and status is not StageStatus.DONE:
            return StageStatus.STOPPED
        return status

    def _bake_progress(
        self, target: str, bake: BakeRequirement, since: float | None, now: float
    ) -> BakeProgress | None:
        seen = self.bakes.get(target)
        if seen is not None:
            rec = seen.record
            window_start = seen.at - float(rec.get("elapsed_s", 0.0))
            duration = float(rec.get("duration_s", bake.duration_s))
            count = rec.get("datapoints")
            return BakeProgress(
                left_s=max(0.0, window_start + duration - now),
                metric=rec.get("metric") or bake.metric,
                datapoints=int(count) if count is not None else None,
                required=int(rec.get("min_datapoints", bake.min_datapoints)),
            )
        if since is None:
            return None
        counted = bool(bake.metric and bake.min_datapoints)
        return BakeProgress(
            left_s=max(0.0, since + bake.duration_s - now),
            metric=bake.metric if counted else None,
            required=bake.min_datapoints if counted else 0,
        )

    def _eta(
        self, rows: tuple[StageRow, ...], wave_bakes: Mapping[int, BakeProgress]
    ) -> float | None:
        """Time left if the rest goes like the hosts so far: per region, its stages one
        after another (batches of ``max_out`` hosts at the mean host time, then the
        bake); regions of a wave in parallel, then the wave's bake; waves in order.
        Windows, blockers and data counts are not predicted."""
        if self.state != "running" or not self.host_times:
            return None
        per_host = sum(self.host_times) / len(self.host_times)
        by_id = {r.id: r for r in rows}
        total = 0.0
        for wave in self.plan.waves:
            lefts = [
                sum(_stage_left(s, by_id[s.id], per_host) for s in region.stages)
                for region in wave.regions
            ]
            left = max(lefts, default=0.0)
            if wave.index in wave_bakes:
                left += wave_bakes[wave.index].left_s
            elif wave.index not in self.waves_baked and left > 0:
                left += wave.bake_after.duration_s
            total += left
        return total


def _stage_left(stage: Stage, row: StageRow, per_host: float) -> float:
    if row.status is StageStatus.DONE:
        return 0.0
    hosts = row.hosts
    remaining = hosts.total - hosts.done - hosts.failed
    batches = math.ceil(remaining / max(1, stage.batching.max_out))
    bake = row.bake.left_s if row.bake is not None else stage.bake.duration_s
    return batches * per_host + bake
