"""The gate seam: what the runner consults before a stage starts and while a stage or
wave bakes.

A :class:`Gate` answers a :class:`~fleetwave.rollout.types.Verdict` for a
:class:`BakeTarget`: ``ok``, ``wait`` (not yet), ``hold`` (do not start, do not fail)
or ``fail`` (roll back), with the inputs it rests on (the decision trail). The engine
never sees gates, only their combined verdict.

* blockers: :class:`WindowGate` (a closed window holds), :class:`AlarmBlockerGate`
  (a blocker expression true or unknown, or the rollback alarm in ALARM, holds);
* bakes: :class:`BakeGate` (its time AND its ``min_datapoints`` of data served by the
  new release; ``on_insufficient`` past ``max_bake``), :class:`AnomalyGate` (the
  anomaly detector's latest outcome for the stage must be a pass) and
  :class:`PreprodTestsGate` (pre-production ``tests:`` commands; their exit status
  decides).

An override (``OverrideGranted``) skips the gates of the kinds it names; a skipped
gate still leaves a record in the trail. The alarm and metric I/O sits behind two
small protocols (:class:`AlarmView`, :class:`DatapointCounter`), implemented by the
watcher (``rollout/watching.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from fleetwave.config import alarm_expr
from fleetwave.config.alarm_expr import AlarmState, Truth
from fleetwave.config.alarms import OnInsufficient
from fleetwave.config.pipeline import OverridePolicy
from fleetwave.config.spec import OverrideTarget
from fleetwave.errors import UsageError
from fleetwave.planning.model import BakeRequirement, HostRef, Stage, Wave
from fleetwave.rollout.types import AnomalyOutcome, Target, Verdict

Inputs = tuple[Mapping[str, Any], ...]
DEFAULT_GATE_POLL_S = 10.0
DEFAULT_TEST_TIMEOUT_S = 600.0
_OUTPUT_TAIL = 4000  # bytes of a test's output kept in the journal


@dataclass(frozen=True)
class BakeTarget:
    """What is being gated: a stage (``stage`` set) or the bake after a wave."""

    target: Target
    bake: BakeRequirement
    stage: Stage | None = None
    wave: Wave | None = None

    @property
    def hosts(self) -> tuple[HostRef, ...]:
        if self.stage is not None:
            return self.stage.hosts
        if self.wave is not None:
            return tuple(h for r in self.wave.regions for s in r.stages for h in s.hosts)
        return ()


class Gate(Protocol):
    #: What an override must name to skip this gate (None: never skipped).
    kind: OverrideTarget | None

    async def check(self, target: BakeTarget, window_start: float, now: float) -> Verdict:
        """Judge ``target`` whose bake (or start attempt) began at ``window_start``."""
        ...


class AlwaysClear:
    """The default blocker gate: nothing blocks a stage from starting."""

    kind: OverrideTarget | None = None

    async def check(self, target: BakeTarget, window_start: float, now: float) -> Verdict:
        return Verdict.ok()


class WindowGate:
    """Holds a stage's start while its region's deployment window is closed. Only the
    start: a stage already rolling is never stopped by a window.

    ``is_open(region, t)`` and ``next_open(region, t)`` come from the pipeline's window
    policy; the gate only turns them into a verdict.
    """

    kind: OverrideTarget | None = OverrideTarget.WINDOWS

    def __init__(
        self,
        is_open: Callable[[str, datetime], bool],
        next_open: Callable[[str, datetime], datetime],
    ) -> None:
        self._is_open = is_open
        self._next_open = next_open

    async def check(self, target: BakeTarget, window_start: float, now: float) -> Verdict:
        if target.stage is None:
            return Verdict.ok()
        region = target.stage.region
        t = datetime.fromtimestamp(now, UTC)
        if self._is_open(region, t):
            return Verdict.ok(({"gate": "window", "region": region, "open": True},))
        nxt = self._next_open(region, t)
        record = {"gate": "window", "region": region, "open": False, "next_open": _iso(nxt)}
        return Verdict.hold(
            f"window closed in {region} until {_iso(nxt)}", nxt.timestamp(), (record,)
        )


class AlarmView(Protocol):
    """The latest alarm evaluation in a stage's scope (the watcher)."""

    interval_s: float

    async def states_for(
        self, stage: Stage | None, now: float
    ) -> tuple[Mapping[str, AlarmState], Mapping[str, Mapping[str, Any]]]:
        """Each alarm's state and its evidence record, evaluated for ``stage``."""
        ...


