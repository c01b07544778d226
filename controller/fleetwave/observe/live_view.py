"""The live view of a deployment on a terminal, drawn with ``rich``.

:func:`render` turns a :class:`~fleetwave.observe.live_model.Snapshot` into one frame
that fits the console: every line is cut with an ellipsis, never wrapped, so a redraw
always covers the previous frame. :class:`LiveView` is the event sink: it folds events
into a :class:`~fleetwave.observe.live_model.LiveModel` and lets ``rich.live.Live``
redraw on its timer, reading the clock at each redraw; when the deployment finishes it
draws the final state of every stage once, in full, and stops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fleetwave.observe.events import ObservedEvent
from fleetwave.observe.live_model import (
    BakeProgress,
    HostCounts,
    LiveModel,
    Snapshot,
    StageRow,
    StageStatus,
)
from fleetwave.planning.model import Plan
from fleetwave_core.durations import format_duration

REFRESH_PER_SECOND = 4.0
_MIN_STAGE_ROWS = 3

_WAITING = frozenset((StageStatus.WAITING, StageStatus.HELD))
_STATUS_STYLE = {
    StageStatus.WAITING: "yellow",
    StageStatus.HELD: "bold yellow",
    StageStatus.PROBING: "cyan",
    StageStatus.ROLLING: "bold cyan",
    StageStatus.BAKING: "magenta",
    StageStatus.DONE: "green",
    StageStatus.ROLLING_BACK: "bold red",
    StageStatus.ROLLED_BACK: "red",
    StageStatus.ROLLBACK_FAILED: "bold red",
    StageStatus.STOPPED: "red",
    StageStatus.NOT_STARTED: "dim",
    StageStatus.PENDING: "dim",
}


def duration(seconds: float) -> str:
    """``4m12s``; whole minutes once past an hour (``12h05m`` reads as ``12h5m``)."""
    s = max(0, round(seconds))
    if s >= 3600:
        s = round(s / 60) * 60
    return format_duration(s)


def bake_text(bake: BakeProgress) -> str:
    """``bake 4m12s left, 63/100 requests`` (the count only when the bake counts data)."""
    text = f"bake {duration(bake.left_s)} left" if bake.left_s > 0 else "bake time done"
    if bake.metric and bake.required:
        have = "?" if bake.datapoints is None else str(bake.datapoints)
        text += f", {have}/{bake.required} {bake.metric}"
    return text


def hosts_text(c: HostCounts) -> str:
    """The fleet's hosts in one phrase: done, in flight, failed, rollback."""
    parts = [f"{c.done}/{c.total} done"]
    if c.in_flight:
        parts.append(f"{c.in_flight} in flight")
    if c.failed:
        parts.append(f"{c.failed} failed")
    if c.rolled_back or c.rollback_in_flight or c.rollback_pending:
        parts.append(f"{c.rolled_back} rolled back")
    if c.rollback_in_flight:
        parts.append(f"{c.rollback_in_flight} rolling back")
    if c.rollback_pending:
        parts.append(f"{c.rollback_pending} queued for rollback")
    if c.rollback_failed:
        parts.append(f"{c.rollback_failed} rollback failed")
    return ", ".join(parts)


def _line(text: str | Text, style: str = "") -> Text:
    out = text if isinstance(text, Text) else Text(text, style=style)
    out.no_wrap = True
    out.overflow = "ellipsis"
    return out


def _header(snap: Snapshot) -> Text:
    state = snap.state.replace("_", " ")
    if snap.finished and snap.result is not None:
        state = f"finished: {snap.result}"
    style = (
        "bold red"
        if snap.state == "rolling_back" or (snap.result is not None and snap.result.rolled_back)
        else "bold"
    )
    text = Text()
    text.append(f"deployment {snap.deployment_id}  ", style="bold")
    text.append(state, style=style)
    text.append(f"  elapsed {duration(snap.elapsed_s)}")
    if not snap.finished:
        eta = "-" if snap.eta_s is None else f"~{duration(snap.eta_s)}"
        text.append(f"  ETA {eta}")
    return _line(text)


