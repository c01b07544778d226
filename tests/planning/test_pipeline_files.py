"""Loading pipeline files: extends, positions after merging, validation, examples."""

import json
import re
import textwrap
from pathlib import Path

import pytest

from fleetwave.cli import main
from fleetwave.config.pipeline import OverrideTarget, load_pipeline
from fleetwave.config.spec import PIPELINE_SPEC, Unit
from fleetwave.errors import ConfigError
from fleetwave.planning.planner import plan_pipeline

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

TOPOLOGY = """\
regions:
  r1:
    traffic: low
    timezone: Europe/Dublin
    azs:
      a1:
        - {name: h1, address: 10.0.0.1, lb: "lab:app"}
        - {name: h2, address: 10.0.0.2, cell: c1}
      a2: []
environments:
  beta:
    region: r1
    hosts: [{name: b1, address: 10.9.0.1}]
"""

PARENT = """\
topology: fleet/topology.yaml
deploy:
  load_balancers: [{name: lab, driver: haproxy}]
  ssh: {user: team, identity: keys/id}
rolling:
  max_batch: 25%
  min_healthy: 50%
windows:
  default: {days: [weekdays], hours: "09:00-17:00", exclude: [{days: [fri], after: "12:00"}]}
waves:
  - {regions: [r1]}
alarms:
  - {name: x, metric: errors, comparison: ">", threshold: 1}
  - {name: parent, metric: errors, comparison: ">", threshold: 1}
  - {name: child, metric: errors, comparison: ">", threshold: 1}
  - {name: "y", metric: errors, comparison: ">", threshold: 1}
"""


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def team(tmp_path):
    write(tmp_path, "team/fleet/topology.yaml", TOPOLOGY)
    write(tmp_path, "team/parent.yaml", PARENT)
    return tmp_path


def child(root: Path, body: str) -> Path:
    return write(
        root, "svc/pipeline.yaml", "extends: ../team/parent.yaml\nname: p\nservice: s\n" + body
    )


def test_extends_merges_maps_and_resolves_paths_per_file(team):
    path = child(team, "rolling: {max_batch: 1}\ndeploy: {ssh: {port: 2222}}\n")
    p = load_pipeline(path)
    assert p.rolling.max_batch.value == 1
    assert p.rolling.min_healthy.value == 50
    assert p.deploy.ssh.user == "team"
    assert p.deploy.ssh.port == 2222
    assert p.deploy.ssh.identity == team / "team" / "keys" / "id"
    assert p.topology.path == team / "team" / "fleet" / "topology.yaml"
    assert p.deploy.state_dir == team / "svc" / ".fleetwave"
    assert p.unit is Unit.AZ
    assert p.windows_for("r1").timezone == "Europe/Dublin"
    assert p.windows_for("beta").timezone == "Europe/Dublin"
    assert p.waves[0].bake.duration_s == 12 * 3600


def test_ssh_timeouts_are_read_as_durations(team):
    body = "deploy: {ssh: {connect_timeout: 5s, agent_start_timeout: 1m, command_timeout: 2m}}\n"
    ssh = load_pipeline(child(team, body)).deploy.ssh
    assert (ssh.connect_timeout_s, ssh.agent_start_timeout_s, ssh.command_timeout_s) == (
        5.0,
        60.0,
        120.0,
    )


def test_lists_are_replaced_not_appended(team):
    p = load_pipeline(child(team, 'blockers: [ALARM("x")]\n'))
    assert p.blockers == ('ALARM("x")',)
    write(team, "team/parent.yaml", PARENT + 'blockers: [ALARM("parent")]\n')
    p = load_pipeline(child(team, 'blockers: [alarm("child") or alarm("y")]\n'))
    assert p.blockers == ('ALARM("child") OR ALARM("y")',)


