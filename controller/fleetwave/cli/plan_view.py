"""What ``fleetwave plan`` prints: a summary line, the checks that run, then per wave a
table of its regions' stages with start and end in UTC and in each region's time zone,
and every wait explained. No line is wider than :data:`WIDTH`.

Pure: a function of the plan, its :class:`~fleetwave.planning.timeline.Timeline`, the
pipeline (for the checks it configures) and the zone of the summary's local time.
``plan_json`` is the same information for ``plan --json``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from fleetwave.config.anomaly import describe
from fleetwave.config.pipeline import Pipeline
from fleetwave.planning.codec import plan_to_dict
from fleetwave.planning.model import BakeRequirement, Plan, RegionPlan, Stage, StageKind, Wave
from fleetwave.planning.planner import window_policy
from fleetwave.planning.timeline import Timeline, Wait, calendar_name, describe_window
from fleetwave_core.durations import format_duration

WIDTH = 100
UTC_NAMES = ("UTC", "Etc/UTC")
#: More holiday calendars than this are counted, not listed (``--json`` lists them).
MAX_CALENDARS_LISTED = 4


@dataclass(frozen=True)
class PlanView:
    plan: Plan
    timeline: Timeline
    pipeline: Pipeline
    here: tzinfo = UTC  # the summary's local time zone (the operator's)
    regions: frozenset[str] = field(default_factory=frozenset)  # empty: every region

    def shows(self, region: RegionPlan) -> bool:
        return (
            not self.regions
            or region.region in self.regions
            or any(s.region in self.regions for s in region.stages)
        )


def known_regions(plan: Plan) -> list[str]:
    """What ``--region`` accepts: every region and pre-production environment."""
    names = [r.region for w in plan.waves for r in w.regions]
    names += [s.region for s in plan.stages()]
    return list(dict.fromkeys(names))


def fold(text: str, indent: str = "", width: int = WIDTH) -> list[str]:
    """``text`` wrapped at spaces to ``width``, continuation lines indented 2 more."""
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=indent,
        subsequent_indent=indent + "  ",
        break_long_words=True,
        break_on_hyphens=False,
    ) or [indent]


def utc(t: datetime) -> str:
    return f"{t.astimezone(UTC):%a %Y-%m-%d %H:%M} UTC"


def local(t: datetime, zone: tzinfo) -> str:
    """``07:20 EDT``, with the day when it is not the UTC day (``Tue 01:20 AEDT``)."""
    here = t.astimezone(zone)
    day = f"{here:%a} " if here.date() != t.astimezone(UTC).date() else ""
    return f"{day}{here:%H:%M} {here.tzname() or zone}"


def bake_text(bake: BakeRequirement) -> str:
    """``bake 1h + 500 requests from the new release (max 3h, then hold)``."""
    text = f"bake {format_duration(bake.duration_s)}"
    if bake.metric and bake.min_datapoints:
        text += f" + {bake.min_datapoints} {bake.metric} (new release)"
        if bake.max_bake_s is not None:
            text += f" (max {format_duration(bake.max_bake_s)}, then {bake.on_insufficient.value})"
    return text


def short_name(stage: Stage, wave: Wave, region: RegionPlan) -> str:
    """``az1`` for ``w1/us-east-2/az:us-east-2-az1``; ``gamma/onebox`` in pre-production."""
    rest = stage.id.removeprefix(f"w{wave.index}/{region.region}/")
    rest = rest.replace("az:", "").replace("cell:", "")
    return rest.replace(f"{stage.region}-", "")


def host_counts(plan: Plan) -> tuple[int, int]:
    """(production hosts, pre-production hosts) of a plan."""
    pre = sum(len(s.hosts) for w in plan.waves if w.index == 0 for s in w.regions[0].stages)
    return len(plan.hosts()) - pre, pre


def summary(view: PlanView) -> str:
    """``orders-app: 1824 hosts (+12 preprod), 6 waves, 104 stages, earliest finish ...``."""
    plan, tl = view.plan, view.timeline
    hosts, _ = host_counts(plan)
    finish = tl.finish.astimezone(UTC)
    return (
        f"{plan.pipeline}: {plural(hosts, 'host')}, {plural(len(plan.waves), 'wave')}, "
        f"{plural(len(plan.stages()), 'stage')}; earliest finish {finish:%a %m-%d %H:%M} UTC "
        f"({local(tl.finish, view.here)})"
    )


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def render_view(view: PlanView) -> str:
    """The whole text of ``fleetwave plan``."""
    lines = [summary(view)]
    lines += _header(view)
    common = _common_policies(view.plan)
    if common:
        lines.append("every wave:")
        lines += common
    for wave in view.plan.waves:
        regions = [r for r in wave.regions if view.shows(r)]
        if regions:
            lines += _wave(view, wave, regions, bool(common))
    for warning in view.plan.warnings:
        lines += fold(f"warning: {warning}")
    return "\n".join(lines) + "\n"


def _header(view: PlanView) -> list[str]:
    p, plan, tl = view.pipeline, view.plan, view.timeline
    out = fold(
        f"start {utc(tl.start)}; {format_duration(tl.batch_estimate_s)} per batch; "
        "stages end with their bake (data can extend it)"
    )
    if view.regions:
        shown = sorted(view.regions)
        total = len(known_regions(plan))
        out += fold(f"showing {', '.join(shown)} of {total} regions and environments")
    checks = "before each stage: its region's time window is open"
    blockers = plan.stages()[0].blockers if plan.stages() else ()
    if p.alarms and blockers:
        checks += f"; blockers neither true nor unknown: {'; '.join(blockers)}"
    if p.alarms and p.rollback_alarm:
        checks += f"; rollback alarm {p.rollback_alarm} not in ALARM"
    out += fold(checks)
    if p.alarms:
        watch = f"alarms every {format_duration(p.watch.interval_s)}"
        if p.post_deploy_watch_s:
            watch += f" (and {format_duration(p.post_deploy_watch_s)} after the end)"
        if p.rollback_alarm:
            watch += f": {p.rollback_alarm} rolls back"
        if p.onebox_alarm:
            watch += f", {p.onebox_alarm} too in one-boxes"
        out += fold(watch)
    out += fold(describe(p.anomaly))
    out += _windows(view)
    return out


def _window_names(view: PlanView) -> list[str]:
    names = [
        s.region for w in view.plan.waves for r in w.regions if view.shows(r) for s in r.stages
    ]
    return list(dict.fromkeys(names))


def _windows(view: PlanView) -> list[str]:
    shapes: dict[str, list[str]] = {}
    calendars: dict[str, list[str]] = {}
    for name in _window_names(view):
        policy = window_policy(view.pipeline, view.pipeline.topology, name)
        shapes.setdefault(describe_window(policy), []).append(name)
        cal = calendar_name(policy)
        if cal:
            calendars.setdefault(cal, []).append(name)
    out: list[str] = []
    if len(shapes) == 1:
        out += fold(f"windows, in each region's time zone: {next(iter(shapes))}")
    else:
        for shape, names in shapes.items():
            out += fold(f"windows: {shape}: {', '.join(names)}")
    if len(calendars) > MAX_CALENDARS_LISTED:
        out += fold(
            f"holidays closed: each region's public holidays ({len(calendars)} calendars of "
            "the holidays package; plan --json names them)"
        )
    elif calendars:
        text = "; ".join(f"{cal} {' '.join(names)}" for cal, names in calendars.items())
        out += fold(f"holidays closed (holidays package): {text}")
    return out


def _common_policies(plan: Plan) -> list[str]:
    """The policy lines every production wave shares (printed once), or []."""
    texts = [
        _policies([s for r in w.regions for s in r.stages], "  ") for w in plan.waves if w.index > 0
    ]
    if len(texts) < 2 or any(t != texts[0] for t in texts):
        return []
    return texts[0]


def _wave(view: PlanView, wave: Wave, regions: Sequence[RegionPlan], common: bool) -> list[str]:
    tl = view.timeline
    stages = [s for r in regions for s in r.stages]
    hosts = sum(len(s.hosts) for s in stages)
    parallel = f"{len(regions)} parallel regions" if len(regions) > 1 else regions[0].region
    times = [tl.stage(s.id) for s in stages]
    first = min((t.start for t in times), default=tl.wave(wave.index).start)
    last = max((t.end for t in times), default=first)
    head = f"wave {wave.index} {wave.name}: {parallel}, {hosts} hosts, {_span(first, last)}"
    if wave.bake_after.duration_s or wave.bake_after.min_datapoints:
        head += f"; then {bake_text(wave.bake_after)}"
    out = fold(head)
    if wave.index == 0 or not common:
        out += _policies(stages, "  ")
    out += _table(view, wave, regions)
    out += _waits(view, wave, regions)
    return out


def _span(first: datetime, last: datetime) -> str:
    a, b = first.astimezone(UTC), last.astimezone(UTC)
    end = f"{b:%H:%M}" if a.date() == b.date() else f"{b:%a %m-%d %H:%M}"
    return f"{a:%a %m-%d %H:%M} -> {end} UTC"


def _range(values: Iterable[int]) -> str:
    vs = sorted(set(values))
    return str(vs[0]) if len(vs) == 1 else f"{vs[0]}-{vs[-1]}"


def _policies(stages: Sequence[Stage], indent: str) -> list[str]:
    """One line per kind of stage: hosts, batching, budget, bake, tests."""
    groups: dict[tuple[Any, ...], list[Stage]] = {}
    for s in stages:
        key = (s.kind, s.bake, s.failure_budget, s.tests, s.region if s.tests else "")
        groups.setdefault(key, []).append(s)
    out: list[str] = []
    for (kind, bake, budget, tests, _), members in groups.items():
        if kind is StageKind.PREPROD:
            label = ", ".join(dict.fromkeys(s.region for s in members))
        else:
            label = {StageKind.ONEBOX: "one-box", StageKind.AZ: "AZ", StageKind.CELL: "cell"}[kind]
        n = _range(len(s.hosts) for s in members)
        text = f"{label}: {n} host{'' if n == '1' else 's'}"
        if any(len(s.hosts) > 1 for s in members):
            text += (
                f", <= {_range(s.batching.max_out for s in members)} out, "
                f">= {_range(s.batching.min_serving for s in members)} serving"
            )
        text += f", budget {budget}, {bake_text(bake)}"
        if tests:
            text += f", tests: {'; '.join(tests)}"
        out += fold(text, indent)
    return out


@dataclass
class _Cells:
    label: list[str] = field(default_factory=list)
    utc: list[str] = field(default_factory=list)
    local: list[str] = field(default_factory=list)


def _cell(start: datetime, end: datetime, zone: tzinfo, prev: list[Any], fmt: str) -> str:
    """``Mon 09:00-10:05``: the day when it changes from the previous cell's end."""
    s, e = start.astimezone(zone), end.astimezone(zone)
    text = f"{s:%a} " if not prev or prev[0] != s.date() else ""
    text += f"{s:{fmt}}-"
    text += f"{e:%a} {e:{fmt}}" if e.date() != s.date() else f"{e:{fmt}}"
    prev[:] = [e.date()]
    return text