def _detail(row: StageRow) -> str:
    if row.bake is not None:
        return bake_text(row.bake)
    c = row.hosts
    if row.status in (StageStatus.ROLLING_BACK, StageStatus.ROLLED_BACK):
        return f"{c.rolled_back}/{c.total} rolled back"
    if row.status is StageStatus.ROLLBACK_FAILED:
        return f"{c.rollback_failed} could not be rolled back"
    if row.duration_s is not None and row.status in (StageStatus.DONE, StageStatus.STOPPED):
        return f"took {duration(row.duration_s)}"
    return ""


def _table(rows: list[StageRow]) -> Table:
    # The stage and detail columns give up width (their cells are cut with an
    # ellipsis, never wrapped); state and counts keep theirs.
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("stage", overflow="ellipsis")
    table.add_column("state", no_wrap=True)
    table.add_column("done", no_wrap=True, justify="right")
    table.add_column("out", no_wrap=True, justify="right")
    table.add_column("fail", no_wrap=True, justify="right")
    table.add_column("", overflow="ellipsis")
    for row in rows:
        c = row.hosts
        out = c.in_flight + c.rollback_in_flight
        failed = c.failed + c.rollback_failed
        table.add_row(
            _line(row.id),
            Text(row.status.value, style=_STATUS_STYLE[row.status]),
            f"{c.done}/{c.total}",
            str(out) if out else "",
            str(failed) if failed else "",
            _line(_detail(row)),
        )
    return table


def _pick_rows(stages: tuple[StageRow, ...], room: int) -> tuple[list[StageRow], str | None]:
    """The stages to show in ``room`` rows: the active ones first (at work, then
    waiting or held), then the done and pending ones nearest them; the rest are
    counted on one line."""
    if len(stages) <= room:
        return list(stages), None
    # stages at work before the ones waiting to begin
    active = sorted(
        (i for i, r in enumerate(stages) if r.status.active),
        key=lambda i: (stages[i].status in _WAITING, i),
    )
    keep = set(active[: max(room - 1, 1)])
    later = [i for i, r in enumerate(stages) if not r.status.active]
    anchor = (
        active[0]
        if active
        else next((i for i, r in enumerate(stages) if r.status is StageStatus.PENDING), len(stages))
    )
    # the nearest stages around where the deployment is, alternating back and forth
    later.sort(key=lambda i: (abs(i - anchor), i))
    for i in later:
        if len(keep) >= room - 1:
            break
        keep.add(i)
    hidden = [stages[i] for i in range(len(stages)) if i not in keep]
    done = sum(r.status is StageStatus.DONE for r in hidden)
    pending = sum(r.status is StageStatus.PENDING for r in hidden)
    other = len(hidden) - done - pending
    kinds = ((done, "done"), (pending, "pending"), (other, "other"))
    note = f"... {len(hidden)} more stages: " + ", ".join(f"{n} {k}" for n, k in kinds if n)
    return [stages[i] for i in sorted(keep)], note


