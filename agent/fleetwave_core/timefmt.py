"""Points in time as both command lines print them: ISO 8601, UTC, whole seconds."""

from __future__ import annotations

import time


def iso_utc(ts: float) -> str:
    """``2026-12-01T10:00:00Z`` for a Unix time (UTC, whole seconds, rounded down)."""
    # time.gmtime, not datetime: datetime costs every agent session ~5 ms to import.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))
