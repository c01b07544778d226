"""``anomaly:`` in a pipeline: defaults, tuning, validation with file:line:key, the
JSON Schema, and the line ``fleetwave plan`` prints."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fleetwave.cli.plan import pipeline_json_schema, render_plan
from fleetwave.config.anomaly import (
    ALPHA,
    DEFAULTS,
    AnomalySettings,
    Check,
    Sensitivity,
    defaults_table,
    describe,
    parse_size,
)
from fleetwave.config.pipeline import load_pipeline
from fleetwave.errors import ConfigError
from fleetwave.planning.planner import plan_pipeline
from tests.watch.test_examples import TOPOLOGY

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def pipeline(tmp_path: Path, body: str) -> Path:
    (tmp_path / "topology.yaml").write_text(TOPOLOGY)
    path = tmp_path / "pipeline.yaml"
    head = "name: p\nservice: s\ntopology: topology.yaml\nwaves: [{regions: [r1]}]\n"
    path.write_text(head + textwrap.dedent(body))
    return path


def test_on_by_default_for_every_standard_metric(tmp_path: Path) -> None:
    p = load_pipeline(pipeline(tmp_path, ""))
    assert p.anomaly == AnomalySettings()
    assert p.anomaly.enabled_checks == tuple(Check)
    assert p.anomaly.alpha == ALPHA[Sensitivity.MEDIUM] == 0.01


def test_tuned_and_turned_off_per_metric(tmp_path: Path) -> None:
    p = load_pipeline(
        pipeline(
            tmp_path,
            """
            anomaly:
              sensitivity: high
              warmup: 5m
              metrics:
                latency: {relative_floor: 0.2, absolute_floor: 10ms}
                memory: false
                restarts: {absolute_floor: 5}
                cpu: {enabled: false}
            """,
        )
    )
    a = p.anomaly
    assert a.sensitivity is Sensitivity.HIGH
    assert a.alpha == 0.05
    assert a.warmup_s == 300.0
    lat = a.tuning(Check.LATENCY)
    assert (lat.relative_floor, lat.absolute_floor) == (0.2, 0.01)
    assert lat.min_samples == DEFAULTS[Sensitivity.HIGH][Check.LATENCY].min_samples
    assert a.tuning(Check.RESTARTS).absolute_floor == 5.0
    assert Check.MEMORY not in a.enabled_checks
    assert Check.CPU not in a.enabled_checks


def test_memory_floor_takes_a_size(tmp_path: Path) -> None:
    p = load_pipeline(pipeline(tmp_path, "anomaly: {metrics: {memory: {absolute_floor: 32MiB}}}\n"))
    assert p.anomaly.tuning(Check.MEMORY).absolute_floor == 32 * 2**20
    assert parse_size("50MB") == 50e6
    with pytest.raises(ValueError, match="invalid size"):
        parse_size("lots")


def test_anomaly_false_turns_everything_off(tmp_path: Path) -> None:
    p = load_pipeline(pipeline(tmp_path, "anomaly: false\n"))
    assert p.anomaly.enabled_checks == ()
    assert describe(p.anomaly) == "anomaly detection: off"


@pytest.mark.parametrize(
    ("body", "line", "key", "message"),
    [
        ("anomaly:\n  sensitivity: extreme\n", 6, "anomaly.sensitivity", "invalid value"),
        ("anomaly:\n  metrics:\n    latncy: false\n", 7, "anomaly.metrics.latncy", "did you mean"),
        (
            "anomaly:\n  metrics:\n    latency: {absolute_floor: -5}\n",
            7,
            "anomaly.metrics.latency.absolute_floor",
            ">= 0",
        ),
        (
            "anomaly:\n  metrics:\n    errors: {min_samples: 5}\n",
            7,
            "anomaly.metrics.errors.min_samples",
            "would judge noise",
        ),
        (
            "anomaly:\n  metrics:\n    traffic: {relative_floor: 1.0}\n",
            7,
            "anomaly.metrics.traffic.relative_floor",
            "below 1",
        ),
        ("anomaly:\n  alpha: 0.9\n", 6, "anomaly.alpha", "(0, 0.5]"),
        (
            "anomaly:\n  metrics:\n    latency: {absolute_floor: soon}\n",
            7,
            "anomaly.metrics.latency.absolute_floor",
            "",
        ),
    ],
)
def test_bad_values_name_file_line_and_key(
    tmp_path: Path, body: str, line: int, key: str, message: str
) -> None:
    path = pipeline(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    text = str(err.value)
    assert f"{path}:{line}" in text
    assert key in text
    assert message in text


def test_schema_comes_from_the_same_spec() -> None:
    schema = pipeline_json_schema()
    anomaly = schema["properties"]["anomaly"]
    shapes = [o.get("type") for o in anomaly["anyOf"]]
    assert shapes == ["boolean", "object"]
    obj = anomaly["anyOf"][1]
    assert obj["properties"]["sensitivity"]["enum"] == ["low", "medium", "high"]
    metrics = obj["properties"]["metrics"]["properties"]
    assert set(metrics) == {c.value for c in Check}
    assert "tail_relative_floor" in metrics["latency"]["anyOf"][1]["properties"]


def test_plan_shows_one_line(tmp_path: Path) -> None:
    p = load_pipeline(pipeline(tmp_path, "anomaly: {metrics: {memory: false}}\n"))
    lines = render_plan(p, plan_pipeline(p, p.topology, None)).splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("anomaly"))
    # One line, folded at 100 columns: its continuation lines are indented.
    folded = lines[at : at + 2] if lines[at + 1].startswith("  ") else lines[at : at + 1]
    assert " ".join(ln.strip() for ln in folded) == (
        "anomaly detection: medium, alpha 0.01 per stage: errors (>= +0.20%), "
        "latency (>= 10% and >= 5ms), traffic (drop >= 50%), restarts, cpu; off: memory"
    )


def test_defaults_table_in_the_docs_is_the_code() -> None:
    """docs/anomaly.md's defaults table restates DEFAULTS; it must not drift."""
    text = (REPO / "docs" / "anomaly.md").read_text()
    assert defaults_table() in text
