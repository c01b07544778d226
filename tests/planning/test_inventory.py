import textwrap
from pathlib import Path

import pytest
import yaml

from fleetwave.cli import main
from fleetwave.config.inventory import ImportOptions, expand_hosts, import_inventory
from fleetwave.config.topology import Topology, load_topology
from fleetwave.errors import ConfigError
from fleetwave_core.exitcodes import ExitCode

pytestmark = pytest.mark.integration

ANSIBLE = Path(__file__).resolve().parent / "ansible"


def test_host_ranges():
    assert expand_hosts("web[01:03]") == ["web01", "web02", "web03"]
    assert expand_hosts("db[8:10].x") == ["db8.x", "db9.x", "db10.x"]
    with pytest.raises(ValueError, match="backwards"):
        expand_hosts("a[3:1]")


def test_alphabetic_ranges_strides_and_products():
    assert expand_hosts("w[a:c]") == ["wa", "wb", "wc"]
    assert expand_hosts("W[X:Z].lan") == ["WX.lan", "WY.lan", "WZ.lan"]
    assert expand_hosts("db[0:10:5]") == ["db0", "db5", "db10"]
    assert expand_hosts("r[a:b]-[1:2]") == ["ra-1", "ra-2", "rb-1", "rb-2"]
    assert expand_hosts("plain.example.com") == ["plain.example.com"]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("w[c:a]", "backwards"),
        ("w[a:3]", "mixes digits and letters"),
        ("w[a:C]", "mixes lower and upper case"),
        ("w[1:4:0]", "zero stride"),
        ("w[0:999999]", "over 100000 hosts"),
        ("w[0:999][0:999]", "over 100000 hosts"),
    ],
)
def test_bad_ranges_are_refused(pattern, message):
    with pytest.raises(ValueError, match=message):
        expand_hosts(pattern)


def test_bad_range_in_an_inventory_names_the_line(tmp_path):
    inv = tmp_path / "inv.ini"
    inv.write_text("[web]\nw[c:a] region=r az=a\n")
    with pytest.raises(ConfigError, match="backwards") as info:
        import_inventory(inv, ImportOptions())
    assert info.value.source == f"{inv}:2"


# -- agreement with real Ansible: ansible/inventory*.json are ansible-inventory's output
# -- for ansible/hosts.ini with its group_vars/ and host_vars/ (ansible-core 2.19).


def _as_rows(topo: Topology) -> list[tuple[object, ...]]:
    return [
        (h.name, h.address, h.az, h.cell, h.ssh_port, h.lb.lb if h.lb else None, dict(h.labels))
        for h in topo.hosts()
    ]


def test_vars_dirs_ranges_and_precedence_match_ansible():
    topo = import_inventory(ANSIBLE / "hosts.ini", ImportOptions(label_vars=("rack",)))
    use1 = topo.region("us-east-1")
    # group_vars/us_east_1.yaml outranks [all:vars] in the file.
    assert (use1.traffic.value, use1.timezone) == ("high", "America/New_York")
    # group_vars/eu_west_1/: files merged in name order, the later wins.
    assert topo.region("eu-west-1").timezone == "Europe/Dublin"
    assert [h.name for h in topo.region("eu-west-1").hosts] == ["web-euw1-a01"]
    assert _as_rows(topo) == [
        ("web-use1-a", "web-use1-a", "use1-az1", "cell-a", None, "edge", {"rack": "r1"}),
        ("web-use1-b", "10.0.1.12", "use1-az1", "cell-b", 2222, "edge", {"rack": "r1"}),
        ("web-use1-c", "web-use1-c", "use1-az1", "cell-a", None, "edge", {"rack": "r1"}),
        ("web-use1-d0", "web-use1-d0", "use1-az2", "", None, "edge", {"rack": "r2"}),
        ("web-use1-d10", "10.0.2.20", "use1-az2", "", None, "edge", {"rack": "r9"}),
        ("web-use1-d20", "web-use1-d20", "use1-az2", "", None, "edge", {"rack": "r2"}),
        # group_vars/all.yml outranks [web_euw1_az1:vars] in the file, as in Ansible.
        ("web-euw1-a01", "10.1.1.11", "euw1-az1", "", None, "edge", {}),
    ]  # fmt: skip