def _clock_format(timeline: Timeline) -> str:
    """``%H:%M``, or ``%H:%M:%S`` when some time is not on the minute (seconds-long bakes)."""
    times = [t for st in timeline.stages for t in (st.start, st.end)]
    return "%H:%M:%S" if any(t.second or t.microsecond for t in times) else "%H:%M"


def _table(view: PlanView, wave: Wave, regions: Sequence[RegionPlan]) -> list[str]:
    """Per region: the stage names with their hosts (when they change from the region
    above), then the stages' start-end in UTC and in the region's local time."""
    tl = view.timeline
    fmt = _clock_format(tl)
    blocks: list[tuple[str, str, _Cells]] = []
    # Regions of a wave run in parallel: those of the same shape are shown together.
    shapes: dict[tuple[str, ...], int] = {}
    for region in regions:
        shape = tuple(f"{short_name(s, wave, region)} {len(s.hosts)}" for s in region.stages)
        shapes.setdefault(shape, len(shapes))
    ordered = sorted(
        regions,
        key=lambda r: shapes[tuple(f"{short_name(s, wave, r)} {len(s.hosts)}" for s in r.stages)],
    )
    for region in ordered:
        cells = _Cells()
        prev_utc: list[Any] = []
        prev_local: list[Any] = []
        zones = {tl.stage(s.id).timezone for s in region.stages}
        for s in region.stages:
            st = tl.stage(s.id)
            zone = window_policy(view.pipeline, view.pipeline.topology, s.region).zone
            cells.label.append(f"{short_name(s, wave, region)} {len(s.hosts)}")
            cells.utc.append(_cell(st.start, st.end, UTC, prev_utc, fmt))
            cells.local.append(_cell(st.start, st.end, zone, prev_local, fmt))
        tz = next(iter(zones)) if len(zones) == 1 else "local"
        blocks.append((f"  {region.region} UTC", f"    {tz}", cells))
    left = max((max(len(a), len(b)) for a, b, _ in blocks), default=0) + 1
    out: list[str] = []
    previous: list[str] | None = None
    for utc_label, local_label, cells in blocks:
        chunks = _chunks(cells, WIDTH - left)
        for i, (lo, hi) in enumerate(chunks):
            widths = [
                max(len(cells.label[j]), len(cells.utc[j]), len(cells.local[j]))
                for j in range(lo, hi)
            ]
            if len(chunks) > 1 or cells.label != previous:
                out.append(_row("", cells.label[lo:hi], widths, left))
            out.append(_row(utc_label if i == 0 else "", cells.utc[lo:hi], widths, left))
            if local_label.strip() not in UTC_NAMES:  # a region in UTC needs no second row
                out.append(_row(local_label if i == 0 else "", cells.local[lo:hi], widths, left))
        previous = cells.label
    return out


