"""The host's lease: which deployment may change this host, until when.

One controller per host, fleet-wide: before a controller drains a host it takes the
lease on the host's agent (``lease_acquire``), renews it while it works, and releases
it when done. The lease is ``state/lease.json`` under the agent root,
``{deployment_id, controller_id, acquired_at, expires_at}`` (Unix times), written
atomically and durably, under its own ``flock`` (``state/lease.lock``) so lease calls
never wait for a running install.

Rules (pure functions below, the clock is injected):

* acquire: free, expired, or held by the same deployment id (a resumed deployment,
  possibly from another controller process) -> granted; held by another deployment
  and unexpired -> :class:`LeaseHeldError` naming the holder and its expiry;
* renew: only the holding deployment; a lease that is gone -> :class:`LeaseLostError`;
* release: only the holding deployment; nothing held -> ``released: false``;
* fencing: a mutating operation that names a lease (its deployment id) or none at
  all is refused while *another* deployment holds an unexpired lease. With no lease
  held, operations work as they always did (an operator on the host).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fleetwave_agent.errors import LeaseHeldError, LeaseLostError, StoreError
from fleetwave_core.errors import UsageError
from fleetwave_core.fsutil import atomic_write, fsync_dir

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from typing import Any

#: The longest lease one call may ask for; a dead controller frees a host within it.
MAX_TTL_S = 3600.0
_ID_MAX = 200


def iso(ts: float) -> str:
    """``2026-01-02T03:04:05Z`` (UTC, whole seconds)."""
    # time.gmtime, not datetime: datetime costs every agent session ~5 ms to import.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


@dataclass(frozen=True)
class Lease:
    """The host's lease: which deployment may change it, until when."""

    deployment_id: str
    controller_id: str
    acquired_at: float
    expires_at: float

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def describe(self) -> str:
        return (
            f"deployment {self.deployment_id} (controller {self.controller_id}) "
            f"until {iso(self.expires_at)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id,
            "controller_id": self.controller_id,
            "acquired_at": self.acquired_at,
            "expires_at": self.expires_at,
            "expires": iso(self.expires_at),
        }


def check_id(value: Any, what: str) -> str:
    """A deployment or controller id: 1-200 printable characters."""
    if not isinstance(value, str) or not 0 < len(value) <= _ID_MAX or not value.isprintable():
        raise UsageError(f"{what} must be 1-{_ID_MAX} printable characters, got {value!r}")
    return value


def check_ttl(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"ttl_s must be a number of seconds, got {value!r}")
    if not 0 < value <= MAX_TTL_S:
        raise UsageError(f"ttl_s must be more than 0 and at most {MAX_TTL_S:g}, got {value!r}")
    return float(value)


def _held_error(held: Lease, action: str) -> LeaseHeldError:
    return LeaseHeldError(
        f"{action} refused: this host's lease is held by {held.describe()}",
        holder=held.to_dict(),
    )


def acquire(
    held: Lease | None, deployment_id: str, controller_id: str, ttl_s: float, now: float
) -> Lease:
    """The lease after an acquire, or LeaseHeldError."""
    if held is not None and not held.expired(now) and held.deployment_id != deployment_id:
        raise _held_error(held, f"lease for deployment {deployment_id}")
    resumed = held is not None and held.deployment_id == deployment_id
    return Lease(
        deployment_id=deployment_id,
        controller_id=controller_id,
        acquired_at=held.acquired_at if resumed and held else now,
        expires_at=now + ttl_s,
    )


def renew(held: Lease | None, deployment_id: str, ttl_s: float, now: float) -> Lease:
    """The lease after a renewal by its holder, or LeaseHeldError / LeaseLostError."""
    if held is None or held.deployment_id != deployment_id:
        if held is not None and not held.expired(now):
            raise _held_error(held, f"lease renewal for deployment {deployment_id}")
        raise LeaseLostError(
            f"deployment {deployment_id} holds no lease on this host any more; acquire it again"
        )
    return Lease(held.deployment_id, held.controller_id, held.acquired_at, now + ttl_s)


