"""A compact, time-bounded store of one host's agent snapshots (pure, no I/O).

A :class:`HostRing` keeps one row per snapshot in ``array`` columns, and only the
columns that are read (the ``keep`` set of sample names: the pipeline's alarms and
bakes, plus :data:`ANOMALY_SAMPLES` when anomaly detection runs):

* **counters** as reset-adjusted cumulative totals: the increase rule (a value that
  went down was reset and counts from zero, as Prometheus' ``increase``) is applied at
  ingest, so the increase between ANY two rows is one subtraction. Beside each total,
  the cumulative number of pairs of consecutive snapshots that both carried it, and
  the seconds those pairs span (what a rate divides by);
* **histograms** the same way, a cumulative total per bucket bound (the bounds
  are the host's first snapshot's; a histogram whose bounds change counts from zero
  with its new bounds, and what the old ones counted is no longer queryable; the buckets
  of all rows share one row-major array), plus the
  sum and the number of pairs whose newer snapshot carried it;
* **gauges** per row: the max, the sum and the number of the snapshot's values (the
  consumers use the max and the mean only; the minimum is read at ingest, for health
  flaps). A multi-valued gauge's RSS trend point is the mean of its values;
* the cumulative **restarts** (the app's CPU counter went down, or ``app_up`` 1 -> 0)
  and health **flaps** (1 -> 0), and a per-row flag for a usable CPU-rate point.

**Bounded by time, in two tiers** (:class:`Retention`): every row of the last
``fine_s`` seconds; older rows thinned to the last row of each ``coarse_s`` bucket
(and the oldest row, and the rows on either side of a release change); rows older than ``history_s``
dropped, in chunks (none is ever older than ``history_s + coarse_s``). A thinned row's
counts land in the next kept row, since totals are cumulative; its gauge values and
flags are merged into that row. A window whose start falls in the coarse tier counts
from the kept row at or after its start: up to ``coarse_s`` less than asked, never
anything from before it, so a bake counted there never passes early.

Release attribution: a pair of consecutive rows counts for a release when its newer
row was served by it. Each row carries the index of its release *run* (``epoch``, a
small int that grows at every release change), so a query finds the runs of its
release by bisecting, without building lists.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fleetwave.config.alarms import AGENT_METRICS, MetricKind
from fleetwave.errors import MetricQueryError

SOURCE = "agent"
CPU = AGENT_METRICS["app_cpu"].sample
UP = AGENT_METRICS["app_up"].sample
HEALTH = AGENT_METRICS["health"].sample
#: What the anomaly detector reads (``fleetwave.watch.anomaly.collect``).
ANOMALY_SAMPLES = frozenset(
    AGENT_METRICS[n].sample
    for n in ("requests", "errors", "latency", "app_cpu", "app_memory", "app_up", "health")
)
ALL_SAMPLES = frozenset(m.sample for m in AGENT_METRICS.values())
_KIND = {m.sample: m.kind for m in AGENT_METRICS.values()}
_LAYOUTS: dict[tuple[float, ...], tuple[float, ...]] = {}  # bucket bounds, shared by hosts
_CPU_OK = 1  # the row's pair gives a CPU-rate point (both counters, no reset, time moved)

Runs = list[tuple[int, int]]  # inclusive row ranges (a, b) of the rows a query counts


@dataclass(frozen=True)
class Histogram:
    le: tuple[float, ...]  # upper bounds, +Inf last
    counts: tuple[float, ...]  # cumulative
    sum: float


@dataclass(frozen=True)
class Snapshot:
    """One host's snapshot as received: when it arrived (controller clock), its values."""

    at: float
    release: str | None
    counters: Mapping[str, float]
    gauges: Mapping[str, tuple[float, ...]]
    histograms: Mapping[str, Histogram]


@dataclass(frozen=True)
class Retention:
    """How long rows stay: every row for ``fine_s``, one per ``coarse_s`` up to
    ``history_s`` (see the module doc)."""

    fine_s: float = 600.0
    coarse_s: float = 60.0
    history_s: float = 3600.0

    def __post_init__(self) -> None:
        if not (self.fine_s > 0 and self.coarse_s > 0 and self.history_s >= self.fine_s):
            raise ValueError(f"bad retention: {self}")


