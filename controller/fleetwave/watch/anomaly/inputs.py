"""What the detector reads: per-host windows of the standard metrics, grouped by role.

One :class:`HostWindow` is what one host did over one time window, already reduced
from its samples (agent snapshots, or Prometheus range queries): the requests and 5xx
it served, its latency histogram's increase per bucket, its app restarts and health
flaps, and its RSS and CPU points. :mod:`.collect` builds them from the agent
source's rings; the detector never sees a socket.

A :class:`StageSample` groups the windows of one evaluation: the stage's hosts on
the new release (since their activation), the *reference* hosts over the same
window (hosts still on the old release in the same stage or AZ, or, when none are
left, the previous stage's hosts), and the new hosts *before* the deployment.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fleetwave.watch.agent_source import bucket_quantile


@dataclass(frozen=True)
class Buckets:
    """A latency histogram's increase over a window: ``counts[i]`` observations fell
    in ``(le[i-1], le[i]]`` (not cumulative); the last bound is +Inf."""

    le: tuple[float, ...]
    counts: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.le) != len(self.counts) or not self.le or self.le[-1] != math.inf:
            raise ValueError("buckets need one count per bound, +Inf last")
        if any(c < 0 for c in self.counts):
            raise ValueError("bucket counts cannot be negative")

    @property
    def total(self) -> float:
        return float(sum(self.counts))

    def quantile(self, q: float) -> float | None:
        """Prometheus' ``histogram_quantile`` over these buckets (None: empty)."""
        cumulative, run = [], 0.0
        for le, c in zip(self.le, self.counts, strict=True):
            run += c
            cumulative.append((le, run))
        return bucket_quantile(q, cumulative)

    def above(self, bound: float) -> float:
        """Observations in buckets whose lower bound is at least ``bound``."""
        lower = (0.0, *self.le[:-1])
        return float(sum(c for lo, c in zip(lower, self.counts, strict=True) if lo >= bound))


def merge_buckets(items: Iterable[Buckets | None]) -> Buckets | None:
    """Bucket-by-bucket sum over the union of bounds (None when there is nothing).

    Hosts with different bounds merge exactly only on the bounds they share; a count
    is kept in its own bucket, which the union's ordering keeps in rank order.
    """
    present = [b for b in items if b is not None]
    if not present:
        return None
    bounds = sorted({le for b in present for le in b.le})
    sums = dict.fromkeys(bounds, 0.0)
    for b in present:
        for le, c in zip(b.le, b.counts, strict=True):
            sums[le] += c
    return Buckets(tuple(bounds), tuple(sums[le] for le in bounds))


@dataclass(frozen=True)
class Point:
    """One gauge reading (RSS bytes) or one rate between readings (CPU cores)."""

    at: float
    value: float


@dataclass(frozen=True)
class HostWindow:
    """One host over one window. ``seconds`` is the time it was observed serving the
    release in question (0: never seen): it is the exposure that request counts and
    restarts are compared by, so a host seen for half the window is not "slow"."""

    host: str
    seconds: float
    requests: float = 0.0
    errors: float = 0.0
    latency: Buckets | None = None
    restarts: int = 0  # app process restarts (CPU counter resets, app_up 1 -> 0)
    flaps: int = 0  # health checks going from passing to failing
    rss: tuple[Point, ...] = ()
    cpu: tuple[Point, ...] = ()

    @property
    def events(self) -> int:
        """Restarts and flaps: what a crash loop produces."""
        return self.restarts + self.flaps


class Reference(enum.Enum):
    """What the new hosts are compared with over the same window."""

    OLD_RELEASE = "old_release"  # hosts still on the old release, same stage or AZ
    PREVIOUS_STAGE = "previous_stage"  # none left: the previous stage's hosts
    NONE = "none"  # no reference hosts at all: before/after decides alone


@dataclass(frozen=True)
class StageSample:
    """One evaluation's input (see the module doc).

    ``planned_rounds`` is how many evaluations the bake plans (bake time / evaluation
    interval, at least 1): alpha is split across them, so the chance of a false
    rollback over the whole bake stays within the stage's alpha.

    ``settled`` says every host of the stage finished its steps, so a stage with no
    host serving the new release (every host skipped or failed) has nothing to judge.
    """

    stage: str
    at: float
    new: tuple[HostWindow, ...]
    reference: tuple[HostWindow, ...] = ()
    reference_kind: Reference = Reference.NONE
    before: tuple[HostWindow, ...] = field(default=())
    planned_rounds: int = 1
    #: Every host of the stage finished its steps (the stage bakes): with no host on
    #: the new release, nothing will ever arrive to judge.
    settled: bool = False

    def __post_init__(self) -> None:
        if self.planned_rounds < 1:
            raise ValueError("planned_rounds must be at least 1")
        if self.reference and self.reference_kind is Reference.NONE:
            raise ValueError("reference hosts need a reference kind")


def totals(hosts: Sequence[HostWindow]) -> tuple[float, float, float]:
    """``(requests, errors, seconds)`` summed over ``hosts``."""
    return (
        float(sum(h.requests for h in hosts)),
        float(sum(h.errors for h in hosts)),
        float(sum(h.seconds for h in hosts)),
    )
