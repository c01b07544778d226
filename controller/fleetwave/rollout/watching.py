"""The watcher: the I/O shell that reads metric sources, evaluates the pipeline's
alarms, and tells the engine when a watched alarm changes state.

Every ``watch.interval`` it polls the agent source (if that is the source), then
evaluates every alarm once per *context*: each stage being probed, rolled or baked
(the scopes ``region``, ``az``, ``cell`` and ``stage`` are relative to it), or the
whole fleet when none is. Evaluation itself is pure (:func:`fleetwave.watch.alarms.evaluate_all`);
a source that cannot answer leaves the alarm without data (INSUFFICIENT_DATA), never OK.

It emits :class:`~fleetwave.rollout.events.AlarmChanged` for the ``rollback_alarm``
(worst over the contexts) and, while a one-box stage runs, the ``onebox_alarm`` of the
one-box contexts. The engine answers ALARM with a rollback. Blocker gates and bake
gates ask it directly (:meth:`Watcher.states_for`, :meth:`Watcher.count`).

With ``anomaly`` (:class:`~fleetwave.rollout.anomaly_watch.AnomalyWatch`), each round
also runs the anomaly detector on every stage being rolled or baked, after the poll;
its outcome changes are :class:`~fleetwave.rollout.events.AnomalyJudged` events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fleetwave.config.alarm_expr import AlarmState
from fleetwave.config.alarms import (
    AlarmDef,
    MetricAlarm,
    MetricSpec,
    PrometheusAlert,
    ScopeKind,
    Statistic,
)
from fleetwave.errors import MetricSourceError
from fleetwave.planning.model import HostRef, Plan, Stage, StageKind
from fleetwave.rollout.events import AlarmChanged, Event
from fleetwave.rollout.state import Phase, StagePhase, State
from fleetwave.rollout.types import AlarmRole
from fleetwave.watch.alarms import AlarmInput, Evidence, evaluate_all, previous_states, worst
from fleetwave.watch.source import AlertRuleSource, MetricQuery, MetricSource, Series, Window

if TYPE_CHECKING:
    from fleetwave.rollout.anomaly_watch import AnomalyWatch

_LIVE = (StagePhase.PROBING, StagePhase.ROLLING, StagePhase.BAKING)


class Pollable(Protocol):
    async def poll(self) -> Any: ...


@dataclass(frozen=True)
class AlarmReading:
    """One alarm's state in one scope, for the metrics and the progress view."""

    alarm: str
    scope: str
    state: AlarmState
    value: float | None


