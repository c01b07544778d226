"""A scripted deployment for the live view: a plan of two waves, and the events a
runner emits for it, with checkpoints (times at which a test looks at the screen).

The story: the us-east-1 one-box rolls and bakes on request counts while eu-west-1 is
held by a closed window; an AZ stage then loses a host, the failure budget is spent,
and the deployment rolls back. Host counts come from one table of host phases, as the
runner's ``HostsSummary`` does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from fleetwave.config.alarm_expr import AlarmState
from fleetwave.lb.base import ServerRef
from fleetwave.observe.events import (
    AlarmsEvaluated,
    AlarmStateChanged,
    DeploymentChanged,
    GateVerdict,
    HostsSummary,
    HostStep,
    Note,
    ObservedEvent,
    StageChanged,
)
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
from fleetwave.rollout import FailureKind, HostOp, Result
from fleetwave.rollout.watching import AlarmReading

T0 = 1_700_000_000.0
DEP = "20240101T000000Z-abc123"
BAKE = BakeRequirement(duration_s=600.0, min_datapoints=100, metric="requests")
WINDOW_REASON = (
    "window closed in eu-west-1 until Mon 09:00 Europe/Dublin; the next window opens "
    "in 2 days, and this sentence is long on purpose so that it is wider than a "
    "200-column terminal and would wrap if the view did not cut it with an ellipsis"
)


def _stage(sid: str, kind: StageKind, region: str, hosts: list[str], max_out: int) -> Stage:
    refs = tuple(
        HostRef(h, f"10.0.0.{i + 1}", region, "az1", lb=ServerRef("lb", "app", h))
        for i, h in enumerate(hosts)
    )
    return Stage(
        id=sid,
        kind=kind,
        region=region,
        scope=sid.rsplit("/", 1)[1],
        hosts=refs,
        batching=Batching(max_out, 0, 2),
        bake=BAKE,
    )


def plan() -> Plan:
    """Two waves: us-east-1 and eu-west-1 in parallel, then ap-southeast-2."""
    use1 = RegionPlan(
        "us-east-1",
        (
            _stage("w1/us-east-1/onebox", StageKind.ONEBOX, "us-east-1", ["use1-a"], 1),
            _stage(
                "w1/us-east-1/az:use1-az1",
                StageKind.AZ,
                "us-east-1",
                ["use1-b", "use1-c", "use1-d", "use1-e"],
                2,
            ),
        ),
    )
    euw1 = RegionPlan(
        "eu-west-1",
        (
            _stage("w1/eu-west-1/onebox", StageKind.ONEBOX, "eu-west-1", ["euw1-a"], 1),
            _stage("w1/eu-west-1/az:euw1-az1", StageKind.AZ, "eu-west-1", ["euw1-b"], 1),
        ),
    )
    apse2 = RegionPlan(
        "ap-southeast-2",
        (
            _stage("w2/ap-southeast-2/onebox", StageKind.ONEBOX, "ap-southeast-2", ["apse2-a"], 1),
            _stage(
                "w2/ap-southeast-2/cell:apse2-cell-1",
                StageKind.CELL,
                "ap-southeast-2",
                ["apse2-b", "apse2-c"],
                1,
            ),
        ),
    )
    waves = (
        Wave(1, "wave1", (use1, euw1), BakeRequirement(1800.0)),
        Wave(2, "wave2", (apse2,), BakeRequirement(1800.0)),
    )
    return Plan("orders", "orders", waves)


@dataclass
class Script:
    """Builds the event list; ``phases`` is the host table behind every summary."""

    plan: Plan
    events: list[ObservedEvent] = field(default_factory=list)
    checkpoints: dict[str, float] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stage_of = {h.name: s.id for s in self.plan.stages() for h in s.hosts}
        self.phases = dict.fromkeys(self.stage_of, "pending")

    def add(self, event: ObservedEvent) -> None:
        self.events.append(event)

    def hosts(self, at: float, **phases: str) -> None:
        """Move hosts (``use1_a="draining"``) and emit the summary."""
        for name, phase in phases.items():
            self.phases[name.replace("_", "-")] = phase
        per_stage = Counter((self.stage_of[h], p) for h, p in self.phases.items())
        by_stage: dict[str, dict[str, int]] = {}
        for (sid, phase), n in per_stage.items():
            by_stage.setdefault(sid, {})[phase] = n
        self.add(
            HostsSummary(
                DEP,
                at,
                tuple(sorted(Counter(self.phases.values()).items())),
                tuple((sid, tuple(sorted(c.items()))) for sid, c in sorted(by_stage.items())),
            )
        )

    def stage(self, at: float, sid: str, phase: str) -> None:
        self.add(StageChanged(DEP, at, sid, phase))

    def step(
        self, at: float, host: str, step: HostOp, outcome: str, took: float | None = None
    ) -> None:
        sid = self.stage_of[host]
        if outcome == "failed":
            self.add(
                HostStep(DEP, at, host, sid, step, "failed", took, FailureKind.REMOTE_AGENT, "boom")
            )
        else:
            self.add(HostStep(DEP, at, host, sid, step, outcome, took))  # type: ignore[arg-type]

    def roll_host(self, start: float, host: str) -> float:
        """One host through drain (3 s), install (15 s), return (2 s); returns the end."""
        key = host.replace("-", "_")
        self.step(start, host, HostOp.DRAIN, "start")
        self.hosts(start, **{key: "draining"})
        self.step(start + 3, host, HostOp.DRAIN, "ok", 3.0)
        self.hosts(start + 3, **{key: "installing"})
        self.step(start + 3, host, HostOp.INSTALL, "start")
        self.step(start + 18, host, HostOp.INSTALL, "ok", 15.0)
        self.hosts(start + 18, **{key: "returning"})
        self.step(start + 18, host, HostOp.RETURN, "start")
        self.step(start + 20, host, HostOp.RETURN, "ok", 2.0)
        self.hosts(start + 20, **{key: "done"})
        return start + 20


def bake_verdict(
    at: float, target: str, elapsed: float, count: int, verdict: str = "wait"
) -> GateVerdict:
    record = {
        "gate": "bake",
        "elapsed_s": elapsed,
        "duration_s": BAKE.duration_s,
        "metric": BAKE.metric,
        "datapoints": count,
        "min_datapoints": BAKE.min_datapoints,
        "release": "2.0.0",
        "missing": False,
    }
    reason = "" if verdict == "ok" else f"baking: {count} of 100 requests"
    return GateVerdict(DEP, at, target, "bake", verdict, reason, (record,))


def script() -> Script:
    """The whole story, checkpoints ``baking``, ``rolling``, ``rolling_back``, ``end``."""
    s = Script(plan())
    one = "w1/us-east-1/onebox"
    az1 = "w1/us-east-1/az:use1-az1"
    eu = "w1/eu-west-1/onebox"
    s.add(DeploymentChanged(DEP, T0, "running"))
    for sid in (one, eu):
        s.stage(T0, sid, "checking_blockers")
    s.add(GateVerdict(DEP, T0 + 1, one, "blockers", "ok", ""))
    s.add(GateVerdict(DEP, T0 + 1, eu, "blockers", "hold", WINDOW_REASON))
    s.stage(T0 + 1, eu, "held")
    s.stage(T0 + 1, one, "probing")
    s.stage(T0 + 2, one, "rolling")
    end = s.roll_host(T0 + 2, "use1-a")
    s.stage(end, one, "baking")
    readings = (
        AlarmReading("orders-errors", one, AlarmState.OK, 0.01),
        AlarmReading("orders-latency", one, AlarmState.ALARM, 0.9),
        AlarmReading("orders-errors", "us-east-1", AlarmState.INSUFFICIENT_DATA, None),
    )
    s.add(AlarmsEvaluated(DEP, T0 + 80, readings))
    s.add(
        AlarmStateChanged(
            DEP, T0 + 80, "orders-onebox", "onebox", "OK", "onebox within baseline", {}
        )
    )
    # bake window opened at T0+22: at T0+90 it has run 68 s and counted 63 requests
    s.add(bake_verdict(T0 + 90, one, 68.0, 63))
    s.checkpoints["baking"] = T0 + 100  # 522 s left: "bake 8m42s left, 63/100 requests"

    s.add(bake_verdict(T0 + 622, one, 600.0, 140, "ok"))
    s.stage(T0 + 622, one, "done")
    s.add(GateVerdict(DEP, T0 + 623, eu, "blockers", "ok", ""))
    s.stage(T0 + 623, eu, "rolling")
    s.stage(T0 + 623, az1, "rolling")
    s.roll_host(T0 + 625, "use1-b")
    s.step(T0 + 625, "use1-c", HostOp.DRAIN, "start")
    s.hosts(T0 + 625, use1_c="draining")
    s.step(T0 + 630, "euw1-a", HostOp.DRAIN, "start")
    s.hosts(T0 + 630, euw1_a="draining")
    s.add(Note(DEP, T0 + 631, "resume: nothing to reconcile"))
    s.checkpoints["rolling"] = T0 + 650

    s.step(T0 + 655, "use1-c", HostOp.DRAIN, "ok", 3.0)
    s.step(T0 + 655, "use1-c", HostOp.INSTALL, "start")
    s.hosts(T0 + 655, use1_c="installing")
    s.step(T0 + 660, "use1-c", HostOp.INSTALL, "failed", 5.0)
    s.hosts(T0 + 660, use1_c="failed")
    reason = f"stage {az1}: 1 failed host(s) exceed the failure budget (0)"
    s.add(DeploymentChanged(DEP, T0 + 660, "rolling_back", reason=reason))
    s.hosts(T0 + 660, use1_a="rb_pending", use1_b="rb_draining", use1_c="rb_pending")
    s.checkpoints["rolling_back"] = T0 + 665

    s.hosts(T0 + 670, use1_b="rolled_back", use1_a="rb_draining", use1_c="rb_rolling_back")
    s.hosts(T0 + 680, use1_a="rolled_back", use1_c="rolled_back", euw1_a="rolled_back")
    s.add(DeploymentChanged(DEP, T0 + 690, "finished", Result.ROLLED_BACK, reason))
    s.checkpoints["end"] = T0 + 700
    return s


def upto(s: Script, t: float) -> list[ObservedEvent]:
    """The events that happened at or before ``t``."""
    return [e for e in s.events if e.at <= t]