def fence(held: Lease | None, lease: str | None, op: str, now: float) -> None:
    """Refuse ``op`` while another deployment holds an unexpired lease."""
    if held is not None and not held.expired(now) and held.deployment_id != lease:
        raise _held_error(held, op)


class HostLease:
    """The lease operations on one agent root; ``clock`` is injected for tests."""

    def __init__(self, state_dir: Path, clock: Callable[[], float]) -> None:
        self.path = state_dir / "lease.json"
        self._lock_path = state_dir / "lease.lock"
        self.clock = clock

    def acquire(self, deployment_id: Any, controller_id: Any, ttl_s: Any) -> dict[str, Any]:
        """``{"lease", "resumed", "replaced"}``; ``replaced`` is an expired lease taken."""
        deployment_id = check_id(deployment_id, "deployment_id")
        controller_id = check_id(controller_id, "controller_id")
        ttl = check_ttl(ttl_s)
        with self._locked():
            held = self._read()
            lease = acquire(held, deployment_id, controller_id, ttl, self.clock())
            self._write(lease)
        resumed = held is not None and held.deployment_id == deployment_id
        replaced = held.to_dict() if held is not None and not resumed else None
        return {"lease": lease.to_dict(), "resumed": resumed, "replaced": replaced}

    def renew(self, deployment_id: Any, ttl_s: Any) -> dict[str, Any]:
        """``{"lease"}`` with the new expiry."""
        deployment_id = check_id(deployment_id, "deployment_id")
        ttl = check_ttl(ttl_s)
        with self._locked():
            lease = renew(self._read(), deployment_id, ttl, self.clock())
            self._write(lease)
        return {"lease": lease.to_dict()}

    def release(self, deployment_id: Any) -> dict[str, Any]:
        """``{"released": bool}``: False when this deployment held nothing (idempotent)."""
        deployment_id = check_id(deployment_id, "deployment_id")
        with self._locked():
            held = self._read()
            if held is None or held.deployment_id != deployment_id:
                if held is not None and not held.expired(self.clock()):
                    raise _held_error(held, f"lease release by deployment {deployment_id}")
                return {"released": False}
            self._write(None)
        return {"released": True}

    def break_(self) -> dict[str, Any]:
        """An operator's override: drop whatever lease is held. ``{"broken": lease?}``."""
        with self._locked():
            held = self._read()
            self._write(None)
        return {"broken": held.to_dict() if held is not None else None}

    def status(self) -> dict[str, Any] | None:
        """The lease as stored, with ``expired``; None when none was ever taken."""
        held = self._read()
        if held is None:
            return None
        return held.to_dict() | {"expired": held.expired(self.clock())}

    def fence(self, lease: Any, op: str) -> None:
        """Refuse ``op`` while another deployment holds an unexpired lease."""
        if lease is not None:
            lease = check_id(lease, "lease")
        with self._locked():
            fence(self._read(), lease, op, self.clock())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the lease's own flock (blocking: every holder is quick)."""
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise StoreError(f"{self._lock_path}: cannot lock: {exc.strerror}") from None
        try:
            yield
        finally:
            os.close(fd)

    def _read(self) -> Lease | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return Lease(
                deployment_id=str(data["deployment_id"]),
                controller_id=str(data["controller_id"]),
                acquired_at=float(data["acquired_at"]),
                expires_at=float(data["expires_at"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise StoreError(f"{self.path}: unreadable lease: {exc}") from None

    def _write(self, lease: Lease | None) -> None:
        try:
            if lease is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                    fsync_dir(self.path.parent)
                return
            data = lease.to_dict()
            del data["expires"]
            atomic_write(self.path, json.dumps(data, sort_keys=True) + "\n")
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot write: {exc.strerror}") from None
