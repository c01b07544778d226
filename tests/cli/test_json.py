"""``--json`` on the commands of this package's files: one JSON document on stdout."""

import json
from pathlib import Path

import pytest

from fleetwave.cli import main
from tests.package.conftest import make_source

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_build_and_verify_json(tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path / "k"), "--json"]) == 0
    keys = json.loads(capsys.readouterr().out)
    src = make_source(tmp_path / "src", {"a.txt": b"a"})
    argv = ["package", "build", str(src), "--name", "app", "--version", "1"]
    argv += ["--key", keys["private_key"], "--out", str(tmp_path / "out"), "--json"]
    assert main(argv) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["package"] == str(tmp_path / "out" / "app-1.fwpkg")
    assert (built["name"], built["version"], built["expires"]) == ("app", "1", None)
    argv = ["--json", "package", "verify", built["package"], "--trust", keys["public_key"]]
    assert main(argv) == 0
    verified = json.loads(capsys.readouterr().out)
    assert verified == {
        "ok": True,
        "name": "app",
        "version": "1",
        "package_id": built["package_id"],
        "key_id": keys["key_id"],
    }


def test_verify_json_still_fails_on_an_untrusted_key(tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path / "a"), "--json"]) == 0
    signer = json.loads(capsys.readouterr().out)
    assert main(["keygen", "--out", str(tmp_path / "b"), "--json"]) == 0
    other = json.loads(capsys.readouterr().out)
    src = make_source(tmp_path / "src", {"a.txt": b"a"})
    argv = ["package", "build", str(src), "--name", "app", "--version", "1"]
    assert main([*argv, "--key", signer["private_key"], "--out", str(tmp_path), "--json"]) == 0
    path = json.loads(capsys.readouterr().out)["package"]
    assert main(["package", "verify", path, "--trust", other["public_key"], "--json"]) == 4
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("fleetwave: error: ")


def test_topology_import_json(tmp_path, capsys):
    inventory = REPO / "examples" / "inventory" / "hosts.yaml"
    assert main(["topology", "import", str(inventory), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["regions"]
    out = tmp_path / "topology.yaml"
    assert main(["topology", "import", str(inventory), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == str(out)
    assert summary["regions"] == len(doc["regions"])
    assert out.is_file()


def test_topology_export_json(tmp_path, capsys):
    topology = REPO / "examples" / "lab" / "topology.yaml"
    target = tmp_path / "sd.json"
    argv = ["topology", "export", "-f", str(topology), "--prometheus-sd", str(target), "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {"out": str(target), "targets": 6, "port": 9731}
