"""The observability kit in examples/observability: the rules and scrape config pass
promtool, the rules fire as the alarms they mirror (promtool test rules), the dashboard
matches the Grafana model subset it uses, every metric it names is one fleetwave
exports, and every panel's PromQL runs on a real Prometheus."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from fleetwave.cli import main
from tests.binaries import require_binary
from tests.lab._proc import LabError
from tests.lab.prometheus import LabPrometheus

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "examples" / "observability"
DASHBOARD = KIT / "grafana" / "fleetwave-dashboard.json"
RULES = KIT / "fleetwave-rules.yml"
HERE = Path(__file__).resolve().parent

#: Metrics the kit names before fleetwave exports them. Empty: every name is real; a
#: name goes here only while the change that exports it is in flight.
PENDING: set[str] = set()
#: Series Prometheus makes itself.
BUILTIN = {"up", "ALERTS"}
EXPORTER_SOURCES = (
    "controller/fleetwave/observe/metrics.py",
    "agent/fleetwave_agent/exporter.py",
    "agent/fleetwave_agent/appmetrics.py",
    "agent/fleetwave_agent/hostmetrics.py",
)


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool", "prometheus"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panel_exprs() -> list[tuple[str, str]]:
    return [
        (f"{p['title']}/{t['refId']}", t["expr"])
        for p in _dashboard()["panels"]
        for t in p.get("targets", [])
    ]


def _variable_exprs() -> list[tuple[str, str]]:
    out = []
    for v in _dashboard()["templating"]["list"]:
        if v["type"] == "query":
            # label_values(SELECTOR, label) is Grafana's; Prometheus runs the selector.
            m = re.fullmatch(r"label_values\((.*), *\w+\)", v["query"]["query"])
            assert m, v["query"]
            out.append((f"${v['name']}", m.group(1)))
    return out


#: Grafana's built-in and template variables, as Grafana expands them for one query.
_SUBSTITUTIONS = {"$__rate_interval": "1m", "$__range": "1h", "$region": ".*", "$az": ".*"}


def _expand(expr: str) -> str:
    for var, value in _SUBSTITUTIONS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unexpanded variable in {expr!r}"
    return expr


def _rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


# ------------------------------------------------------------------------- promtool


def test_promtool_checks_the_rules():
    proc = _promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_checks_the_scrape_config_with_exported_targets(tmp_path):
    kit = tmp_path / "kit"
    shutil.copytree(KIT, kit)
    code = main(
        [
            "topology",
            "export",
            "-f",
            str(REPO / "examples" / "vagrant" / "topology.yaml"),
            "--prometheus-sd",
            str(kit / "targets" / "agents.json"),
        ]
    )
    assert code == 0
    proc = _promtool("check", "config", "prometheus.yml", cwd=kit)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # With the exported file in place nothing is left to warn about.
    assert "WARNING" not in proc.stdout + proc.stderr


def test_rules_fire_as_the_alarms_they_mirror():
    proc = _promtool("test", "rules", str(HERE / "rules_test.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_rule_names_the_pipeline_alarm_it_mirrors():
    defaults = yaml.safe_load(
        (REPO / "examples" / "production" / "team" / "defaults.yaml").read_text()
    )
    doc = yaml.safe_load(RULES.read_text())
    mirrored = {
        r["labels"]["fleetwave_alarm"]
        for g in doc["groups"]
        for r in g["rules"]
        if "fleetwave_alarm" in r.get("labels", {})
    }
    assert mirrored
    if "alarms" in defaults:  # the pipeline alarms arrive with the alarms change
        assert mirrored <= {a["name"] for a in defaults["alarms"]}


# ------------------------------------------------------------------------ dashboard


def test_dashboard_matches_the_grafana_model_subset():
    schema = json.loads((HERE / "dashboard.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(_dashboard())


def test_schema_refuses_a_misspelled_panel_key():
    schema = json.loads((HERE / "dashboard.schema.json").read_text())
    bad = _dashboard()
    bad["panels"][1]["fieldconfig"] = bad["panels"][1].pop("fieldConfig")
    with pytest.raises(jsonschema.ValidationError, match="fieldconfig"):
        jsonschema.validate(bad, schema)


def test_dashboard_layout_ids_and_refids():
    panels = _dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        xs, ys = range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])
        mine = {(x, y) for x in xs for y in ys}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)), p["title"]


def test_dashboard_covers_what_the_kit_promises():
    text = DASHBOARD.read_text()
    for metric in (
        "fleetwave_deployments_total",
        "fleetwave_rollbacks_total",
        "fleetwave_hosts",
        "fleetwave_agent_release_info",
        "fleetwave_agent_app_requests_total",
        "fleetwave_agent_app_request_errors_total",
        "fleetwave_agent_app_request_duration_seconds_bucket",
        "fleetwave_alarm_state",
        "fleetwave_alarm_value",
        "fleetwave_gate_verdict",
        "fleetwave_bake_datapoints",
        "fleetwave_bake_datapoints_required",
        "fleetwave_overrides_total",
    ):
        assert metric in text, metric


def _exported_names() -> set[str]:
    names: set[str] = set()
    for rel in EXPORTER_SOURCES:
        names |= set(re.findall(r'"(fleetwave_[a-z0-9_]+)"', (REPO / rel).read_text()))
    return names


def _referenced(expr: str) -> set[str]:
    # Every fleetwave_* word is a metric name but the rules' own alert label.
    names = set(re.findall(r"\bfleetwave_[a-z0-9_]+\b", expr)) - {"fleetwave_alarm"}
    return names | {w for w in BUILTIN if re.search(rf"\b{w}\b", expr)}


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_metric_named_is_exported(source):
    exprs = _panel_exprs() + _variable_exprs() if source == "dashboard" else _rule_exprs()
    exported = _exported_names()
    assert "fleetwave_agent_release_info" in exported
    unknown = set()
    for _, expr in exprs:
        for name in _referenced(expr):
            base = re.sub(r"_(total|bucket|sum|count|created)$", "", name)
            if name in BUILTIN or name in exported or base in exported or base in PENDING:
                continue
            unknown.add(name)
    assert not unknown, f"not exported by fleetwave: {sorted(unknown)}"


def test_metric_name_check_can_fail():
    assert _referenced('sum(rate(fleetwave_agent_app_requestz_total{job="x"}[1m]))') == {
        "fleetwave_agent_app_requestz_total"
    }


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    require_binary("prometheus", "prometheus")
    with LabPrometheus(tmp_path_factory.mktemp("prometheus")) as prom:
        yield prom


def test_every_panel_and_rule_query_runs_on_prometheus(prometheus):
    queries = _panel_exprs() + _variable_exprs() + _rule_exprs()
    assert len(queries) > 20
    failures = []
    for where, expr in queries:
        try:
            prometheus.query(_expand(expr))  # raises unless status is success
        except LabError as exc:
            failures.append(f"{where}: {exc}")
    assert not failures, "\n".join(failures)


def test_a_broken_query_is_caught(prometheus):
    with pytest.raises(LabError, match=r"HTTP 400|parse error"):
        prometheus.query("sum by (version (fleetwave_agent_release_info)")
