"""``fleetwave deploy | resume | rollback`` (the reports ``status | history | explain``
are in :mod:`fleetwave.cli.report`; the watcher, gates and package check in
:mod:`fleetwave.cli.deploy_build`).

Exit status (:class:`~fleetwave_core.exitcodes.ExitCode`): 0 succeeded (failed hosts
inside the budget are listed on stderr), 20 rolled back, 21 rollback incomplete, 130
stopped by SIGTERM or aborted by a second Ctrl-C (the deployment stays resumable), 70
stopped by an unexpected internal error (resumable; the traceback is in the event
log); other errors use their error's exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleetwave.cli.deploy_build import build_gates, build_watcher, release_of, verify_for_deploy
from fleetwave.errors import (
    ConfigError,
    FleetwaveError,
    JournalError,
    LockedError,
    UsageError,
)
from fleetwave.observe.events import (
    EventSink,
    FanOut,
    JsonLinesFile,
    Note,
)
from fleetwave.planning.codec import plan_from_dict, plan_to_dict
from fleetwave.rollout.events import Event, OverrideGranted
from fleetwave.rollout.gates import (
    check_override,
)
from fleetwave.rollout.journal import KILL_ENV, DeploymentRow, Journal, KillPoint
from fleetwave.rollout.lease import LeaseKeeper
from fleetwave.rollout.lock import DeploymentLock, Takeover, TakeoverReason
from fleetwave.rollout.runner import DeploymentInfo, Runner, controller_id
from fleetwave.rollout.types import Finish, Result, Stopped
from fleetwave_core.exitcodes import ExitCode

EXIT_BY_RESULT: dict[Result, ExitCode] = {
    Result.SUCCEEDED: ExitCode.OK,
    Result.SUCCEEDED_WITH_FAILURES: ExitCode.OK,
    Result.ROLLED_BACK: ExitCode.ROLLED_BACK,
    Result.ROLLBACK_INCOMPLETE: ExitCode.ROLLBACK_INCOMPLETE,
}
EXIT_ABORTED = ExitCode.INTERRUPTED
EVENT_LOG = "events.jsonl"
SECOND_INTERRUPT_S = 3.0


def _run_options(parser: argparse.ArgumentParser, *, metrics: bool) -> None:
    """Options of every command that drives hosts: deploy, resume, rollback."""
    if metrics:
        parser.add_argument(
            "--metrics-port", type=int, help="serve controller metrics on this port"
        )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="JSON lines on stdout")
    output.add_argument(
        "--quiet",
        action="store_true",
        help="no progress: only errors and the final result (on stderr)",
    )
    parser.add_argument("--force-unlock", metavar="LOCK_ID", help="clear this stale lock first")


def _override_options(parser: argparse.ArgumentParser) -> None:
    """The audited emergency override of deploy and resume."""
    parser.add_argument(
        "--override",
        metavar="GATES",
        help="skip these gates (comma-separated: blockers, bake, window), as the "
        "pipeline's override policy allows",
    )
    parser.add_argument("--reason", dest="override_reason", help="why (--override)")
    parser.add_argument("--approver", help="who approved the override")


def register(sub: Any) -> None:
    """Add the deployment commands to the ``fleetwave`` parser."""
    d = sub.add_parser("deploy", help="deploy a package through a pipeline")
    _common(d)
    d.add_argument("package", type=Path, help="the .fwpkg package to deploy")
    d.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    d.add_argument(
        "--plan",
        dest="saved_plan",
        type=Path,
        metavar="FILE",
        help="execute this plan saved by `plan --out`; refused if the pipeline files, "
        "the topology or the package changed since",
    )
    _run_options(d, metrics=True)
    _override_options(d)
    d.set_defaults(func=cmd_deploy)

    r = sub.add_parser("resume", help="continue a deployment after a crash or an abort")
    _common(r)
    r.add_argument("deployment", nargs="?", help="deployment id (default: the latest)")
    r.add_argument("--yes", action="store_true", help="Ctrl-C rolls back without asking")
    _run_options(r, metrics=True)
    _override_options(r)
    r.set_defaults(func=cmd_resume)

    b = sub.add_parser("rollback", help="roll a deployment back")
    _common(b)
    b.add_argument("deployment", nargs="?", help="deployment id (default: the latest)")
    b.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    b.add_argument("--reason", default="requested by operator", help="recorded in the journal")
    _run_options(b, metrics=False)
    b.set_defaults(func=cmd_rollback)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", required=True, type=Path, help="pipeline file")


# -- shared plumbing -----------------------------------------------------------------------


@dataclass
class _Context:
    pipeline: Any  # fleetwave.config.pipeline.Pipeline
    state_dir: Path
    journal: Journal


def _context(path: Path) -> _Context:
    from fleetwave.config.pipeline import load_pipeline

    pipeline = load_pipeline(path)
    state_dir = pipeline.deploy.state_dir
    kill = os.environ.get(KILL_ENV)
    journal = Journal.in_state_dir(state_dir, kill_at=KillPoint.parse(kill) if kill else None)
    return _Context(pipeline, state_dir, journal)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _pick(ctx: _Context, deployment: str | None) -> DeploymentRow:
    if deployment:
        return ctx.journal.deployment(deployment)
    row = ctx.journal.latest(ctx.pipeline.name, ctx.pipeline.environment)
    if row is None:
        raise JournalError(
            f"{ctx.state_dir}: no deployment of {ctx.pipeline.name} ({ctx.pipeline.environment})"
        )
    return row


def _sinks(
    args: argparse.Namespace, ctx: _Context, stack: ExitStack, plan: Any
) -> tuple[EventSink, Any]:
    from fleetwave.observe.progress import choose_view, make_view

    log = JsonLinesFile(ctx.state_dir / EVENT_LOG)
    stack.callback(log.close)
    kind = choose_view(
        json=getattr(args, "json", False),
        quiet=getattr(args, "quiet", False),
        isatty=sys.stdout.isatty(),
        env=os.environ,
    )
    view = make_view(kind, plan, sys.stdout, sys.stderr)
    close = getattr(view, "close", None)
    if close is not None:
        stack.callback(close)
    sinks: list[EventSink] = [log, view]
    metrics = None
    port = getattr(args, "metrics_port", None)
    if port is not None:
        from fleetwave.observe.metrics import MetricsSink

        metrics = MetricsSink()
        server = metrics.serve(port)
        stack.callback(server.shutdown)
        sinks.append(metrics)
    return FanOut(sinks), metrics


@contextmanager
def _locked(
    ctx: _Context, args: argparse.Namespace, deployment_id: str | None
) -> Iterator[DeploymentLock]:
    lock = DeploymentLock(ctx.state_dir, ctx.pipeline.name, ctx.pipeline.environment)
    cleared = lock.acquire(
        now=time.time(),
        deployment_id=deployment_id,
        force_unlock=getattr(args, "force_unlock", None),
    )
    if cleared is not None:
        detail = {"cleared": cleared.holder.__dict__, "by": _user(), "controller": controller_id()}
        now = time.time()
        ctx.journal.audit(cleared.holder.deployment_id, cleared.reason.value, detail, now)
        log = JsonLinesFile(ctx.state_dir / EVENT_LOG)
        try:
            log.emit(Note(cleared.holder.deployment_id or "-", now, _takeover_note(cleared)))
        finally:
            log.close()
        print(f"fleetwave: {_takeover_note(cleared)}", file=sys.stderr)
    try:
        yield lock
    finally:
        lock.release()


def _takeover_note(cleared: Takeover) -> str:
    if cleared.reason is TakeoverReason.FORCED:
        return f"lock: forced unlock of {cleared.holder.describe()}"
    return f"lock: took over the stale {cleared.holder.describe()}: its process is gone"


def _runner(
    ctx: _Context,
    row_or_info: DeploymentInfo,
    sink: EventSink,
    metrics: Any,
    release: str | None = None,
) -> Runner:
    from fleetwave.lb.registry import create_load_balancer
    from fleetwave.transport.ssh import ErrorCounter, SshTransport

    counter = ErrorCounter(metrics.ssh_error if metrics is not None else None)
    transport = SshTransport(ctx.pipeline.deploy.ssh, errors=counter)
    balancers = {s.name: create_load_balancer(s) for s in ctx.pipeline.deploy.load_balancers}
    pipeline = ctx.pipeline
    # Polls get a transport of their own: they never queue behind an install.
    watch_transport = SshTransport(ctx.pipeline.deploy.ssh, errors=counter)
    watcher = build_watcher(pipeline, row_or_info.plan, watch_transport)
    gates = build_gates(pipeline, watcher, release)
    dep = row_or_info.deployment_id
    leases = LeaseKeeper(
        dep,
        controller_id(),
        ctx.pipeline.deploy.lease_ttl_s,
        note=lambda message: sink.emit(Note(dep, time.time(), message)),
    )
    runner = Runner(
        row_or_info,
        journal=ctx.journal,
        transport=transport,
        balancers=balancers,
        gates=gates,
        sink=sink,
        watcher=watcher,
        post_deploy_watch_s=pipeline.post_deploy_watch_s,
        leases=leases,
    )
    runner.closers.append(watch_transport.close)
    return runner


def _override(ctx: _Context, args: argparse.Namespace) -> list[Event]:
    """The OverrideGranted event of ``--override`` (checked against the policy)."""
    names = getattr(args, "override", None)
    reason = getattr(args, "override_reason", None)
    approver = getattr(args, "approver", None)
    if names is None:
        if reason or approver:
            raise UsageError("--reason and --approver go with --override")
        return []
    skip = check_override(ctx.pipeline.override, names, reason, approver)
    return [OverrideGranted(skip, reason or "", approver or "", _user())]


def _info(row: DeploymentRow, ctx: _Context) -> DeploymentInfo:
    return DeploymentInfo(
        row.id,
        plan_from_dict(row.plan),
        Path(row.package_path),
        row.package_id,
        ctx.pipeline.deploy.drain_timeout_s,
    )


def _drive(runner: Runner, coro_factory: Any, *, ask: bool) -> Finish | Stopped | None:
    """Run the runner with Ctrl-C and SIGTERM handling; None when aborted by a second
    Ctrl-C or SIGTERM. The first SIGTERM stops cleanly (:meth:`Runner.request_stop`)."""

    async def main() -> Finish | Stopped | None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        last: list[float] = []
        aborted: list[bool] = []

        pending: list[asyncio.TimerHandle] = []

        def on_sigint() -> None:
            now = time.monotonic()
            if last and now - last[-1] <= SECOND_INTERRUPT_S:
                for handle in pending:
                    handle.cancel()
                aborted.append(True)
                task.cancel()
                return
            last.append(now)
            hint = f"Ctrl-C again within {SECOND_INTERRUPT_S:.0f} s aborts without rolling back"
            if ask:
                print(f"\nfleetwave: interrupted: roll back? [y/N] ({hint})", file=sys.stderr)

                def confirm() -> None:
                    # A daemon thread, not to_thread: an unanswered prompt must not keep
                    # the process alive after the deployment ends.
                    answer = sys.stdin.readline()
                    if answer.strip().lower() in ("y", "yes"):
                        loop.call_soon_threadsafe(
                            runner.request_rollback, "interrupted (Ctrl-C)", _user()
                        )

                threading.Thread(target=confirm, name="fleetwave-confirm", daemon=True).start()
            else:
                # The rollback starts once the grace period passes, so that a second
                # Ctrl-C really aborts *without* rolling back.
                print(f"\nfleetwave: interrupted: rolling back ({hint})", file=sys.stderr)
                pending.append(
                    loop.call_later(
                        SECOND_INTERRUPT_S,
                        runner.request_rollback,
                        "interrupted (Ctrl-C)",
                        _user(),
                    )
                )

        terms: list[float] = []

        def on_sigterm() -> None:
            if terms:  # a second SIGTERM: stop at once, still resumable
                aborted.append(True)
                task.cancel()
                return
            terms.append(time.monotonic())
            print(
                "\nfleetwave: SIGTERM: finishing the steps in flight, then stopping (resumable)",
                file=sys.stderr,
            )
            runner.request_stop("SIGTERM")

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            finish: Finish | Stopped = await coro_factory()
            return finish
        except asyncio.CancelledError:
            if aborted:
                return None
            raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
            await runner.transport.close()
            for close in runner.closers:
                await close()
            for lb in runner.balancers.values():
                await lb.close()

    return asyncio.run(main())


def _report(finish: Finish | Stopped | None, runner: Runner, ctx: _Context) -> int:
    dep = runner.info.deployment_id
    if finish is None:
        ctx.journal.set_state(dep, "interrupted", now=time.time())
        print(f"fleetwave: aborted; resume with: fleetwave resume -f ... {dep}", file=sys.stderr)
        return EXIT_ABORTED
    if isinstance(finish, Stopped):
        for host, why in finish.out_of_rotation:
            print(f"fleetwave: out of rotation: {host}: {why}", file=sys.stderr)
        print(
            f"fleetwave: {finish.state}: {finish.reason}; resume with: "
            f"fleetwave resume -f ... {dep}",
            file=sys.stderr,
        )
        return _exit_for_stop(finish)
    for host, why in finish.failed:
        print(f"fleetwave: failed host {host}: {why}", file=sys.stderr)
    for host, why in finish.out_of_rotation:
        print(f"fleetwave: out of rotation: {host}: {why}", file=sys.stderr)
    print(f"deployment {dep}: {finish.result}", file=sys.stderr)
    return EXIT_BY_RESULT[finish.result]


def _exit_for_stop(stopped: Stopped) -> int:
    """SIGTERM: INTERRUPTED; a fleetwave error: its own code; anything else: INTERNAL."""
    if stopped.error is None:
        return EXIT_ABORTED
    if isinstance(stopped.error, FleetwaveError):
        return int(stopped.error.exit_code)
    return ExitCode.INTERNAL


def _recorded_result(row: DeploymentRow) -> Result | None:
    """The result a journal row records (None: unfinished, or a value we do not know)."""
    try:
        return Result(row.result) if row.result else None
    except ValueError:
        return None


def _exit_for(row: DeploymentRow) -> int:
    result = _recorded_result(row)
    return EXIT_BY_RESULT[result] if result is not None else ExitCode.ERROR


# -- commands ------------------------------------------------------------------------------


def cmd_deploy(args: argparse.Namespace) -> int:
    """Plan the pipeline, confirm, and run the whole deployment."""
    from fleetwave.cli.plan import current_inputs, package_ref, render_plan
    from fleetwave.planning.planner import plan_pipeline
    from fleetwave.planning.saved import check_fresh, read_saved

    ctx = _context(args.file)
    saved_path = getattr(args, "saved_plan", None)
    if saved_path is not None:
        # Before anything is verified, journalled or drained: a stale plan is one line.
        saved = read_saved(saved_path)
        check_fresh(
            saved_path, saved, current_inputs(ctx.pipeline, args.file, package_ref(args.package))
        )
        if saved.plan != plan_pipeline(ctx.pipeline):
            raise ConfigError(
                f"{saved_path}: saved plan differs from what its unchanged inputs plan now "
                "(edited, or made by another fleetwave version): make a new one"
            )
        plan = saved.plan
    else:
        plan = plan_pipeline(ctx.pipeline)
    manifest = verify_for_deploy(ctx.pipeline, args.package, now=time.time())
    extra = _override(ctx, args)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "refusing to deploy without confirmation: stdin is not a TTY; pass --yes"
            )
        print(render_plan(ctx.pipeline, plan), end="")
        if saved_path is not None:
            print(f"plan: {saved_path}, saved {saved.saved_at:%Y-%m-%d %H:%M %Z}")
        print(f"package: {manifest.name} {manifest.version} ({manifest.package_id[:12]})")
        if input("Deploy? [y/N] ").strip().lower() not in ("y", "yes"):
            print("fleetwave: not deployed", file=sys.stderr)
            return 1
    dep = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    with ExitStack() as stack:
        lock = stack.enter_context(_locked(ctx, args, dep))
        sink, metrics = _sinks(args, ctx, stack, plan)
        info = DeploymentInfo(
            dep,
            plan,
            args.package.resolve(),
            manifest.package_id,
            ctx.pipeline.deploy.drain_timeout_s,
        )
        # Pre-flight (known_hosts, identity, balancers) before the deployment row
        # exists: a refusal leaves nothing that looks like a running deployment.
        runner = _runner(ctx, info, sink, metrics, str(manifest.version))
        ctx.journal.create_deployment(
            deployment_id=dep,
            pipeline=ctx.pipeline.name,
            environment=ctx.pipeline.environment,
            package_id=manifest.package_id,
            package_path=str(args.package.resolve()),
            plan=plan_to_dict(plan),
            now=time.time(),
            controller=controller_id(),
        )
        lock.set_deployment(dep)
        finish = _drive(runner, lambda: runner.run(extra), ask=sys.stdin.isatty() and not args.yes)
        return _report(finish, runner, ctx)


def cmd_resume(args: argparse.Namespace) -> int:
    """Reconcile a stopped deployment with the fleet and carry it on (or its rollback)."""
    ctx = _context(args.file)
    row = _pick(ctx, args.deployment)
    extra = _override(ctx, args)
    with ExitStack() as stack:
        stack.enter_context(_locked(ctx, args, row.id))
        if row.state == "finished" and _recorded_result(row) is not Result.ROLLBACK_INCOMPLETE:
            print(f"deployment {row.id}: already finished: {row.result}", file=sys.stderr)
            return _exit_for(row)
        ctx.journal.set_state(row.id, row.state, now=time.time(), controller=controller_id())
        info = _info(row, ctx)
        sink, metrics = _sinks(args, ctx, stack, info.plan)
        runner = _runner(ctx, info, sink, metrics, release_of(Path(row.package_path)))
        finish = _drive(
            runner, lambda: runner.resume(extra or None), ask=sys.stdin.isatty() and not args.yes
        )
        return _report(finish, runner, ctx)


def cmd_rollback(args: argparse.Namespace) -> int:
    """Roll back: ask the running controller, or do it here when none runs."""
    ctx = _context(args.file)
    row = _pick(ctx, args.deployment)
    latest = ctx.journal.latest(ctx.pipeline.name, ctx.pipeline.environment)
    if latest is None or latest.id != row.id:
        # Rolling back an older deployment would revert every later one blindly.
        raise UsageError(
            f"deployment {row.id} is not the latest of {ctx.pipeline.name} "
            f"({ctx.pipeline.environment})"
            + (f"; the latest is {latest.id}" if latest is not None else "")
            + ": only the latest deployment can be rolled back"
        )
    recorded = _recorded_result(row)
    if row.state == "finished" and recorded is Result.ROLLED_BACK:
        print(f"deployment {row.id}: already {recorded}", file=sys.stderr)
        return EXIT_BY_RESULT[recorded]
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "refusing to roll back without confirmation: stdin is not a TTY; pass --yes"
            )
        if input(f"Roll back deployment {row.id}? [y/N] ").strip().lower() not in ("y", "yes"):
            return 1
    by = _user()
    lock = DeploymentLock(ctx.state_dir, ctx.pipeline.name, ctx.pipeline.environment)
    try:
        with ExitStack() as stack:
            stack.enter_context(_locked(ctx, args, row.id))
            info = _info(row, ctx)
            sink, metrics = _sinks(args, ctx, stack, info.plan)
            runner = _runner(ctx, info, sink, metrics)
            reason = args.reason
            finish = _drive(runner, lambda: runner.rollback(reason, by), ask=False)
            return _report(finish, runner, ctx)
    except LockedError:
        holder = lock.read_holder()
        live = lock.is_held()
        if not live or holder is None or holder.deployment_id != row.id:
            raise
        ctx.journal.request_rollback(row.id, args.reason, by, time.time())
        print(
            f"fleetwave: rollback of {row.id} requested; the running controller "
            f"({holder.user}@{holder.host} pid {holder.pid}) will carry it out",
            file=sys.stderr,
        )
        return 0
