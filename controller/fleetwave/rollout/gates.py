"""The bake-gate seam: what the runner consults before a stage starts and while a
stage or wave bakes.

A :class:`Gate` answers ``ok``, ``wait(reason, retry_at)`` or ``fail(reason)`` for a
:class:`BakeTarget`. The engine never sees gates, only their combined verdict, so
alarms and metric data-point counts plug in here (one new class each) without
touching the state machine. Defaults: the bake *time* gate and no blockers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from fleetwave.planning.model import BakeRequirement, Stage, Wave
from fleetwave.rollout.types import Target, Verdict


@dataclass(frozen=True)
class BakeTarget:
    """What is being gated: a stage (``stage`` set) or the bake after a wave."""

    target: Target
    bake: BakeRequirement
    stage: Stage | None = None
    wave: Wave | None = None


class Gate(Protocol):
    async def check(self, target: BakeTarget, window_start: float, now: float) -> Verdict:
        """Judge ``target`` whose bake (or start attempt) began at ``window_start``."""
        ...


class BakeTimeGate:
    """Passes once the target's bake duration has elapsed since the window start."""

    async def check(self, target: BakeTarget, window_start: float, now: float) -> Verdict:
        end = window_start + target.bake.duration_s
        if now >= end:
            return Verdict.ok()
        return Verdict.wait(f"baking until {_iso(end)}", retry_at=end)


class AlwaysClear:
    """The default blocker gate: nothing blocks a stage from starting."""

    async def check(self, target: BakeTarget, window_start: float, now: float) -> Verdict:
        return Verdict.ok()


class WindowGate:
    """Blocks a stage while its region's deployment window is closed.

    ``is_open(region, t)`` and ``next_open(region, t)`` come from the pipeline's window
    policy; the gate only turns them into a verdict.
    """

    def __init__(
        self,
        is_open: Callable[[str, datetime], bool],
        next_open: Callable[[str, datetime], datetime],
    ) -> None:
        self._is_open = is_open
        self._next_open = next_open

    async def check(self, target: BakeTarget, window_start: float, now: float) -> Verdict:
        if target.stage is None:
            return Verdict.ok()
        t = datetime.fromtimestamp(now, UTC)
        if self._is_open(target.stage.region, t):
            return Verdict.ok()
        nxt = self._next_open(target.stage.region, t)
        return Verdict.wait(f"window closed in {target.stage.region}", nxt.timestamp())


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """All gates must pass: any fail fails; else any wait waits until the latest retry."""
    fails = [v for v in verdicts if v.kind == "fail"]
    if fails:
        return Verdict.fail("; ".join(v.reason for v in fails))
    waits = [v for v in verdicts if v.kind == "wait"]
    if not waits:
        return Verdict.ok()
    times = [v.retry_at for v in waits if v.retry_at is not None]
    # Without a retry time from every waiting gate, poll at the engine's interval.
    retry = max(times) if len(times) == len(waits) else None
    return Verdict.wait("; ".join(v.reason for v in waits), retry)


@dataclass(frozen=True)
class Gates:
    """The gates the runner consults: ``blockers`` before a stage, ``bake`` after."""

    blockers: tuple[Gate, ...] = (AlwaysClear(),)
    bake: tuple[Gate, ...] = (BakeTimeGate(),)

    async def check_blockers(self, target: BakeTarget, now: float) -> Verdict:
        return combine([await g.check(target, now, now) for g in self.blockers])

    async def check_bake(self, target: BakeTarget, window_start: float, now: float) -> Verdict:
        return combine([await g.check(target, window_start, now) for g in self.bake])


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
