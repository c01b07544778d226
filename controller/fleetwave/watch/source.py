"""The metric-source seam: what an alarm asks for and what a source answers.

A source answers one :class:`MetricQuery` (a metric, a statistic, the hosts of a scope,
optionally only what one release served) over one :class:`Window` of equal periods
with a :class:`Series`: one :class:`Datapoint` per period, oldest first. A datapoint
whose value is missing (NaN, +/-Inf, no data, a ratio over zero requests) has
``value=None``: missing is never 0, so an idle service is not a healthy one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from fleetwave.config.alarms import MetricSpec, Statistic

#: What a missing value is, everywhere: never a number, never 0.
MISSING = None


def clean(value: float | None) -> float | None:
    """``value``, or :data:`MISSING` when it is None, NaN or infinite."""
    if value is None or not math.isfinite(value):
        return MISSING
    return float(value)


@dataclass(frozen=True)
class Window:
    """``count`` consecutive periods of ``period_s`` seconds ending at ``end``."""

    end: float
    period_s: float
    count: int

    def __post_init__(self) -> None:
        if self.period_s <= 0 or self.count < 1:
            raise ValueError(f"bad window: {self.count} periods of {self.period_s}s")

    @property
    def start(self) -> float:
        return self.end - self.period_s * self.count

    def bounds(self) -> list[tuple[float, float]]:
        """``(start, end)`` of each period, oldest first."""
        return [
            (self.start + i * self.period_s, self.start + (i + 1) * self.period_s)
            for i in range(self.count)
        ]


@dataclass(frozen=True)
class Datapoint:
    """One period's value (``None``: missing) and how many samples it rests on (the
    requests behind a ratio or a percentile, the observations behind a gauge)."""

    end: float
    value: float | None
    samples: float = 0.0

    @property
    def missing(self) -> bool:
        return self.value is None


@dataclass(frozen=True)
class Series:
    points: tuple[Datapoint, ...] = ()

    def values(self) -> list[float | None]:
        return [p.value for p in self.points]


@dataclass(frozen=True)
class MetricQuery:
    """What to measure and where: ``hosts`` are the scope's hosts (empty: every host
    the source knows); ``release`` keeps only what hosts on that version served."""

    metric: MetricSpec
    hosts: frozenset[str] = frozenset()
    release: str | None = None

    @property
    def statistic(self) -> Statistic | None:
        return self.metric.statistic


class MetricSource(Protocol):
    """One backend of metrics (the embedded agent source, Prometheus, ...)."""

    name: str

    async def query(self, query: MetricQuery, window: Window) -> Series:
        """The datapoints of ``query`` over ``window``, one per period, oldest first.

        Raises :class:`fleetwave.errors.MetricSourceError` when the source cannot
        answer (unreachable, bad query); an answer without data is a Series of
        missing datapoints, not an error.
        """
        ...


class AlertRuleSource(Protocol):
    """A source that also knows alerting rules (``prometheus_alert:`` alarms)."""

    async def alert_firing(self, alert: str) -> bool:
        """True while ``ALERTS{alertname=alert, alertstate="firing"}`` has a sample.

        A pending alert is not firing.
        """
        ...
