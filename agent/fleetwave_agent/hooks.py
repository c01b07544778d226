"""Running a release's lifecycle hooks: time-boxed, in their own process group, logged.

Each hook runs with ``cwd`` = the release directory, stdin from ``/dev/null`` and its
stdout and stderr sent to a *file* under the agent root (never a pipe): a hook that
backgrounds a long-running app would otherwise hand the app our pipe, and we would
wait for EOF forever. Hooks that start an app should detach it with ``setsid`` (or
daemonize) so it leaves the hook's process group, which is killed when the hook times
out.

Environment given to every hook (plus ``PATH``, ``HOME``, ``LANG``, ``TZ`` when set):

=============================  ==============================================
``FLEETWAVE_HOOK``             the hook's name (``start``, ``stop``, ...)
``FLEETWAVE_OPERATION``        ``install``, ``activate``, ``rollback``
``FLEETWAVE_OPERATION_ID``     id of the operation (names its log directory)
``FLEETWAVE_RELEASE_DIR``      the release the hook belongs to (also its cwd)
``FLEETWAVE_NAME``             package name
``FLEETWAVE_VERSION``          the hook's release version
``FLEETWAVE_PACKAGE_ID``       the hook's release package id
``FLEETWAVE_PREVIOUS_VERSION`` the other side of the switch ('' if none)
``FLEETWAVE_ROOT``             the agent root
``FLEETWAVE_RUN_DIR``          ``ROOT/run``: writable, for pid files and sockets
=============================  ==============================================
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fleetwave_agent.errors import HookError
from fleetwave_agent.manifest import HookSpec
from fleetwave_core.fsutil import atomic_write

_PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: After SIGTERM to a timed-out hook's group, how long before SIGKILL.
KILL_GRACE_S = 2.0
#: A hook writing more than this multiple of the output cap is killed as runaway.
RUNAWAY_FACTOR = 16
_POLL_S = 0.02


@dataclass(frozen=True)
class HookContext:
    """Where and for what a hook runs; turned into its environment."""

    operation: str
    operation_id: str
    root: Path
    name: str
    version: str
    package_id: str
    release_dir: Path
    previous_version: str = ""


@dataclass(frozen=True)
class HookResult:
    hook: str
    version: str
    exit_code: int | None  # None when it was killed after a timeout
    duration_s: float
    timed_out: bool
    log_path: Path
    output_tail: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def to_dict(self) -> dict[str, object]:
        return {
            "hook": self.hook,
            "version": self.version,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 4),
            "timed_out": self.timed_out,
            "log": str(self.log_path),
        }

    def describe(self) -> str:
        if self.timed_out:
            return f"timed out after {self.duration_s:.1f}s"
        return f"exited with status {self.exit_code}"


def hook_env(hook: str, ctx: HookContext, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The documented environment of a hook (see the module docstring)."""
    base = os.environ if base is None else base
    env = {k: base[k] for k in _PASSTHROUGH_ENV if k in base}
    env.setdefault("PATH", _DEFAULT_PATH)
    env.update(
        FLEETWAVE_HOOK=hook,
        FLEETWAVE_OPERATION=ctx.operation,
        FLEETWAVE_OPERATION_ID=ctx.operation_id,
        FLEETWAVE_RELEASE_DIR=str(ctx.release_dir),
        FLEETWAVE_NAME=ctx.name,
        FLEETWAVE_VERSION=ctx.version,
        FLEETWAVE_PACKAGE_ID=ctx.package_id,
        FLEETWAVE_PREVIOUS_VERSION=ctx.previous_version,
        FLEETWAVE_ROOT=str(ctx.root),
        FLEETWAVE_RUN_DIR=str(ctx.root / "run"),
    )
    return env


def resolve_argv(argv: tuple[str, ...], release_dir: Path) -> list[str]:
    """A relative ``argv[0]`` with a ``/`` (``./bin/start``) names a file in the release;
    a bare name (``sh``) is looked up on ``PATH``, as the package format documents."""
    first = argv[0]
    if "/" in first and not os.path.isabs(first):
        first = str(release_dir / first)
    return [first, *argv[1:]]


def run_hook(
    hook: str,
    spec: HookSpec,
    ctx: HookContext,
    log_path: Path,
    *,
    max_output_bytes: int,
    timeout_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> HookResult:
    """Run one hook to completion or timeout; never raises for a failing hook.

    ``timeout_s`` caps the hook's own ``timeout_ms`` (used to fence ``stop``). On
    timeout the whole process group gets SIGTERM, then SIGKILL after a grace period.
    """
    limit = spec.timeout_ms / 1000
    if timeout_s is not None:
        limit = min(limit, timeout_s)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    (ctx.root / "run").mkdir(parents=True, exist_ok=True)
    argv = resolve_argv(spec.argv, ctx.release_dir)
    started = clock()
    with open(log_path, "wb") as out:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=ctx.release_dir,
                env=hook_env(hook, ctx),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            out.write(f"fleetwave-agent: cannot run {argv[0]}: {exc.strerror}\n".encode())
            out.flush()
            return HookResult(
                hook, ctx.version, 127, clock() - started, False, log_path, _tail(log_path, 2048)
            )
        timed_out = _wait(proc, out, started + limit, max_output_bytes * RUNAWAY_FACTOR, clock)
    _cap_log(log_path, max_output_bytes)
    return HookResult(
        hook=hook,
        version=ctx.version,
        exit_code=None if timed_out else proc.returncode,
        duration_s=clock() - started,
        timed_out=timed_out,
        log_path=log_path,
        output_tail=_tail(log_path, 2048),
    )


def _wait(
    proc: subprocess.Popen[bytes],
    out: object,
    deadline: float,
    runaway_bytes: int,
    clock: Callable[[], float],
) -> bool:
    """Wait for ``proc``; kill its group on deadline or runaway output. True if killed."""
    fd = out.fileno() if hasattr(out, "fileno") else -1
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            _kill_group(proc)
            return True
        try:
            proc.wait(timeout=min(_POLL_S, remaining))
            return False
        except subprocess.TimeoutExpired:
            pass
        if fd >= 0 and os.fstat(fd).st_size > runaway_bytes:
            _kill_group(proc)
            return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The hook leads its own session, so its pid is the group id of everything it forked
    # without detaching.
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; stragglers in the group still get the final signal.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        break


def _cap_log(path: Path, max_bytes: int) -> None:
    """Keep only the last ``max_bytes`` of a hook's output (the end says why it failed)."""
    size = path.stat().st_size
    if size <= max_bytes:
        return
    with open(path, "rb") as fh:
        fh.seek(size - max_bytes)
        tail = fh.read()
    marker = f"[fleetwave-agent: {size - max_bytes} earlier bytes dropped]\n".encode()
    # Not durable: a hook log lost in a power cut is no worse than a torn one.
    atomic_write(path, marker + tail, durable=False)


def _tail(path: Path, n: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - n))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def raise_for(result: HookResult) -> None:
    """Turn a failed :class:`HookResult` into a :class:`HookError`."""
    if not result.ok:
        tail = result.output_tail.strip().splitlines()
        last = f" (last output: {tail[-1][:200]})" if tail else ""
        raise HookError(
            result.hook,
            f"of {result.version} {result.describe()}{last}; log: {result.log_path}",
            output_tail=result.output_tail,
        )