class AlarmBlockerGate:
    """Holds a stage's start while a blocker expression is true *or unknown* (an alarm
    without data never counts as OK), or while the rollback alarm is in ALARM."""

    kind: OverrideTarget | None = OverrideTarget.BLOCKERS

    def __init__(
        self, view: AlarmView, blockers: Sequence[str], rollback_alarm: str | None
    ) -> None:
        self.view = view
        self.blockers = tuple((text, alarm_expr.parse(text)) for text in blockers)
        self.rollback_alarm = rollback_alarm

    async def check(self, target: BakeTarget, window_start: float, now: float) -> Verdict:
        states, evidence = await self.view.states_for(target.stage, now)
        holds: list[str] = []
        used: set[str] = set()
        records: list[Mapping[str, Any]] = []
        for text, expr in self.blockers:
            names = alarm_expr.alarm_names(expr)
            used |= names
            truth = alarm_expr.evaluate_states(
                expr, {n: states.get(n, AlarmState.INSUFFICIENT_DATA) for n in names}
            )
            records.append({"gate": "blocker", "expression": text, "truth": truth.value})
            if truth is Truth.TRUE:
                holds.append(f"blocker {text} is true")
            elif truth is Truth.UNKNOWN:
                holds.append(f"blocker {text} is unknown (no data is never OK)")
        rb = self.rollback_alarm
        if rb is not None:
            used.add(rb)
            state = states.get(rb, AlarmState.INSUFFICIENT_DATA)
            records.append({"gate": "rollback_alarm", "alarm": rb, "state": state.value})
            if state is AlarmState.ALARM:
                holds.append(f"rollback alarm {rb} is in ALARM")
        records += [evidence[n] for n in sorted(used) if n in evidence]
        inputs = tuple(records)
        if holds:
            return Verdict.hold("; ".join(holds), now + self.view.interval_s, inputs)
        return Verdict.ok(inputs)


class DatapointCounter(Protocol):
    """Counts a metric served by one release on some hosts (the watcher)."""

    async def count(
        self, metric: str, hosts: frozenset[str], release: str | None, since: float, now: float
    ) -> float | None:
        """The metric's increase from ``since`` to ``now``; None when unknown."""
        ...


class BakeGate:
    """A bake waits its time AND, when it names a ``metric``, its ``min_datapoints`` of
    that metric served by the new release on the target's hosts. Missing data counts
    as no progress, so a bake never passes on zero traffic. Still short at
    ``max_bake``: ``on_insufficient`` holds (and says so), rolls back or proceeds."""

    kind: OverrideTarget | None = OverrideTarget.BAKES

    def __init__(
        self,
        counter: DatapointCounter | None = None,
        *,
        release: str | None = None,
        poll_s: float = DEFAULT_GATE_POLL_S,
    ) -> None:
        self.counter = counter
        self.release = release
        self.poll_s = poll_s

    async def check(self, target: BakeTarget, window_start: float, now: float) -> Verdict:
        bake = target.bake
        end = window_start + bake.duration_s
        record: dict[str, Any] = {
            "gate": "bake",
            "elapsed_s": round(now - window_start, 3),
            "duration_s": bake.duration_s,
        }
        timed = now >= end
        if not bake.metric or not bake.min_datapoints:
            if timed:
                return Verdict.ok((record,))
            return Verdict.wait(f"baking until {_iso(end)}", end, (record,))
        count = None
        if self.counter is not None:
            hosts = frozenset(h.name for h in target.hosts)
            count = await self.counter.count(bake.metric, hosts, self.release, window_start, now)
        have = int(count or 0)  # missing is no progress, never a pass
        record.update(
            metric=bake.metric,
            datapoints=have,
            min_datapoints=bake.min_datapoints,
            release=self.release,
            missing=count is None,
        )
        counted = have >= bake.min_datapoints
        if timed and counted:
            return Verdict.ok((record,))
        short = f"{have} of {bake.min_datapoints} {bake.metric}"
        overdue = bake.max_bake_s is not None and now >= window_start + bake.max_bake_s
        if overdue and not counted:
            record["max_bake_s"] = bake.max_bake_s
            record["on_insufficient"] = bake.on_insufficient.value
            why = f"max_bake passed with {short} served by {self.release or 'the new release'}"
            if bake.on_insufficient is OnInsufficient.ROLLBACK:
                return Verdict.fail(why, (record,))
            if bake.on_insufficient is OnInsufficient.PROCEED:
                return Verdict.ok((record,))
            return Verdict.hold(f"{why}; holding", now + self.poll_s, (record,))
        retry = now + self.poll_s if timed else min(end, now + self.poll_s)
        return Verdict.wait(f"baking: {short}, until {_iso(end)} at least", retry, (record,))


