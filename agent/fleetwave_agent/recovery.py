"""What to do after the agent died in the middle of an operation: a pure decision.

Every mutating operation writes ``ops/last.json`` as ``running`` when it starts and
again at each step that matters to the app (its :class:`Phase`), so the next agent
process that takes the store lock (the next operation, the next RPC session, the
daemon's start) knows what was in flight: the lock is free, so its writer is dead.
The store's own journal (staging, temporaries) is recovered first by
``ReleaseStore.recover``; this module decides what the *app* needs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from typing import Any


class Phase(enum.Enum):
    """How far an operation got, as far as the running app is concerned."""

    BEGUN = "begun"  # staging or checks only: the app was not touched
    STOPPING = "stopping"  # the current release's stop hook was started; no switch yet
    SWITCHED = "switched"  # ``current`` names the operation's target
    SWITCHED_BACK = "switched_back"  # a self-rollback put the previous release back


class Action(enum.Enum):
    NOTHING = "nothing"
    RESTART_CURRENT = "restart_current"  # stop (fenced), start, health of ``current``
    UNDO = "undo"  # back to the release that was current before: stop, switch, start


@dataclass(frozen=True)
class Plan:
    """What recovery does for an interrupted operation."""

    action: Action
    why: str
    undo_to: str | None = None  # package id, for Action.UNDO


def plan(interrupted: dict[str, Any], current_package_id: str | None) -> Plan:
    """Decide from the interrupted record (``last.json``) and what is current now.

    * Nothing touched the app: nothing to do.
    * Stopped but not switched: the current release is the old one, maybe stopped:
      restart it.
    * Switched by an install or activate: the new release never proved healthy, and
      the old one is known to have served: undo (the controller's retry is idempotent).
      Without an old release (a first install), finish instead: restart the new one.
    * Switched by a rollback, or switched back by a self-rollback: the release now
      current is the one wanted: finish by restarting it.
    """
    op = str(interrupted.get("op", "?"))
    what = f"{op} of {interrupted.get('version') or '?'}"
    try:
        phase = Phase(interrupted.get("phase", Phase.BEGUN.value))
    except ValueError:
        phase = Phase.STOPPING  # unknown: assume the worst that keeps the app up
    if current_package_id is None:
        return Plan(Action.NOTHING, f"the agent died during the {what}; nothing is current")
    if phase is Phase.BEGUN:
        return Plan(Action.NOTHING, f"the agent died during the {what} before touching the app")
    target = interrupted.get("package_id")
    previous = interrupted.get("previous_package_id")
    if (
        phase is Phase.SWITCHED
        and op in ("install", "activate")
        and current_package_id == target
        and isinstance(previous, str)
        and previous != target
    ):
        return Plan(
            Action.UNDO,
            f"the agent died during the {what} after the switch; undoing it",
            undo_to=previous,
        )
    return Plan(
        Action.RESTART_CURRENT,
        f"the agent died during the {what} ({phase.value}); restarting the current release",
    )