#: The longest history kept by default, whatever the bakes.
MAX_HISTORY_S = 3 * 3600.0
#: Rows the coarse tier aims at: a longer history gets coarser rows (up to the fine
#: tier's length), so a host's store stays small whatever the bakes.
COARSE_ROWS = 48


def retention_for(longest_alarm_s: float, longest_bake_s: float, interval_s: float) -> Retention:
    """The retention a pipeline needs: the fine tier covers the longest alarm window
    (period x evaluation periods) plus two watch intervals (at least six intervals);
    the history covers the anomaly detector's windows, which reach back from now to a
    host's activation and, for the before-window of the same length, to before its
    drain: twice the longest bake plus ten minutes, capped at :data:`MAX_HISTORY_S`.
    The coarse tier's rows are a minute apart, or further apart so that it holds at most
    :data:`COARSE_ROWS` rows, but never further apart than the fine tier is long: a
    window starting in the coarse tier (the anomaly detector's reference and before
    windows do) loses at most one coarse row's span at its start, and that loss must
    stay small beside the windows themselves (with a 1 s interval and an 8 s fine tier,
    60 s rows would cut a 20 s reference window to a few seconds)."""
    fine = max(longest_alarm_s + 2 * interval_s, 6 * interval_s)
    history = max(min(MAX_HISTORY_S, 2 * longest_bake_s + 600.0), fine)
    coarse = min(max(60.0, interval_s, (history - fine) / COARSE_ROWS), fine)
    return Retention(fine_s=fine, coarse_s=coarse, history_s=history)


def not_collected(sample: str) -> MetricQueryError:
    """The typed error for a query of a column the store does not keep."""
    return MetricQueryError(
        SOURCE,
        f"metric {sample} is not collected: no alarm, bake or anomaly check of the "
        "pipeline reads it, so the agent source does not store it",
    )


def _increase(prev: float | None, cur: float | None) -> float | None:
    if prev is None or cur is None:
        return None
    return cur if cur < prev else cur - prev


class _Counter:
    __slots__ = ("last", "pairs", "span", "total")

    def __init__(self) -> None:
        self.total = array("d")
        self.pairs = array("I")
        self.span = array("d")
        self.last: float | None = None

    def columns(self) -> list[array[float] | array[int]]:
        return [self.total, self.pairs, self.span]

    def add(self, cur: float | None, dt: float) -> None:
        inc = _increase(self.last, cur)
        self.last = cur
        t, p, s = (self.total[-1], self.pairs[-1], self.span[-1]) if self.total else (0, 0, 0)
        if inc is None:
            self.total.append(t)
            self.pairs.append(p)
            self.span.append(s)
        else:
            self.total.append(t + inc)
            self.pairs.append(p + 1)
            self.span.append(s + dt)


class _Gauge:
    __slots__ = ("max", "n", "sum")

    def __init__(self) -> None:
        self.max = array("d")
        self.sum = array("d")
        self.n = array("I")

    def add(self, values: tuple[float, ...]) -> None:
        self.max.append(max(values) if values else -math.inf)
        self.sum.append(math.fsum(values))
        self.n.append(len(values))


class _Hist:
    __slots__ = ("buckets", "last", "last_sum", "le", "present", "sum")

    def __init__(self) -> None:
        self.le: tuple[float, ...] = ()
        self.buckets = array("d")  # row-major: row k's bucket i at k * len(le) + i
        self.sum = array("d")
        self.present = array("I")
        # The previous snapshot's raw counts (None: it had none), as an array: a
        # tuple of float objects would cost more than the host's rows.
        self.last: array[float] | None = None
        self.last_sum = 0.0

    def columns(self) -> list[array[float] | array[int]]:
        return [self.sum, self.present] if self.le else []

    def add(self, now: Histogram | None, rows_before: int) -> None:
        old, old_sum = self.last, self.last_sum
        self.last = array("d", now.counts) if now is not None else None
        self.last_sum = now.sum if now is not None else 0.0
        if now is not None and now.le != self.le:
            # New bounds: start over with them; the row counts as a reset.
            self.le, old = _LAYOUTS.setdefault(now.le, now.le), None
            self.buckets = array("d", bytes(8 * rows_before * len(now.le)))
            self.sum = array("d", bytes(8 * rows_before))
            self.present = array("I", [0]) * rows_before
        if not self.le:
            return
        has = rows_before > 0  # the columns have a previous row to carry on from
        if now is None:
            width = len(self.le)
            self.buckets.extend(self.buckets[-width:] if has else array("d", bytes(8 * width)))
            self.sum.append(self.sum[-1] if has else 0.0)
            self.present.append(self.present[-1] if has else 0)
            return
        reset = old is None or now.counts[-1] < old[-1]
        width = len(self.le)
        base = self.buckets[-width:] if has else array("d", bytes(8 * width))
        for i, count in enumerate(now.counts):
            delta = count if reset or old is None else count - old[i]
            self.buckets.append(base[i] + max(delta, 0.0))
        dsum = now.sum if reset or old is None else max(now.sum - old_sum, 0.0)
        self.sum.append((self.sum[-1] if has else 0.0) + dsum)
        self.present.append((self.present[-1] if has else 0) + 1)


