"""Planner invariants, checked over random topologies and rolling policies."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetwave.config.pipeline import OneboxPolicy, Pipeline, RollingPolicy, WaveSpec
from fleetwave.config.schema import Quantity
from fleetwave.config.settings import DeploySettings
from fleetwave.config.spec import Unit
from fleetwave.config.topology import Region, Topology, TrafficClass
from fleetwave.errors import PlanError
from fleetwave.planning.codec import plan_from_dict, plan_to_dict
from fleetwave.planning.model import BakeRequirement, HostRef, StageKind
from fleetwave.planning.planner import plan_pipeline, resolve_batching

pytestmark = pytest.mark.unit


@st.composite
def topologies(draw):
    regions = []
    counter = 0
    for r in range(draw(st.integers(1, 5))):
        azs = [f"r{r}-az{a}" for a in range(draw(st.integers(1, 4)))]
        hosts = []
        for az in azs:
            # 0 hosts per AZ is allowed: an AZ with no hosts must just produce no stage.
            for _ in range(draw(st.integers(0, 12))):
                counter += 1
                cell = draw(st.sampled_from(["", "c1", "c2"]))
                hosts.append(HostRef(f"h{counter}", f"10.0.0.{counter}", f"r{r}", az, cell))
        traffic = draw(st.sampled_from(list(TrafficClass)))
        regions.append(Region(f"r{r}", traffic, "UTC", tuple(azs), tuple(hosts)))
    return Topology(Path("t.yaml"), tuple(regions))


amounts = st.one_of(
    st.integers(1, 20).map(lambda n: Quantity(float(n), percent=False)),
    st.integers(1, 100).map(lambda p: Quantity(float(p), percent=True)),
)
policies = st.builds(
    RollingPolicy,
    max_batch=amounts,
    min_healthy=st.integers(0, 100).map(lambda p: Quantity(float(p), percent=True)),
    rollback_batch=amounts,
    failure_budget=st.one_of(st.just(Quantity(0, False)), amounts),
)


@st.composite
def pipelines(draw):
    topo = draw(topologies())
    names = [r.name for r in topo.regions]
    cut = sorted(set(draw(st.lists(st.integers(1, len(names)), max_size=3))) | {len(names)})
    groups, start = [], 0
    for end in cut:
        if end > start:
            groups.append(tuple(names[start:end]))
            start = end
    rolling = draw(policies)
    waves = tuple(
        WaveSpec(
            index=i + 1,
            name=f"wave-{i + 1}",
            regions=g,
            bake=BakeRequirement(60),
            stage_bake=BakeRequirement(30),
            rolling=rolling,
            onebox=OneboxPolicy(enabled=draw(st.booleans())),
        )
        for i, g in enumerate(groups)
    )
    pipeline = Pipeline(
        path=Path("p.yaml"),
        name="p",
        service="s",
        environment="test",
        topology=topo,
        deploy=DeploySettings(),
        unit=draw(st.sampled_from(list(Unit))),
        rolling=rolling,
        onebox=OneboxPolicy(),
        waves=waves,
        batch_estimate_s=10,
    )
    return pipeline


START = datetime(2025, 3, 7, 15, 0, tzinfo=UTC)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipelines())
def test_plan_invariants(pipeline):
    plan = plan_pipeline(pipeline, pipeline.topology, START)
    topo = pipeline.topology

    # Every host exactly once.
    planned = [h.name for h in plan.hosts()]
    assert sorted(planned) == sorted(h.name for h in topo.hosts())
    assert len(set(planned)) == len(planned)

    # Stage ids unique.
    ids = [s.id for s in plan.stages()]
    assert len(ids) == len(set(ids))

    # Waves in order; a wave's regions are exactly the spec's (parallel).
    assert [w.index for w in plan.waves] == [w.index for w in pipeline.waves]
    for wave, spec in zip(plan.waves, pipeline.waves, strict=True):
        assert tuple(r.region for r in wave.regions) == spec.regions

    for wave in plan.waves:
        for region in wave.regions:
            r = topo.region(region.region)
            oneboxes = [s for s in region.stages if s.kind is StageKind.ONEBOX]
            if pipeline.waves[wave.index - 1].onebox.enabled and r.hosts:
                assert len(oneboxes) == 1
                assert len(oneboxes[0].hosts) == 1
                assert region.stages[0] is oneboxes[0]
                if len(r.hosts) >= 10:  # exactly 10% is allowed
                    assert not any(oneboxes[0].id in w for w in plan.warnings)
                else:
                    assert any(oneboxes[0].id in w for w in plan.warnings)
            else:
                assert not oneboxes
            for stage in region.stages:
                assert {h.region for h in stage.hosts} == {region.region}
                assert len({h.az for h in stage.hosts}) == 1  # never two AZs
                if stage.kind is StageKind.CELL:
                    assert len({h.cell for h in stage.hosts}) == 1
                if pipeline.unit is Unit.CELL and stage.kind is StageKind.AZ:
                    assert all(h.cell == "" for h in stage.hosts)
                n = len(stage.hosts)
                b = stage.batching
                cap = max(1, pipeline.rolling.max_batch.of(n, round_up=False))
                assert 1 <= b.max_out <= min(cap, n)
                assert n - b.max_out >= b.min_serving
                assert 1 <= b.rollback_batch <= n
                assert 0 <= stage.failure_budget <= n
                assert stage.earliest_start is not None

    # Stages of a region are sequential, waves follow each other.
    assert plan.earliest_finish is not None
    assert plan.earliest_finish >= START
    previous_end = START
    for wave in plan.waves:
        for region in wave.regions:
            starts = [s.earliest_start for s in region.stages if s.earliest_start is not None]
            assert starts == sorted(starts)
            if starts:
                assert starts[0] >= previous_end
        ends = [s.earliest_start for r in wave.regions for s in r.stages if s.earliest_start]
        if ends:
            previous_end = max(ends)

    assert plan_from_dict(plan_to_dict(plan)) == plan


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 500), policies)
def test_batching_never_breaks_min_healthy_or_cap(n, rolling):
    b, clamped = resolve_batching(rolling, n)
    want = rolling.min_healthy.of(n, round_up=True)
    assert b.max_out >= 1
    assert n - b.max_out >= b.min_serving
    assert b.min_serving == (min(want, n - 1) if clamped else want)
    assert clamped == (want >= n)


def test_single_host_region_is_one_box_only():
    region = Region(
        "solo", TrafficClass.LOW, "UTC", ("a", "b"), (HostRef("h", "10.0.0.1", "solo", "a"),)
    )
    topo = Topology(Path("t"), (region,))
    pipeline = Pipeline(
        path=Path("p"),
        name="p",
        service="s",
        environment="e",
        topology=topo,
        deploy=DeploySettings(),
        unit=Unit.AZ,
        rolling=RollingPolicy(),
        onebox=OneboxPolicy(),
        waves=(
            WaveSpec(
                1,
                "w",
                ("solo",),
                BakeRequirement(),
                BakeRequirement(),
                RollingPolicy(),
                OneboxPolicy(),
            ),
        ),
    )
    plan = plan_pipeline(pipeline)
    assert [s.id for s in plan.stages()] == ["w1/solo/onebox"]
    assert any("100% of the region" in w for w in plan.warnings)


def test_region_missing_from_waves_is_a_plan_error():
    region = Region("r", TrafficClass.LOW, "UTC", ("a",), ())
    other = Region("q", TrafficClass.LOW, "UTC", ("a",), ())
    pipeline = Pipeline(
        path=Path("p"),
        name="p",
        service="s",
        environment="e",
        topology=Topology(Path("t"), (region, other)),
        deploy=DeploySettings(),
        unit=Unit.AZ,
        rolling=RollingPolicy(),
        onebox=OneboxPolicy(),
        waves=(
            WaveSpec(
                1,
                "w",
                ("r",),
                BakeRequirement(),
                BakeRequirement(),
                RollingPolicy(),
                OneboxPolicy(),
            ),
        ),
    )
    with pytest.raises(PlanError, match="regions in no wave: q"):
        plan_pipeline(pipeline)
