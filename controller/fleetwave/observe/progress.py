"""The live progress view for a TTY: a few summary lines, redrawn in place."""

from __future__ import annotations

from typing import IO

from fleetwave.observe.events import (
    AlarmStateChanged,
    DeploymentChanged,
    GateVerdict,
    HostsSummary,
    HostStep,
    ObservedEvent,
    StageChanged,
    describe,
)

_UP_AND_CLEAR = "\x1b[{n}F\x1b[J"


class ProgressView:
    """Redraws: the deployment state, active stages, host counts, the last event."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.state = "starting"
        self.stages: dict[str, str] = {}
        self.hosts: dict[str, int] = {}
        self.last = ""
        self.failures: list[str] = []
        self.waiting: dict[str, str] = {}  # target -> what it waits for
        self.alarms: dict[str, str] = {}
        self._drawn = 0

    def emit(self, event: ObservedEvent) -> None:
        if isinstance(event, DeploymentChanged):
            self.state = event.state + (f" ({event.result})" if event.result else "")
            if event.reason:
                self.last = event.reason
        elif isinstance(event, StageChanged):
            if event.phase == "done":
                self.stages.pop(event.stage, None)
            else:
                self.stages[event.stage] = event.phase
        elif isinstance(event, HostsSummary):
            self.hosts = dict(event.by_phase)
        elif isinstance(event, GateVerdict):
            if event.verdict in ("wait", "hold"):
                self.waiting[event.target] = f"{event.verdict}: {event.reason}"
            else:
                self.waiting.pop(event.target, None)
        elif isinstance(event, AlarmStateChanged):
            self.alarms[event.alarm] = event.state
        elif isinstance(event, HostStep) and event.outcome == "failed":
            self.failures.append(f"{event.host}: {event.step}: {event.error_kind}")
        line = describe(event)
        if line:
            self.last = line
        self._draw()

    def _draw(self) -> None:
        lines = [f"deployment: {self.state}"]
        active = ", ".join(f"{s} [{p}]" for s, p in sorted(self.stages.items())) or "-"
        lines.append(f"stages: {active}")
        lines.append(
            "hosts: " + (" ".join(f"{k}={v}" for k, v in sorted(self.hosts.items())) or "-")
        )
        for target, why in sorted(self.waiting.items()):
            lines.append(f"waiting: {target}: {why}"[:200])
        if self.alarms:
            lines.append("alarms: " + " ".join(f"{a}={s}" for a, s in sorted(self.alarms.items())))
        if self.failures:
            lines.append(f"failed: {len(self.failures)} (last: {self.failures[-1]})")
        lines.append(f"last: {self.last}"[:200])
        out = _UP_AND_CLEAR.format(n=self._drawn) if self._drawn else ""
        self.stream.write(out + "\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn = len(lines)
