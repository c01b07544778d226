"""``fleetwave status | history | explain``: read-only reports on a pipeline's
deployments, from its journal and lock (they never touch a host).

Exit status: 0, or the error's exit code (:class:`~fleetwave_core.exitcodes.ExitCode`).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from fleetwave.cli.deploy import _common, _context
from fleetwave.planning.codec import plan_from_dict
from fleetwave.rollout.journal import DeploymentRow
from fleetwave.rollout.lock import DeploymentLock
from fleetwave.rollout.runner import replay
from fleetwave.rollout.state import FAILED, Phase, out_of_rotation


def register(sub: Any) -> None:
    """Add the report commands to the ``fleetwave`` parser."""
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
        left = out_of_rotation(state)
        out["skipped"] = {n: why for n, label, why in left if label == "operator"}
        out["out_of_rotation"] = {n: {"reason": label, "why": why} for n, label, why in left}
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
        for h, o in sorted(out["out_of_rotation"].items()):
            print(f"out of rotation ({o['reason']}): {h}: {o['why']}")
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
    from fleetwave.observe import rotation, trail

    ctx = _context(args.file)
    row = ctx.journal.deployment(args.deployment)
    steps = ctx.journal.steps(row.id)
    entries = trail.trail(steps)
    out_of_rotation = rotation.rotations(steps)
    if args.json:
        head = {
            "deployment": _row_dict(row),
            "trail": entries,
            "out_of_rotation": {h: r.to_json() for h, r in out_of_rotation.items()},
        }
        print(json.dumps(head, sort_keys=True))
        for step in steps:
            print(json.dumps(step.__dict__, sort_keys=True))
        return 0
    started = _iso(row.started_at)
    print(f"deployment {row.id} of {row.pipeline} ({row.environment}) started {started}")
    print("decision trail:")
    for line in trail.render(entries) or ["(no verdicts yet)"]:
        print(f"  {line}")
    print(f"time out of rotation: {rotation.summary(out_of_rotation)}")
    for host, r in out_of_rotation.items():
        out = f", out since {_iso(r.out_since)}" if r.out_since is not None else ""
        print(f"  {host}: {r.seconds:.2f}s in {r.intervals} interval(s){out}")
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