def render(snap: Snapshot, *, height: int | None = None) -> RenderableType:
    """One frame. With ``height`` (the live frame) it fits in that many lines: the stage
    rows and the ``waiting:`` lines are cut to make room. None (the final frame) shows
    every stage."""
    top: list[Text] = [_header(snap), _line("hosts: " + hosts_text(snap.hosts))]
    if snap.reason and (snap.state == "rolling_back" or snap.finished):
        top.append(_line(f"reason: {snap.reason}", "red"))
    waiting = [
        _line(f"waiting: {w.target}: {w.verdict}: {w.reason}", "yellow") for w in snap.waiting
    ]
    bottom: list[Text] = []
    if not snap.finished:
        for index, bake in snap.wave_bakes:
            bottom.append(_line(f"wave {index}: {bake_text(bake)}", "magenta"))
        alarms = _alarms_line(snap)
        if alarms is not None:
            bottom.append(alarms)
        for role, alarm, state, reason in snap.role_alarms:
            style = "bold red" if state == "ALARM" else ""
            bottom.append(_line(f"{role} alarm {alarm}: {state}: {reason}", style))
    if snap.failure_count:
        bottom.append(_line(f"failed steps: {snap.failure_count}", "red"))
        bottom.extend(_line(f"  {f}", "red") for f in snap.failures)
    if snap.finished:
        bottom.append(_line(summary(snap), "bold"))
    elif snap.recent:
        bottom.append(_line(f"last: {snap.recent[-1]}", "dim"))
    if snap.finished:
        waiting = []
    room = len(snap.stages)
    if height is not None:
        # the table's header and the "... more stages" line take two more
        spare = height - len(top) - len(bottom) - 2
        if len(waiting) > max(1, spare // 3):
            keep = max(1, spare // 3) - 1
            more = len(waiting) - keep
            waiting = [*waiting[:keep], _line(f"waiting: ... and {more} more", "yellow")]
        room = max(_MIN_STAGE_ROWS, spare - len(waiting))
    rows, note = _pick_rows(snap.stages, room)
    parts: list[RenderableType] = [*top, _table(rows)]
    if note:
        parts.append(_line(note, "dim"))
    return Group(*parts, *waiting, *bottom)


def _alarms_line(snap: Snapshot) -> Text | None:
    if not snap.alarms:
        return None
    counts: dict[str, int] = {}
    for a in snap.alarms:
        counts[a.state] = counts.get(a.state, 0) + 1
    text = Text("alarms: ")
    text.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    firing = [a for a in snap.alarms if a.state == "ALARM"]
    if firing:
        text.append(
            " (" + ", ".join(f"{a.alarm}@{a.scope}" for a in firing) + ")", style="bold red"
        )
    return _line(text)


def summary(snap: Snapshot) -> str:
    """The closing line: the result, how long, and what happened to the hosts."""
    result = snap.result.value if snap.result is not None else snap.state
    return f"deployment {snap.deployment_id}: {result} in {duration(snap.elapsed_s)}: " + (
        hosts_text(snap.hosts)
    )


class LiveView:
    """The TTY event sink: a ``rich`` live display redrawn ``REFRESH_PER_SECOND`` times
    a second. ``clock`` must be the clock of the events' ``at`` (the runner's)."""

    def __init__(
        self,
        plan: Plan,
        console: Console | None = None,
        *,
        clock: Callable[[], float] = time.time,
        auto_refresh: bool = True,
        refresh_per_second: float = REFRESH_PER_SECOND,
    ) -> None:
        self.model = LiveModel(plan)
        self.console = console if console is not None else Console()
        self.clock = clock
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._live = Live(
            console=self.console,
            get_renderable=self.frame,
            auto_refresh=auto_refresh,
            refresh_per_second=refresh_per_second,
            transient=False,
        )

    def frame(self) -> RenderableType:
        """The current frame, computed for ``clock()`` (called by ``Live`` on its timer)."""
        try:
            with self._lock:
                snap = self.model.snapshot(self.clock())
                final = snap.finished or self._closed
            return render(snap, height=None if final else self.console.size.height)
        except Exception as exc:  # a sink must not raise, least of all in rich's thread
            return _line(f"fleetwave: the live view cannot draw: {exc!r}", "red")

    def emit(self, event: ObservedEvent) -> None:
        """Fold the event in; the next timer tick draws it. The finish draws at once."""
        if self._closed:
            return
        with self._lock:
            self.model.apply(event)
            finished = self.model.finished
        if not self._started:
            self._started = True
            self._live.start(refresh=True)
        if finished:
            self.close()

    def refresh(self) -> None:
        """Redraw now (tests and drivers that run without the timer)."""
        if self._started and not self._closed:
            self._live.refresh()

    def close(self) -> None:
        """Stop the display, leaving the last frame, in full, on screen. Idempotent."""
        if self._closed:
            return
        with self._lock:
            self._closed = True
        if self._started:
            self._live.stop()
