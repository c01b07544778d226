"""Reconciliation on resume: what the agents and balancers say about the hosts a crash
(or a stop) may have left half-done, turned into facts the engine settles them with.

The engine replays the journal; these facts tell it what the journal could not: an
install whose outcome was lost is settled by comparing the host's current package with
this deployment's, an interrupted rollback by comparing the current release with the
one to roll back to. Balancers are checked too: a failed host must still be out of
rotation (a balancer reload can undo a drain).
"""

from __future__ import annotations

import asyncio

from fleetwave.errors import FleetwaveError
from fleetwave.lb.base import ServerRef, ServerState
from fleetwave.rollout.hoststeps import HostSteps, release_package, release_version
from fleetwave.rollout.state import FAILED, INFLIGHT, HostPhase, State
from fleetwave.rollout.types import HostFacts

#: Settled phases in which a host is back in rotation.
_IN_ROTATION = frozenset((HostPhase.DONE, HostPhase.ROLLED_BACK, HostPhase.RESTORED))


async def reconcile(state: State, steps: HostSteps) -> dict[str, HostFacts]:
    """Facts for every host with a step in flight, plus a balancer check that every
    settled touched host is where the journal says it is. An agent that cannot be
    reached gives no fact: its step is re-issued, and that step retries."""
    info = steps.info
    known = steps.journal.facts(info.deployment_id)
    inflight = [h for h in state.hosts.values() if h.phase in INFLIGHT]

    async def fact(name: str) -> tuple[str, HostFacts | None]:
        before = known.get(name, {}).get("before")
        try:
            status = await steps.status(steps.hosts[name], probe_health=False)
        except FleetwaveError as exc:
            steps.note(f"resume: {name}: agent unreachable ({exc}); re-issuing its step")
            return name, None
        package = release_package(status.get("current"))
        return name, HostFacts(
            current=release_version(status.get("current")),
            before_known=before is not None,
            before=None if before is None else before.get("release"),
            deployed=None if package is None else package == info.package_id,
        )

    results = await asyncio.gather(*(fact(h.name) for h in inflight))
    await reconcile_balancers(state, steps)
    return {name: f for name, f in results if f is not None}


async def reconcile_balancers(state: State, steps: HostSteps) -> None:
    """Failed hosts must still be out of rotation (a balancer reload can undo a drain);
    hosts found out of rotation that should be in it are only reported, since an
    operator may have taken them out on purpose."""
    expected: dict[str, dict[ServerRef, ServerState]] = {}
    in_rotation: list[ServerRef] = []
    for h in state.hosts.values():
        ref = steps.hosts[h.name].lb
        if ref is None or ref.lb not in steps.balancers:
            continue
        if h.phase in FAILED:
            expected.setdefault(ref.lb, {})[ref] = ServerState.MAINT
        elif h.phase in _IN_ROTATION:
            in_rotation.append(ref)
    for name, refs in expected.items():
        try:
            fixed = await steps.balancers[name].reconcile(
                refs, timeout_s=steps.info.drain_timeout_s
            )
        except FleetwaveError as exc:
            steps.note(f"resume: balancer {name}: {exc}")
            continue
        for ref in fixed:
            steps.note(f"resume: {ref} was back in rotation; drained it again")
    for ref in in_rotation:
        try:
            status = await steps.balancers[ref.lb].status(ref)
        except FleetwaveError as exc:
            steps.note(f"resume: {ref}: {exc}")
            continue
        if status.state is not ServerState.READY:
            steps.note(f"resume: {ref} is {status.state.value}; left as it is")


__all__ = ["reconcile", "reconcile_balancers"]
