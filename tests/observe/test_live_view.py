"""The live view rendered to a fixed-width rich Console with a fake clock: what each
frame says, that it fits the width without wrapping, and the final frame."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from rich.cells import cell_len
from rich.console import Console

from fleetwave.observe.events import DeploymentChanged, GateVerdict, StageChanged
from fleetwave.observe.live_model import LiveModel, Snapshot, StageStatus
from fleetwave.observe.live_view import LiveView, bake_text, duration, render
from fleetwave.planning.model import Plan, RegionPlan, Wave
from fleetwave.rollout import Result
from tests.observe import scenario as sc

pytestmark = pytest.mark.unit


def _model_at(name: str) -> tuple[LiveModel, float]:
    s = sc.script()
    t = s.checkpoints[name]
    model = LiveModel(s.plan)
    for event in sc.upto(s, t):
        model.apply(event)
    return model, t


def _lines(snap: Snapshot, width: int, height: int | None = 40) -> list[str]:
    console = Console(width=width, height=40, file=io.StringIO(), color_system=None)
    console.print(render(snap, height=None if snap.finished else height))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in out.splitlines()]


def _row(lines: list[str], stage: str) -> str:
    return next(line for line in lines if line.startswith(stage))


def test_bake_counts_down_at_render_time_with_its_data_count() -> None:
    model, t = _model_at("baking")
    row = _row(_lines(model.snapshot(t), 200), "w1/us-east-1/onebox ")
    assert "baking" in row
    assert row.endswith("bake 8m42s left, 63/100 requests")
    # no new event: a later redraw alone moves the countdown and the elapsed time
    later = _lines(model.snapshot(t + 60), 200)
    assert _row(later, "w1/us-east-1/onebox ").endswith("bake 7m42s left, 63/100 requests")
    assert "elapsed 2m40s" in later[0]


def test_bake_without_a_verdict_yet_counts_from_the_stage_change() -> None:
    s = sc.script()
    model = LiveModel(s.plan)
    one = "w1/us-east-1/onebox"
    for event in s.events:
        if isinstance(event, StageChanged) and event.stage == one and event.phase == "baking":
            model.apply(event)
            break
        model.apply(event)
    row = _row(_lines(model.snapshot(sc.T0 + 22 + 100), 200), one + " ")
    assert row.endswith("bake 8m20s left, ?/100 requests")


def test_header_has_elapsed_and_an_eta_from_finished_hosts() -> None:
    model, t = _model_at("baking")
    header = _lines(model.snapshot(t), 200)[0]
    assert header.startswith(f"deployment {sc.DEP}  running  elapsed 1m40s")
    # one host took 20 s. us-east-1: 522 s of bake, then 2 batches of 20 s and a
    # 600 s bake; eu-west-1 (the longer region): 2 x (20 + 600); then the wave's
    # 1800 s bake; wave 2: 20 + 600 + 2 x 20 + 600 + 1800. Total 6100 s.
    assert model.snapshot(t).eta_s == pytest.approx(6100.0)
    assert header.endswith("ETA ~1h42m")


def test_eta_is_unknown_before_the_first_host_finishes() -> None:
    s = sc.script()
    model = LiveModel(s.plan)
    for event in sc.upto(s, sc.T0 + 10):
        model.apply(event)
    assert model.snapshot(sc.T0 + 10).eta_s is None
    assert _lines(model.snapshot(sc.T0 + 10), 200)[0].endswith("ETA -")


def test_frame_says_what_the_deployment_waits_for_and_the_alarm_states() -> None:
    model, t = _model_at("baking")
    lines = _lines(model.snapshot(t), 200)
    assert "held" in _row(lines, "w1/eu-west-1/onebox ")
    assert any(
        line.startswith("waiting: w1/eu-west-1/onebox: hold: window closed in eu-west-1")
        for line in lines
    )
    assert (
        "alarms: 1 ALARM, 1 INSUFFICIENT_DATA, 1 OK (orders-latency@w1/us-east-1/onebox)" in lines
    )
    assert "onebox alarm orders-onebox: OK: onebox within baseline" in lines


def test_rolling_shows_hosts_done_in_flight_and_failed() -> None:
    model, t = _model_at("rolling")
    lines = _lines(model.snapshot(t), 200)
    assert lines[1] == "hosts: 2/10 done, 2 in flight"
    assert _row(lines, "w1/us-east-1/az:use1-az1 ").split()[1:4] == ["rolling", "1/4", "1"]
    model, t = _model_at("rolling_back")
    lines = _lines(model.snapshot(t), 200)
    assert "failed steps: 1" in lines
    assert "  use1-c: install: RemoteAgentError: boom" in lines
    assert "rolling back" in _row(lines, "w1/us-east-1/onebox ")


@pytest.mark.parametrize("width", [40, 80, 100, 200])
@pytest.mark.parametrize("name", ["baking", "rolling", "rolling_back", "end"])
def test_every_line_fits_the_width_and_nothing_wraps(width: int, name: str) -> None:
    model, t = _model_at(name)
    snap = model.snapshot(t)
    lines = _lines(snap, width)
    assert all(cell_len(line) <= width for line in lines), lines
    # a wrapped line would add a line: narrow frames have as many as the widest one
    assert len(lines) == len(_lines(snap, 1000))
    if width == 40 or name == "baking":  # the window's reason is wider than 200
        assert any(line.endswith("…") for line in lines)  # long text was cut


def test_final_frame_shows_how_every_stage_ended_and_the_summary() -> None:
    model, t = _model_at("end")
    snap = model.snapshot(t)
    statuses = {row.id: row.status for row in snap.stages}
    assert statuses == {
        "w1/us-east-1/onebox": StageStatus.ROLLED_BACK,
        "w1/us-east-1/az:use1-az1": StageStatus.ROLLED_BACK,
        "w1/eu-west-1/onebox": StageStatus.ROLLED_BACK,
        "w1/eu-west-1/az:euw1-az1": StageStatus.NOT_STARTED,
        "w2/ap-southeast-2/onebox": StageStatus.NOT_STARTED,
        "w2/ap-southeast-2/cell:apse2-cell-1": StageStatus.NOT_STARTED,
    }
    lines = _lines(snap, 200)
    assert not any(" rolling " in f" {line} " or "baking" in line for line in lines)
    assert lines[0] == f"deployment {sc.DEP}  finished: rolled_back  elapsed 11m30s"
    assert lines[-1] == f"deployment {sc.DEP}: rolled_back in 11m30s: 0/10 done, 4 rolled back"
    assert elapsed_is_frozen(model, t)


def elapsed_is_frozen(model: LiveModel, t: float) -> bool:
    return model.snapshot(t + 3600).elapsed_s == model.snapshot(t).elapsed_s


def test_a_stage_cut_short_by_the_end_is_stopped_never_rolling() -> None:
    s = sc.script()
    model = LiveModel(s.plan)
    for event in sc.upto(s, s.checkpoints["rolling"]):
        model.apply(event)
    model.apply(DeploymentChanged(sc.DEP, sc.T0 + 700, "finished", Result.SUCCEEDED_WITH_FAILURES))
    snap = model.snapshot(sc.T0 + 700)
    statuses = {row.id: row.status for row in snap.stages}
    assert statuses["w1/us-east-1/az:use1-az1"] is StageStatus.STOPPED
    assert statuses["w1/us-east-1/onebox"] is StageStatus.DONE
    assert not any(row.status.active for row in snap.stages)
    lines = _lines(snap, 80)
    assert not any("rolling" in line for line in lines)
    assert "took 1m17s" in _row(lines, "w1/us-east-1/az:use1-az1 ")  # 623 to 700


def _big_plan(copies: int) -> Plan:
    base = sc.plan()
    regions = []
    for i in range(copies):
        for r in base.waves[0].regions:
            stages = tuple(replace(st, id=f"{st.id}-{i}") for st in r.stages)
            regions.append(RegionPlan(f"{r.region}-{i}", stages))
    return Plan("big", "big", (Wave(1, "wave1", tuple(regions)),))


def test_live_frame_fits_the_height_and_keeps_active_stages() -> None:
    plan = _big_plan(20)  # 80 stages
    model = LiveModel(plan)
    active = plan.stages()[50].id
    model.apply(DeploymentChanged(sc.DEP, sc.T0, "running"))
    model.apply(StageChanged(sc.DEP, sc.T0, active, "rolling"))
    for st in plan.stages()[:10]:
        model.apply(StageChanged(sc.DEP, sc.T0, st.id, "done"))
    for st in plan.stages()[20:40]:  # 20 stages held by a closed window
        model.apply(GateVerdict(sc.DEP, sc.T0, st.id, "blockers", "hold", sc.WINDOW_REASON))
        model.apply(StageChanged(sc.DEP, sc.T0, st.id, "held"))
    lines = _lines(model.snapshot(sc.T0 + 5), 80, height=30)
    assert len(lines) <= 30
    waiting = [line for line in lines if line.startswith("waiting: ")]
    assert 1 < len(waiting) < 20
    assert waiting[-1] == f"waiting: ... and {20 - len(waiting) + 1} more"
    assert any(line.startswith(active + " ") for line in lines)
    assert any(line.startswith("... ") and "more stages" in line for line in lines)
    # the final frame lists every stage
    model.apply(DeploymentChanged(sc.DEP, sc.T0 + 9, "finished", Result.SUCCEEDED))
    final = _lines(model.snapshot(sc.T0 + 9), 80)
    assert sum(line.startswith("w1/") for line in final) == 80


def test_bake_verdict_hold_is_a_wait_and_ok_clears_it() -> None:
    model, t = _model_at("baking")
    one = "w1/us-east-1/onebox"
    hold = sc.bake_verdict(t, one, 700.0, 80, "hold")
    model.apply(replace(hold, reason="max_bake passed with 80 of 100 requests; holding"))
    waits = model.snapshot(t).waiting
    assert [(w.target, w.verdict) for w in waits] == [
        ("w1/eu-west-1/onebox", "hold"),
        (one, "hold"),
    ]
    model.apply(GateVerdict(sc.DEP, t + 1, "w1/eu-west-1/onebox", "blockers", "ok", ""))
    model.apply(sc.bake_verdict(t + 1, one, 701.0, 120, "ok"))
    assert model.snapshot(t + 1).waiting == ()


def test_wave_bake_is_shown_with_its_countdown() -> None:
    s = sc.script()
    model = LiveModel(s.plan)
    model.apply(DeploymentChanged(sc.DEP, sc.T0, "running"))
    verdict = sc.bake_verdict(sc.T0 + 100, "wave:1", 100.0, 10)
    model.apply(verdict)
    lines = _lines(model.snapshot(sc.T0 + 100), 200)
    assert "wave 1: bake 8m20s left, 10/100 requests" in lines


def test_resumed_stage_whose_hosts_are_all_done_reads_done() -> None:
    s = sc.script()
    model = LiveModel(s.plan)
    model.apply(DeploymentChanged(sc.DEP, sc.T0, "running"))
    s.hosts(sc.T0, use1_a="done")
    model.apply(s.events[-1])
    assert model.snapshot(sc.T0).stages[0].status is StageStatus.DONE


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0s"), (42, "42s"), (252, "4m12s"), (3600 * 12 + 299, "12h5m"), (90061, "1d1h1m")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_bake_text_without_a_metric_is_time_only() -> None:
    from fleetwave.observe.live_model import BakeProgress

    assert bake_text(BakeProgress(61.0)) == "bake 1m1s left"
    assert bake_text(BakeProgress(0.0, "requests", 7, 100)) == "bake time done, 7/100 requests"


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_live_view_sink_redraws_in_place_and_ends_with_the_full_final_frame() -> None:
    s = sc.script()
    out = io.StringIO()
    console = Console(
        file=out, width=80, height=40, force_terminal=True, color_system=None, legacy_windows=False
    )
    clock = FakeClock(sc.T0)
    view = LiveView(s.plan, console, clock=clock, auto_refresh=False)
    assert view.frame() is not None  # renders before any event
    for event in sc.upto(s, s.checkpoints["baking"]):
        view.emit(event)
    clock.t = s.checkpoints["baking"]
    view.refresh()
    assert "bake 8m42s left" in out.getvalue()
    clock.t += 1
    view.refresh()
    assert "bake 8m41s left" in out.getvalue()
    assert "\x1b[2K" in out.getvalue()  # rich moved up and erased the previous frame
    for event in s.events[len(sc.upto(s, s.checkpoints["baking"])) :]:
        clock.t = event.at
        view.emit(event)
    text = out.getvalue()
    final = text.rsplit(f"deployment {sc.DEP}  ", 1)[1]
    assert final.startswith("finished: rolled_back")
    assert f"deployment {sc.DEP}: rolled_back in 11m30s" in final
    assert "rolling" not in final
    size = len(text)
    view.emit(DeploymentChanged(sc.DEP, sc.T0 + 999, "running"))  # after close: ignored
    view.close()
    view.refresh()
    assert len(out.getvalue()) == size
