"""Running commands on a host over a Fabric connection, as the bootstrap needs them:
one failing command is one line naming the program and its last line of output."""

from __future__ import annotations

from typing import Any


def run(conn: Any, command: str, sudo: bool) -> str:
    """Run ``command`` (under ``sudo -n`` when asked); its stdout, or a RuntimeError."""
    result = conn.run(("sudo -n " if sudo else "") + command, hide=True, warn=True, in_stream=False)
    if result.exited != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        # Name the program, not an `env VAR=value` prefix.
        words = [w for w in command.split() if w != "env" and "=" not in w]
        program = words[0] if words else command
        raise RuntimeError(f"`{program}` exited {result.exited}: {tail[0]}")
    return str(result.stdout)
