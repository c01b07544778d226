"""Fast pushes: bake shorthands, ``examples/fast``, and the production refusal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleetwave.config.pipeline import BakeRequirement, load_pipeline
from fleetwave.errors import ConfigError, PlanError
from fleetwave.planning.model import StageKind
from fleetwave.planning.planner import plan_pipeline

pytestmark = pytest.mark.integration

FAST = Path(__file__).resolve().parents[2] / "examples" / "fast"


def fast_copy(tmp_path: Path, replace: dict[str, str]) -> Path:
    """examples/fast/pipeline.yaml with some lines rewritten, next to its topology."""
    text = (FAST / "pipeline.yaml").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "topology.yaml").write_text((FAST / "topology.yaml").read_text())
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def test_fast_example_plans_one_full_batch_without_onebox_or_bakes() -> None:
    pipeline = load_pipeline(FAST / "pipeline.yaml")
    assert pipeline.environment != "production"
    plan = plan_pipeline(pipeline)
    stages = [s for w in plan.waves for r in w.regions for s in r.stages]
    assert [s.kind for s in stages] == [StageKind.AZ]
    assert stages[0].batching.max_out == len(stages[0].hosts) == 4
    assert stages[0].bake.duration_s == 0
    assert all(w.bake_after.duration_s == 0 for w in plan.waves)


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("stage_bake: 0s", "stage_bake: 90s", lambda p: p.waves[0].stage_bake),
        ("stage_bake: 0s", "stage_bake: 2", lambda p: p.waves[0].stage_bake),
        ("bake: 0s}", "bake: 1h30m}", lambda p: p.waves[0].bake),
        (
            "onebox: {enabled: false}",
            "onebox: {enabled: true, bake: 5m}",
            lambda p: p.waves[0].onebox.bake,
        ),
    ],
)
def test_a_duration_alone_is_a_bake_of_that_time(tmp_path, old, new, where) -> None:
    pipeline = load_pipeline(fast_copy(tmp_path, {old: new}))
    seconds = {"90s": 90.0, "2": 2.0, "1h30m": 5400.0, "5m": 300.0}
    value = next(v for k, v in seconds.items() if k in new)
    assert where(pipeline) == BakeRequirement(duration_s=value)


def test_shorthand_equals_the_mapping(tmp_path: Path) -> None:
    short = load_pipeline(fast_copy(tmp_path / "a", {}))
    full = load_pipeline(fast_copy(tmp_path / "b", {"stage_bake: 0s": "stage_bake: {time: 0s}"}))
    assert short.waves == full.waves


@pytest.mark.parametrize(
    ("new", "needle"),
    [
        ("stage_bake: soon", "invalid duration"),
        ("stage_bake: [1s]", "expected a duration or a mapping, got"),
        ("stage_bake: {time: 0s, tim: 1s}", "unknown key 'tim'"),
    ],
)
def test_bad_shorthand_names_the_key(tmp_path: Path, new: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_pipeline(fast_copy(tmp_path, {"stage_bake: 0s": new}))
    assert (info.value.key_path or "").startswith("stage_bake")
    assert needle in str(info.value)


def test_production_refuses_a_pipeline_without_bakes(tmp_path: Path) -> None:
    prod = fast_copy(tmp_path, {"environment: dev ": "environment: production "})
    with pytest.raises(PlanError, match="deploys to production with no bake anywhere"):
        plan_pipeline(load_pipeline(prod))
    # No environment at all means production too.
    default = fast_copy(tmp_path / "default", {"environment: dev ": "# environment: - "})
    with pytest.raises(PlanError, match=re.escape("override: {allow: [bakes]}")):
        plan_pipeline(load_pipeline(default))


@pytest.mark.parametrize(
    "change",
    [
        {"windows:": "override: {allow: [bakes]}\nwindows:"},  # the override policy allows it
        {"stage_bake: 0s ": "stage_bake: 1m "},  # or one bake somewhere
    ],
)
def test_production_allows_it_with_the_override_or_a_bake(
    tmp_path: Path, change: dict[str, str]
) -> None:
    path = fast_copy(tmp_path, {"environment: dev ": "environment: production ", **change})
    assert plan_pipeline(load_pipeline(path)).waves
