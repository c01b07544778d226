import textwrap

import pytest
import yaml

from fleetwave.cli import main
from fleetwave.config.inventory import ImportOptions, expand_hosts, import_inventory
from fleetwave.config.topology import load_topology
from fleetwave.errors import ConfigError

pytestmark = pytest.mark.integration


def test_host_ranges():
    assert expand_hosts("web[01:03]") == ["web01", "web02", "web03"]
    assert expand_hosts("db[8:10].x") == ["db8.x", "db9.x", "db10.x"]
    with pytest.raises(ValueError, match="backwards"):
        expand_hosts("a[3:1]")


@pytest.mark.parametrize("name", ["hosts.ini", "hosts.yaml"])
def test_example_inventories_import_alike(name, examples):
    topo = import_inventory(examples / "inventory" / name, ImportOptions(label_vars=("rack",)))
    assert topo.region_names() == ["us-east-1", "eu-west-1"]
    use1 = topo.region("us-east-1")
    assert use1.traffic.value == "high"
    assert use1.timezone == "America/New_York"
    assert use1.azs == ("use1-az1", "use1-az2")
    b02 = next(h for h in use1.hosts if h.name == "web-use1-b02")
    assert (b02.address, b02.ssh_port, b02.ssh_user) == ("10.0.2.12", 2222, "deploy")
    assert str(b02.lb) == "edge:web/web-use1-b02"
    assert dict(b02.labels) == {"rack": "r2"}
    assert topo.region("eu-west-1").hosts[0].cell == "cell-1"


def test_child_group_vars_override_parent(tmp_path):
    inv = tmp_path / "inv.ini"
    inv.write_text(
        textwrap.dedent("""\
        [all:vars]
        region=r-all
        az=z-all
        [leaf]
        h1
        [mid:children]
        leaf
        [mid:vars]
        region=r-mid
        [leaf:vars]
        az=z-leaf
        """)
    )
    topo = import_inventory(inv, ImportOptions())
    host = topo.hosts()[0]
    assert (host.region, host.az) == ("r-mid", "z-leaf")


def test_host_without_az_is_named(tmp_path):
    inv = tmp_path / "inv.ini"
    inv.write_text("[web]\nweb1 region=us\nweb2 region=us az=a\n")
    with pytest.raises(ConfigError, match="host web1 has no 'az' variable") as info:
        import_inventory(inv, ImportOptions())
    assert info.value.source == f"{inv}:2"


def test_cli_import_writes_a_loadable_topology(tmp_path, examples, capsys):
    out = tmp_path / "topology.yaml"
    code = main(
        ["topology", "import", str(examples / "inventory" / "hosts.ini"), "--out", str(out)]
    )
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    topo = load_topology(out)
    assert len(topo.hosts()) == 6
    assert "regions" in yaml.safe_load(out.read_text())


@pytest.fixture
def examples():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "examples"
