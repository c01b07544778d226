"""Any other balancer, driven by the operator's own scripts.

Options::

    drain:  [cmd, args...]   # stop new sessions to {server} of {backend}
    ready:  [cmd, args...]   # put it back in rotation
    status: [cmd, args...]   # print JSON {"state": "ready|drain|maint", "sessions": N,
                             #             "healthy": true|false|null (optional)}
    maint:  [cmd, args...]   # optional: run once sessions reached 0 (or the drain timed out)
    timeout_s: 30            # per command
    poll_interval_s: 0.5     # while a drain waits for sessions

``{lb}``, ``{backend}`` and ``{server}`` in any argument are replaced. The commands run
without a shell, each in its own process group: on a timeout, or when the step is
cancelled (Ctrl-C, a rollback, the end of the deployment), the whole group is killed and
reaped, so no script outlives the step that ran it. A non-zero exit, a timeout or
unreadable status output is a :class:`LoadBalancerError` carrying the tail of the
command's stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fleetwave.errors import LoadBalancerError
from fleetwave.lb.base import DrainTiming, LoadBalancer, ServerRef, ServerState, ServerStatus
from fleetwave.lb.registry import Options

_STATES = {s.value: s for s in (ServerState.READY, ServerState.DRAIN, ServerState.MAINT)}


class CommandLoadBalancer(LoadBalancer):
    """``driver: command`` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        drain: Sequence[str],
        ready: Sequence[str],
        status: Sequence[str],
        maint: Sequence[str] | None = None,
        timeout_s: float = 30.0,
        poll_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.name = name
        self._commands = {"drain": tuple(drain), "ready": tuple(ready), "status": tuple(status)}
        if maint:
            self._commands["maint"] = tuple(maint)
        self._timeout = timeout_s
        self.drain_timing = DrainTiming(poll_interval_s, clock)

    async def _run(self, which: str, ref: ServerRef) -> str:
        argv = [
            arg.replace("{lb}", ref.lb)
            .replace("{backend}", ref.backend)
            .replace("{server}", ref.server)
            for arg in self._commands[which]
        ]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own group: killed whole, children included
            )
        except OSError as exc:
            raise LoadBalancerError(f"{ref}: {which} command {argv[0]!r}: {exc}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self._timeout)
        except TimeoutError:
            await _kill_group(proc)
            raise LoadBalancerError(
                f"{ref}: {which} command timed out after {self._timeout:g}s"
            ) from None
        except asyncio.CancelledError:
            await _kill_group(proc)
            raise
        if proc.returncode != 0:
            tail = " | ".join(err.decode(errors="replace").strip().splitlines()[-3:])
            raise LoadBalancerError(
                f"{ref}: {which} command exited {proc.returncode}: {tail or '(no stderr)'}"
            )
        return out.decode(errors="replace")

    async def status(self, ref: ServerRef) -> ServerStatus:
        """Run the status command and parse its JSON."""
        out = await self._run("status", ref)
        try:
            data = json.loads(out)
            state = _STATES[data["state"]]
            sessions = data.get("sessions", 0)
            healthy = data.get("healthy")
            if isinstance(sessions, bool) or not isinstance(sessions, int) or sessions < 0:
                raise ValueError(f"sessions must be a count, got {sessions!r}")
            if healthy is not None and not isinstance(healthy, bool):
                raise ValueError(f"healthy must be true, false or null, got {healthy!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise LoadBalancerError(
                f"{ref}: status command printed {out.strip()[:200]!r}, "
                f'not {{"state": "ready|drain|maint", "sessions": N}}: {exc}'
            ) from None
        return ServerStatus(ref=ref, state=state, sessions=sessions, healthy=healthy)

    async def _begin_drain(self, ref: ServerRef) -> None:
        """The drain command."""
        await self._run("drain", ref)

    async def _hold_out(self, ref: ServerRef) -> bool:
        """The maint command, when one is configured."""
        if "maint" not in self._commands:
            return False
        await self._run("maint", ref)
        return True

    async def ready(self, ref: ServerRef) -> ServerStatus:
        """Ready command, then the status it led to."""
        await self._run("ready", ref)
        return await self.status(ref)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the command's process group and reap the command."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group id is the leader's pid
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    # Shielded: a second cancellation must not leave the child unreaped.
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(proc.wait())


def from_options(name: str, options: Mapping[str, Any]) -> CommandLoadBalancer:
    """Validate ``command`` options (see the module docstring)."""
    opts = Options(
        name, options, allowed=("drain", "ready", "status", "maint", "timeout_s", "poll_interval_s")
    )
    drain = opts.argv("drain", required=True)
    ready = opts.argv("ready", required=True)
    status = opts.argv("status", required=True)
    assert drain is not None
    assert ready is not None
    assert status is not None
    return CommandLoadBalancer(
        name,
        drain=drain,
        ready=ready,
        status=status,
        maint=opts.argv("maint", required=False),
        timeout_s=opts.number("timeout_s", 30.0, minimum=0.1),
        poll_interval_s=opts.number("poll_interval_s", 0.5, minimum=0.01),
    )
