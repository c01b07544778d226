"""The plan's estimated timeline: when each stage starts and ends, and why it waits.

A pure function of a :class:`~fleetwave.planning.model.Plan`, the window policy of
each region (the same ``WindowPolicy`` objects the run-time ``WindowGate`` asks), a
start time and the batch estimate. The timeline is what ``fleetwave plan`` shows; it
is kept apart from the plan that ``deploy`` executes, so an estimate never becomes a
start time the engine waits for.

Rules (the planner's, ``planner.py``): a stage starts at the first instant its region's
window is open once the stage before it ended; it lasts ``ceil(n / max_out) *
batch_estimate`` and then its bake. Regions of a wave run in parallel; the next wave is
ready once the slowest region ended and the wave's own bake passed. A stage that is
ready while its window is closed gets a :class:`Wait` saying until when and why.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import holidays as holidays_lib

from fleetwave.config.windows import ALWAYS, DAY_MINUTES, WEEKDAYS, MinuteRange, WindowPolicy
from fleetwave.planning.model import Plan, Stage

#: At most this many local days are classified when explaining one closed window.
EXPLAIN_DAYS = 31


@dataclass(frozen=True)
class Wait:
    """A stage ready at ``since`` whose region's window stays closed until ``until``."""

    region: str
    timezone: str
    since: datetime
    until: datetime
    reasons: tuple[str, ...]  # why it is closed, in order: hours, exclusions, days, holidays

    def text(self) -> str:
        """``window closed in us-east-1 until Mon 09:00 America/New_York (weekend)``."""
        local = self.until.astimezone(WindowPolicy(self.timezone).zone)
        why = f" ({'; '.join(self.reasons)})" if self.reasons else ""
        return f"window closed in {self.region} until {local:%a %H:%M} {self.timezone}{why}"

    def to_json(self) -> dict[str, object]:
        return {
            "kind": "window",
            "region": self.region,
            "timezone": self.timezone,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "until_local": self.until.astimezone(WindowPolicy(self.timezone).zone).isoformat(),
            "reasons": list(self.reasons),
            "text": self.text(),
        }


@dataclass(frozen=True)
class StageTime:
    """One stage's estimate: ready, start (window open), rolled out, end (bake done)."""

    stage_id: str
    timezone: str
    ready: datetime
    start: datetime
    rolled: datetime
    end: datetime
    waits: tuple[Wait, ...] = ()


@dataclass(frozen=True)
class WaveTime:
    """A wave's estimate: its regions start at ``start``; ``rolled`` when the slowest
    region ended; ``end`` after the wave's bake, when the next wave may start."""

    index: int
    start: datetime
    rolled: datetime
    end: datetime


@dataclass(frozen=True)
class Timeline:
    start: datetime
    finish: datetime
    batch_estimate_s: float
    stages: tuple[StageTime, ...]
    waves: tuple[WaveTime, ...]

    @functools.cached_property
    def _by_id(self) -> dict[str, StageTime]:
        return {st.stage_id: st for st in self.stages}

    def stage(self, stage_id: str) -> StageTime:
        """The estimate of one stage; KeyError for an id the plan does not have."""
        return self._by_id[stage_id]

    def wave(self, index: int) -> WaveTime:
        for wt in self.waves:
            if wt.index == index:
                return wt
        raise KeyError(index)


def stage_duration_s(stage: Stage, batch_estimate_s: float) -> float:
    """Estimated run time of a stage: its batches at ``batch_estimate_s`` each, then its bake."""
    return rollout_s(stage, batch_estimate_s) + stage.bake.duration_s


def rollout_s(stage: Stage, batch_estimate_s: float) -> float:
    """Estimated time to roll a stage's hosts out, before its bake."""
    return math.ceil(len(stage.hosts) / stage.batching.max_out) * batch_estimate_s


def build_timeline(
    plan: Plan,
    windows: Callable[[str], WindowPolicy],
    start: datetime,
    batch_estimate_s: float,
) -> Timeline:
    """Estimate every stage of ``plan`` from ``start`` (timezone-aware).

    ``windows(region)`` is the window policy of a region or pre-production environment.
    Raises PlanError (from ``WindowPolicy.next_open``) for a window that never opens.
    """
    t = start
    stages: list[StageTime] = []
    waves: list[WaveTime] = []
    for wave in plan.waves:
        ends: list[datetime] = []
        for region in wave.regions:
            rt = t
            for stage in region.stages:
                policy = windows(stage.region)
                begin = policy.next_open(rt)
                waits: tuple[Wait, ...] = ()
                if begin > rt:
                    reasons = closed_reasons(policy, rt, begin)
                    waits = (Wait(stage.region, policy.timezone, rt, begin, reasons),)
                rolled = begin + timedelta(seconds=rollout_s(stage, batch_estimate_s))
                end = rolled + timedelta(seconds=stage.bake.duration_s)
                stages.append(StageTime(stage.id, policy.timezone, rt, begin, rolled, end, waits))
                rt = end
            ends.append(rt)
        rolled_all = max(ends, default=t)
        end_all = rolled_all + timedelta(seconds=wave.bake_after.duration_s)
        waves.append(WaveTime(wave.index, t, rolled_all, end_all))
        t = end_all
    return Timeline(start, t, batch_estimate_s, tuple(stages), tuple(waves))


