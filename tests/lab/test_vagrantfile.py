"""The Vagrant lab (Vagrantfile, packaging/vagrant/): ``vagrant validate`` accepts it
and catches a misspelled setting; its VMs match examples/vagrant/topology.yaml; the
provisioning scripts parse; the lab pipeline loads and plans."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleetwave.config.pipeline import load_pipeline
from fleetwave.config.topology import load_topology
from fleetwave.planning.planner import plan_pipeline
from tests.binaries import require_binary

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VAGRANTFILE = REPO / "Vagrantfile"
SCRIPTS = REPO / "packaging" / "vagrant"
LAB = REPO / "examples" / "vagrant"


def _validate(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("vagrant", "vagrant"), "validate", "--ignore-provider"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def vagrant_dir(tmp_path: Path) -> Path:
    # A copy: validate resolves provisioner paths relative to the Vagrantfile.
    (tmp_path / "Vagrantfile").write_text(VAGRANTFILE.read_text())
    shutil.copytree(SCRIPTS, tmp_path / "packaging" / "vagrant")
    return tmp_path


def test_vagrantfile_validates(vagrant_dir: Path) -> None:
    proc = _validate(vagrant_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    machines = re.findall(r"==> (\w+): Ignoring provider config", proc.stdout)
    assert machines == ["lb", "mon", "app1", "app2", "app3", "app4", "app5", "app6"]


def test_misspelled_setting_is_caught(vagrant_dir: Path) -> None:
    path = vagrant_dir / "Vagrantfile"
    path.write_text(path.read_text().replace("node.vm.hostname", "node.vm.hostnme"))
    assert _validate(vagrant_dir).returncode != 0


def test_missing_provisioning_script_is_caught(vagrant_dir: Path) -> None:
    (vagrant_dir / "packaging" / "vagrant" / "app.sh").unlink()
    assert _validate(vagrant_dir).returncode != 0


def test_app_vms_match_the_lab_topology() -> None:
    rows = re.findall(
        r'name: "(app\d)", ip: "#\{LAB_NET\}\.(\d+)", az: "([\w-]+)", cell: "([\w-]+)"',
        VAGRANTFILE.read_text(),
    )
    assert len(rows) == 6
    vms = [(n, f"192.168.56.{ip}", az, cell) for n, ip, az, cell in rows]
    topo = load_topology(LAB / "topology.yaml")
    assert [(h.name, h.address, h.az, h.cell) for h in topo.hosts()] == vms
    assert {h.az for h in topo.hosts()} == {"lab-az1", "lab-az2"}
    assert all(h.lb is not None and h.lb.server == h.name for h in topo.hosts())


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.iterdir()))
def test_provisioning_scripts_parse(script: str) -> None:
    proc = subprocess.run(
        ["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_lab_pipeline_plans_every_vm() -> None:
    pipeline = load_pipeline(LAB / "pipeline.yaml")
    plan = plan_pipeline(pipeline, pipeline.topology, datetime(2026, 1, 5, 12, tzinfo=UTC))
    hosts = [h.name for w in plan.waves for r in w.regions for s in r.stages for h in s.hosts]
    assert sorted(hosts) == [f"app{i}" for i in range(1, 7)]


def test_app_vm_agent_config_reads_the_demo_apps_metrics(tmp_path: Path) -> None:
    """The agent.yaml app.sh writes loads, and counts the demo app's own request metric
    (with the default name the lab's bakes and alarms would see no data at all)."""
    from fleetwave_agent.config import load_config_file

    script = (SCRIPTS / "app.sh").read_text(encoding="utf-8")
    body = re.search(r"<<YAML\n(.*?)\nYAML\n", script, re.S)
    assert body is not None, "app.sh no longer writes agent.yaml with a heredoc"
    text = body.group(1).replace("$name", "app1").replace("$az", "az1").replace("$cell", "c1")
    config_file = tmp_path / "agent.yaml"
    config_file.write_text(text.replace("$ip", "10.0.0.1"), encoding="utf-8")
    source = load_config_file(config_file).app.metrics
    demo_app = (REPO / "examples" / "demo-app" / "app" / "demo_app.py").read_text()
    assert getattr(source, "requests_metric", None) == "demo_http_requests_total"
    assert "demo_http_requests_total" in demo_app
