"""The deployment commands' own behaviour (no hosts needed): refusals, lock errors,
and status/history/explain/rollback-request over a journal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetwave.cli import main
from fleetwave.planning.codec import plan_to_dict
from fleetwave.planning.model import Plan
from fleetwave.rollout.journal import Journal
from fleetwave.rollout.lock import DeploymentLock
from fleetwave_agent.keys import generate_keypair

from .sim import make_plan

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    for name in ("pipeline.yaml", "topology.yaml"):
        shutil.copy(REPO / "examples" / "lab" / name, tmp_path / name)
    generate_keypair(tmp_path / "keys", "release")  # the pipeline's deploy.trust
    return tmp_path / "pipeline.yaml"


def _release_keys(pipeline: Path) -> tuple[Path, Path]:
    keys = pipeline.parent / "keys"
    return keys / "release.key", keys / "release.pub"


def _journal_with_run(state: Path, plan: Plan) -> Journal:
    j = Journal(state / "journal.db")
    j.create_deployment(
        deployment_id="dep-1",
        pipeline="lab-app",
        environment="lab",
        package_id="a" * 64,
        package_path="/pkg",
        plan=plan_to_dict(plan),
        now=time.time(),
        controller="x:1",
    )
    return j


def test_deploy_refuses_without_yes_when_not_a_tty(pipeline: Path, tmp_path: Path) -> None:
    pkg = tmp_path / "x.fwpkg"
    pkg.write_bytes(b"")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "controller"), str(REPO / "agent")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "fleetwave.cli", "deploy", "-f", str(pipeline), str(pkg)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=60,
    )
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith("fleetwave: error:"), proc.stderr


def test_deploy_refusal_names_the_tty_rule(
    pipeline: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.inproc.agents import make_package

    pkg = make_package(tmp_path / "pkg", keys=_release_keys(pipeline))
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115 - closed by pytest
    assert main(["deploy", "-f", str(pipeline), str(pkg.path)]) == 2
    assert "stdin is not a TTY; pass --yes" in capsys.readouterr().err
    sys.stdin.close()


def test_status_history_explain_and_rollback_request(
    pipeline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = pipeline.parent / ".fleetwave"
    plan = make_plan([[[2]]])
    j = _journal_with_run(state, plan)
    lock = DeploymentLock(state, "lab-app", "lab")
    lock.acquire(now=time.time(), deployment_id="dep-1")
    try:
        assert main(["status", "-f", str(pipeline)]) == 0
        out = capsys.readouterr().out
        assert "dep-1: running" in out
        assert "lock: lock" in out
        assert main(["history", "-f", str(pipeline)]) == 0
        assert "dep-1" in capsys.readouterr().out
        # a running deployment held by a live controller: the request goes to the journal
        assert main(["rollback", "-f", str(pipeline), "--yes", "--reason", "bad"]) == 0
        assert "requested" in capsys.readouterr().err
        assert [r.reason for r in j.take_requests("dep-1", time.time())] == ["bad"]
        assert main(["explain", "dep-1", "-f", str(pipeline)]) == 0
        assert "deployment dep-1 of lab-app (lab)" in capsys.readouterr().out
    finally:
        lock.release()
        j.close()


def test_second_deploy_is_refused_while_locked(
    pipeline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.inproc.agents import make_package

    pkg = make_package(tmp_path / "pkg", keys=_release_keys(pipeline))
    lock = DeploymentLock(pipeline.parent / ".fleetwave", "lab-app", "lab")
    lock.acquire(now=time.time(), deployment_id="other")
    try:
        assert main(["deploy", "-f", str(pipeline), str(pkg.path), "--yes"]) == 9
        assert "held by" in capsys.readouterr().err
    finally:
        lock.release()


def test_rollback_accepts_only_the_latest_deployment(
    pipeline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = pipeline.parent / ".fleetwave"
    j = _journal_with_run(state, make_plan([[[2]]]))
    j.create_deployment(
        deployment_id="dep-2",
        pipeline="lab-app",
        environment="lab",
        package_id="b" * 64,
        package_path="/pkg",
        plan=plan_to_dict(make_plan([[[2]]])),
        now=time.time() + 1,
        controller="x:1",
    )
    j.close()
    assert main(["rollback", "-f", str(pipeline), "dep-1", "--yes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "not the latest" in err[0]
    assert "dep-2" in err[0]