class Watcher:
    """Watches one deployment's alarms (see the module doc)."""

    def __init__(
        self,
        plan: Plan,
        alarms: Mapping[str, AlarmDef],
        *,
        source: MetricSource,
        interval_s: float,
        clock: Callable[[], float],
        rollback_alarm: str | None = None,
        onebox_alarm: str | None = None,
        promql: MetricSource | None = None,
        alerts: AlertRuleSource | None = None,
        poller: Pollable | None = None,
        anomaly: AnomalyWatch | None = None,
    ) -> None:
        self.plan = plan
        self.alarms = dict(alarms)
        self.source = source
        self.promql = promql
        self.alerts = alerts
        self.poller = poller
        self.anomaly = anomaly
        self.interval_s = interval_s
        self.clock = clock
        self.rollback_alarm = rollback_alarm
        self.onebox_alarm = onebox_alarm
        self.hosts: tuple[HostRef, ...] = tuple(plan.hosts())
        self._prev: dict[str, dict[str, AlarmState]] = {}
        self._emitted: dict[AlarmRole, AlarmState] = {}
        self._lock = asyncio.Lock()
        self.last: dict[str, dict[str, Evidence]] = {}  # by context key
        self.rounds = 0

    # -- the loop ---------------------------------------------------------------------

    async def run(
        self,
        state: Callable[[], State],
        emit: Callable[[Event], None],
        readings: Callable[[float, tuple[AlarmReading, ...]], None] | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        """Poll and evaluate every ``interval_s`` until cancelled (the runner does)."""
        while True:
            started = self.clock()
            current = state()  # read before the poll: see AnomalyWatch.track
            events: list[Event] = []
            alarms, rows = await self.tick(current, started)
            events += alarms
            if self.anomaly is not None:
                events += self.anomaly.judge(current, started)
            for event in events:
                emit(event)
            if readings is not None:
                readings(started, rows)
            await sleep(max(0.0, started + self.interval_s - self.clock()))

    async def tick(
        self, state: State, now: float
    ) -> tuple[list[AlarmChanged], tuple[AlarmReading, ...]]:
        """One round: poll, evaluate every context, and the role changes to report."""
        if self.poller is not None:
            await self.poller.poll()
        self.rounds += 1
        contexts: list[Stage | None] = list(_live_stages(state)) or [None]
        results: list[tuple[Stage | None, dict[str, Evidence]]] = []
        for ctx in contexts:
            results.append((ctx, await self.evaluate(ctx, now)))
        events: list[AlarmChanged] = []
        if self.rollback_alarm is not None:
            events += self._role(AlarmRole.ROLLBACK, self.rollback_alarm, results)
        if self.onebox_alarm is not None:
            onebox = [(c, r) for c, r in results if c is not None and c.kind is StageKind.ONEBOX]
            if onebox:
                events += self._role(AlarmRole.ONEBOX, self.onebox_alarm, onebox)
            else:
                self._emitted.pop(AlarmRole.ONEBOX, None)
        rows = tuple(
            AlarmReading(name, ev.scope or _scope_label(ctx), ev.state, _newest(ev))
            for ctx, res in results
            for name, ev in res.items()
        )
        return events, rows

    def _role(
        self,
        role: AlarmRole,
        name: str,
        results: Iterable[tuple[Stage | None, Mapping[str, Evidence]]],
    ) -> list[AlarmChanged]:
        found = [r[name] for _, r in results if name in r]
        if not found:
            return []
        state = worst(e.state for e in found)
        ev = next(e for e in found if e.state is state)
        if self._emitted.get(role) is state:
            return []
        self._emitted[role] = state
        return [AlarmChanged(name, role, state, ev.reason, ev.to_json())]

    # -- evaluation -------------------------------------------------------------------

    async def evaluate(self, ctx: Stage | None, now: float) -> dict[str, Evidence]:
        """Every alarm, evaluated for ``ctx`` (None: the whole fleet)."""
        async with self._lock:
            inputs: dict[str, AlarmInput] = {}
            scopes: dict[str, str] = {}
            for name, alarm in self.alarms.items():
                if isinstance(alarm, MetricAlarm):
                    scopes[name] = _scope_label(ctx, alarm.scope)
                    inputs[name] = await self._series(alarm, ctx, now)
                elif isinstance(alarm, PrometheusAlert):
                    inputs[name] = await self._firing(alarm)
            key = ctx.id if ctx is not None else ""
            result = evaluate_all(self.alarms, inputs, self._prev.get(key, {}), now, scopes=scopes)
            self._prev[key] = previous_states(result)
            self.last[key] = result
            return result

    async def states_for(
        self, stage: Stage | None, now: float
    ) -> tuple[Mapping[str, AlarmState], Mapping[str, Mapping[str, Any]]]:
        """For blocker gates: every alarm evaluated now for ``stage``'s scope."""
        result = await self.evaluate(stage, now)
        return {n: e.state for n, e in result.items()}, {n: e.to_json() for n, e in result.items()}

    async def count(
        self, metric: str, hosts: frozenset[str], release: str | None, since: float, now: float
    ) -> float | None:
        """For bake gates: ``metric``'s increase from ``since`` to ``now`` on ``hosts``,
        served by ``release``. None when the source has no data or cannot answer."""
        if now - since <= 0:
            return None
        query = MetricQuery(MetricSpec(metric, Statistic.COUNT), hosts, release)
        try:
            series = await self.source.query(query, Window(now, now - since, 1))
        except MetricSourceError:
            return None
        return series.points[-1].value if series.points else None

    async def _series(
        self, alarm: MetricAlarm, ctx: Stage | None, now: float
    ) -> Series | Mapping[str, Series] | None:
        source = self.promql if alarm.source.promql else self.source
        if source is None:
            return None
        hosts = self._scope_hosts(alarm.scope, ctx)
        window = Window(now, alarm.period_s, alarm.evaluation_range)
        try:
            if alarm.scope is ScopeKind.HOST:
                return {
                    h: await source.query(MetricQuery(alarm.source, frozenset((h,))), window)
                    for h in sorted(hosts)
                }
            return await source.query(MetricQuery(alarm.source, hosts), window)
        except MetricSourceError:
            return None  # no data: INSUFFICIENT_DATA, never OK

    async def _firing(self, alarm: PrometheusAlert) -> bool | None:
        if self.alerts is None:
            return None
        try:
            return await self.alerts.alert_firing(alarm.alert)
        except MetricSourceError:
            return None

    def _scope_hosts(self, scope: ScopeKind, ctx: Stage | None) -> frozenset[str]:
        if ctx is None or scope is ScopeKind.FLEET:
            return frozenset(h.name for h in self.hosts)
        if scope in (ScopeKind.STAGE, ScopeKind.HOST):
            return frozenset(h.name for h in ctx.hosts)
        first = ctx.hosts[0] if ctx.hosts else None
        if first is None:
            return frozenset()
        if scope is ScopeKind.REGION:
            return frozenset(h.name for h in self.hosts if h.region == first.region)
        if scope is ScopeKind.AZ:
            return frozenset(h.name for h in self.hosts if h.az == first.az)
        return frozenset(h.name for h in self.hosts if h.cell == first.cell)


def _live_stages(state: State) -> list[Stage]:
    if state.phase is not Phase.RUNNING:
        return []
    return [state.stage(sid) for sid, s in state.stages.items() if s.phase in _LIVE]


def _scope_label(ctx: Stage | None, scope: ScopeKind | None = None) -> str:
    if scope is ScopeKind.FLEET or ctx is None:
        return "fleet"
    if scope is None:
        return f"stage:{ctx.id}"
    return f"{scope.value}:{ctx.id}"


def _newest(ev: Evidence) -> float | None:
    for v in reversed(ev.values):
        if v is not None:
            return v
    return None


__all__ = ["AlarmReading", "Pollable", "Watcher"]
