"""After a crash: settle what the agents' facts prove, re-issue everything half done.

The journal replay (``runner.replay``) rebuilds the state the crashed controller had
reached; the :class:`~fleetwave.rollout.events.Resumed` event then carries what the
agents answered, and :func:`resumed` turns it into steps and re-issued actions. Every
action is idempotent, so re-issuing one that had already run is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping

from fleetwave.errors import ForeignReleaseError
from fleetwave.rollout._tx import Tx
from fleetwave.rollout.events import Resumed
from fleetwave.rollout.state import INFLIGHT, HostPhase, Phase
from fleetwave.rollout.transitions import (
    Step,
    current_wave_target,
    enter_host,
    host_step,
    recheck_stage,
    watch_timer,
)
from fleetwave.rollout.types import BeforeRelease, CheckGate, HostFacts

H = HostPhase


def resumed(tx: Tx, event: Resumed) -> None:
    """Re-issue every half-done step (all idempotent) and every pending check."""
    st = tx.state
    if st.phase is Phase.PENDING:
        return
    settled = _settle_from_facts(tx, event.facts)
    for name in tx.state.hosts:
        host = tx.host(name)
        if name not in settled and host.phase in INFLIGHT:
            enter_host(tx, host)
    if tx.state.phase is not Phase.RUNNING:
        return
    for s in st.plan.stages():
        recheck_stage(tx, s)
    if tx.state.wave_bake_start is not None:
        tx.actions.append(CheckGate(current_wave_target(tx), tx.state.wave_bake_start))
    watch_timer(tx)


def _settle_from_facts(tx: Tx, facts: Mapping[str, HostFacts]) -> set[str]:
    """Facts (only for hosts whose agent answered) settle an install or a rollback that
    happened but whose outcome the crash lost. Returns the hosts they settled."""
    settled: set[str] = set()
    for name, fact in facts.items():
        host = tx.host(name)
        if host.phase is H.INSTALLING and host.before is None and fact.before_known:
            host = tx.set_host(name, before=BeforeRelease(fact.before))
        before = host.before
        if host.phase is H.INSTALLING and before is not None:
            installed = fact.deployed
            if installed is None:  # a journal from before package ids were compared
                installed = fact.current != before.release
            if installed:
                tx.set_host(name, release=fact.current)
                host_step(tx, name, Step.INSTALLED)
                settled.add(name)
            elif fact.current != before.release:
                _leave_alone(tx, name, fact.current, before.release)
                settled.add(name)
        elif (
            host.phase is H.RB_ROLLING_BACK
            and before is not None
            and fact.current == before.release
        ):
            host_step(tx, name, Step.ROLLED_BACK)
            settled.add(name)
    return settled


def _leave_alone(tx: Tx, name: str, current: str | None, before: str | None) -> None:
    """The host runs neither our package nor the release it ran before our install
    (someone else changed it): report it, and never install or roll back over it."""
    why = (
        f"resume: {ForeignReleaseError.__name__}: runs {current or 'no release'}, neither "
        f"this deployment's package nor {before or 'no release'} it ran before; left alone"
    )
    tx.set_host(name, failure=why)
    host_step(tx, name, Step.FAILED)
    # While rolling back, FAILED queues the host for the rollback: take it out of the
    # queue (a rollback checks the host again, and refuses it too).
    host_step(tx, name, Step.BLOCKED)


__all__ = ["resumed"]
