"""Releases that failed to install, activate or pass health: ``state/bad.json``.

The release store keeps this list so that nothing the agent saw fail is activated
again by accident: ``previous`` is the last *good* release, and ``rollback`` refuses a
known-bad one unless forced. A release comes off the list only when an operation that
names it explicitly (install, activate, a forced rollback) succeeds with it.

The file maps package id -> ``{name, version, op, reason, at}``; it is written
atomically and durably (:func:`fleetwave_core.fsutil.atomic_write`), and gc does not
shrink it (a package id is forever).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fleetwave_agent.errors import StoreError
from fleetwave_core.fsutil import atomic_write

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from typing import Any

_REASON_MAX = 500  # one line in status, not the whole hook output


@dataclass(frozen=True)
class BadRelease:
    """One release the agent saw fail, and why."""

    package_id: str
    name: str
    version: str
    op: str  # the operation it failed in: install, activate, rollback, recover
    reason: str
    at: float  # Unix time

    def to_dict(self) -> dict[str, Any]:
        return {
            "package_id": self.package_id,
            "name": self.name,
            "version": self.version,
            "op": self.op,
            "reason": self.reason,
            "at": self.at,
        }

    def describe(self) -> str:
        """``app 3 (0123456789ab, failed in install: hook 'start' ...)``."""
        return (
            f"{self.name} {self.version} ({self.package_id[:12]}, "
            f"failed in {self.op}: {self.reason})"
        )


class KnownBad:
    """Reads and writes the known-bad list. Callers hold the store lock to mutate it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[BadRelease]:
        """Every known-bad release, oldest failure first."""
        found = [
            BadRelease(
                package_id=pid,
                name=str(entry["name"]),
                version=str(entry["version"]),
                op=str(entry["op"]),
                reason=str(entry["reason"]),
                at=float(entry["at"]),
            )
            for pid, entry in self._read().items()
        ]
        return sorted(found, key=lambda b: (b.at, b.package_id))

    def get(self, package_id: str) -> BadRelease | None:
        return next((b for b in self.all() if b.package_id == package_id), None)

    def mark(self, bad: BadRelease) -> None:
        """Record (or update) a failure."""
        data = self._read()
        reason = " ".join(bad.reason.split())[:_REASON_MAX]
        data[bad.package_id] = bad.to_dict() | {"reason": reason}
        del data[bad.package_id]["package_id"]
        self._write(data)

    def clear(self, package_id: str) -> bool:
        """Forget a failure; True if there was one."""
        data = self._read()
        if data.pop(package_id, None) is None:
            return False
        self._write(data)
        return True

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"{self.path}: unreadable known-bad list: {exc}") from None
        ok = isinstance(data, dict) and all(
            isinstance(v, dict) and {"name", "version", "op", "reason", "at"} <= v.keys()
            for v in data.values()
        )
        if not ok:
            raise StoreError(f"{self.path}: not a known-bad list")
        entries: dict[str, dict[str, Any]] = data
        return entries

    def _write(self, data: dict[str, dict[str, Any]]) -> None:
        try:
            atomic_write(self.path, json.dumps(data, sort_keys=True, indent=1) + "\n")
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot write: {exc.strerror}") from None
