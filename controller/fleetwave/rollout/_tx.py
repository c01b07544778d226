"""One decision in progress (private to the engine's modules)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace

from fleetwave.rollout.state import HostPhase, HostState, StageState, State
from fleetwave.rollout.types import Action


@dataclass
class Tx:
    """Copy-on-write maps of the hosts and stages a decision changed, plus the actions
    it emitted. ``commit`` folds the changes into a new :class:`State`."""

    state: State
    now: float
    hosts: dict[str, HostState] = field(default_factory=dict)
    stages: dict[str, StageState] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)

    def host(self, name: str) -> HostState:
        return self.hosts.get(name) or self.state.hosts[name]

    def set_host(self, name: str, **changes: object) -> HostState:
        host = self.hosts[name] = replace(self.host(name), **changes)  # type: ignore[arg-type]
        return host

    def stage(self, stage_id: str) -> StageState:
        return self.stages.get(stage_id) or self.state.stages[stage_id]

    def set_stage(self, stage_id: str, **changes: object) -> StageState:
        stage = self.stages[stage_id] = replace(self.stage(stage_id), **changes)  # type: ignore[arg-type]
        return stage

    def stage_hosts(self, stage_id: str) -> list[HostState]:
        return [self.host(h.name) for h in self.state.stage(stage_id).hosts]

    def hosts_in(self, phases: Collection[HostPhase]) -> tuple[str, ...]:
        """Names of the hosts whose phase is in ``phases``, in plan order."""
        return tuple(n for n in self.state.hosts if self.host(n).phase in phases)

    def commit(self) -> State:
        hosts = self.state.hosts
        if self.hosts:
            hosts = {**hosts, **self.hosts}
        stages = self.state.stages
        if self.stages:
            stages = {**stages, **self.stages}
        return replace(self.state, hosts=hosts, stages=stages)
