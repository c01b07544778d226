"""``fleetwave deploy | resume | rollback | status | history | explain``.

Exit status (:class:`~fleetwave_core.exitcodes.ExitCode`): 0 succeeded (failed hosts
inside the budget are listed on stderr), 20 rolled back, 21 rollback incomplete, 130
aborted by a second Ctrl-C (the deployment stays resumable); other errors use their
error's exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
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

from fleetwave.errors import JournalError, LockedError, UsageError
from fleetwave.observe.events import EventSink, FanOut, JsonLinesFile, JsonLinesStream, PlainLines
from fleetwave.planning.codec import plan_from_dict, plan_to_dict
from fleetwave.rollout.gates import (
    DEFAULT_GATE_POLL_S,
    AlarmBlockerGate,
    AnomalyGate,
    BakeGate,
    Gates,
    PreprodTestsGate,
    WindowGate,
    check_override,
)
from fleetwave.rollout.journal import KILL_ENV, DeploymentRow, Journal, KillPoint
from fleetwave.rollout.lock import DeploymentLock
from fleetwave.rollout.runner import DeploymentInfo, Runner, controller_id, replay
from fleetwave.rollout.state import FAILED, Phase
from fleetwave.rollout.types import Event, Finish, OverrideGranted, Result
from fleetwave.rollout.watching import Watcher
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
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout")
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

    s = sub.add_parser("status", help="the latest deployment of a pipeline")
    _common(s)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_status)

    h = sub.add_parser("history", help="past deployments of a pipeline")
    _common(h)
    h.add_argument("--json", action="store_true", help="print JSON lines")
    h.set_defaults(func=cmd_history)

    e = sub.add_parser("explain", help="the decision trail and every step of a deployment")
    e.add_argument("deployment", help="deployment id")
    _common(e)
    e.add_argument("--json", action="store_true", help="print JSON lines")
    e.set_defaults(func=cmd_explain)


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


def _sinks(args: argparse.Namespace, ctx: _Context, stack: ExitStack) -> tuple[EventSink, Any]:
    log = JsonLinesFile(ctx.state_dir / EVENT_LOG)
    stack.callback(log.close)
    sinks: list[EventSink] = [log]
    if getattr(args, "json", False):
        sinks.append(JsonLinesStream(sys.stdout))
    elif sys.stdout.isatty():
        from fleetwave.observe.progress import ProgressView

        sinks.append(ProgressView(sys.stdout))
    else:
        sinks.append(PlainLines(sys.stdout))
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
        ctx.journal.audit(
            cleared.deployment_id,
            "force_unlock",
            {"cleared": cleared.__dict__, "by": _user(), "controller": controller_id()},
            time.time(),
        )
    try:
        yield lock
    finally:
        lock.release()


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
    runner = Runner(
        row_or_info,
        journal=ctx.journal,
        transport=transport,
        balancers=balancers,
        gates=gates,
        sink=sink,
        watcher=watcher,
        post_deploy_watch_s=pipeline.post_deploy_watch_s,
    )
    runner.closers.append(watch_transport.close)
    return runner


def build_watcher(pipeline: Any, plan: Any, transport: Any) -> Watcher | None:
    """The watcher of ``pipeline.watch`` (None when the pipeline defines no alarms,
    counts no bake data and has anomaly detection off). Anomaly detection reads the
    agents' snapshots, so it polls them even when the alarms' source is Prometheus."""
    from fleetwave.rollout.anomaly_watch import AnomalyWatch
    from fleetwave.watch.agent_source import AgentSource
    from fleetwave.watch.prometheus_source import PrometheusSource

    detecting = pipeline.anomaly.enabled and bool(pipeline.anomaly.enabled_checks)
    if not pipeline.alarms and not _counts_data(plan) and not detecting:
        return None
    ws = pipeline.watch
    prom = None
    if ws.prometheus is not None:
        p = ws.prometheus
        prom = PrometheusSource(p.url, host_label=p.host_label, timeout_s=p.timeout_s)
    poller = None
    if ws.source != "prometheus" or detecting:
        poller = AgentSource(transport, plan.hosts(), clock=time.time, timeout_s=ws.interval_s)
    if ws.source == "prometheus":
        assert prom is not None  # the loader requires the URL
        source: Any = prom
    else:
        source = poller
    anomaly = None
    if detecting:
        assert poller is not None
        anomaly = AnomalyWatch(plan, pipeline.anomaly, poller.snapshots, interval_s=ws.interval_s)
    return Watcher(
        plan,
        pipeline.alarms,
        source=source,
        interval_s=ws.interval_s,
        clock=time.time,
        rollback_alarm=pipeline.rollback_alarm,
        onebox_alarm=pipeline.onebox_alarm,
        promql=prom,
        alerts=prom,
        poller=poller,
        anomaly=anomaly,
    )


def _counts_data(plan: Any) -> bool:
    bakes = [s.bake for s in plan.stages()] + [w.bake_after for w in plan.waves]
    return any(b.metric and b.min_datapoints for b in bakes)


def build_gates(pipeline: Any, watcher: Watcher | None, release: str | None) -> Gates:
    """Blockers: the windows, then the alarms; bakes: time and data, the anomaly
    detector's pass, then tests."""
    blockers: list[Any] = [
        WindowGate(
            lambda region, t: pipeline.windows_for(region).is_open(t),
            lambda region, t: pipeline.windows_for(region).next_open(t),
        )
    ]
    if watcher is not None and (pipeline.blockers or pipeline.rollback_alarm):
        blockers.append(AlarmBlockerGate(watcher, pipeline.blockers, pipeline.rollback_alarm))
    poll = watcher.interval_s if watcher is not None else DEFAULT_GATE_POLL_S
    bakes: list[Any] = [BakeGate(watcher, release=release, poll_s=poll)]
    if watcher is not None and watcher.anomaly is not None:
        bakes.append(AnomalyGate(watcher.anomaly))
    bakes.append(PreprodTestsGate())
    return Gates(blockers=tuple(blockers), bake=tuple(bakes))


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


