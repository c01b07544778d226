"""The root of every error fleetwave raises, and the errors both packages share.

Leaf errors also inherit the matching builtin where one fits, so callers can catch
either. Each error renders as one line that names what is wrong and where, and carries
its process exit status from the one table in :mod:`fleetwave_core.exitcodes`.
"""

from __future__ import annotations

from fleetwave_core.exitcodes import ExitCode


class FleetwaveError(Exception):
    """Root of every error fleetwave raises on purpose."""

    #: Process exit status the CLIs use for this family of errors.
    exit_code: int = ExitCode.ERROR


class ConfigError(FleetwaveError, ValueError):
    """A configuration file (agent config, pipeline, topology) is invalid.

    ``source`` is ``file:line`` when the position is known; ``key_path`` is the dotted
    path of the offending key (``waves[2].regions``).
    """

    exit_code = ExitCode.CONFIG

    def __init__(self, message: str, *, source: str | None = None, key_path: str | None = None):
        self.message = message
        self.source = source
        self.key_path = key_path
        where = ": ".join(part for part in (source, key_path) if part)
        super().__init__(f"{where}: {message}" if where else message)


class UsageError(FleetwaveError, ValueError):
    """A command was called with arguments that cannot work."""

    exit_code = ExitCode.CONFIG


class LockedError(FleetwaveError):
    """Another process holds a lock this operation needs; the message names the holder."""

    exit_code = ExitCode.LOCKED
