"""``fleetwave validate``: every error up to a cap, the files a pipeline names, --json."""

import json
import textwrap
from pathlib import Path

import pytest

from fleetwave.cli import main
from fleetwave.config.pipeline import load_pipeline
from fleetwave.config.schema import Locator, TooManyErrors
from fleetwave.config.spec import PIPELINE_SPEC
from fleetwave.config.validation import Problem, validate_pipeline
from fleetwave.errors import ConfigError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

TOPOLOGY = """\
regions:
  r1:
    traffic: low
    timezone: Europe/Dublin
    azs:
      a1:
        - {name: h1, address: 10.0.0.1}
"""

GOOD = """\
name: p
service: s
topology: topology.yaml
deploy:
  ssh: {identity: keys/id, known_hosts: keys/known_hosts, ca_keys: [keys/ca.pub]}
waves:
  - regions: [r1]
"""


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def fleet(tmp_path):
    write(tmp_path, "topology.yaml", TOPOLOGY)
    for name in ("keys/id", "keys/known_hosts", "keys/ca.pub"):
        write(tmp_path, name, "x\n")
    return tmp_path


def test_good_pipeline_is_ok(fleet, capsys):
    path = write(fleet, "p.yaml", GOOD)
    assert main(["validate", "-f", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {path}: pipeline p (s), 1 wave(s), 1 region(s), 1 host(s)")


def test_every_field_error_is_reported_with_the_loaders_messages(fleet, capsys):
    body = GOOD.replace("service: s\n", "service: s\nunit: rack\nrolling: {max_batch: 0}\n")
    body += "onebox: {enabld: true}\n"
    path = write(fleet, "p.yaml", body)
    assert main(["validate", "-f", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"{path}: 3 error(s)"
    # Exactly what the loader says about the first one, for each of them in file order.
    with pytest.raises(ConfigError) as first:
        load_pipeline(path)
    assert err[0] == f"fleetwave: error: {first.value}"
    assert "unit: invalid value 'rack'" in err[0]
    assert "rolling.max_batch: 0 is below the minimum 1" in err[1]
    assert "onebox.enabld: unknown key 'enabld' (did you mean 'enabled'?)" in err[2]


def test_topology_errors_are_collected_too(fleet, capsys):
    write(
        fleet,
        "topology.yaml",
        TOPOLOGY.replace("traffic: low", "traffic: medium")
        + "        - {name: h2, adress: 10.0.0.2}\n",
    )
    path = write(fleet, "p.yaml", GOOD)
    assert main(["validate", "-f", str(path), "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    problems = {(Path(e["file"]).name, e["key_path"]) for e in doc["errors"]}
    assert problems == {
        ("topology.yaml", "regions.r1.traffic"),
        ("topology.yaml", "regions.r1.azs.a1[1].adress"),
        ("topology.yaml", "regions.r1.azs.a1[1]"),  # address missing
    }


def test_json_errors_name_file_line_key_and_message(fleet, capsys):
    path = write(fleet, "p.yaml", GOOD.replace("service: s", "service: s\nunit: rack"))
    assert main(["validate", "-f", str(path), "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["errors"] == [
        {
            "file": str(path),
            "line": 3,
            "key_path": "unit",
            "message": "invalid value 'rack': expected one of az, cell",
        }
    ]
    assert doc["truncated"] is False


def test_the_cap_stops_collecting(fleet, capsys):
    body = GOOD + "".join(f"bogus{i}: 1\n" for i in range(10))
    path = write(fleet, "p.yaml", body)
    assert main(["validate", "-f", str(path), "--max-errors", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5
    assert err[-1] == f"{path}: 4 error(s) (stopped at --max-errors 4)"


@pytest.mark.parametrize(
    ("missing", "key_path", "what"),
    [
        ("keys/id", "deploy.ssh.identity", "SSH identity (private key)"),
        ("keys/known_hosts", "deploy.ssh.known_hosts", "known_hosts"),
        ("keys/ca.pub", "deploy.ssh.ca_keys[0]", "host CA key"),
    ],
)
def test_files_the_pipeline_names_must_exist(fleet, capsys, missing, key_path, what):
    (fleet / missing).unlink()
    path = write(fleet, "p.yaml", GOOD)
    assert main(["validate", "-f", str(path), "--json"]) == 2
    [error] = json.loads(capsys.readouterr().out)["errors"]
    assert error["key_path"] == key_path
    assert error["line"] == 5
    assert error["message"] == f"{what} file {fleet / missing} not found"
    # A machine that only edits pipelines can skip the check.
    assert main(["validate", "-f", str(path), "--no-check-files"]) == 0


def test_a_missing_topology_is_one_error(fleet, capsys):
    path = write(fleet, "p.yaml", GOOD.replace("topology.yaml", "nowhere.yaml"))
    assert main(["validate", "-f", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"topology: topology file {fleet / 'nowhere.yaml'} not found" in err[0]


def test_a_cross_reference_error_after_clean_fields(fleet, capsys):
    path = write(fleet, "p.yaml", GOOD.replace("[r1]", "[r2]"))
    assert main(["validate", "-f", str(path)]) == 2
    assert "unknown region 'r2'" in capsys.readouterr().err


def test_yaml_syntax_error_is_one_error(fleet, capsys):
    path = write(fleet, "p.yaml", "name: [unclosed\n")
    assert main(["validate", "-f", str(path), "--json"]) == 2
    [error] = json.loads(capsys.readouterr().out)["errors"]
    assert error["message"].startswith("invalid YAML")


@pytest.mark.parametrize("name", ["app", "config", "os-patch"])
def test_production_examples_validate(name, capsys):
    # Their known_hosts is made on the deploying machine (docs/security.md).
    path = REPO / "examples" / "production" / f"{name}.yaml"
    assert main(["validate", "-f", str(path), "--no-check-files"]) == 0


@pytest.mark.unit
def test_locator_raises_the_first_error_unless_collecting():
    bad = {"name": "p", "unit": "rack", "bogus": 1}
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        PIPELINE_SPEC.check(bad, "", Locator())
    loc = Locator()
    errors = loc.collect(10)
    PIPELINE_SPEC.check(bad, "", loc)
    assert [e.message for e in errors] == [
        "unknown key 'bogus'",
        "missing required key 'service'",
        "missing required key 'topology'",
        "invalid value 'rack': expected one of az, cell",
        "missing required key 'waves'",
    ]
    loc = Locator()
    loc.collect(2)
    with pytest.raises(TooManyErrors) as capped:
        PIPELINE_SPEC.check(bad, "", loc)
    assert len(capped.value.errors) == 2


@pytest.mark.unit
def test_problem_splits_the_source():
    assert Problem.of(ConfigError("m", source="a/b.yaml:7", key_path="k")).to_dict() == {
        "file": "a/b.yaml",
        "line": 7,
        "key_path": "k",
        "message": "m",
    }
    assert Problem.of(ConfigError("m", source="a.yaml")).line is None


@pytest.mark.unit
def test_validate_pipeline_rejects_a_zero_cap(tmp_path):
    with pytest.raises(ValueError, match="max_errors"):
        validate_pipeline(tmp_path / "p.yaml", max_errors=0)