# -- why a window is closed ---------------------------------------------------------------


def clock(minute: int) -> str:
    """570 -> ``09:30``; 1440 -> ``24:00``."""
    return f"{minute // 60:02d}:{minute % 60:02d}"


def span(r: MinuteRange) -> str:
    """``09:00-17:00``, ``after 12:00`` (to midnight), ``before 06:00`` (from midnight)."""
    if r.end >= DAY_MINUTES and r.start > 0:
        return f"after {clock(r.start)}"
    if r.start == 0 and r.end < DAY_MINUTES:
        return f"before {clock(r.end)}"
    return f"{clock(r.start)}-{clock(r.end)}"


def day_names(days: frozenset[int]) -> str:
    """{0..4} -> ``Mon-Fri``; {5, 6} -> ``Sat-Sun``; {0, 2} -> ``Mon, Wed``."""
    ordered = sorted(days)
    if not ordered:
        return "no day"
    if len(ordered) == 7:
        return "every day"
    if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 2:
        return f"{WEEKDAYS[ordered[0]].title()}-{WEEKDAYS[ordered[-1]].title()}"
    return ", ".join(WEEKDAYS[d].title() for d in ordered)


@functools.lru_cache(maxsize=256)
def _calendar(country: str, subdivision: str | None, year: int) -> dict[date, str]:
    calendar = holidays_lib.country_holidays(country, subdiv=subdivision, years=year)
    return {d: str(name) for d, name in calendar.items()}


def holiday_name(policy: WindowPolicy, day: date) -> str | None:
    """The name of the holiday that closes local date ``day``, or None."""
    if day in policy.holiday_dates:
        return "listed date"
    if policy.holiday_country is None or not policy.is_holiday(day):
        return None
    return _calendar(policy.holiday_country, policy.holiday_subdivision, day.year).get(day)


def calendar_name(policy: WindowPolicy) -> str | None:
    """``US-VA``, ``IE``, ``+3 dates``, or None when no holiday closes the window."""
    parts = []
    if policy.holiday_country:
        sub = f"-{policy.holiday_subdivision}" if policy.holiday_subdivision else ""
        parts.append(f"{policy.holiday_country}{sub}")
    if policy.holiday_dates:
        parts.append(f"{len(policy.holiday_dates)} listed date(s)")
    return " + ".join(parts) or None


def describe_window(policy: WindowPolicy) -> str:
    """The weekly shape of a window, without time zone and holidays:
    ``Mon-Fri 09:00-17:00, no start Fri after 12:00``."""
    if policy.always_open() or (len(policy.days) == 7 and policy.hours == ALWAYS):
        text = "always open"
    else:
        hours = ", ".join(span(r) for r in policy.hours)
        text = f"{day_names(policy.days)} {hours}"
    cuts = [f"{day_names(e.days)} {span(r)}" for e in policy.exclusions for r in e.hours]
    if cuts:
        text += f", no start {'; '.join(cuts)}"
    return text


def closed_reasons(policy: WindowPolicy, since: datetime, until: datetime) -> tuple[str, ...]:
    """Why ``policy`` is closed from ``since`` until it opens at ``until``, day by local
    day: the hours (``outside 09:00-17:00``), an exclusion (``no start Fri after 12:00``),
    closed weekdays (``Sat, Sun closed``) and holidays (``holiday Mon 03-17: St.
    Patrick's Day``). Only the first EXPLAIN_DAYS days are classified."""
    zone = policy.zone
    first, last = since.astimezone(zone), until.astimezone(zone)
    reasons: list[str] = []
    closed_days: list[int] = []
    day = first.date()
    for _ in range(EXPLAIN_DAYS):
        if day > last.date():
            break
        name = holiday_name(policy, day)
        if name is not None:
            reasons.append(f"holiday {day:%a %m-%d}: {name}")
        elif day.weekday() not in policy.days:
            if day.weekday() not in closed_days:
                closed_days.append(day.weekday())
        elif day == first.date():
            reasons.extend(_same_day(policy, day, first.hour * 60 + first.minute))
        day += timedelta(days=1)
    if closed_days:
        reasons.append(f"{', '.join(WEEKDAYS[d].title() for d in closed_days)} closed")
    if not reasons and first.date() != last.date():
        reasons.append(f"outside {', '.join(span(r) for r in policy.hours)}")
    return tuple(dict.fromkeys(reasons))


def _same_day(policy: WindowPolicy, day: date, minute: int) -> list[str]:
    """Why an open weekday is closed at ``minute``: an exclusion, or outside the hours."""
    out: list[str] = []
    in_hours = any(r.start <= minute < r.end for r in policy.hours)
    if in_hours:
        for exclusion in policy.exclusions:
            if day.weekday() in exclusion.days:
                for cut in exclusion.hours:
                    if cut.start <= minute < cut.end:
                        out.append(f"no start {WEEKDAYS[day.weekday()].title()} {span(cut)}")
    if not in_hours or not out:
        out.append(f"outside {', '.join(span(r) for r in policy.hours)}")
    return out