def test_error_in_parent_names_parent_file_and_line(team):
    write(team, "team/parent.yaml", PARENT + "onebox:\n  enabld: false\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(child(team, ""))
    message = str(info.value)
    assert "parent.yaml:" in message
    assert "onebox.enabld" in message
    assert "did you mean 'enabled'" in message
    line = len(PARENT.splitlines()) + 2
    assert info.value.source == f"{team / 'team' / 'parent.yaml'}:{line}"


def test_error_in_child_override_names_child(team):
    with pytest.raises(ConfigError) as info:
        load_pipeline(child(team, "rolling:\n  max_batch: lots\n"))
    assert info.value.source == f"{team / 'svc' / 'pipeline.yaml'}:5"
    assert info.value.key_path == "rolling.max_batch"


def test_extends_loop_names_the_chain(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match=r"extends loop: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_pipeline(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    ("body", "key", "needle"),
    [
        ("waves: [{regions: [r2]}]\n", "waves[0].regions[0]", "unknown region 'r2'"),
        ("unit: rack\n", "unit", "expected one of az, cell"),
        ('blockers: ["ALARM(\\"a\\") AND"]\n', "blockers[0]", "column 15"),
        ("windows: {default: {hours: '17:00-09:00'}}\n", "windows.default.hours", "overnight"),
        ("windows: {regions: {r9: {}}}\n", "windows.regions.r9", "unknown region"),
        ("stage_bake: {min_datapoints: 5}\n", "stage_bake.min_datapoints", "needs a metric"),
        ("preprod: {stages: [{environment: gamma}]}\n", "preprod.stages[0].environment", "beta"),
        ("override: {allow: [alarms]}\n", "override.allow[0]", "windows, blockers, bakes"),
        ("windows: {default: {holidays: {country: XX}}}\n", "windows.default.holidays", "XX"),
        ("rolling: {max_batch: 0}\n", "rolling.max_batch", "below the minimum 1"),
        ("deploy: {drain_timeout: soon}\n", "deploy.drain_timeout", "invalid duration"),
    ],
)
def test_validation_errors_name_key_and_line(team, body, key, needle):
    with pytest.raises(ConfigError) as info:
        load_pipeline(child(team, body))
    assert info.value.key_path == key
    assert needle in str(info.value)
    assert info.value.source
    assert info.value.source.rsplit(":", 1)[1].isdigit()


def test_missing_required_key_after_merge(team):
    write(team, "svc/pipeline.yaml", "extends: ../team/parent.yaml\nname: p\n")
    with pytest.raises(ConfigError, match="missing required key 'service'"):
        load_pipeline(team / "svc" / "pipeline.yaml")


def test_undefined_balancer_names_topology_line(team):
    write(team, "team/parent.yaml", PARENT.replace("name: lab,", "name: other,"))
    with pytest.raises(ConfigError) as info:
        load_pipeline(child(team, ""))
    assert info.value.source == f"{team / 'team' / 'fleet' / 'topology.yaml'}:7"


def test_topology_duplicate_host(team):
    write(team, "team/fleet/topology.yaml", TOPOLOGY.replace("name: h2", "name: h1"))
    with pytest.raises(ConfigError, match="duplicate host 'h1'"):
        load_pipeline(child(team, ""))


def test_cell_unit_plans_cells_and_loose_hosts(team):
    p = load_pipeline(child(team, "unit: cell\nonebox: {enabled: false}\n"))
    ids = [s.id for s in plan_pipeline(p).stages()]
    assert ids == ["w1/r1/az:a1", "w1/r1/az:a1/cell:c1"]


def test_override_policy(team):
    p = load_pipeline(child(team, "override: {allow: [bakes], approvers: [lead]}\n"))
    assert p.override.allows(OverrideTarget.BAKES)
    assert not p.override.allows(OverrideTarget.WINDOWS)
    assert p.override.require_reason
    assert p.override.require_approver


@pytest.mark.parametrize("name", ["app", "config", "os-patch"])
def test_production_examples_load_and_plan(name):
    p = load_pipeline(REPO / "examples" / "production" / f"{name}.yaml")
    assert len(p.topology.regions) == 24
    assert sum(len(r.azs) for r in p.topology.regions) == 76
    assert [len(w.regions) for w in p.waves] == [1, 1, 3, 12, 7]
    assert p.topology.region(p.waves[0].regions[0]).traffic.value == "low"
    assert p.topology.region(p.waves[1].regions[0]).traffic.value == "high"
    plan = plan_pipeline(p)
    assert plan.waves[0].index == 0
    assert len(plan.hosts()) == len(p.topology.hosts()) + sum(
        len(e.hosts)
        for e in p.topology.environments
        if e.name in {s.environment for s in p.preprod}
    )


def test_lab_example_matches_the_namespace_fleet():
    p = load_pipeline(REPO / "examples" / "lab" / "pipeline.yaml")
    hosts = p.topology.hosts()
    assert [h.address for h in hosts] == [f"10.213.0.{i}" for i in range(11, 17)]
    assert {str(h.lb) for h in hosts} == {f"lab:app/h{i}" for i in range(1, 7)}
    assert {h.az for h in hosts} == {"lab-az1", "lab-az2"}
    assert p.windows_for("lab-1").always_open()


def test_schema_is_derived_from_the_validator(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == {f.name for f in PIPELINE_SPEC.fields}
    assert schema["additionalProperties"] is False
    assert "required" not in schema  # parent files are partial
    assert schema["properties"]["unit"]["enum"] == ["az", "cell"]
    rolling = schema["properties"]["rolling"]["properties"]
    assert set(rolling) == {"max_batch", "min_healthy", "rollback_batch", "failure_budget"}


def test_cli_validate_ok_and_error(team, capsys):
    write(team, "team/keys/id", "not read by validate, only required to exist\n")
    good = child(team, "")
    assert main(["validate", "-f", str(good)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    bad = child(team, "unit: rack\n")
    assert main(["validate", "-f", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "pipeline.yaml:4: unit:" in err[0]


def test_cli_plan_tree_waits_for_monday(team, capsys):
    path = child(team, "batch_estimate: 1m\n")
    at = "2025-03-07T15:00+00:00"
    assert main(["plan", "-f", str(path), "--at", at, "--tz", "UTC"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("p: 2 hosts, 1 wave, 2 stages; earliest finish Mon 03-10 ")
    assert "wave 1 wave-1" in out
    # Dublin is UTC in March: both rows read the same, the one-box opens Monday 09:00.
    assert re.search(r"^  r1 UTC +Mon 09:00-10:01 10:01-11:02$", out, re.M)
    assert re.search(r"^    Europe/Dublin +Mon 09:00-10:01 10:01-11:02$", out, re.M)
    assert "onebox waits: window closed in r1 until Mon 09:00 Europe/Dublin" in out


def test_cli_plan_json_round_trips(team, capsys):
    from fleetwave.planning.codec import plan_from_dict

    path = child(team, "")
    assert main(["plan", "-f", str(path), "--json", "--at", "2025-03-03T10:00Z"]) == 0
    plan = plan_from_dict(json.loads(capsys.readouterr().out))
    assert [s.id for s in plan.stages()] == ["w1/r1/onebox", "w1/r1/az:a1"]


def test_production_holidays_come_from_the_holidays_package_for_every_region():
    from datetime import date

    p = load_pipeline(REPO / "examples" / "production" / "app.yaml")
    for region in p.topology.regions:
        window = p.windows_for(region.name)
        assert window.holiday_country, region.name
        assert not window.holiday_dates, f"{region.name}: fixed dates go stale"
    # A calendar holiday of any year is closed, with nothing to renew in the file.
    assert p.windows_for("us-east-1").is_holiday(date(date.today().year + 1, 12, 25))
    assert p.windows_for("ap-northeast-1").is_holiday(date(date.today().year + 1, 1, 1))
    assert not p.windows_for("us-east-1").is_holiday(date(date.today().year + 1, 3, 10))
