"""Drives the real live view in a terminal (a tmux pane, for test_tmux.py).

``python tmux_driver.py DIR``: feeds the scripted deployment (tests/observe/scenario.py)
into :class:`~fleetwave.observe.live_view.LiveView` on this process's terminal, with
the view's own 4 Hz timer and a fake clock. At each checkpoint it stops the clock,
writes the frame the screen must show to ``DIR/<name>.frame``, creates
``DIR/<name>.ready`` and waits (at most a minute) for ``DIR/<name>.go``. The finish
writes ``DIR/end.frame`` and ``DIR/end.ready``, then exits. It never calls
``refresh()``: what reaches the screen is drawn by the timer (and the finish).
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "controller"), str(REPO / "agent")]

from rich.console import Console  # noqa: E402

from fleetwave.observe.live_view import LiveView, render  # noqa: E402
from tests.observe import scenario as sc  # noqa: E402

WAIT_S = 60.0


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def expected(view: LiveView, now: float, width: int, height: int) -> str:
    """The frame the view draws at ``now``, rendered off-screen as plain text."""
    snap = view.model.snapshot(now)
    console = Console(width=width, height=height, file=io.StringIO(), color_system=None)
    console.print(render(snap, height=None if snap.finished else height))
    return console.file.getvalue()  # type: ignore[attr-defined,no-any-return]


def main(out: Path) -> int:
    s = sc.script()
    clock = Clock(sc.T0)
    console = Console()
    width, height = console.size
    view = LiveView(s.plan, console, clock=clock)
    checkpoints = [
        ("baking", s.checkpoints["baking"]),
        ("baking_later", s.checkpoints["baking"] + 60),  # no event: the timer redraws
        ("rolling", s.checkpoints["rolling"]),
        ("rolling_back", s.checkpoints["rolling_back"]),
    ]
    events = iter(s.events)
    pending = next(events, None)
    for name, t in checkpoints:
        while pending is not None and pending.at <= t:
            clock.t = pending.at
            view.emit(pending)
            pending = next(events, None)
        clock.t = t
        (out / f"{name}.frame").write_text(expected(view, t, width, height))
        (out / f"{name}.ready").touch()
        deadline = time.monotonic() + WAIT_S
        while not (out / f"{name}.go").exists():
            if time.monotonic() > deadline:
                view.close()
                return 1
            time.sleep(0.05)
    while pending is not None:
        clock.t = pending.at
        view.emit(pending)  # the finish closes the view: its final frame, in full
        pending = next(events, None)
    clock.t = s.checkpoints["end"]
    (out / "end.frame").write_text(expected(view, clock.t, width, height))
    (out / "end.ready").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