def _release_of(package: Path) -> str | None:
    from fleetwave_agent.package import read_manifest

    try:
        return str(read_manifest(package).version)
    except Exception:  # resume without the package file: counts ignore the release
        return None


def _info(row: DeploymentRow, ctx: _Context) -> DeploymentInfo:
    return DeploymentInfo(
        row.id,
        plan_from_dict(row.plan),
        Path(row.package_path),
        row.package_id,
        ctx.pipeline.deploy.drain_timeout_s,
    )


def _drive(runner: Runner, coro_factory: Any, *, ask: bool) -> Finish | None:
    """Run the runner with Ctrl-C handling; None when aborted by a second Ctrl-C."""

    async def main() -> Finish | None:
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

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            finish: Finish = await coro_factory()
            return finish
        except asyncio.CancelledError:
            if aborted:
                return None
            raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            await runner.transport.close()
            for close in runner.closers:
                await close()
            for lb in runner.balancers.values():
                await lb.close()

    return asyncio.run(main())


def _report(finish: Finish | None, runner: Runner, ctx: _Context) -> int:
    dep = runner.info.deployment_id
    if finish is None:
        ctx.journal.set_state(dep, "interrupted", now=time.time())
        print(f"fleetwave: aborted; resume with: fleetwave resume -f ... {dep}", file=sys.stderr)
        return EXIT_ABORTED
    for host, why in finish.failed:
        print(f"fleetwave: failed host {host}: {why}", file=sys.stderr)
    print(f"deployment {dep}: {finish.result}", file=sys.stderr)
    return EXIT_BY_RESULT[finish.result]


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
    from fleetwave.cli.plan import render_plan
    from fleetwave.planning.planner import plan_pipeline
    from fleetwave_agent.package import read_manifest

    ctx = _context(args.file)
    manifest = read_manifest(args.package)
    plan = plan_pipeline(ctx.pipeline)
    extra = _override(ctx, args)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "refusing to deploy without confirmation: stdin is not a TTY; pass --yes"
            )
        print(render_plan(plan, ctx.pipeline.batch_estimate_s))
        print(f"package: {manifest.name} {manifest.version} ({manifest.package_id[:12]})")
        if input("Deploy? [y/N] ").strip().lower() not in ("y", "yes"):
            print("fleetwave: not deployed", file=sys.stderr)
            return 1
    dep = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    with ExitStack() as stack:
        lock = stack.enter_context(_locked(ctx, args, dep))
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
        sink, metrics = _sinks(args, ctx, stack)
        info = DeploymentInfo(
            dep,
            plan,
            args.package.resolve(),
            manifest.package_id,
            ctx.pipeline.deploy.drain_timeout_s,
        )
        runner = _runner(ctx, info, sink, metrics, str(manifest.version))
        finish = _drive(runner, lambda: runner.run(extra), ask=sys.stdin.isatty() and not args.yes)
        return _report(finish, runner, ctx)