@dataclass(frozen=True)
class AnomalyReading:
    """The detector's latest answer for one stage, as the watcher keeps it.

    ``idle``: no request at all on any side of the comparison (the new hosts, their
    reference, their own past): there is nothing to judge, which is not a pass.
    """

    stage_id: str
    at: float
    outcome: AnomalyOutcome
    reason: str
    idle: bool = False
    evidence: Mapping[str, Any] = field(default_factory=dict)
    #: The new hosts serve but no old release ever did near them (a first install):
    #: there is no baseline, so detection cannot hold the bake; alarms still watch.
    no_baseline: bool = False


class AnomalyView(Protocol):
    """The anomaly detector's latest outcome per stage (the watcher)."""

    interval_s: float

    def anomaly_for(self, stage_id: str) -> AnomalyReading | None:
        """The latest reading for ``stage_id`` (None: not judged yet)."""
        ...


class AnomalyGate:
    """A stage's bake ends only on the detector's pass. FAIL fails the bake (the
    watcher's ``AnomalyJudged`` usually rolled back already); WAIT (too little data)
    waits, and past ``max_bake`` ``on_insufficient`` decides, exactly as for the
    bake's own data. Two cases do not wait: a stage with no bake at all (time 0 and
    no ``min_datapoints``), and an *idle* stage (no request anywhere in the sample)
    whose bake counts no data: a bake of time alone promises time alone."""

    kind: OverrideTarget | None = OverrideTarget.BAKES

    def __init__(self, view: AnomalyView) -> None:
        self.view = view

    async def check(self, target: BakeTarget, window_start: float, now: float) -> Verdict:
        stage, bake = target.stage, target.bake
        if stage is None:
            return Verdict.ok()
        counts_data = bool(bake.metric and bake.min_datapoints)
        if bake.duration_s <= 0 and not counts_data:
            return Verdict.ok()
        reading = self.view.anomaly_for(stage.id)
        retry = now + self.view.interval_s
        if reading is None:
            record: dict[str, Any] = {"gate": "anomaly", "outcome": None, "stage": stage.id}
            return Verdict.wait("anomaly detection: no verdict yet", retry, (record,))
        record = {
            "gate": "anomaly",
            "stage": stage.id,
            "outcome": reading.outcome.value,
            "at": reading.at,
            "idle": reading.idle,
            "verdict": dict(reading.evidence),
        }
        why = f"anomaly detection: {reading.reason}"
        if reading.outcome is AnomalyOutcome.PASS:
            return Verdict.ok((record,))
        if reading.outcome is AnomalyOutcome.FAIL:
            return Verdict.fail(why, (record,))
        if reading.idle and not counts_data:
            return Verdict.ok((record,))
        if reading.no_baseline and reading.outcome is AnomalyOutcome.WAIT:
            # Waiting would wait forever: nothing will ever be there to compare with.
            # The bake's own time and data (BakeGate) still decide.
            record["no_baseline"] = True
            return Verdict.ok((record,))
        if bake.max_bake_s is not None and now >= window_start + bake.max_bake_s:
            record["max_bake_s"] = bake.max_bake_s
            record["on_insufficient"] = bake.on_insufficient.value
            why = f"max_bake passed, {why}"
            if bake.on_insufficient is OnInsufficient.ROLLBACK:
                return Verdict.fail(why, (record,))
            if bake.on_insufficient is OnInsufficient.PROCEED:
                return Verdict.ok((record,))
            return Verdict.hold(f"{why}; holding", retry, (record,))
        return Verdict.wait(why, retry, (record,))


