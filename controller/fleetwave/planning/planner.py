"""The planner: a pure function from pipeline + topology (+ start time) to a Plan.

Rules (each is checked by the property tests in ``tests/planning``):

* Wave 0 holds the pre-production environments, one after the other; waves 1.. follow
  the pipeline, their regions in parallel, and each region runs its stages in order:
  the one-box, then one AZ (or one cell) at a time. A stage never spans two AZs/cells.
* The one-box is exactly one host per region: the first host of the first AZ in the
  topology file, so the choice is stable. A warning notes a one-box that is more than
  10% of its region.
* Batching is resolved per stage of ``n`` hosts: ``max_out = min(n, max(1,
  floor(max_batch)))``; ``min_serving = ceil(min_healthy * n)``. When the two
  conflict, ``max_out`` shrinks until ``n - max_out >= min_serving``. When even one
  host out would break min_healthy (``min_serving >= n``, e.g. a 2-host AZ at 66%),
  the planner clamps ``min_serving`` to ``n - 1`` and reports it in ``Plan.warnings``
  (the one-box stage takes its single host out by definition and is not reported).
* Timing (``start`` given): a stage starts at the first instant its region's window is
  open after the previous stage ends, and then runs to completion; it lasts
  ``ceil(n / max_out) * batch_estimate`` plus its bake time. Regions of a wave run in
  parallel; the next wave starts after the slowest region plus the wave's bake.
* A pipeline for the ``production`` environment (the default) with no bake anywhere
  (every stage bake, one-box bake and wave bake 0s: the ``examples/fast`` shape) is
  refused unless its ``override.allow`` lists ``bakes``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from fleetwave.config.pipeline import OneboxPolicy, OverrideTarget, Pipeline, RollingPolicy
from fleetwave.config.spec import Unit
from fleetwave.config.topology import Region, Topology, TrafficClass
from fleetwave.config.windows import WindowPolicy
from fleetwave.errors import PlanError
from fleetwave.planning.model import (
    BakeRequirement,
    Batching,
    HostRef,
    Plan,
    RegionPlan,
    Stage,
    StageKind,
    Wave,
)
from fleetwave.planning.timeline import Timeline, build_timeline, stage_duration_s

__all__ = [
    "plan_pipeline",
    "resolve_batching",
    "schedule",
    "stage_duration_s",
    "timeline_of",
    "window_policy",
]

ONEBOX_WARN_FRACTION = 0.10
PREPROD_REGION = "preprod"


def resolve_batching(rolling: RollingPolicy, n: int) -> tuple[Batching, bool]:
    """Caps for a stage of ``n >= 1`` hosts, and whether min_healthy had to be clamped."""
    if n < 1:
        raise PlanError("a stage needs at least one host")
    cap = min(n, max(1, rolling.max_batch.of(n, round_up=False)))
    min_serving = min(n, rolling.min_healthy.of(n, round_up=True))
    clamped = False
    if n - min_serving < 1:
        min_serving, clamped = n - 1, True
    max_out = min(cap, n - min_serving)
    rollback = min(n, max(1, rolling.rollback_batch.of(n, round_up=True)))
    return Batching(max_out=max_out, min_serving=min_serving, rollback_batch=rollback), clamped


def _budget(rolling_budget: int, n: int) -> int:
    return max(0, min(n, rolling_budget))


class _Builder:
    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.warnings: list[str] = []

    def stage(
        self,
        sid: str,
        kind: StageKind,
        region: str,
        scope: str,
        hosts: Sequence[HostRef],
        rolling: RollingPolicy,
        bake: BakeRequirement,
        tests: tuple[str, ...] = (),
    ) -> Stage:
        batching, clamped = resolve_batching(rolling, len(hosts))
        if clamped and kind is not StageKind.ONEBOX:
            self.warnings.append(
                f"{sid}: min_healthy {rolling.min_healthy} cannot hold with {len(hosts)} "
                f"host(s) while one is out; min_serving clamped to {batching.min_serving}"
            )
        return Stage(
            id=sid,
            kind=kind,
            region=region,
            scope=scope,
            hosts=tuple(hosts),
            batching=batching,
            bake=bake,
            failure_budget=_budget(
                rolling.failure_budget.of(len(hosts), round_up=False), len(hosts)
            ),
            blockers=self.pipeline.blockers,
            tests=tests,
        )

    def onebox(self, sid: str, region: str, host: HostRef, policy: OneboxPolicy) -> Stage:
        rolling = RollingPolicy(failure_budget=policy.failure_budget)
        return self.stage(sid, StageKind.ONEBOX, region, "onebox", (host,), rolling, policy.bake)

    def region(self, index: int, region: Region, pipeline: Pipeline) -> RegionPlan:
        spec = pipeline.waves[index - 1]
        prefix = f"w{index}/{region.name}"
        stages: list[Stage] = []
        rest = list(region.hosts)
        if spec.onebox.enabled and rest:
            box = rest.pop(0)
            if 1 / len(region.hosts) > ONEBOX_WARN_FRACTION:
                self.warnings.append(
                    f"{prefix}/onebox: the one-box {box.name} is 1 of {len(region.hosts)} "
                    f"hosts ({100 / len(region.hosts):.0f}% of the region, above 10%)"
                )
            stages.append(self.onebox(f"{prefix}/onebox", region.name, box, spec.onebox))
        for az in region.azs:
            in_az = [h for h in rest if h.az == az]
            for scope_id, scope, kind, hosts in _units(az, in_az, pipeline.unit):
                stages.append(
                    self.stage(
                        f"{prefix}/{scope_id}",
                        kind,
                        region.name,
                        scope,
                        hosts,
                        spec.rolling,
                        spec.stage_bake,
                    )
                )
        if not region.hosts:
            self.warnings.append(f"{prefix}: region {region.name} has no hosts")
        return RegionPlan(region=region.name, stages=tuple(stages))

    def preprod(self, topology: Topology) -> Wave | None:
        stages: list[Stage] = []
        for spec in self.pipeline.preprod:
            try:
                env = topology.environment(spec.environment)
            except KeyError as exc:
                raise PlanError(str(exc.args[0])) from None
            hosts = list(env.hosts)
            prefix = f"w0/{PREPROD_REGION}/{env.name}"
            if spec.onebox and hosts:
                policy = OneboxPolicy(bake=spec.bake)
                stages.append(self.onebox(f"{prefix}/onebox", env.name, hosts.pop(0), policy))
            if hosts:
                stages.append(
                    self.stage(
                        prefix,
                        StageKind.PREPROD,
                        env.name,
                        env.name,
                        hosts,
                        spec.rolling,
                        spec.bake,
                        spec.tests,
                    )
                )
        if not stages:
            return None
        return Wave(
            index=0,
            name=PREPROD_REGION,
            regions=(RegionPlan(PREPROD_REGION, tuple(stages)),),
            bake_after=self.pipeline.preprod_bake,
        )


def _units(
    az: str, hosts: list[HostRef], unit: Unit
) -> list[tuple[str, str, StageKind, list[HostRef]]]:
    if not hosts:
        return []
    if unit is Unit.AZ:
        return [(f"az:{az}", az, StageKind.AZ, hosts)]
    out: list[tuple[str, str, StageKind, list[HostRef]]] = []
    loose = [h for h in hosts if not h.cell]
    if loose:
        # Hosts without a cell still deploy, as one stage confined to their AZ.
        out.append((f"az:{az}", az, StageKind.AZ, loose))
    cells = list(dict.fromkeys(h.cell for h in hosts if h.cell))
    for cell in cells:
        members = [h for h in hosts if h.cell == cell]
        out.append((f"az:{az}/cell:{cell}", f"{az}/{cell}", StageKind.CELL, members))
    return out


def plan_pipeline(
    pipeline: Pipeline, topology: Topology | None = None, start: datetime | None = None
) -> Plan:
    """Plan ``pipeline`` over ``topology`` (default: the pipeline's own).

    With ``start`` (timezone-aware), each stage gets ``earliest_start`` under the time
    windows and the plan gets ``earliest_finish``. Raises PlanError when the pipeline's
    waves and the topology's regions do not match one to one.
    """
    topology = topology if topology is not None else pipeline.topology
    if start is not None and start.tzinfo is None:
        raise PlanError(f"plan start time {start.isoformat()} needs a time zone")
    _check_regions(pipeline, topology)
    _check_production_bakes(pipeline)
    builder = _Builder(pipeline)
    waves: list[Wave] = []
    pre = builder.preprod(topology)
    if pre is not None:
        waves.append(pre)
    for spec in pipeline.waves:
        regions = tuple(
            builder.region(spec.index, topology.region(r), pipeline) for r in spec.regions
        )
        if spec.index == 1:
            high = [r for r in spec.regions if topology.region(r).traffic is TrafficClass.HIGH]
            if high:
                builder.warnings.append(
                    f"w1: wave 1 includes high-traffic region(s) {', '.join(high)}; "
                    "start with a low-traffic region to limit the blast radius"
                )
        waves.append(Wave(index=spec.index, name=spec.name, regions=regions, bake_after=spec.bake))
    plan = Plan(
        pipeline=pipeline.name,
        service=pipeline.service,
        waves=tuple(waves),
        warnings=tuple(builder.warnings),
    )
    if start is None:
        return plan
    return schedule(plan, pipeline, topology, start)


PRODUCTION = "production"


def _check_production_bakes(pipeline: Pipeline) -> None:
    """Refuse a production pipeline that never waits to see a release serve."""
    if pipeline.environment != PRODUCTION or pipeline.override.allows(OverrideTarget.BAKES):
        return
    baked = any(
        wave.bake.duration_s > 0
        or wave.stage_bake.duration_s > 0
        or wave.bake.min_datapoints > 0
        or wave.stage_bake.min_datapoints > 0
        or (wave.onebox.enabled and wave.onebox.bake.duration_s > 0)
        for wave in pipeline.waves
    )
    if not baked:
        raise PlanError(
            f"pipeline {pipeline.name} deploys to production with no bake anywhere "
            "(stage_bake, wave bakes and one-box bakes are all 0s): add a bake, name a "
            "non-production environment (environment: ...), or allow it with "
            "override: {allow: [bakes]}"
        )


def _check_regions(pipeline: Pipeline, topology: Topology) -> None:
    known = set(topology.region_names())
    seen: set[str] = set()
    for spec in pipeline.waves:
        for r in spec.regions:
            if r not in known:
                raise PlanError(f"wave {spec.name}: region {r!r} is not in the topology")
            if r in seen:
                raise PlanError(f"wave {spec.name}: region {r!r} is in two waves")
            seen.add(r)
    missing = sorted(known - seen)
    if missing:
        raise PlanError(f"regions in no wave: {', '.join(missing)}")


def window_policy(pipeline: Pipeline, topology: Topology, name: str) -> WindowPolicy:
    """The window policy of a region or pre-production environment: the pipeline's
    (what the run-time WindowGate checks), else open 24/7 in the topology's time zone."""
    if name in pipeline.windows:
        return pipeline.windows[name]
    for region in topology.regions:
        if region.name == name:
            return WindowPolicy(timezone=region.timezone)
    for env in topology.environments:
        if env.name == name:
            return WindowPolicy(timezone=env.timezone)
    return WindowPolicy()


def timeline_of(plan: Plan, pipeline: Pipeline, topology: Topology, start: datetime) -> Timeline:
    """The estimated timeline of ``plan`` from ``start`` under the pipeline's windows."""
    return build_timeline(
        plan,
        lambda name: window_policy(pipeline, topology, name),
        start,
        pipeline.batch_estimate_s,
    )


def schedule(plan: Plan, pipeline: Pipeline, topology: Topology, start: datetime) -> Plan:
    """``plan`` with each stage's earliest start under the windows, and the finish time."""
    timeline = timeline_of(plan, pipeline, topology, start)
    waves = tuple(
        dataclasses.replace(
            wave,
            regions=tuple(
                dataclasses.replace(
                    region,
                    stages=tuple(
                        dataclasses.replace(s, earliest_start=timeline.stage(s.id).start)
                        for s in region.stages
                    ),
                )
                for region in wave.regions
            ),
        )
        for wave in plan.waves
    )
    return dataclasses.replace(plan, waves=waves, planned_at=start, earliest_finish=timeline.finish)
