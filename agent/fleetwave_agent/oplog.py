"""The agent's operation records under ``ROOT/ops``.

* ``last.json``: the last operation (written atomically at start, as ``running``,
  and again when it ends), so ``status`` can say what happened even after a crash.
* ``log.jsonl``: one line per finished operation, append-only; the exporter counts
  installs and rollbacks from it, so operations run by the CLI or RPC show up.
* ``<operation id>/``: the captured output of each hook that operation ran; only the
  newest :data:`KEEP_OPERATION_DIRS` are kept.
"""

from __future__ import annotations

import enum
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from fleetwave_core.fsutil import atomic_write

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from typing import Any

KEEP_OPERATION_DIRS = 20


def new_operation_id() -> str:
    """Sortable by start time (UTC), unique: ``20250101T120000Z-1a2b3c4d``."""
    # os.urandom rather than uuid4: ``uuid`` imports ``platform`` (~3 ms of regex
    # compiles), paid on every agent start.
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + os.urandom(4).hex()


class Outcome(enum.Enum):
    RUNNING = "running"
    OK = "ok"
    UNCHANGED = "unchanged"  # the target was already current
    ROLLED_BACK = "rolled_back"  # failed after the switch; the agent put the old release back
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # the agent died during it; the next process recovered


@dataclass
class OperationRecord:
    """Mutable while the operation runs; :meth:`to_dict` is what is stored and returned."""

    op: str
    id: str = field(default_factory=new_operation_id)
    phase: str = "begun"  # recovery.Phase: how far it got, for recovery after a crash
    started: float = field(default_factory=time.time)
    outcome: Outcome = Outcome.RUNNING
    version: str | None = None
    package_id: str | None = None
    previous_version: str | None = None
    previous_package_id: str | None = None
    current_version: str | None = None
    rolled_back: bool = False
    reason: str = ""
    duration_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    hooks: list[dict[str, Any]] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    marked_bad: list[str] = field(default_factory=list)  # versions found bad by this op
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "op": self.op,
            "outcome": self.outcome.value,
            "phase": self.phase,
            "ok": self.outcome in (Outcome.OK, Outcome.UNCHANGED),
            "started": self.started,
            "duration_s": round(self.duration_s, 4),
            "version": self.version,
            "package_id": self.package_id,
            "previous_version": self.previous_version,
            "previous_package_id": self.previous_package_id,
            "current_version": self.current_version,
            "rolled_back": self.rolled_back,
            "reason": self.reason,
            "warnings": list(self.warnings),
            "hooks": list(self.hooks),
            "health": list(self.health),
            "recovered": list(self.recovered),
            "marked_bad": list(self.marked_bad),
            "error": self.error,
        }


class OperationLog:
    """Reads and writes the records under ``ROOT/ops``."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "ops"
        self.last_path = self.dir / "last.json"
        self.log_path = self.dir / "log.jsonl"

    def hook_log(self, record: OperationRecord, index: int, hook: str, version: str) -> Path:
        return self.dir / record.id / f"{index:02d}-{hook}-{version}.log"

    def begin(self, record: OperationRecord) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_last(record.to_dict())

    def checkpoint(self, record: OperationRecord, phase: str) -> None:
        """Record, durably, that the running operation reached ``phase``."""
        record.phase = phase
        self._write_last(record.to_dict())

    def interrupted(self) -> dict[str, Any] | None:
        """The last operation if it never finished (call with the store lock held)."""
        last = self.last()
        return last if last is not None and last.get("outcome") == "running" else None

    def finish_interrupted(self, data: dict[str, Any], reason: str) -> None:
        """Finish the record of an operation whose process died, as ``interrupted``."""
        final = data | {"outcome": Outcome.INTERRUPTED.value, "reason": reason}
        self._write_last(final)
        self._append(final)

    def finish(self, record: OperationRecord) -> None:
        data = record.to_dict()
        self._write_last(data)
        self._append(data)
        self._prune()

    def _append(self, data: dict[str, Any]) -> None:
        summary = {
            k: data.get(k)
            for k in ("id", "op", "outcome", "version", "rolled_back", "duration_s", "started")
        }
        line = (json.dumps(summary, sort_keys=True) + "\n").encode()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write() of one short line: appends never interleave
        finally:
            os.close(fd)

    def last(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.last_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write_last(self, data: dict[str, Any]) -> None:
        atomic_write(self.last_path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def _prune(self) -> None:
        dirs = sorted(p for p in self.dir.iterdir() if p.is_dir())
        if len(dirs) <= KEEP_OPERATION_DIRS:
            return
        import shutil  # only when there is something to prune

        for old in dirs[:-KEEP_OPERATION_DIRS]:
            shutil.rmtree(old, ignore_errors=True)  # two levels deep: recursion is bounded