@dataclass(frozen=True)
class CommandOutcome:
    command: str
    exit_status: int | None  # None: killed at its timeout
    output: str
    duration_s: float


async def run_command(
    command: str, timeout_s: float, env: Mapping[str, str] | None = None
) -> CommandOutcome:
    """Run ``command`` with ``sh -c``; kill it (and its group) at ``timeout_s``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
        status: int | None = proc.returncode
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        out, _ = await proc.communicate()
        status = None
    except asyncio.CancelledError:
        # Cancelled (a stop, the runner's gate deadline): never orphan the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()  # reaped: killed at once, so this does not block
        raise
    text = (out or b"")[-_OUTPUT_TAIL:].decode("utf-8", "replace")
    return CommandOutcome(command, status, text, loop.time() - start)


@dataclass
class PreprodTestsGate:
    """Pre-production ``tests:``: each command runs once per bake, in order, with a
    timeout; a non-zero exit (or the timeout) fails the stage, and the output goes to
    the journal with the verdict. The commands see ``FLEETWAVE_STAGE`` and
    ``FLEETWAVE_HOSTS`` (the stage's host addresses, comma-separated)."""

    timeout_s: float = DEFAULT_TEST_TIMEOUT_S
    runner: Callable[[str, float, Mapping[str, str]], Any] = run_command
    kind: OverrideTarget | None = None
    _done: dict[tuple[str, float], Verdict] = field(default_factory=dict)

    def time_limit_s(self, target: BakeTarget) -> float:
        """The longest a check of ``target`` may take: every test up to its timeout."""
        stage = target.stage
        return self.timeout_s * len(stage.tests) if stage is not None else 0.0

    async def check(self, target: BakeTarget, window_start: float, now: float) -> Verdict:
        stage = target.stage
        if stage is None or not stage.tests:
            return Verdict.ok()
        key = (stage.id, window_start)
        if key in self._done:
            return self._done[key]
        env = {
            "FLEETWAVE_STAGE": stage.id,
            "FLEETWAVE_HOSTS": ",".join(h.address for h in stage.hosts),
        }
        records: list[Mapping[str, Any]] = []
        verdict = None
        for command in stage.tests:
            res: CommandOutcome = await self.runner(command, self.timeout_s, env)
            records.append(
                {
                    "gate": "test",
                    "command": command,
                    "exit_status": res.exit_status,
                    "duration_s": round(res.duration_s, 3),
                    "output": res.output,
                }
            )
            if res.exit_status != 0:
                how = (
                    f"timed out after {self.timeout_s:g}s"
                    if res.exit_status is None
                    else f"exited {res.exit_status}"
                )
                verdict = Verdict.fail(f"test {command!r} {how}", tuple(records))
                break
        verdict = verdict or Verdict.ok(tuple(records))
        self._done[key] = verdict
        return verdict


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """All gates must pass: any fail fails; else any hold holds; else any wait waits.
    The earliest retry time wins (a one-hour bake must not hide a 10 s alarm poll); a
    waiting gate without one means "at the engine's poll interval"."""
    inputs = tuple(r for v in verdicts for r in v.inputs)
    fails = [v for v in verdicts if v.kind == "fail"]
    if fails:
        return Verdict.fail("; ".join(v.reason for v in fails), inputs)
    waits = [v for v in verdicts if v.waits]
    if not waits:
        return Verdict.ok(inputs)
    times = [v.retry_at for v in waits if v.retry_at is not None]
    retry = min(times) if len(times) == len(waits) else None
    why = "; ".join(v.reason for v in waits)
    if any(v.kind == "hold" for v in waits):
        return Verdict.hold(why, retry, inputs)
    return Verdict.wait(why, retry, inputs)


@dataclass(frozen=True)
class Gates:
    """The gates the runner consults: ``blockers`` before a stage, ``bake`` after.
    ``skip`` (an override) leaves out the gates of those kinds, and says so."""

    blockers: tuple[Gate, ...] = (AlwaysClear(),)
    bake: tuple[Gate, ...] = (BakeGate(),)

    async def check_blockers(
        self, target: BakeTarget, now: float, skip: frozenset[OverrideTarget] = frozenset()
    ) -> Verdict:
        return await _check(self.blockers, target, now, now, skip)

    async def check_bake(
        self,
        target: BakeTarget,
        window_start: float,
        now: float,
        skip: frozenset[OverrideTarget] = frozenset(),
    ) -> Verdict:
        return await _check(self.bake, target, window_start, now, skip)

    def bake_time_limit_s(self, target: BakeTarget) -> float:
        """How long the bake gates may take by their own limits (pre-production tests
        run up to their timeout); the runner's gate deadline comes on top of it."""
        return sum(g.time_limit_s(target) for g in self.bake if isinstance(g, PreprodTestsGate))


async def _check(
    gates: Sequence[Gate],
    target: BakeTarget,
    window_start: float,
    now: float,
    skip: frozenset[OverrideTarget],
) -> Verdict:
    verdicts = []
    for g in gates:
        if g.kind is not None and g.kind in skip:
            record = {"gate": g.kind.value, "skipped": "override"}
            verdicts.append(Verdict.ok((record,)))
        else:
            verdicts.append(await g.check(target, window_start, now))
    return combine(verdicts)


# -- the override policy ------------------------------------------------------------------

_OVERRIDE_NAMES = {
    "blocker": OverrideTarget.BLOCKERS,
    "blockers": OverrideTarget.BLOCKERS,
    "bake": OverrideTarget.BAKES,
    "bakes": OverrideTarget.BAKES,
    "window": OverrideTarget.WINDOWS,
    "windows": OverrideTarget.WINDOWS,
}


def check_override(
    policy: OverridePolicy, names: str, reason: str | None, approver: str | None
) -> frozenset[OverrideTarget]:
    """The gates ``--override NAMES`` skips, checked against the pipeline's policy;
    UsageError naming what is refused (nothing is recorded then)."""
    skip: set[OverrideTarget] = set()
    for raw in (n.strip().lower() for n in names.split(",")):
        if not raw:
            continue
        if raw not in _OVERRIDE_NAMES:
            known = "blockers, bake, window"
            raise UsageError(f"--override: unknown gate {raw!r} (known: {known})")
        skip.add(_OVERRIDE_NAMES[raw])
    if not skip:
        raise UsageError("--override: name at least one of blockers, bake, window")
    refused = sorted(t.value for t in skip if not policy.allows(t))
    if refused:
        allowed = ", ".join(sorted(t.value for t in policy.allow)) or "nothing"
        raise UsageError(
            f"--override: the pipeline's override policy does not allow skipping "
            f"{', '.join(refused)} (it allows: {allowed})"
        )
    if policy.require_reason and not (reason or "").strip():
        raise UsageError("--override needs --reason TEXT (the pipeline's override policy)")
    if policy.require_approver and not (approver or "").strip():
        raise UsageError("--override needs --approver NAME (the pipeline's override policy)")
    if policy.approvers and approver not in policy.approvers:
        raise UsageError(
            f"--override: {approver!r} may not approve overrides "
            f"(approvers: {', '.join(policy.approvers)})"
        )
    return frozenset(skip)


def _iso(t: float | datetime) -> str:
    d = t if isinstance(t, datetime) else datetime.fromtimestamp(t, UTC)
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
