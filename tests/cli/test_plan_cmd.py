"""``fleetwave plan``: the summary, the 100-column tables, waits, --region, --json,
--out, and ``deploy --plan`` refusing a stale saved plan before anything happens."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from fleetwave.cli import main
from fleetwave.config.pipeline import load_pipeline
from fleetwave.planning.codec import plan_from_dict
from fleetwave.planning.planner import plan_pipeline
from fleetwave_agent.keys import generate_keypair
from fleetwave_agent.package import build_package
from fleetwave_core.exitcodes import ExitCode

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = REPO / "examples" / "production" / "app.yaml"
LAB = REPO / "examples" / "lab" / "pipeline.yaml"
AT = "2025-03-07T15:00:00+00:00"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("path", [PRODUCTION, LAB], ids=["production", "lab"])
def test_every_line_fits_100_columns(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "-f", str(path), "--at", AT, "--tz", "Europe/Paris")
    assert code == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert len(lines) <= 100  # the old tree was 141 lines, 104 of them over 120 columns


def test_production_summary_first_then_utc_and_local_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = run(capsys, "plan", "-f", str(PRODUCTION), "--at", AT, "--tz", "Europe/Paris")
    lines = out.splitlines()
    assert lines[0] == (
        "orders-app: 1824 hosts, 6 waves, 104 stages; earliest finish Mon 03-17 11:20 UTC "
        "(12:20 CET)"
    )
    # us-east-2 runs its one-box Monday 14:45 UTC = 10:45 in New York (EDT since Mar 9).
    at = lines.index(next(ln for ln in lines if ln.startswith("  us-east-2 UTC")))
    assert re.match(
        r"  us-east-2 UTC +Mon 14:45-15:50 15:50-17:15 17:15-18:35 18:35-19:55$", lines[at]
    )
    assert re.match(r"    America/New_York +Mon 10:45-11:50 11:50-13:15", lines[at + 1])
    assert "onebox 1" in lines[at - 1]
    assert "az1 23" in lines[at - 1]
    # Every wait says until when, in which zone, and why.
    text = " ".join(ln.strip() for ln in lines)
    assert (
        "onebox waits: window closed in us-west-2 until Tue 09:00 America/Los_Angeles "
        "(outside 09:00-17:00)" in text
    )
    assert (
        "gamma waits: window closed in gamma until Mon 09:00 America/New_York "
        "(no start Fri after 12:00; Sat, Sun closed)" in text
    )
    assert (
        "window closed in ap-south-2 until Mon 09:00 Asia/Kolkata (holiday Fri 03-14: Holi;" in text
    )
    # The checks that run: windows, blockers, alarms, bakes with their data, tests, anomaly.
    assert 'blockers neither true nor unknown: ALARM("orders-sev2-open");' in text
    assert "rollback alarm orders-rollback not in ALARM" in text
    assert "AZ: 23-24 hosts, <= 5-6 out, >= 16 serving, budget 1, bake 1h + 500 requests" in text
    assert "tests: ./ci/canary --env gamma; ./ci/load --env gamma --minutes 10" in text
    assert "anomaly detection: medium, alpha 0.01 per stage:" in text
    assert (
        "wave 1 first-low-traffic: us-east-2, 72 hosts, Mon 03-10 14:45 -> 19:55 UTC; then bake 12h"
        in text
    )


def test_region_filter(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["plan", "-f", str(PRODUCTION), "--at", AT, "--tz", "UTC"]
    _, out, _ = run(capsys, *args, "--region", "us-east-1", "--region", "ap-south-2")
    rows = [ln.split()[0] for ln in out.splitlines() if re.match(r"  \S+ UTC ", ln)]
    assert rows == ["us-east-1", "ap-south-2"]
    assert out.splitlines()[0].startswith("orders-app: 1824 hosts")  # the summary is whole
    assert "showing ap-south-2, us-east-1 of" in out
    assert "wave 1 " not in out
    assert "wave 4 wave-4: us-east-1" in out
    code, _, err = run(capsys, *args, "--region", "mars-1")
    assert code == ExitCode.CONFIG
    assert err.startswith("fleetwave: error: --region mars-1: not in the plan (regions: preprod")


def test_json_has_summary_timeline_waits_and_anomaly(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "plan", "-f", str(PRODUCTION), "--at", AT, "--tz", "UTC", "--json")
    doc = json.loads(out)
    assert doc["summary"]["hosts"] == 1836
    assert doc["summary"]["stages"] == 104
    assert doc["summary"]["earliest_finish"] == "2025-03-17T11:20:00+00:00"
    stages = {s["id"]: s for s in doc["timeline"]["stages"]}
    box = stages["w1/us-east-2/onebox"]
    assert box["start"] == "2025-03-10T14:45:00+00:00"
    assert box["end"] == "2025-03-10T15:50:00+00:00"
    assert box["start_local"] == "2025-03-10T10:45:00-04:00"
    assert box["timezone"] == "America/New_York"
    wait = stages["w2/us-west-2/onebox"]["waits"][0]
    assert wait["until_local"] == "2025-03-11T09:00:00-07:00"
    assert wait["reasons"] == ["outside 09:00-17:00"]
    assert doc["anomaly"] == load_pipeline(PRODUCTION).anomaly.to_json()
    assert doc["checks"]["windows"]["us-east-1"]["holidays"] == "US-VA"
    assert plan_from_dict(doc).stages()[0].earliest_start is not None


# -- plan --out / deploy --plan ------------------------------------------------------------


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """The lab pipeline split into a parent and a child, with a signing key."""
    shutil.copy(LAB.parent / "topology.yaml", tmp_path / "topology.yaml")
    parent = LAB.read_text().replace("name: lab-app\n", "")
    (tmp_path / "base.yaml").write_text(parent)
    (tmp_path / "pipeline.yaml").write_text("extends: base.yaml\nname: lab-app\n")
    generate_keypair(tmp_path / "keys", "release")
    return tmp_path


def _package(work: Path, version: str = "1.0.0") -> Path:
    src = work / f"src-{version}"
    src.mkdir(parents=True)
    (src / "app.txt").write_text(f"app {version}\n")
    return build_package(
        src,
        name="demo",
        version=version,
        private_key=work / "keys" / "release.key",
        out_dir=work / "dist",
    )


def _deploy(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    stdin = sys.stdin
    sys.stdin = open(os.devnull)  # noqa: SIM115 - closed below
    try:
        return run(capsys, "deploy", *args)
    finally:
        sys.stdin.close()
        sys.stdin = stdin


def _nothing_happened(lab: Path) -> None:
    state = lab / ".fleetwave"
    assert (
        not (state / "journal.db").exists()
        or not (state / "locks").exists()
        or not any((state / "locks").iterdir())
    )
    assert not (state / "events.jsonl").exists()


def test_out_needs_a_package_and_the_whole_plan(
    lab: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = str(lab / "pipeline.yaml")
    code, _, err = run(capsys, "plan", "-f", p, "--out", str(lab / "plan.json"))
    assert code == ExitCode.CONFIG
    assert "--out needs --package" in err
    pkg = str(_package(lab))
    code, _, err = run(capsys, "plan", "-f", p, "--package", pkg, "--out", "x", "--region", "lab-1")
    assert code == ExitCode.CONFIG
    assert "leave out --region" in err
    assert not (lab / "plan.json").exists()


def test_saved_plan_records_inputs_and_deploy_uses_it(
    lab: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    p, saved, pkg = lab / "pipeline.yaml", lab / "plan.json", _package(lab)
    code, out, _ = run(capsys, "plan", "-f", str(p), "--package", str(pkg), "--out", str(saved))
    assert code == 0
    assert f"saved to {saved}" in out
    doc = json.loads(saved.read_text())
    chain = [Path(f["path"]).name for f in doc["inputs"]["pipeline"]]
    assert chain == ["pipeline.yaml", "base.yaml"]  # the whole extends: chain
    assert doc["inputs"]["topology"]["path"] == str((lab / "topology.yaml").resolve())
    assert doc["inputs"]["package"]["version"] == "1.0.0"
    assert plan_from_dict(doc["plan"]) == plan_pipeline(load_pipeline(p))

    # Unchanged: deploy gets past the check and shows that plan before asking.
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    code = main(["deploy", "-f", str(p), str(pkg), "--plan", str(saved)])
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("lab-app: 6 hosts, 1 wave, 3 stages;")
    assert f"plan: {saved}, saved " in out


@pytest.mark.parametrize("change", ["parent", "topology", "package", "edited"])
def test_deploy_refuses_a_stale_saved_plan(
    lab: Path, change: str, capsys: pytest.CaptureFixture[str]
) -> None:
    p, saved, pkg = lab / "pipeline.yaml", lab / "plan.json", _package(lab)
    assert main(["plan", "-f", str(p), "--package", str(pkg), "--out", str(saved)]) == 0
    capsys.readouterr()
    if change == "parent":
        base = lab / "base.yaml"
        base.write_text(base.read_text().replace("max_batch: 1", "max_batch: 2"))
        want = f"pipeline file {base.resolve()} changed"
    elif change == "topology":
        topo = lab / "topology.yaml"
        topo.write_text(topo.read_text() + "\n# edited\n")
        want = f"topology {topo.resolve()} changed"
    elif change == "package":
        pkg = _package(lab, "1.0.1")
        want = "the package is demo 1.0.1"
    else:
        doc = json.loads(saved.read_text())
        doc["plan"]["waves"][0]["regions"][0]["stages"].pop()
        saved.write_text(json.dumps(doc))
        want = "saved plan differs from what its unchanged inputs plan now"
    code, out, err = _deploy(capsys, "-f", str(p), str(pkg), "--plan", str(saved), "--yes")
    assert code == ExitCode.CONFIG
    assert len(err.strip().splitlines()) == 1, err
    assert want in err
    assert out == ""
    _nothing_happened(lab)


def test_deploy_refuses_a_file_that_is_no_saved_plan(
    lab: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = lab / "bad.json"
    bad.write_text('{"format": 1}')
    code, _, err = _deploy(
        capsys, "-f", str(lab / "pipeline.yaml"), str(_package(lab)), "--plan", str(bad), "--yes"
    )
    assert code == ExitCode.CONFIG
    assert f"{bad}: not a saved plan: expected fleetwave_saved_plan: 1" in err
    _nothing_happened(lab)
