"""The plan's timeline: stage ends, window waits and why, and the codec's bake fields."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleetwave.config.alarms import OnInsufficient
from fleetwave.config.pipeline import load_pipeline
from fleetwave.config.windows import Exclusion, MinuteRange, WindowPolicy
from fleetwave.planning.codec import plan_from_dict, plan_to_dict
from fleetwave.planning.planner import plan_pipeline, timeline_of
from fleetwave.planning.timeline import closed_reasons, describe_window

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
NY = WindowPolicy(
    timezone="America/New_York",
    days=frozenset(range(5)),
    hours=(MinuteRange(540, 1020),),
    exclusions=(Exclusion(frozenset({4}), (MinuteRange(720, 1440),)),),
    holiday_country="US",
    holiday_subdivision="VA",
)


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def test_reasons_name_hours_exclusions_days_and_holidays() -> None:
    # Friday 2025-03-07 15:00 UTC = 10:00 EST: open hours, but Friday after 12:00 is cut.
    assert closed_reasons(NY, utc(2025, 3, 7, 18), NY.next_open(utc(2025, 3, 7, 18))) == (
        "no start Fri after 12:00",
        "Sat, Sun closed",
    )
    assert closed_reasons(NY, utc(2025, 3, 11, 23), utc(2025, 3, 12, 13)) == (
        "outside 09:00-17:00",
    )
    # Virginia closes Thanksgiving and the day after, then comes the weekend.
    since = utc(2025, 11, 26, 23)
    until = NY.next_open(since)
    assert until == utc(2025, 12, 1, 14)  # Monday 09:00 EST
    assert closed_reasons(NY, since, until) == (
        "outside 09:00-17:00",
        "holiday Thu 11-27: Thanksgiving Day",
        "holiday Fri 11-28: Day After Thanksgiving",
        "Sat, Sun closed",
    )
    assert describe_window(NY) == "Mon-Fri 09:00-17:00, no start Fri after 12:00"
    assert describe_window(WindowPolicy()) == "always open"


def test_stage_ends_after_its_batches_and_bake_and_waits_carry_the_window() -> None:
    p = load_pipeline(REPO / "examples" / "production" / "app.yaml")
    plan = plan_pipeline(p)
    tl = timeline_of(plan, p, p.topology, utc(2025, 3, 7, 15))
    az = next(s for s in plan.stages() if s.id == "w1/us-east-2/az:us-east-2-az1")
    st = tl.stage(az.id)
    assert (st.rolled - st.start).total_seconds() == 5 * 300  # 23 hosts, 5 out: 5 batches
    assert (st.end - st.rolled).total_seconds() == 3600  # then its 1h bake
    wait = tl.stage("w2/us-west-2/onebox").waits[0]
    assert wait.text() == (
        "window closed in us-west-2 until Tue 09:00 America/Los_Angeles (outside 09:00-17:00)"
    )
    # The engine's plan gets the same starts; the finish is the last wave's bake end.
    scheduled = plan_pipeline(p, p.topology, utc(2025, 3, 7, 15))
    assert [s.earliest_start for s in scheduled.stages()] == [
        tl.stage(s.id).start for s in plan.stages()
    ]
    assert scheduled.earliest_finish == tl.finish == tl.waves[-1].end


def test_codec_keeps_max_bake_and_on_insufficient_and_reads_older_journals() -> None:
    p = load_pipeline(REPO / "examples" / "lab" / "pipeline.yaml")
    plan = plan_pipeline(p)
    stage = plan.waves[0].regions[0].stages[0]
    bake = dataclasses.replace(
        stage.bake, max_bake_s=600.0, on_insufficient=OnInsufficient.ROLLBACK
    )
    wave = plan.waves[0]
    region = dataclasses.replace(
        wave.regions[0], stages=(dataclasses.replace(stage, bake=bake), *wave.regions[0].stages[1:])
    )
    plan = dataclasses.replace(plan, waves=(dataclasses.replace(wave, regions=(region,)),))
    assert plan_from_dict(plan_to_dict(plan)) == plan
    old = plan_to_dict(plan)
    for s in old["waves"][0]["regions"][0]["stages"]:
        del s["bake"]["max_bake_s"], s["bake"]["on_insufficient"]
    first = plan_from_dict(old).stages()[0].bake
    assert first.max_bake_s is None
    assert first.on_insufficient is OnInsufficient.HOLD