def cmd_resume(args: argparse.Namespace) -> int:
    """Reconcile a stopped deployment with the fleet and carry it on (or its rollback)."""
    ctx = _context(args.file)
    row = _pick(ctx, args.deployment)
    extra = _override(ctx, args)
    with ExitStack() as stack:
        stack.enter_context(_locked(ctx, args, row.id))
        if row.state == "finished":
            print(f"deployment {row.id}: already finished: {row.result}", file=sys.stderr)
            return _exit_for(row)
        ctx.journal.set_state(row.id, row.state, now=time.time(), controller=controller_id())
        sink, metrics = _sinks(args, ctx, stack)
        runner = _runner(ctx, _info(row, ctx), sink, metrics, _release_of(Path(row.package_path)))
        finish = _drive(
            runner, lambda: runner.resume(extra or None), ask=sys.stdin.isatty() and not args.yes
        )
        return _report(finish, runner, ctx)


def cmd_rollback(args: argparse.Namespace) -> int:
    """Roll back: ask the running controller, or do it here when none runs."""
    ctx = _context(args.file)
    row = _pick(ctx, args.deployment)
    recorded = _recorded_result(row)
    if row.state == "finished" and recorded is not None and recorded.rolled_back:
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
            sink, metrics = _sinks(args, ctx, stack)
            runner = _runner(ctx, _info(row, ctx), sink, metrics)
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


