"""The examples carry the article's four alarms, and pipelines validate alarm config."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fleetwave.config.alarm_expr import alarm_names
from fleetwave.config.alarms import (
    CompositeAlarm,
    MetricAlarm,
    OnInsufficient,
    PrometheusAlert,
    ScopeKind,
    Statistic,
)
from fleetwave.config.pipeline import load_pipeline
from fleetwave.config.spec import PIPELINE_SPEC
from fleetwave.errors import ConfigError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_production_example_has_the_articles_four_alarms() -> None:
    p = load_pipeline(REPO / "examples" / "production" / "app.yaml")
    high = p.alarms["orders-high-sev"]
    assert isinstance(high, CompositeAlarm)
    parts = alarm_names(high.expression)
    metric_alarms = [a for n in parts if isinstance(a := p.alarms[n], MetricAlarm)]
    kinds = {a.source.statistic for a in metric_alarms}
    assert {Statistic.RATIO, Statistic.P50, Statistic.P90, Statistic.P99} <= kinds
    assert {
        "orders-cpu",
        "orders-memory",
        "orders-disk",
        "orders-log-errors",
        "orders-health",
    } <= parts
    assert p.rollback_alarm == "orders-rollback"
    rollback = p.alarms["orders-rollback"]
    assert isinstance(rollback, CompositeAlarm)
    assert {"orders-high-sev", "orders-canary", "payments-high-sev"} == alarm_names(
        rollback.expression
    )
    assert p.onebox_alarm == "orders-onebox"
    onebox = p.alarms["orders-onebox"]
    assert isinstance(onebox, CompositeAlarm)
    scoped = [p.alarms[n] for n in alarm_names(onebox.expression) if n != "orders-rollback"]
    assert all(isinstance(a, MetricAlarm) and a.scope is ScopeKind.STAGE for a in scoped)
    assert isinstance(p.alarms["org-wide-sev1"], PrometheusAlert)
    assert any("org-wide-sev1" in b for b in p.blockers)
    assert p.post_deploy_watch_s == 3600.0
    assert p.watch.source == "prometheus"
    p99 = p.alarms["orders-latency-p99"]
    assert isinstance(p99, MetricAlarm)
    assert p99.min_samples == 1000  # 10 / (1 - 0.99)


def test_lab_example_uses_the_agent_source() -> None:
    p = load_pipeline(REPO / "examples" / "lab" / "pipeline.yaml")
    assert p.watch.source == "agent"
    assert p.rollback_alarm == "lab-rollback"


TOPOLOGY = """\
regions:
  r1:
    traffic: low
    timezone: UTC
    azs: {a1: [{name: h1, address: 10.0.0.1}]}
"""


def pipeline(tmp_path: Path, body: str) -> Path:
    (tmp_path / "topology.yaml").write_text(TOPOLOGY)
    path = tmp_path / "pipeline.yaml"
    head = "name: p\nservice: s\ntopology: topology.yaml\nwaves: [{regions: [r1]}]\n"
    path.write_text(head + textwrap.dedent(body))
    return path


@pytest.mark.parametrize(
    ("body", "key", "message"),
    [
        ('blockers: [ALARM("nope")]\n', "blockers[0]", "unknown alarm 'nope'"),
        ("rollback_alarm: nope\n", "rollback_alarm", "unknown alarm"),
        (
            "alarms: [{name: a, metric: latency, statistic: p99, comparison: '>', threshold: 1,"
            " min_samples: 100}]\n",
            "alarms[0].min_samples",
            "at least 1000 samples",
        ),
        (
            "alarms: [{name: a, metric: requests, statistic: p99, comparison: '>',"
            " threshold: 1}]\n",
            "alarms[0].statistic",
            "does not apply",
        ),
        (
            "alarms: [{name: a, metric: errors, comparison: '>', threshold: 1,"
            " evaluation_periods: 2, datapoints_to_alarm: 3}]\n",
            "alarms[0].datapoints_to_alarm",
            "cannot exceed",
        ),
        (
            "alarms: [{name: a, expression: 'ALARM(\"b\")'}, {name: b, expression: 'OK(\"a\")'}]\n",
            "alarms[0].expression",
            "alarm cycle: a -> b -> a",
        ),
        ("alarms: [{name: a, prometheus_alert: X}]\n", "alarms[0].prometheus_alert", "needs watch"),
        ("alarms: [{name: a, comparison: '>'}]\n", "alarms[0]", "exactly one of"),
        (
            "stage_bake: {time: 1h, max_bake: 30m, min_datapoints: 5, metric: requests}\n",
            "stage_bake.max_bake",
            "shorter",
        ),
        ("stage_bake: {time: 1h, metric: latency}\n", "stage_bake.metric", "invalid value"),
    ],
)
def test_alarm_config_errors_name_file_line_and_key(tmp_path, body, key, message) -> None:
    with pytest.raises(ConfigError) as info:
        load_pipeline(pipeline(tmp_path, body))
    text = str(info.value)
    assert f"{key}:" in text
    assert message in text
    assert "pipeline.yaml:" in text


def test_bake_on_insufficient_and_schema(tmp_path) -> None:
    body = (
        "stage_bake: {time: 1m, min_datapoints: 100, metric: requests, max_bake: 2h,"
        " on_insufficient: rollback}\n"
    )
    p = load_pipeline(pipeline(tmp_path, body))
    bake = p.waves[0].stage_bake
    assert (bake.max_bake_s, bake.on_insufficient) == (7200.0, OnInsufficient.ROLLBACK)
    schema = PIPELINE_SPEC.json()
    alarm = schema["properties"]["alarms"]["items"]["properties"]
    assert alarm["treat_missing_data"]["enum"] == [
        "missing",
        "not_breaching",
        "breaching",
        "ignore",
    ]
    assert "on_insufficient" in schema["properties"]["stage_bake"]["properties"]