class HostRing:
    """One host's rows (see the module doc). ``ingest`` appends; the rest reads."""

    def __init__(self, keep: Iterable[str] = ALL_SAMPLES, retention: Retention | None = None):
        self.keep = frozenset(keep)
        self.retention = retention or Retention()
        self._at = array("d")
        self._epoch = array("I")
        self._releases: list[str | None] = []  # by epoch
        self._counters = {s: _Counter() for s in self.keep if _KIND.get(s) is MetricKind.COUNTER}
        self._gauges = {s: _Gauge() for s in self.keep if _KIND.get(s) is MetricKind.GAUGE}
        self._hists = {s: _Hist() for s in self.keep if _KIND.get(s) is MetricKind.HISTOGRAM}
        self._events = self.keep >= {CPU, UP, HEALTH}
        self._restarts = array("I")
        self._flaps = array("I")
        self._flags = array("B")
        self._up: bool | None = None
        self._passing: bool | None = None
        self._coarse_n = 0  # rows [0, _coarse_n) are thinned already
        self._thinned_edge = -math.inf

    # ------------------------------------------------------------ ingest

    def ingest(self, snap: Snapshot) -> None:
        """Append ``snap`` (a snapshot older than the newest row is taken as of it)."""
        n = len(self._at)
        at = snap.at if not n or snap.at >= self._at[-1] else self._at[-1]
        dt = at - self._at[-1] if n else 0.0
        if not self._releases or snap.release != self._releases[-1]:
            self._releases.append(snap.release)
        self._at.append(at)
        self._epoch.append(len(self._releases) - 1)
        cpu = self._counters.get(CPU)
        cpu_before = cpu.last if cpu is not None else None
        for sample, counter in self._counters.items():
            counter.add(snap.counters.get(sample), dt)
        for sample, gauge in self._gauges.items():
            gauge.add(snap.gauges.get(sample, ()))
        for sample, hist in self._hists.items():
            hist.add(snap.histograms.get(sample), n)
        if self._events:
            self._ingest_events(snap, n, dt, cpu_before)
        self._compact()

    def _ingest_events(self, snap: Snapshot, n: int, dt: float, before: float | None) -> None:
        now = snap.counters.get(CPU)
        restarts = self._restarts[-1] if n else 0
        flag = 0
        if before is not None and now is not None:
            if now < before:
                restarts += 1  # a new process: its CPU time started again from zero
            elif dt > 0:
                flag = _CPU_OK
        ups, health = snap.gauges.get(UP, ()), snap.gauges.get(HEALTH, ())
        up = max(ups) >= 1.0 if ups else None
        passing = min(health) >= 1.0 if health else None
        restarts += self._up is True and up is False
        self._restarts.append(restarts)
        self._flaps.append(
            (self._flaps[-1] if n else 0) + (self._passing is True and passing is False)
        )
        self._flags.append(flag)
        self._up, self._passing = up, passing

    # ------------------------------------------------------------ bounds

    def _columns(self) -> list[array[float] | array[int]]:
        cols: list[array[float] | array[int]] = [self._at, self._epoch]
        for c in self._counters.values():
            cols += c.columns()
        for h in self._hists.values():
            cols += h.columns()
        if self._events:
            cols += [self._restarts, self._flaps]
        return cols

    def _compact(self) -> None:
        r = self.retention
        t = self._at[-1]
        limit = t - r.history_s
        if self._at[0] < limit - r.coarse_s:
            k = bisect_left(self._at, limit)
            for col in self._columns() + self._merged():
                del col[:k]
            for h in self._hists.values():
                del h.buckets[: k * len(h.le)]
            self._coarse_n = max(0, self._coarse_n - k)
        # Buckets by index, never by a multiplied-back time: with a coarse_s that is
        # not a whole number, edge / coarse_s may round below the edge's own bucket.
        edge = math.floor((t - r.fine_s) / r.coarse_s)
        if edge > self._thinned_edge:
            self._thinned_edge = edge
            at, c = self._at, r.coarse_s
            end = bisect_left(at, edge * c)
            while end > 0 and math.floor(at[end - 1] / c) >= edge:
                end -= 1
            while end < len(at) and math.floor(at[end] / c) < edge:
                end += 1
            self._thin(end)

    def _merged(self) -> list[array[float] | array[int]]:
        cols: list[array[float] | array[int]] = []
        for g in self._gauges.values():
            cols += [g.max, g.sum, g.n]
        if self._events:
            cols.append(self._flags)
        return cols

    def _thin(self, end: int) -> None:
        """Thin rows [_coarse_n, end): all of them lie in complete coarse buckets."""
        start, c, at, ep = self._coarse_n, self.retention.coarse_s, self._at, self._epoch
        if end - start < 2:
            self._coarse_n = max(start, end)
            return
        keep = [
            k
            for k in range(start, end)
            if k == 0  # the oldest row: what the next one counts from
            or math.floor(at[k] / c) != math.floor(at[k + 1] / c)
            or ep[k] != ep[k + 1]
            or (k > 0 and ep[k] != ep[k - 1])
        ]
        groups = list(zip([start - 1, *keep[:-1]], keep, strict=True))
        for g in self._gauges.values():
            g.max[start:end] = array("d", [max(g.max[a + 1 : b + 1]) for a, b in groups])
            g.sum[start:end] = array("d", [math.fsum(g.sum[a + 1 : b + 1]) for a, b in groups])
            g.n[start:end] = array("I", [sum(g.n[a + 1 : b + 1]) for a, b in groups])
        if self._events:
            fl = self._flags
            fl[start:end] = array("B", [min(fl[a + 1 : b + 1]) for a, b in groups])
        for col in self._columns():
            col[start:end] = array(col.typecode, [col[k] for k in keep])  # type: ignore[arg-type,misc]
        for h in self._hists.values():
            w, b = len(h.le), h.buckets
            if w:
                b[start * w : end * w] = array("d", [b[k * w + i] for k in keep for i in range(w)])
        self._coarse_n = start + len(keep)

    # ------------------------------------------------------------ reads

    def __len__(self) -> int:
        return len(self._at)

    @property
    def last_at(self) -> float | None:
        """When the newest row arrived (None: no row yet)."""
        return self._at[-1] if self._at else None

    @property
    def stored(self) -> frozenset[str]:
        """The samples this ring has columns for."""
        return frozenset([*self._counters, *self._gauges, *self._hists])

    @property
    def exact_since(self) -> float:
        """Windows that start at or after this time are exact: every row after it is
        stored as received (-inf: nothing was thinned yet)."""
        return self._at[self._coarse_n - 1] if self._coarse_n else -math.inf

    def times(self) -> tuple[float, ...]:
        """Every row's time, oldest first (for tests and reports, not for queries)."""
        return tuple(self._at)

    def runs(self, start: float, end: float, release: str | None, *, pairs: bool = True) -> Runs:
        """The rows inside ``(start, end]`` served by ``release`` (None: any), as runs of
        consecutive rows. With ``pairs``, only rows that end a pair (not the first row):
        what counters, histograms and events count between a run's ``a - 1`` and ``b``."""
        at = self._at
        first = bisect_right(at, start)
        if pairs and start < self.exact_since:
            # In the coarse tier, count from the kept row at or after the start: up to
            # coarse_s less, never data from before it (a bake never passes early).
            first = bisect_left(at, start) + 1
        hi = bisect_right(at, end) - 1
        if pairs:
            first = max(first, 1)
        if first > hi:
            return []
        if release is None:
            return [(first, hi)]
        ep, rel = self._epoch, self._releases
        e_lo, e_hi = ep[first], ep[hi]
        if e_lo == e_hi:
            return [(first, hi)] if rel[e_lo] == release else []
        out: Runs = []
        for e in range(e_lo, e_hi + 1):
            if rel[e] == release:
                a, b = bisect_left(ep, e, first, hi + 1), bisect_right(ep, e, first, hi + 1) - 1
                if a <= b:
                    out.append((a, b))
        return out

    def counter(self, sample: str, runs: Runs) -> tuple[float, float, int]:
        """(increase, seconds spanned, pairs) of a counter over pair runs."""
        c = self._counters.get(sample)
        if c is None:
            raise not_collected(sample)
        inc = span = 0.0
        pairs = 0
        for a, b in runs:
            inc += c.total[b] - c.total[a - 1]
            span += c.span[b] - c.span[a - 1]
            pairs += c.pairs[b] - c.pairs[a - 1]
        return inc, span, pairs

    def histogram(
        self, sample: str, runs: Runs
    ) -> tuple[tuple[float, ...], list[float], float, int] | None:
        """(bounds, cumulative increase per bound, sum increase, pairs that carried it)
        over pair runs; None when the host never reported the histogram."""
        h = self._hists.get(sample)
        if h is None:
            raise not_collected(sample)
        if not h.le:
            return None
        counts = [0.0] * len(h.le)
        total_sum = 0.0
        present = 0
        for a, b in runs:
            w, col = len(h.le), h.buckets
            for i in range(w):
                counts[i] += col[b * w + i] - col[(a - 1) * w + i]
            total_sum += h.sum[b] - h.sum[a - 1]
            present += h.present[b] - h.present[a - 1]
        return h.le, counts, total_sum, present

    def gauge(self, sample: str, runs: Runs) -> tuple[float, int, float]:
        """(sum, number, max) of a gauge's values over row runs (``pairs=False``)."""
        g = self._gauges.get(sample)
        if g is None:
            raise not_collected(sample)
        total, n, top = 0.0, 0, -math.inf
        for a, b in runs:
            total += math.fsum(g.sum[a : b + 1])
            n += sum(g.n[a : b + 1])
            top = max(top, max(g.max[a : b + 1]))
        return total, n, top

    def _need_events(self) -> None:
        if not self._events:
            raise not_collected(min({CPU, UP, HEALTH} - self.keep))

    def seconds(self, runs: Runs) -> float:
        """Seconds covered by pair runs."""
        return sum(self._at[b] - self._at[a - 1] for a, b in runs)

    def events(self, runs: Runs) -> tuple[int, int]:
        """(restarts, health flaps) over pair runs."""
        self._need_events()
        r, f = self._restarts, self._flaps
        return (
            sum(r[b] - r[a - 1] for a, b in runs),
            sum(f[b] - f[a - 1] for a, b in runs),
        )

    def means(self, sample: str, runs: Runs) -> list[tuple[float, float]]:
        """(time, mean of the row's values) of a gauge, for every row that has one."""
        g = self._gauges.get(sample)
        if g is None:
            raise not_collected(sample)
        at, s, n = self._at, g.sum, g.n
        return [(at[k], s[k] / n[k]) for a, b in runs for k in range(a, b + 1) if n[k]]

    def cpu_rates(self, runs: Runs) -> list[tuple[float, float]]:
        """(time, cores busy) of every pair with a CPU-rate point (no reset)."""
        self._need_events()
        total, at, fl = self._counters[CPU].total, self._at, self._flags
        return [
            (at[k], (total[k] - total[k - 1]) / (at[k] - at[k - 1]))
            for a, b in runs
            for k in range(a, b + 1)
            if fl[k] & _CPU_OK
        ]


def ring_of(
    snapshots: Iterable[Snapshot],
    keep: Iterable[str] = ALL_SAMPLES,
    retention: Retention | None = None,
) -> HostRing:
    """A ring holding ``snapshots`` (tests and tools)."""
    ring = HostRing(keep, retention)
    for s in snapshots:
        ring.ingest(s)
    return ring