def test_ansible_inventory_list_json_gives_the_same_topology():
    options = ImportOptions(label_vars=("rack",))
    from_ini = import_inventory(ANSIBLE / "hosts.ini", options)
    from_json = import_inventory(ANSIBLE / "inventory.json", options)
    assert _as_rows(from_json) == _as_rows(from_ini)
    assert [(r.name, r.traffic, r.timezone) for r in from_json.regions] == [
        (r.name, r.traffic, r.timezone) for r in from_ini.regions
    ]


def test_ansible_inventory_export_json_keeps_group_vars_in_groups():
    # --export keeps vars per group; it folds group_vars/all into `all`, so the one host
    # whose file var group_vars/all overrode reads its own group's value, as Ansible
    # itself would when given that JSON.
    options = ImportOptions(label_vars=("rack",))
    rows = _as_rows(import_inventory(ANSIBLE / "inventory-export.json", options))
    expected = _as_rows(import_inventory(ANSIBLE / "inventory.json", options))
    expected[-1] = (*expected[-1][:5], "other", {})
    assert rows == expected


def test_json_is_detected_by_content_not_extension(tmp_path):
    inv = tmp_path / "inventory"  # no extension: the INI parser would choke on it
    inv.write_text((ANSIBLE / "inventory.json").read_text())
    assert len(import_inventory(inv, ImportOptions()).hosts()) == 7


def test_host_only_in_hostvars_is_ungrouped(tmp_path):
    inv = tmp_path / "inv.json"
    inv.write_text('{"_meta": {"hostvars": {"h1": {"region": "r", "az": "a"}}}}')
    assert [h.name for h in import_inventory(inv, ImportOptions()).hosts()] == ["h1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "invalid JSON"),
        ("[1]", "must be an object of groups"),
        ('{"web": []}', "web: a group must be an object"),
        ('{"web": {"hosts": "h1"}}', "web.hosts: expected a list of names"),
        ('{"web": {"hostz": []}}', "web.hostz: unknown group key"),
        ('{"_meta": {"hostvars": {"h1": 3}}}', "_meta.hostvars.h1: host vars must be a mapping"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply|must be an object"),
    ],
)
def test_bad_json_is_one_clear_error(tmp_path, text, message):
    inv = tmp_path / "inv.json"
    inv.write_text(text)
    with pytest.raises(ConfigError, match=message):
        import_inventory(inv, ImportOptions())


def test_json_does_not_read_vars_dirs_again(tmp_path):
    # ansible-inventory already merged them; a stale group_vars/ must not override.
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("region: stale\n")
    inv = tmp_path / "inv.json"
    inv.write_text('{"_meta": {"hostvars": {"h1": {"region": "r", "az": "a"}}}}')
    assert import_inventory(inv, ImportOptions()).hosts()[0].region == "r"


def test_bad_vars_file_names_the_file(tmp_path):
    (tmp_path / "inv.ini").write_text("[web]\nh1 az=a\n")
    (tmp_path / "group_vars").mkdir()
    bad = tmp_path / "group_vars" / "web.yml"
    bad.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="a vars file must be a mapping") as info:
        import_inventory(tmp_path / "inv.ini", ImportOptions())
    assert info.value.source == str(bad)


def test_vars_dir_skips_hidden_and_other_suffixes(tmp_path):
    (tmp_path / "inv.ini").write_text("[web]\nh1 az=a\n")
    gv = tmp_path / "group_vars" / "web"
    gv.mkdir(parents=True)
    (gv / "region.yml").write_text("region: r\n")
    (gv / ".swap.yml").write_text("region: hidden\n")
    (gv / "notes.txt").write_text("region: txt\n")
    assert import_inventory(tmp_path / "inv.ini", ImportOptions()).hosts()[0].region == "r"


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


def test_cli_refuses_to_overwrite_without_force(tmp_path, examples, capsys):
    out = tmp_path / "topology.yaml"
    out.write_text("# mine\n")
    inv = str(examples / "inventory" / "hosts.ini")
    assert main(["topology", "import", inv, "--out", str(out)]) == ExitCode.CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"{out} exists; pass --force to overwrite it" in err[0]
    assert out.read_text() == "# mine\n"
    assert main(["topology", "import", inv, "--out", str(out), "--force"]) == 0
    assert len(load_topology(out).hosts()) == 6
    assert [p.name for p in tmp_path.iterdir()] == ["topology.yaml"]  # no temp file left


@pytest.fixture
def examples():
    return Path(__file__).resolve().parents[2] / "examples"