def cmd_status(args: argparse.Namespace) -> int:
    """The latest deployment, its host phases and the lock holder."""
    ctx = _context(args.file)
    row = ctx.journal.latest(ctx.pipeline.name, ctx.pipeline.environment)
    lock = DeploymentLock(ctx.state_dir, ctx.pipeline.name, ctx.pipeline.environment)
    holder = lock.read_holder()
    out: dict[str, Any] = {"pipeline": ctx.pipeline.name, "environment": ctx.pipeline.environment}
    out["lock"] = holder.__dict__ if holder else None
    if row is not None:
        state = replay(plan_from_dict(row.plan), ctx.journal, row.id)
        counts: dict[str, int] = {}
        for h in state.hosts.values():
            counts[h.phase.value] = counts.get(h.phase.value, 0) + 1
        failed = {h.name: h.failure for h in state.hosts.values() if h.phase in FAILED}
        out["deployment"] = _row_dict(row)
        out["hosts"] = counts
        out["failed"] = failed
        out["engine_phase"] = state.phase.value
        out["waiting"] = {
            sid: {"phase": st.phase.value, "verdict": st.verdict, "for": st.waiting}
            for sid, st in state.stages.items()
            if st.waiting
        }
        if state.wave_waiting:
            out["waiting"][f"wave:{state.wave}"] = {"verdict": "wait", "for": state.wave_waiting}
        out["alarms"] = {
            f"{name} ({role})": {"state": s.value, "reason": why}
            for (role, name), (s, why) in state.alarms.items()
        }
        out["anomaly"] = {
            sid: {"outcome": o.value, "reason": why} for sid, (o, why) in state.anomaly.items()
        }
        ov = state.override
        out["override"] = (
            None
            if ov is None
            else {
                "skip": sorted(t.value for t in ov.skip),
                "reason": ov.reason,
                "approver": ov.approver,
                "by": ov.by,
            }
        )
        if state.watch_until is not None and state.phase is Phase.RUNNING:
            out["post_deploy_watch_until"] = _iso(state.watch_until)
        out["resumable"] = row.state != "finished" and state.phase is not Phase.FINISHED
    if args.json:
        print(json.dumps(out, sort_keys=True))
        return 0
    if row is None:
        print(f"{ctx.pipeline.name} ({ctx.pipeline.environment}): no deployments")
    else:
        d = out["deployment"]
        print(f"{d['id']}: {d['state']} result={d['result'] or '-'} package={d['package_id'][:12]}")
        print("hosts: " + " ".join(f"{k}={v}" for k, v in sorted(out["hosts"].items())))
        for h, why in sorted(out["failed"].items()):
            print(f"failed: {h}: {why}")
        for target, w in sorted(out["waiting"].items()):
            print(f"waiting: {target}: {w['verdict']}: {w['for']}")
        for name, a in sorted(out["alarms"].items()):
            print(f"alarm: {name}: {a['state']}: {a['reason']}")
        for sid, a in sorted(out["anomaly"].items()):
            print(f"anomaly: {sid}: {a['outcome']}: {a['reason']}")
        if out["override"]:
            o = out["override"]
            print(
                f"override: skip {', '.join(o['skip'])}: {o['reason']!r} "
                f"approved by {o['approver']} (by {o['by']})"
            )
        if "post_deploy_watch_until" in out:
            print(f"post-deploy watch until {out['post_deploy_watch_until']}")
    if holder:
        print(f"lock: {holder.describe()}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """Past deployments, newest first."""
    ctx = _context(args.file)
    for row in ctx.journal.history(ctx.pipeline.name, ctx.pipeline.environment):
        overrides = [
            s.payload
            for s in ctx.journal.steps(row.id)
            if s.kind == "event" and s.name == "OverrideGranted"
        ]
        if args.json:
            print(json.dumps({**_row_dict(row), "overrides": overrides}, sort_keys=True))
        else:
            extra = "".join(
                f"  [override {','.join(o['skip'])} by {o['approver']}: {o['reason']}]"
                for o in overrides
            )
            print(
                f"{row.id}  {_iso(row.started_at)}  {row.state:<12} {row.result or '-':<24}"
                f" {row.package_id[:12]}" + (f"  ({row.reason})" if row.reason else "") + extra
            )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """The decision trail (every verdict with its inputs, alarm changes, overrides),
    then every journalled step of one deployment, in order."""
    from fleetwave.observe import trail

    ctx = _context(args.file)
    row = ctx.journal.deployment(args.deployment)
    steps = ctx.journal.steps(row.id)
    entries = trail.trail(steps)
    if args.json:
        print(json.dumps({"deployment": _row_dict(row), "trail": entries}, sort_keys=True))
        for step in steps:
            print(json.dumps(step.__dict__, sort_keys=True))
        return 0
    started = _iso(row.started_at)
    print(f"deployment {row.id} of {row.pipeline} ({row.environment}) started {started}")
    print("decision trail:")
    for line in trail.render(entries) or ["(no verdicts yet)"]:
        print(f"  {line}")
    print("steps:")
    for step in steps:
        who = " ".join(x for x in (step.host, step.stage) if x)
        detail = {
            k: v
            for k, v in step.payload.items()
            if k not in ("type", "host", "stage_id", "evidence", "verdict")
        }
        text = ", ".join(f"{k}={v}" for k, v in detail.items())
        print(
            f"{_iso(step.at)}  #{step.seq:<5} {step.kind:<7} {step.name:<18} {who}  {text}".rstrip()
        )
    print(f"=> {row.state} {row.result or ''}".rstrip())
    return 0


def _row_dict(row: DeploymentRow) -> dict[str, Any]:
    d = dict(row.__dict__)
    d.pop("plan")
    return d


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
