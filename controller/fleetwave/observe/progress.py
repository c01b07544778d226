"""Which progress output a run gets on the terminal, and the ``--quiet`` one.

``--json``: JSON lines. ``--quiet``: only errors as they happen (the final result is
the command's last line on stderr). Otherwise the ``rich`` live view
(:mod:`fleetwave.observe.live_view`) when stdout is a terminal and ``TERM`` is not
``dumb``, else plain lines (:class:`~fleetwave.observe.events.PlainLines`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import IO

from fleetwave.observe.events import (
    DeploymentChanged,
    EventSink,
    HostStep,
    JsonLinesStream,
    ObservedEvent,
    PlainLines,
    describe,
)
from fleetwave.planning.model import Plan


class ViewKind(enum.Enum):
    JSON = "json"
    QUIET = "quiet"
    PLAIN = "plain"
    LIVE = "live"


def choose_view(*, json: bool, quiet: bool, isatty: bool, env: Mapping[str, str]) -> ViewKind:
    """The output for these flags on this terminal (``--json`` wins over the rest)."""
    if json:
        return ViewKind.JSON
    if quiet:
        return ViewKind.QUIET
    if not isatty or env.get("TERM", "") in ("", "dumb"):
        return ViewKind.PLAIN
    return ViewKind.LIVE


class QuietLines:
    """``--quiet``: one line per failed host step and for the start of a rollback."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def emit(self, event: ObservedEvent) -> None:
        failed = isinstance(event, HostStep) and event.outcome == "failed"
        rollback = isinstance(event, DeploymentChanged) and event.state == "rolling_back"
        line = describe(event) if failed or rollback else None
        if line is not None:
            self.stream.write(line + "\n")
            self.stream.flush()


def make_view(kind: ViewKind, plan: Plan, stdout: IO[str], stderr: IO[str]) -> EventSink:
    """The sink for ``kind``; the live view draws on ``stdout`` (close it when done)."""
    if kind is ViewKind.JSON:
        return JsonLinesStream(stdout)
    if kind is ViewKind.QUIET:
        return QuietLines(stderr)
    if kind is ViewKind.PLAIN:
        return PlainLines(stdout)
    from rich.console import Console

    from fleetwave.observe.live_view import LiveView

    return LiveView(plan, Console(file=stdout))