def _chunks(cells: _Cells, room: int) -> list[tuple[int, int]]:
    """Column ranges that each fit in ``room`` characters (at least one column each)."""
    out: list[tuple[int, int]] = []
    lo, used = 0, 0
    for j in range(len(cells.label)):
        w = max(len(cells.label[j]), len(cells.utc[j]), len(cells.local[j])) + 1
        if j > lo and used + w > room:
            out.append((lo, j))
            lo, used = j, 0
        used += w
    out.append((lo, len(cells.label)))
    return out


def _row(label: str, cells: Sequence[str], widths: Sequence[int], left: int) -> str:
    body = " ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
    return (label.ljust(left) + body).rstrip()


def _waits(view: PlanView, wave: Wave, regions: Sequence[RegionPlan]) -> list[str]:
    """Each window wait; the same wait (stage, local time, reasons) in several regions
    is one line."""
    groups: dict[tuple[str, str, tuple[str, ...]], list[Wait]] = {}
    for region in regions:
        for s in region.stages:
            for w in view.timeline.stage(s.id).waits:
                zone = window_policy(view.pipeline, view.pipeline.topology, w.region).zone
                key = (
                    short_name(s, wave, region),
                    f"{w.until.astimezone(zone):%a %H:%M}",
                    w.reasons,
                )
                groups.setdefault(key, []).append(w)
    out: list[str] = []
    for (name, when, reasons), waits in groups.items():
        if len(waits) == 1:
            text = waits[0].text()
        else:
            why = f" ({'; '.join(reasons)})" if reasons else ""
            where = ", ".join(w.region for w in waits)
            text = f"window closed in {where} until {when} local time{why}"
        out += fold(f"{name} waits: {text}", "  ")
    return out


