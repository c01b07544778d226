"""Deployment time windows, evaluated in a region's own time zone.

A :class:`WindowPolicy` says on which weekdays and at which local hours a stage may
start, which slices are excluded (``Friday after 12:00``), and which dates are holidays
(listed dates and/or a country calendar from the ``holidays`` package). Everything here
is a pure function of explicit, timezone-aware datetimes; nothing reads the clock.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays as holidays_lib

from fleetwave.errors import PlanError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_MINUTES = 24 * 60
#: How far ahead next_open() looks before declaring the policy never opens.
SEARCH_DAYS = 400


@dataclass(frozen=True)
class MinuteRange:
    """``[start, end)`` in minutes after local midnight; ``end`` may be 1440."""

    start: int
    end: int


@dataclass(frozen=True)
class Exclusion:
    days: frozenset[int]  # 0 = Monday
    hours: tuple[MinuteRange, ...]


ALWAYS = (MinuteRange(0, DAY_MINUTES),)


@dataclass(frozen=True)
class WindowPolicy:
    """When stages may start. The default instance is open 24/7 in UTC."""

    timezone: str = "UTC"
    days: frozenset[int] = frozenset(range(7))
    hours: tuple[MinuteRange, ...] = ALWAYS
    exclusions: tuple[Exclusion, ...] = ()
    holiday_dates: frozenset[date] = frozenset()
    holiday_country: str | None = None
    holiday_subdivision: str | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def always_open(self) -> bool:
        """True when nothing ever closes the window."""
        return (
            len(self.days) == 7
            and self.hours == ALWAYS
            and not self.exclusions
            and not self.holiday_dates
            and self.holiday_country is None
        )

    def is_holiday(self, day: date) -> bool:
        """Whether ``day`` (a local date) is a listed or calendar holiday."""
        if day in self.holiday_dates:
            return True
        if self.holiday_country is None:
            return False
        return day in country_holidays(self.holiday_country, self.holiday_subdivision, day.year)

    def open_ranges(self, day: date) -> list[MinuteRange]:
        """The open minute ranges of local date ``day``, sorted and disjoint."""
        if day.weekday() not in self.days or self.is_holiday(day):
            return []
        ranges = sorted(self.hours, key=lambda r: r.start)
        for exclusion in self.exclusions:
            if day.weekday() in exclusion.days:
                for cut in exclusion.hours:
                    ranges = _subtract(ranges, cut)
        return _coalesce(ranges)

    def is_open(self, t: datetime) -> bool:
        """Whether a stage may start at ``t`` (timezone-aware)."""
        local = _local(t, self.zone)
        minute = local.hour * 60 + local.minute
        return any(r.start <= minute < r.end for r in self.open_ranges(local.date()))

    def next_open(self, t: datetime) -> datetime:
        """``t`` itself when open, else the first later instant the window opens (UTC).

        Raises PlanError when the policy does not open within SEARCH_DAYS days.
        """
        if self.always_open():
            return t
        zone = self.zone
        local = _local(t, zone)
        minute = local.hour * 60 + local.minute
        day = local.date()
        for offset in range(SEARCH_DAYS):
            current = day + timedelta(days=offset)
            for r in self.open_ranges(current):
                if offset == 0 and r.end <= minute:
                    continue
                if offset == 0 and r.start <= minute:
                    return t
                return _instant(current, r.start, zone)
        raise PlanError(
            f"time window in {self.timezone} does not open within {SEARCH_DAYS} days of "
            f"{t.isoformat()}"
        )


def _local(t: datetime, zone: ZoneInfo) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"window checks need a timezone-aware datetime, got {t.isoformat()}")
    return t.astimezone(zone)


def _instant(day: date, minute: int, zone: ZoneInfo) -> datetime:
    if minute >= DAY_MINUTES:
        return _instant(day + timedelta(days=1), minute - DAY_MINUTES, zone)
    naive = datetime.combine(day, time(minute // 60, minute % 60))
    wall = naive.replace(tzinfo=zone)
    instant = wall.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == naive:
        return instant
    # The wall time falls in a DST gap and does not exist. The window opens at the
    # first real instant whose local reading is at or after it: the transition. The
    # two fold readings bracket it; step through that bracket (at most the gap's size).
    low, high = sorted((wall.replace(fold=1).astimezone(UTC), instant))
    probe = low
    while probe < high and probe.astimezone(zone).replace(tzinfo=None) < naive:
        probe += timedelta(minutes=1)
    return probe


def _subtract(ranges: list[MinuteRange], cut: MinuteRange) -> list[MinuteRange]:
    out: list[MinuteRange] = []
    for r in ranges:
        if cut.end <= r.start or cut.start >= r.end:
            out.append(r)
            continue
        if r.start < cut.start:
            out.append(MinuteRange(r.start, cut.start))
        if cut.end < r.end:
            out.append(MinuteRange(cut.end, r.end))
    return out


def _coalesce(ranges: list[MinuteRange]) -> list[MinuteRange]:
    out: list[MinuteRange] = []
    for r in sorted(ranges, key=lambda r: r.start):
        if out and r.start <= out[-1].end:
            out[-1] = MinuteRange(out[-1].start, max(out[-1].end, r.end))
        else:
            out.append(r)
    return out


@functools.lru_cache(maxsize=256)
def country_holidays(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    """The public holidays of ``country`` (ISO code) in ``year``. Raises ValueError for
    an unknown country or subdivision."""
    try:
        calendar = holidays_lib.country_holidays(country, subdiv=subdivision, years=year)
    except NotImplementedError as exc:
        raise ValueError(str(exc)) from None
    return frozenset(calendar.keys())


def parse_clock(text: str) -> int:
    """``"09:30"`` -> 570 minutes; ``"24:00"`` is allowed as the end of the day."""
    parts = text.strip().split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"invalid time {text!r}: expected HH:MM")
    hour, minute = int(parts[0]), int(parts[1])
    if minute > 59 or hour > 24 or (hour == 24 and minute):
        raise ValueError(f"invalid time {text!r}: expected 00:00..24:00")
    return hour * 60 + minute


def parse_range(text: str) -> MinuteRange:
    """``"09:00-17:00"`` -> MinuteRange(540, 1020). Overnight ranges must be split."""
    if text.count("-") != 1:
        raise ValueError(f"invalid hours {text!r}: expected HH:MM-HH:MM")
    start_text, end_text = text.split("-")
    start, end = parse_clock(start_text), parse_clock(end_text)
    if end <= start:
        raise ValueError(
            f"invalid hours {text!r}: the end must be after the start "
            "(split an overnight range into two, e.g. 22:00-24:00 and 00:00-06:00)"
        )
    return MinuteRange(start, end)


def parse_days(names: list[str]) -> frozenset[int]:
    """Weekday names (``mon``..``sun``, or ``weekdays``/``weekend``/``all``) -> indices."""
    out: set[int] = set()
    for name in names:
        key = str(name).strip().lower()
        if key in _GROUPS:
            out.update(_GROUPS[key])
        elif key in WEEKDAYS or key in _FULL_NAMES:
            out.add(WEEKDAYS.index(key[:3]))
        else:
            raise ValueError(
                f"invalid day {name!r}: use mon, tue, wed, thu, fri, sat, sun, "
                "weekdays, weekend or all"
            )
    return frozenset(out)


_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_GROUPS = {"weekdays": range(5), "weekend": range(5, 7), "all": range(7)}
