"""``fleetwave topology export --prometheus-sd``: one file_sd target per host with its
host, region, AZ and cell labels; written atomically; bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetwave.cli import main
from fleetwave.config.topology import load_topology
from fleetwave.observe.prometheus_sd import DEFAULT_EXPORTER_PORT, prometheus_sd_targets
from fleetwave_core.exitcodes import ExitCode

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VAGRANT_TOPOLOGY = REPO / "examples" / "vagrant" / "topology.yaml"


def test_export_writes_one_labelled_target_per_host(tmp_path, capsys):
    out = tmp_path / "agents.json"
    code = main(["topology", "export", "-f", str(VAGRANT_TOPOLOGY), "--prometheus-sd", str(out)])
    assert code == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}: 6 target(s) on port 9731"
    groups = json.loads(out.read_text())
    assert groups[0] == {
        "targets": ["192.168.56.21:9731"],
        "labels": {"host": "app1", "region": "lab-1", "az": "lab-az1", "cell": "cell-1"},
    }
    assert [g["labels"]["az"] for g in groups] == ["lab-az1"] * 3 + ["lab-az2"] * 3
    assert [p.name for p in tmp_path.iterdir()] == ["agents.json"]  # no temp file left


def test_default_port_is_the_agent_exporters():
    from fleetwave_agent.config import ExporterConfig

    assert DEFAULT_EXPORTER_PORT == ExporterConfig().port == 9731


def test_ipv6_hostless_cell_and_environments(tmp_path):
    topo = tmp_path / "topology.yaml"
    topo.write_text(
        "regions:\n"
        "  r1: {traffic: low, timezone: UTC, azs: {a1: [{name: h1, address: 'fd00::1'}]}}\n"
        "environments:\n"
        "  beta: {region: r1, timezone: UTC, hosts: [{name: b1, address: b1.lan, az: a1}]}\n"
    )
    groups = prometheus_sd_targets(load_topology(topo), port=9100)
    assert groups == [
        {"targets": ["[fd00::1]:9100"], "labels": {"host": "h1", "region": "r1", "az": "a1"}},
        {
            "targets": ["b1.lan:9100"],
            "labels": {"host": "b1", "region": "r1", "az": "a1", "environment": "beta"},
        },
    ]


def test_bad_port_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "agents.json"
    argv = ["topology", "export", "-f", str(VAGRANT_TOPOLOGY), "--prometheus-sd", str(out)]
    assert main([*argv, "--port", "0"]) == ExitCode.CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].endswith("--port 0: expected 1-65535")
    assert not out.exists()


def test_missing_topology_is_a_config_error(tmp_path, capsys):
    argv = ["topology", "export", "-f", str(tmp_path / "nope.yaml")]
    assert main([*argv, "--prometheus-sd", str(tmp_path / "x.json")]) == ExitCode.CONFIG
    assert "nope.yaml" in capsys.readouterr().err