# -- plan --json ---------------------------------------------------------------------------


def plan_json(view: PlanView) -> dict[str, Any]:
    """``plan --json``: the codec's plan (decodable by ``plan_from_dict``) plus the
    summary, the timeline (UTC and local), the waits, the checks and anomaly settings."""
    plan, tl, p = view.plan, view.timeline, view.pipeline
    doc = plan_to_dict(plan)
    if view.regions:
        for w in doc["waves"]:
            w["regions"] = [
                r
                for r, rp in zip(w["regions"], _wave_of(plan, w["index"]).regions, strict=True)
                if view.shows(rp)
            ]
        doc["waves"] = [w for w in doc["waves"] if w["regions"]]
        doc["regions_shown"] = sorted(view.regions)
    shown = {s["id"] for w in doc["waves"] for r in w["regions"] for s in r["stages"]}
    stages = []
    for st in tl.stages:
        if st.stage_id not in shown:
            continue
        zone = window_policy(p, p.topology, _stage(plan, st.stage_id).region).zone
        stages.append(
            {
                "id": st.stage_id,
                "timezone": st.timezone,
                "ready": st.ready.isoformat(),
                "start": st.start.isoformat(),
                "rolled_out": st.rolled.isoformat(),
                "end": st.end.isoformat(),
                "start_local": st.start.astimezone(zone).isoformat(),
                "end_local": st.end.astimezone(zone).isoformat(),
                "waits": [w.to_json() for w in st.waits],
            }
        )
    doc["summary"] = {
        "hosts": len(plan.hosts()),
        "waves": len(plan.waves),
        "stages": len(plan.stages()),
        "start": tl.start.isoformat(),
        "earliest_finish": tl.finish.isoformat(),
        "earliest_finish_local": tl.finish.astimezone(view.here).isoformat(),
        "text": summary(view),
    }
    doc["timeline"] = {
        "batch_estimate_s": tl.batch_estimate_s,
        "stages": stages,
        "waves": [
            {
                "index": w.index,
                "start": w.start.isoformat(),
                "rolled_out": w.rolled.isoformat(),
                "end": w.end.isoformat(),
            }
            for w in tl.waves
        ],
    }
    doc["checks"] = _checks_json(view)
    doc["anomaly"] = p.anomaly.to_json()
    return doc


def _wave_of(plan: Plan, index: int) -> Wave:
    return next(w for w in plan.waves if w.index == index)


def _stage(plan: Plan, stage_id: str) -> Stage:
    return next(s for s in plan.stages() if s.id == stage_id)


def _checks_json(view: PlanView) -> dict[str, Any]:
    p = view.pipeline
    windows = {}
    for name in _window_names(view):
        policy = window_policy(p, p.topology, name)
        windows[name] = {
            "timezone": policy.timezone,
            "shape": describe_window(policy),
            "holidays": calendar_name(policy),
        }
    blockers = view.plan.stages()[0].blockers if view.plan.stages() else ()
    return {
        "windows": windows,
        "blockers": list(blockers) if p.alarms else [],
        "rollback_alarm": p.rollback_alarm,
        "onebox_alarm": p.onebox_alarm,
        "alarms": sorted(p.alarms),
        "watch_interval_s": p.watch.interval_s,
        "watch_source": p.watch.source,
        "post_deploy_watch_s": p.post_deploy_watch_s,
    }


def only(view: PlanView, regions: Collection[str]) -> PlanView:
    """``view`` limited to ``regions`` (names already checked)."""
    return PlanView(view.plan, view.timeline, view.pipeline, view.here, frozenset(regions))
