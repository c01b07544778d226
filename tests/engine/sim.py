"""A pure model of a fleet for driving the engine in tests: plans, a simulated world
that carries out actions, and the safety invariants checked after every decision."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetwave.lb.base import ServerRef
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
from fleetwave.rollout import (
    FailureKind,
    HostOp,
    HostPhase,
    Phase,
    StagePhase,
    State,
    Target,
    decide,
    initial_state,
    is_forward,
)
from fleetwave.rollout.events import (
    DeploymentStarted,
    Event,
    GateResult,
    HostDrained,
    HostFailed,
    HostInstalled,
    HostReturned,
    HostRolledBack,
    StageProbed,
    TimerElapsed,
)
from fleetwave.rollout.types import (
    Action,
    BeforeRelease,
    CheckBlockers,
    CheckGate,
    DrainHost,
    Finish,
    InstallOnHost,
    ProbeStage,
    ReturnHost,
    RollbackHost,
    Verdict,
    WaitUntil,
)

NEW = "v2"


def make_plan(
    shape: list[list[list[int]]],
    *,
    max_out: int = 1,
    min_serving: int = 0,
    rollback_batch: int = 2,
    budget: int = 0,
    bake_s: float = 0.0,
    lb: bool = True,
    feasible: bool = True,
) -> Plan:
    """``shape[wave][region][stage]`` = host count of that stage. ``feasible`` caps
    ``min_serving`` below the stage size, as the planner does."""
    waves = []
    n = 0
    for wi, regions in enumerate(shape):
        rplans = []
        for ri, stages in enumerate(regions):
            region = f"r{wi}{ri}"
            st = []
            for si, count in enumerate(stages):
                hosts = []
                for _ in range(count):
                    n += 1
                    ref = ServerRef("lb", "app", f"h{n}") if lb else None
                    hosts.append(HostRef(f"h{n}", f"10.0.0.{n}", region, f"az{si}", lb=ref))
                st.append(
                    Stage(
                        id=f"w{wi}/{region}/s{si}",
                        kind=StageKind.AZ,
                        region=region,
                        scope=f"az{si}",
                        hosts=tuple(hosts),
                        batching=Batching(
                            max_out,
                            max(0, min(min_serving, count - 1 if feasible else count)),
                            rollback_batch,
                        ),
                        bake=BakeRequirement(duration_s=bake_s),
                        failure_budget=budget,
                    )
                )
            rplans.append(RegionPlan(region, tuple(st)))
        waves.append(Wave(wi, f"wave{wi}", tuple(rplans), BakeRequirement(bake_s)))
    return Plan("p", "svc", tuple(waves))


class InvariantError(AssertionError):
    pass


@dataclass
class World:
    """Hosts as the balancer and the agents see them."""

    plan: Plan
    healthy: dict[str, bool]
    release: dict[str, str | None]
    lb_ready: dict[str, bool]
    original: dict[str, str | None] = field(default_factory=dict)
    serving: dict[str, bool] = field(default_factory=dict)
    installed_ever: set[str] = field(default_factory=set)
    touched: set[str] = field(default_factory=set)
    rollback_seen: bool = False
    #: Drained by us and healthy on a release that passed its health checks (an
    #: install succeeded, nothing since disproved it): able to serve, for the floor
    #: while rolling back (docs/engine.md, "able to serve").
    fit: dict[str, bool] = field(default_factory=dict)
    finished: Finish | None = None
    now: float = 1000.0

    def __post_init__(self) -> None:
        self.original = dict(self.release)
        self.serving = {h: self.healthy[h] and self.lb_ready[h] for h in self.healthy}
        self.stage_of = {h.name: s for s in self.plan.stages() for h in s.hosts}
        self.has_lb = {h.name: h.lb is not None for h in self.plan.hosts()}

    # -- invariants checked when an action is issued ----------------------------------

    def issued(self, state: State, action: Action) -> None:
        if self.rollback_seen and is_forward(action):
            raise InvariantError(f"forward action after rollback began: {action}")
        if isinstance(action, DrainHost | InstallOnHost | RollbackHost):
            self.touched.add(action.host)
            out = isinstance(action, DrainHost) or not self.has_lb[action.host]
            if isinstance(action, DrainHost | RollbackHost):
                self.fit[action.host] = False  # about to change it: unproven again
            if out and self.serving[action.host]:
                self.serving[action.host] = False
                stage = self.stage_of[action.host]
                # Rolling back, the floor counts hosts able to serve: in rotation, or
                # drained by us and healthy on a release that passed health. A host
                # counted so that then fails is a failure, not a decision: the check
                # is made when a host is taken out.
                left = sum(self._able(h.name) for h in stage.hosts)
                if left < stage.batching.min_serving:
                    raise InvariantError(
                        f"{stage.id}: {left} able to serve < min_serving after {action} "
                        f"{[(h.name, state.hosts[h.name].phase.value) for h in stage.hosts]}"
                    )
        for stage in self.plan.stages():
            inflight = sum(
                state.hosts[h.name].phase
                in (
                    HostPhase.DRAINING,
                    HostPhase.INSTALLING,
                    HostPhase.RETURNING,
                    HostPhase.RB_DRAINING,
                    HostPhase.RB_ROLLING_BACK,
                    HostPhase.RB_RETURNING,
                    HostPhase.RESTORING,
                )
                for h in stage.hosts
            )
            b = stage.batching
            cap = b.max_out if state.phase is Phase.RUNNING else max(b.max_out, b.rollback_batch)
            if inflight > cap:
                raise InvariantError(f"{stage.id}: {inflight} out > cap {cap}")
        if state.phase is Phase.RUNNING:
            self._check_order(state)
            for stage in self.plan.stages():
                failed = sum(state.hosts[h.name].phase is HostPhase.FAILED for h in stage.hosts)
                if failed > stage.failure_budget:
                    raise InvariantError(f"{stage.id}: {failed} failed, still running forward")

    def _able(self, name: str) -> bool:
        if self.rollback_seen:
            return self.serving[name] or self.fit.get(name, False)
        return self.serving[name]

    def _check_order(self, state: State) -> None:
        # Regions run their stages one at a time; waves run strictly in order.
        for wi, wave in enumerate(self.plan.waves):
            active = [
                s
                for r in wave.regions
                for s in r.stages
                if state.stages[s.id].phase not in (StagePhase.PENDING, StagePhase.DONE)
            ]
            if active and wi != state.wave:
                raise InvariantError(f"wave {wi} active while wave {state.wave} is current")
            for r in wave.regions:
                busy = [s for s in r.stages if state.stages[s.id].phase is not StagePhase.PENDING]
                busy = [s for s in busy if state.stages[s.id].phase is not StagePhase.DONE]
                if len(busy) > 1:
                    raise InvariantError(f"two stages of {r.region} at once")

    # -- carrying out actions -------------------------------------------------------------

    def outcome(
        self, action: Action, ok: bool, verdict: str = "ok", healthy: bool = False
    ) -> Event | None:
        """The event the runner would feed back after carrying out ``action``; a
        failed return fails health, unless ``healthy`` (then its balancer failed)."""
        if isinstance(action, DrainHost):
            if not ok:
                return HostFailed(action.host, HostOp.DRAIN, FailureKind.LOAD_BALANCER, "boom")
            self.lb_ready[action.host] = False
            return HostDrained(action.host)
        if isinstance(action, InstallOnHost):
            before = self.release[action.host]
            if not ok:
                return HostFailed(
                    action.host,
                    HostOp.INSTALL,
                    FailureKind.SELF_ROLLED_BACK,
                    "health",
                    BeforeRelease(before),
                )
            self.release[action.host] = NEW
            self.installed_ever.add(action.host)
            self.fit[action.host] = self.has_lb[action.host]
            return HostInstalled(action.host, NEW, before)
        if isinstance(action, ReturnHost):
            if not ok:
                if healthy:
                    return HostFailed(action.host, HostOp.RETURN, FailureKind.LOAD_BALANCER, "lb")
                self.fit[action.host] = False
                return HostFailed(action.host, HostOp.RETURN, FailureKind.HEALTH_CHECK, "unhealthy")
            self.lb_ready[action.host] = True
            self.serving[action.host] = True
            self.fit[action.host] = False
            return HostReturned(action.host)
        if isinstance(action, RollbackHost):
            if not ok:
                self.fit[action.host] = False
                return HostFailed(action.host, HostOp.ROLLBACK, FailureKind.REMOTE_AGENT, "no")
            self.release[action.host] = action.to_release
            return HostRolledBack(action.host)
        if isinstance(action, ProbeStage):
            stage = next(s for s in self.plan.stages() if s.id == action.stage_id)
            return StageProbed(
                action.stage_id, frozenset(h.name for h in stage.hosts if self.serving[h.name])
            )
        if isinstance(action, CheckBlockers | CheckGate):
            purpose = "blockers" if isinstance(action, CheckBlockers) else "bake"
            if isinstance(action, CheckBlockers):
                target = Target.stage(action.stage_id)
            else:
                target = action.target
            v = {"ok": Verdict.ok(), "wait": Verdict.wait("later"), "fail": Verdict.fail("x")}
            return GateResult(target, purpose, v[verdict])  # type: ignore[arg-type]
        if isinstance(action, WaitUntil):
            self.now = max(self.now, action.at)
            return TimerElapsed(action.key)
        if isinstance(action, Finish):
            self.finished = action
        return None


class Driver:
    """Feeds events to the engine, checking invariants on every action issued."""

    def __init__(self, plan: Plan, world: World) -> None:
        self.world = world
        self.state = initial_state(plan)
        self.pending: list[Action] = []
        self.events: list[Event] = []

    def feed(self, event: Event) -> None:
        self.events.append(event)
        self.state, actions = decide(self.state, event, self.world.now)
        if self.state.phase is Phase.ROLLING_BACK:
            self.world.rollback_seen = True
        # Without a balancer, a host serves again once its step chain has ended.
        for name, host in self.state.hosts.items():
            # (RB_PENDING with serving set: it finished forward and then was queued for
            # rollback in the same decision.)
            if (
                not self.world.has_lb[name]
                and host.serving
                and host.phase
                in (
                    HostPhase.DONE,
                    HostPhase.ROLLED_BACK,
                    HostPhase.RB_PENDING,
                    HostPhase.RESTORED,
                )
            ):
                self.world.serving[name] = True
        for action in actions:
            self.world.issued(self.state, action)
            if isinstance(action, Finish):
                self.world.outcome(action, True)
            else:
                self.pending.append(action)

    def start(self) -> None:
        self.feed(DeploymentStarted())


def check_final(world: World, state: State) -> None:
    """The end-of-deployment invariants."""
    fin = world.finished
    if fin is None:
        raise InvariantError("deployment never finished")
    failed = {h for h, _ in fin.failed}
    for host in world.plan.hosts():
        name = host.name
        if name in failed:
            continue
        if name in world.touched and host.lb is not None and not world.lb_ready[name]:
            raise InvariantError(f"{name} left drained and not reported")
        if fin.result.rolled_back:
            if world.release[name] != world.original[name]:
                raise InvariantError(f"{name} not back on {world.original[name]}")
        elif name in world.touched and world.release[name] != NEW:
            raise InvariantError(f"{name} done but not on {NEW}")
