"""The deployment plan: what ``fleetwave plan`` prints and ``fleetwave deploy`` executes.

Plain frozen data. The planner (``planner.py``) is the only producer; the engine
consumes it unchanged. ``planning.codec`` gives the JSON form that ``plan --json``
prints and the journal stores, so a resumed deployment executes the exact plan it
started with.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from fleetwave.config.pipeline import BakeRequirement
from fleetwave.config.topology import HostRef, ServerRef

__all__ = [
    "BakeRequirement",
    "Batching",
    "HostRef",
    "Plan",
    "RegionPlan",
    "ServerRef",
    "Stage",
    "StageKind",
    "Wave",
]


class StageKind(enum.Enum):
    PREPROD = "preprod"  # alpha, beta, gamma: a named environment with its own hosts
    ONEBOX = "onebox"  # exactly one host of a region
    AZ = "az"  # the rest of one availability zone
    CELL = "cell"  # the rest of one cell


@dataclass(frozen=True)
class Batching:
    """Run-time caps for one stage, already resolved to host counts.

    ``max_out``: most of the stage's hosts out of service at once (>= 1).
    ``min_serving``: fewest of the stage's hosts that must keep serving; hosts that
    were already unhealthy count against it. ``rollback_batch``: hosts rolled back at once.
    """

    max_out: int
    min_serving: int
    rollback_batch: int


@dataclass(frozen=True)
class Stage:
    id: str  # unique in the plan, e.g. "w1/us-east-1/onebox", "w1/us-east-1/az:use1-az2"
    kind: StageKind
    region: str
    scope: str  # the AZ or cell name, "onebox", or the pre-production environment
    hosts: tuple[HostRef, ...]
    batching: Batching
    bake: BakeRequirement
    failure_budget: int = 0  # failed hosts tolerated before the deployment rolls back
    blockers: tuple[str, ...] = ()  # alarm expressions that must be clear to start
    tests: tuple[str, ...] = ()  # pre-production test commands that must pass
    earliest_start: datetime | None = None  # from the time windows, when planned --at


@dataclass(frozen=True)
class RegionPlan:
    region: str
    stages: tuple[Stage, ...]


@dataclass(frozen=True)
class Wave:
    index: int  # 0 for pre-production, then 1, 2, ...
    name: str
    regions: tuple[RegionPlan, ...]  # deployed in parallel
    bake_after: BakeRequirement = field(default_factory=BakeRequirement)


@dataclass(frozen=True)
class Plan:
    pipeline: str
    service: str
    waves: tuple[Wave, ...]
    warnings: tuple[str, ...] = ()
    planned_at: datetime | None = None
    earliest_finish: datetime | None = None

    def stages(self) -> list[Stage]:
        return [s for w in self.waves for r in w.regions for s in r.stages]

    def hosts(self) -> list[HostRef]:
        return [h for s in self.stages() for h in s.hosts]
