"""Install, activate and roll back releases: hooks, the switch, health, self-rollback.

Order of an install (``activate`` is the same without staging)::

    stage (verify + extract; the running app is untouched)
    -> previous release's ``stop`` (fenced: time-boxed; ``stop_failure`` policy)
    -> ``before_install`` -> switch ``current`` -> ``after_install`` -> ``start``
    -> ``validate`` -> health checks

Staging comes before ``stop`` on purpose: a package refused at verification must never
stop the app that is serving. A failure before the switch restarts the previous
release and changes nothing else. A failure after the switch makes the agent roll
itself back (stop new -> switch back -> start previous -> health) and raise
:class:`RolledBackError`, whose record says ``rolled_back: true`` and why.

Every mutating operation holds the store lock, runs ``recover()`` first, and leaves a
record under ``ROOT/ops`` (see :mod:`oplog`). Rollback never re-verifies files: the
release directory is read-only and was verified at install.

Start-up cost matters here: ``fleetwave-agent rpc`` is one process per host per
deployment, so this module imports only what constructing an :class:`Agent` needs.
Hooks and health checks (``subprocess``), keys (``cryptography``) and the package
reader are imported by the operations that use them (see ``docs/agent.md``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from fleetwave_agent.config import AgentConfig, StopFailurePolicy
from fleetwave_agent.errors import (
    HookError,
    KnownBadReleaseError,
    ReleaseNotFoundError,
    RolledBackError,
)
from fleetwave_agent.knownbad import BadRelease
from fleetwave_agent.lease import HostLease
from fleetwave_agent.oplog import OperationLog, OperationRecord, Outcome
from fleetwave_agent.recovery import Action, Phase
from fleetwave_agent.release import Release, release_summary
from fleetwave_agent.release_steps import run_health, run_hook
from fleetwave_agent.store import ReleaseStore
from fleetwave_core.errors import ConfigError, FleetwaveError, UsageError

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from typing import Any

    from fleetwave_agent import health, hooks
    from fleetwave_agent.digests import PayloadDigest
    from fleetwave_agent.keys import Keyring
    from fleetwave_agent.package import Limits
    from fleetwave_agent.uploads import ByteSource

_PACKAGE_ID_RE = re.compile(r"^[0-9a-f]{64}$")


class Agent:
    """The agent's operations on one root; what the CLI and the RPC server call."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Callable[[], float] = time.time,
        store: ReleaseStore | None = None,
    ) -> None:
        self.config = config
        self.root = config.root
        self.clock = clock
        self.store = store or ReleaseStore(config.root, keep=config.keep_releases)
        self.oplog = OperationLog(config.root)
        self.lease = HostLease(self.store.state_dir, clock)
        self._keyring: Keyring | None = None
        # Payload digests computed by receive_upload in this process, by stored path.
        self._received: dict[Path, PayloadDigest] = {}

    @cached_property
    def limits(self) -> Limits:
        """The package limits: defaults overridden by the config's ``limits``."""
        from fleetwave_agent.package import Limits

        return Limits(**self.config.limits)

    @property
    def keyring(self) -> Keyring:
        if self._keyring is None:
            from fleetwave_agent.keys import Keyring

            if not self.config.trusted_keys:
                raise ConfigError(
                    "no trusted keys: give --trust PUBKEY or trusted_keys in the config",
                    source=self.config.source,
                    key_path="trusted_keys",
                )
            self._keyring = Keyring.from_paths(
                self.config.trusted_keys, self.config.revoked_key_ids
            )
        return self._keyring

    # -- mutating operations -------------------------------------------------------

    def install(self, package: Path, *, lease: str | None = None) -> dict[str, Any]:
        """Verify, stage and switch to ``package``; see the module docstring for order.

        ``lease`` (on every mutating operation) is the caller's deployment id: the
        operation is refused while another deployment holds the host's lease
        (:mod:`lease`); with no lease held it is not needed.
        """
        if not package.is_file():
            raise UsageError(f"{package}: no such package file")
        keyring = self.keyring  # config problems surface before anything is touched
        with self._operation("install", lease) as record:
            # stage() verifies signature and payload even for an id already installed,
            # so a tampered copy of an installed package is refused there. A digest
            # taken while this process received the file spares hashing it again.
            release = self.store.stage(
                package,
                keyring,
                now=self.clock(),
                limits=self.limits,
                payload_digest=self._received.get(package),
            )
            if package == self.store.incoming_path(release.package_id):
                # Installed releases are immutable and re-uploadable: the package file
                # is no longer needed, whatever the rest of the install does.
                self.store.drop_upload(release.package_id)
                self._received.pop(package, None)
            self._transition(record, release)
        return record.to_dict()

    def install_package_id(self, package_id: str, *, lease: str | None = None) -> dict[str, Any]:
        """Install an uploaded package, or re-activate an installed one with this id."""
        _check_package_id(package_id)
        incoming = self.store.incoming_path(package_id)
        if incoming.is_file():
            return self.install(incoming, lease=lease)
        for release in self.store.releases():
            if release.package_id == package_id:
                return self._activate_release("install", release, lease)
        raise ReleaseNotFoundError(f"package {package_id[:12]} was neither uploaded nor installed")

    def activate(
        self, version: str, name: str | None = None, *, lease: str | None = None
    ) -> dict[str, Any]:
        """Switch to an installed release, with hooks and health checks."""
        return self._activate_release("activate", self.store.get(version, name), lease)

    def _activate_release(self, op: str, release: Release, lease: str | None) -> dict[str, Any]:
        with self._operation(op, lease) as record:
            self._transition(record, release)
        return record.to_dict()

    def rollback(self, *, force: bool = False, lease: str | None = None) -> dict[str, Any]:
        """Back to the previous good release, locally: stop -> switch -> start -> health.

        The target is the last release that was current and is not known bad. When
        every earlier release is known bad, KnownBadReleaseError names the latest one,
        and only ``force`` activates it.
        """
        with self._operation("rollback", lease) as record:
            current = self.store.current()
            target = self.store.previous()
            if target is None:
                target = self._forced_target(record, force)
            record.version, record.package_id = target.version, target.package_id
            record.previous_version = current.version if current else None
            record.previous_package_id = current.package_id if current else None
            if current is not None:
                self._stop_fenced(record, current, target)
            self.store.switch(target)
            self.oplog.checkpoint(record, Phase.SWITCHED.value)
            record.current_version = target.version
            try:
                self._hook(record, "start", target, current, raise_on_failure=True)
                self._health(record, target, raise_on_failure=True)
            except FleetwaveError as exc:
                self._mark_bad(record, target, exc)
                raise
            self._passed(record, target)
            record.outcome = Outcome.OK
        return record.to_dict()

    def _forced_target(self, record: OperationRecord, force: bool) -> Release:
        """The latest earlier release when all are known bad: only with ``force``."""
        candidate = self.store.previous(include_bad=True)
        if candidate is None:
            raise ReleaseNotFoundError("no previous release to roll back to")
        bad = self.store.known_bad.get(candidate.package_id)
        what = bad.describe() if bad else f"{candidate.name} {candidate.version}"
        if not force:
            raise KnownBadReleaseError(
                f"rollback refused: the previous release {what} is known bad; "
                "give --force to activate it anyway"
            )
        record.warnings.append(f"forced: activating the known-bad release {what}")
        return candidate

    def stop(self, *, lease: str | None = None) -> dict[str, Any]:
        """Stop the current release's app with its ``stop`` hook (time-boxed by
        ``stop_timeout_s``, like every stop); it stays current, and a crash during the
        stop leaves it stopped. HookError if the hook fails."""
        with self._operation("stop", lease) as record:
            current = self._current_with_hook(record, "stop")
            self.oplog.checkpoint(record, Phase.STOPPING.value)
            self._hook(record, "stop", current, None, raise_on_failure=True, fenced=True)
            record.outcome = Outcome.OK
        return record.to_dict()

    def start(self, *, lease: str | None = None) -> dict[str, Any]:
        """Start the current release's app (``start`` hook, then health checks), e.g.
        after :meth:`stop`; a failure marks it known bad, as any failed start does."""
        with self._operation("start", lease) as record:
            current = self._current_with_hook(record, "start")
            self.oplog.checkpoint(record, Phase.STARTING.value)
            self._start(record, current)
            record.outcome = Outcome.OK
        return record.to_dict()

    def _current_with_hook(self, record: OperationRecord, hook: str) -> Release:
        current = self.store.current()
        if current is None:
            raise ReleaseNotFoundError(f"no current release to {hook}")
        record.version, record.package_id = current.version, current.package_id
        record.current_version = current.version
        if hook not in current.manifest.hooks:
            raise UsageError(
                f"{current.name} {current.version} has no {hook} hook: nothing to {hook}"
            )
        return current

    def gc(self, *, lease: str | None = None) -> dict[str, Any]:
        """Keep ``keep_releases`` releases (always current, previous and pinned ones)
        and remove uploaded package files already installed; see ``ReleaseStore.gc``."""
        with self.store.lock():
            self.lease.fence(lease, "gc")
            self._recover_locked()
            result = self.store.gc()
        return {
            "removed": [release_summary(r) for r in result.releases],
            "removed_uploads": list(result.uploads),
            "freed_bytes": result.freed_bytes,
        }

    def pin(self, version: str, name: str | None = None, *, pinned: bool = True) -> dict[str, Any]:
        """Pin (or, ``pinned=False``, unpin) an installed release: gc never removes a
        pinned one. Idempotent; ``changed`` says whether it did anything."""
        with self.store.lock():
            release = self.store.get(version, name)
            changed = self.store.set_pinned(release, pinned)
        return {"release": release_summary(release), "pinned": pinned, "changed": changed}

    # -- uploads -------------------------------------------------------------------

    def has_package(self, package_id: str) -> bool:
        _check_package_id(package_id)
        return self.store.has_package(package_id)

    def receive_upload(
        self, package_id: str, size: int, body: ByteSource, *, lease: str | None = None
    ) -> dict[str, Any]:
        """Store exactly ``size`` bytes from ``body`` as the package ``package_id``.

        See :func:`uploads.receive_upload`; the payload digest taken while receiving
        spares a later install in this process from hashing the payload again.
        """
        from fleetwave_agent.uploads import receive_upload

        _check_package_id(package_id)
        self.lease.fence(lease, "upload")
        return receive_upload(self.store, self.limits, package_id, size, body, self._received)

    # -- read-only -----------------------------------------------------------------

    def status(self, *, probe_health: bool = True) -> dict[str, Any]:
        """Current and previous (last good) release, kept and known-bad releases, last
        operation, health now (see :func:`reports.status`)."""
        from fleetwave_agent import reports

        return reports.status(self, probe_health=probe_health)

    def list_releases(self) -> list[dict[str, Any]]:
        """Every installed release with its marks (see :func:`reports.list_releases`)."""
        from fleetwave_agent import reports

        return reports.list_releases(self)

    def health_env(self, release: Release) -> dict[str, str]:
        """Environment of command health checks: the hooks' one, ``FLEETWAVE_HOOK=health``."""
        from fleetwave_agent import hooks

        ctx = hooks.HookContext(
            operation="health",
            operation_id="",
            root=self.root,
            name=release.name,
            version=release.version,
            package_id=release.package_id,
            release_dir=release.path,
        )
        return hooks.hook_env("health", ctx)

    def verify_installed(self) -> dict[str, Any]:
        """Files of the current release changed, added or removed since install."""
        current = self.store.current()
        if current is None:
            raise ReleaseNotFoundError("no current release to verify")
        drift = self.store.verify_installed(current)
        return {"version": current.version, "ok": not drift, "drift": list(drift)}

    # -- the install sequence --------------------------------------------------------

    @contextmanager
    def _operation(self, op: str, lease: str | None) -> Iterator[OperationRecord]:
        with self.store.lock():
            self.lease.fence(lease, op)  # under the store lock: no operation starts after
            record = OperationRecord(op=op, started=self.clock())
            record.recovered = self._recover_locked()
            began = time.monotonic()
            self.oplog.begin(record)
            try:
                yield record
            except FleetwaveError as exc:
                if record.outcome is not Outcome.ROLLED_BACK:
                    record.outcome = Outcome.FAILED
                record.reason = record.reason or str(exc)
                record.error = {
                    "type": type(exc).__name__,
                    "message": str(exc),
                    "exit_code": exc.exit_code,
                }
                raise
            finally:
                record.duration_s = time.monotonic() - began
                if record.current_version is None:
                    current = self.store.current()
                    record.current_version = current.version if current else None
                self.oplog.finish(record)

    def _transition(self, record: OperationRecord, target: Release) -> None:
        current = self.store.current()
        record.version, record.package_id = target.version, target.package_id
        record.previous_version = current.version if current else None
        record.previous_package_id = current.package_id if current else None
        if current is not None and current.package_id == target.package_id:
            self._ensure_running(record, current)
            return
        if current is not None:
            self._stop_fenced(record, current, target)
        try:
            self._hook(record, "before_install", target, current, raise_on_failure=True)
        except HookError as exc:
            self._mark_bad(record, target, exc)
            if current is not None:  # undo the stop: the old release keeps serving
                self._hook(record, "start", current, target, raise_on_failure=False)
            raise
        self.store.switch(target)
        self.oplog.checkpoint(record, Phase.SWITCHED.value)
        record.current_version = target.version
        try:
            for name in ("after_install", "start", "validate"):
                self._hook(record, name, target, current, raise_on_failure=True)
            self._health(record, target, raise_on_failure=True)
        except FleetwaveError as exc:
            self._mark_bad(record, target, exc)
            self._self_rollback(record, target, current, exc)
        self._passed(record, target)
        record.outcome = Outcome.OK

    def _ensure_running(self, record: OperationRecord, current: Release) -> None:
        """Activating the current release: healthy stays as is, unhealthy is restarted.

        A crash between ``stop`` and the switch leaves the current release's app
        stopped, and a rollback to "the release that is current" must bring it back
        rather than report that nothing needed doing.
        """
        record.current_version = current.version
        results = self._health(record, current, raise_on_failure=False)
        failing = [r.name for r in results if not r.ok]
        if not failing:
            record.outcome = Outcome.UNCHANGED
            return
        record.warnings.append(
            f"{current.version} is current but failing health ({', '.join(failing)}); restarting it"
        )
        self._restart(record, current)
        record.outcome = Outcome.OK

    def _restart(self, record: OperationRecord, release: Release) -> None:
        """Stop (fenced, failure tolerated), start and health-check ``release``."""
        self.oplog.checkpoint(record, Phase.STOPPING.value)
        self._hook(record, "stop", release, None, raise_on_failure=False, fenced=True)
        self._start(record, release)

    def _start(self, record: OperationRecord, release: Release) -> None:
        """Start and health-check ``release``; a failure marks it bad."""
        try:
            self._hook(record, "start", release, None, raise_on_failure=True)
            self._health(record, release, raise_on_failure=True)
        except FleetwaveError as exc:
            self._mark_bad(record, release, exc)
            raise
        self._passed(record, release)

    # -- crash recovery ------------------------------------------------------------

    def recover(self) -> list[str]:
        """Recover from a crash of an earlier agent process (see :mod:`recovery`).

        Clears the store's staging and incomplete releases, then finishes or undoes
        the operation that process left ``running``, restarting the current release's
        app if the crash may have left it stopped. Runs at the start of every mutating
        operation, every RPC session and the daemon. LockedError while an operation
        runs (that operation recovered first).
        """
        with self.store.lock():
            return self._recover_locked()

    def _recover_locked(self) -> list[str]:
        from fleetwave_agent import recovery

        actions = self.store.recover()
        interrupted = self.oplog.interrupted()
        if interrupted is None:
            return actions
        current = self.store.current()
        decision = recovery.plan(interrupted, current.package_id if current else None)
        self.oplog.finish_interrupted(interrupted, decision.why)
        actions.append(decision.why)
        if decision.action is Action.NOTHING or current is None:
            return actions
        target = current
        if decision.action is Action.UNDO:
            target = self._release_by_id(decision.undo_to) or current
        record = OperationRecord(op="recover", started=self.clock(), reason=decision.why)
        record.version, record.package_id = target.version, target.package_id
        record.previous_version = current.version
        record.previous_package_id = current.package_id
        self.oplog.begin(record)
        began = time.monotonic()
        try:
            if target == current:
                self._restart(record, current)
            else:  # undo: the new release may be half started; the old one is stopped
                self.oplog.checkpoint(record, Phase.STOPPING.value)
                self._hook(record, "stop", current, target, raise_on_failure=False, fenced=True)
                self.store.switch(target)
                self.oplog.checkpoint(record, Phase.SWITCHED.value)
                self._start(record, target)
            record.outcome = Outcome.OK
            actions.append(f"recovered: {target.version} is current and healthy")
        except FleetwaveError as exc:  # reported, never raised: the next step may fix it
            record.outcome = Outcome.FAILED
            record.error = {"type": type(exc).__name__, "message": str(exc)}
            actions.append(f"recovery of {target.version} failed: {exc}")
        finally:
            record.duration_s = time.monotonic() - began
            now = self.store.current()
            record.current_version = now.version if now else None
            self.oplog.finish(record)
        return actions

    def _release_by_id(self, package_id: str | None) -> Release | None:
        return next((r for r in self.store.releases() if r.package_id == package_id), None)

    def _mark_bad(self, record: OperationRecord, release: Release, cause: Exception) -> None:
        self.store.known_bad.mark(
            BadRelease(
                package_id=release.package_id,
                name=release.name,
                version=release.version,
                op=record.op,
                reason=str(cause),
                at=self.clock(),
            )
        )
        record.marked_bad.append(release.version)

    def _passed(self, record: OperationRecord, release: Release) -> None:
        """``release`` just passed its hooks and health: it is good (again)."""
        if self.store.known_bad.clear(release.package_id):
            record.warnings.append(
                f"{release.name} {release.version} was known bad and passed now; "
                "no longer marked bad"
            )

    def _self_rollback(
        self,
        record: OperationRecord,
        failed: Release,
        previous: Release | None,
        cause: FleetwaveError,
    ) -> None:
        record.reason = str(cause)
        self._hook(record, "stop", failed, previous, raise_on_failure=False, fenced=True)
        if previous is None:
            raise type(cause)(
                *_error_args(cause, f"{cause}; no previous release to roll back to")
            ) from cause
        self.store.switch(previous)
        self.oplog.checkpoint(record, Phase.SWITCHED_BACK.value)
        record.current_version = previous.version
        record.rolled_back = True
        record.outcome = Outcome.ROLLED_BACK
        problems = []
        start = self._hook(record, "start", previous, failed, raise_on_failure=False)
        if start is not None and not start.ok:
            problems.append(f"its start hook {start.describe()}")
        results = self._health(record, previous, raise_on_failure=False)
        problems += [f"health check {r.name!r} failed" for r in results if not r.ok]
        after = f" but {'; '.join(problems)}" if problems else ""
        raise RolledBackError(
            f"{failed.version} failed ({cause}); rolled back to {previous.version}{after}",
            result=record.to_dict(),
        )

    def _stop_fenced(self, record: OperationRecord, current: Release, other: Release) -> None:
        self.oplog.checkpoint(record, Phase.STOPPING.value)
        result = self._hook(record, "stop", current, other, raise_on_failure=False, fenced=True)
        if result is None or result.ok:
            return
        message = f"stop hook of {current.version} {result.describe()} (log: {result.log_path})"
        if self.config.stop_failure is StopFailurePolicy.ABORT:
            raise HookError("stop", f"of {current.version} {result.describe()}; stop_failure=abort")
        record.warnings.append(message + "; continuing (stop_failure=continue)")

    def _hook(
        self,
        record: OperationRecord,
        name: str,
        release: Release,
        other: Release | None,
        *,
        raise_on_failure: bool,
        fenced: bool = False,
    ) -> hooks.HookResult | None:
        return run_hook(
            self.oplog,
            self.config,
            self.root,
            record,
            name,
            release,
            other,
            raise_on_failure=raise_on_failure,
            fenced=fenced,
        )

    def _health(
        self, record: OperationRecord, release: Release, *, raise_on_failure: bool
    ) -> list[health.CheckResult]:
        return run_health(
            record, release, self.health_env(release), raise_on_failure=raise_on_failure
        )


def _error_args(exc: FleetwaveError, message: str) -> tuple[Any, ...]:
    # HookError takes (hook, message); the others take one message.
    if isinstance(exc, HookError):
        return (exc.hook, message.removeprefix(f"hook {exc.hook!r} "))
    return (message,)


def _check_package_id(package_id: Any) -> None:
    if not isinstance(package_id, str) or not _PACKAGE_ID_RE.fullmatch(package_id):
        raise UsageError(f"not a package id (64 lower-case hex digits): {package_id!r}")
