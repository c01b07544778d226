from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave.config.windows import (
    Exclusion,
    MinuteRange,
    WindowPolicy,
    parse_clock,
    parse_days,
    parse_range,
)
from fleetwave.errors import PlanError

pytestmark = pytest.mark.unit

NY = ZoneInfo("America/New_York")
OFFICE = WindowPolicy(
    timezone="America/New_York",
    days=parse_days(["weekdays"]),
    hours=(parse_range("09:00-17:00"),),
    exclusions=(Exclusion(parse_days(["fri"]), (MinuteRange(12 * 60, 24 * 60),)),),
)


def ny(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NY)


def test_friday_afternoon_waits_until_monday_morning():
    friday = ny(2025, 3, 7, 15, 0)
    assert not OFFICE.is_open(friday)
    assert OFFICE.next_open(friday) == ny(2025, 3, 10, 9, 0)


def test_open_instant_is_returned_unchanged():
    t = ny(2025, 3, 6, 10, 30)
    assert OFFICE.is_open(t)
    assert OFFICE.next_open(t) == t


def test_friday_morning_is_open_and_noon_closes():
    assert OFFICE.is_open(ny(2025, 3, 7, 11, 59))
    assert not OFFICE.is_open(ny(2025, 3, 7, 12, 0))


def test_evening_waits_for_next_morning_in_region_zone():
    t = datetime(2025, 3, 4, 23, 0, tzinfo=UTC)  # 18:00 in New York
    assert OFFICE.next_open(t) == ny(2025, 3, 5, 9, 0)


def test_listed_and_country_holidays_are_closed():
    policy = WindowPolicy(
        timezone="America/New_York",
        days=parse_days(["weekdays"]),
        hours=(parse_range("09:00-17:00"),),
        holiday_dates=frozenset({date(2025, 12, 24)}),
        holiday_country="US",
    )
    assert not policy.is_open(ny(2025, 12, 24, 10, 0))
    assert not policy.is_open(ny(2025, 12, 25, 10, 0))  # Christmas, from the calendar
    assert policy.next_open(ny(2025, 12, 24, 10, 0)) == ny(2025, 12, 26, 9, 0)


def test_dst_gap_opens_at_first_real_instant():
    policy = WindowPolicy(timezone="America/New_York", hours=(parse_range("02:30-03:30"),))
    # 2025-03-09 02:30 does not exist in New York; the window opens at 03:00 EDT.
    start = ny(2025, 3, 9, 1, 0)
    opened = policy.next_open(start)
    assert opened.astimezone(NY).hour == 3
    assert policy.is_open(opened)


def test_never_open_policy_is_a_plan_error():
    policy = WindowPolicy(timezone="UTC", days=frozenset())
    with pytest.raises(PlanError, match="does not open"):
        policy.next_open(datetime(2025, 1, 1, tzinfo=UTC))


def test_naive_datetime_is_rejected():
    with pytest.raises(ValueError, match="timezone-aware"):
        OFFICE.is_open(datetime(2025, 1, 1, 10, 0))


@pytest.mark.parametrize("bad", ["9-17", "17:00-09:00", "25:00-26:00", "09:60-10:00", "x"])
def test_bad_ranges(bad):
    with pytest.raises(ValueError, match="invalid"):
        parse_range(bad)


def test_clock_and_days():
    assert parse_clock("24:00") == 1440
    assert parse_days(["weekend", "Monday"]) == frozenset({0, 5, 6})
    with pytest.raises(ValueError, match="invalid day"):
        parse_days(["funday"])


@settings(max_examples=100, deadline=None)
@given(st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 1, 1)))
def test_next_open_is_open_and_never_earlier(naive):
    t = naive.replace(tzinfo=UTC)
    opened = OFFICE.next_open(t)
    assert opened >= t
    assert OFFICE.is_open(opened)
    # Nothing in between was open: sample whole minutes up to the opening (bounded).
    probe = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(200):
        if probe >= opened:
            break
        assert not OFFICE.is_open(probe)
        probe += timedelta(minutes=37)
