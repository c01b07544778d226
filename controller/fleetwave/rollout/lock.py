"""One deployment lock per pipeline and environment.

The lock is a file under ``<state_dir>/locks/`` held with ``fcntl.flock`` for as long
as the controller runs, and it carries a holder record (lock id, host, pid, user,
deployment id, since) so a refused controller can say who holds it.

A record left behind by a controller that died (the flock is free but the record is
not empty) is *stale*. When the record names this machine, the free flock proves its
holder dead (the kernel drops a flock with its process), so the lock is taken over
automatically and the takeover returned for the caller to audit. A record written on
another machine (a shared state dir, where flock proves nothing) is never broken
automatically: the operator passes ``--force-unlock LOCK_ID``, audited the same way.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import re
import socket
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from fleetwave.errors import LockedError


@dataclass(frozen=True)
class Holder:
    lock_id: str
    host: str
    pid: int
    user: str
    deployment_id: str | None
    since: float

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        dep = f" for deployment {self.deployment_id}" if self.deployment_id else ""
        return (
            f"lock {self.lock_id} held by {self.user}@{self.host} pid {self.pid}{dep} since {since}"
        )


class TakeoverReason(StrEnum):
    """Why a stale record was cleared; the journal's audit row is named after it."""

    DEAD_HOLDER = "stale_lock_takeover"  # same machine, flock free: the holder is dead
    FORCED = "force_unlock"  # --force-unlock LOCK_ID


@dataclass(frozen=True)
class Takeover:
    """A stale holder record that :meth:`DeploymentLock.acquire` cleared."""

    holder: Holder
    reason: TakeoverReason


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


class DeploymentLock:
    """The lock of ``pipeline`` in ``environment``. Use :meth:`acquire`/:meth:`release`."""

    def __init__(self, state_dir: Path, pipeline: str, environment: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{pipeline}@{environment}")
        self.path = state_dir / "locks" / f"{safe}.lock"
        self._fd: int | None = None
        self.holder: Holder | None = None

    def acquire(
        self, *, now: float, deployment_id: str | None = None, force_unlock: str | None = None
    ) -> Takeover | None:
        """Take the lock or raise :class:`LockedError` naming the holder.

        A stale record of this machine is taken over; one from another machine only
        with ``force_unlock`` equal to its lock id. The cleared record is returned so
        the caller can audit it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                current = _read(fd)
                who = current.describe() if current else "another process"
                raise LockedError(f"{self.path}: {who}") from None
            cleared = None
            current = _read(fd)
            if current is not None:
                if force_unlock == current.lock_id:
                    cleared = Takeover(current, TakeoverReason.FORCED)
                elif current.host == socket.gethostname():
                    cleared = Takeover(current, TakeoverReason.DEAD_HOLDER)
                else:
                    raise LockedError(
                        f"{self.path}: stale {current.describe()}: the holder ran on"
                        f" another machine, where this one cannot tell whether it is alive;"
                        f" if no controller is running there, rerun with"
                        f" --force-unlock {current.lock_id}"
                    )
            holder = Holder(
                lock_id=uuid.uuid4().hex[:12],
                host=socket.gethostname(),
                pid=os.getpid(),
                user=_user(),
                deployment_id=deployment_id,
                since=now,
            )
            _write(fd, holder)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.holder = holder
        return cleared

    def set_deployment(self, deployment_id: str) -> None:
        """Name the deployment in the holder record once it has an id."""
        if self._fd is None or self.holder is None:
            raise LockedError(f"{self.path}: not held")
        self.holder = Holder(**{**asdict(self.holder), "deployment_id": deployment_id})
        _write(self._fd, self.holder)

    def release(self) -> None:
        """Clear the record and drop the flock. Safe to call twice."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        self.holder = None

    def is_held(self) -> bool:
        """True when a live process on this machine holds the flock right now."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a flock we may have just taken
        return False

    def read_holder(self) -> Holder | None:
        """The recorded holder, live or stale, without taking the lock."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            return _read(fd)
        finally:
            os.close(fd)


def _read(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    if not data.strip():
        return None
    try:
        return Holder(**json.loads(data))
    except (ValueError, TypeError):
        # An unreadable record still means someone wrote one: treat it as stale.
        return Holder("unreadable", "?", 0, "?", None, 0.0)


def _write(fd: int, holder: Holder) -> None:
    data = json.dumps(asdict(holder), sort_keys=True).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
