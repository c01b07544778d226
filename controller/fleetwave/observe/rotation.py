"""Time each host spent out of rotation, from the journal (pure).

A host leaves rotation when the runner journals its ``DrainHost`` intent (the balancer
stops sending it new connections from then on) and comes back at its ``HostReturned``
event (the balancer's ready, then the agent's gc: a few milliseconds). A host drained
again later, e.g. for a rollback, adds a second interval. A host never returned (it
failed, or the deployment is still running) has an open interval, reported apart.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rotation:
    """One host's time out of rotation: ``seconds`` over its closed intervals, and
    ``out_since`` when it is out now (drained and not returned)."""

    host: str
    seconds: float
    intervals: int
    out_since: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "intervals": self.intervals,
            "out_since": self.out_since,
        }


def rotations(steps: Iterable[Any]) -> dict[str, Rotation]:
    """Every drained host's :class:`Rotation`, from journal steps (``kind``, ``name``,
    ``host``, ``at``), in the order hosts were first drained."""
    total: dict[str, float] = {}
    count: dict[str, int] = {}
    since: dict[str, float] = {}
    for step in steps:
        host = step.host
        if host is None:
            continue
        if step.kind == "intent" and step.name == "DrainHost":
            since.setdefault(host, step.at)  # a retried drain is still the same interval
            total.setdefault(host, 0.0)
            count.setdefault(host, 0)
        elif step.kind == "event" and step.name == "HostReturned" and host in since:
            total[host] += step.at - since.pop(host)
            count[host] += 1
    return {h: Rotation(h, total[h], count[h], since.get(h)) for h in total}


def summary(found: Mapping[str, Rotation]) -> str:
    """One line: the median and the longest time out of rotation of returned hosts."""
    closed = [r.seconds for r in found.values() if r.intervals]
    still_out = sorted(h for h, r in found.items() if r.out_since is not None)
    parts = []
    if closed:
        parts.append(
            f"median {statistics.median(closed):.2f}s, longest {max(closed):.2f}s "
            f"over {len(closed)} host(s)"
        )
    if still_out:
        parts.append(f"not returned: {', '.join(still_out)}")
    return "; ".join(parts) if parts else "no host was drained"


__all__ = ["Rotation", "rotations", "summary"]
