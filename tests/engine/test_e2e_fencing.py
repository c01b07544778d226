"""End-to-end on the namespace lab: what must never drain a host. A package signed by an
untrusted key, and a second controller (another state directory, same fleet) while the
first one holds the hosts' leases. HAProxy shows every server UP throughout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetwave_agent.keys import generate_keypair
from fleetwave_agent.package import build_package
from fleetwave_core.exitcodes import ExitCode

from . import test_e2e_lab
from .test_e2e_lab import DEMO_APP, DEPLOY_TIMEOUT_S, Lab, _wait_for

lab = test_e2e_lab.lab  # the fixture: a fleet per test, torn down after it

pytestmark = pytest.mark.e2e


def _argv(*args: str, pipeline: Path) -> list[str]:
    return [sys.executable, "-m", "fleetwave.cli", *args, "-f", str(pipeline)]


def _watch_up(env: Lab, proc: subprocess.Popen[str]) -> tuple[str, str, list[str]]:
    """Poll HAProxy until ``proc`` ends; every moment some server was not UP."""
    assert env.fleet.haproxy is not None
    not_up: list[str] = []
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        for h in env.fleet.hosts:
            status = env.fleet.haproxy.server_status(h.name)
            if not status.startswith("UP"):
                not_up.append(f"{h.name}: {status}")
        time.sleep(0.1)
    out, err = proc.communicate(timeout=30)
    return out, err, not_up


def test_untrusted_package_drains_no_host(lab: Callable[..., Lab]) -> None:
    env = lab(hosts=3)
    env.first_install()
    private, _ = generate_keypair(env.work / "intruder", "intruder")
    src = env.work / "src-evil"
    shutil.copytree(DEMO_APP, src)
    evil = build_package(
        src, name="demo-app", version="6.6.6", private_key=private, out_dir=env.work / "evil"
    )
    proc = env.start("deploy", str(evil), "--yes")
    _out, err, not_up = _watch_up(env, proc)
    assert proc.returncode == ExitCode.INTEGRITY, err
    assert "not in the trusted keyring" in err
    assert not_up == []
    assert set(env.versions().values()) == {"1.0.0"}
    history = env.cli("history", "--json", check=True).stdout.splitlines()
    assert len(history) == 1  # no row for the refused deployment


def test_second_controller_from_another_state_dir_is_refused(lab: Callable[..., Lab]) -> None:
    env = lab(hosts=3, bake="1s")
    env.first_install()
    # The same fleet, a copy of the pipeline with its own state directory: the local
    # lock cannot see the first controller; only the hosts' leases can.
    data = json.loads(env.pipeline.read_text())
    data["deploy"]["state_dir"] = "state-b"
    other = env.work / "pipeline-b.yaml"
    other.write_text(json.dumps(data))
    # The first controller's one-box bakes long enough for the second to try.
    first_data = json.loads(env.pipeline.read_text())
    env.pipeline.write_text(json.dumps({**first_data, "onebox": {"bake": {"time": "20s"}}}))
    first = env.start("deploy", str(env.package("2.0.0")), "--yes")
    try:
        _wait_for(first, env, "done")  # the one-box is done and now bakes for 20 s
        env.wait_all_up()
        second = subprocess.Popen(
            _argv("deploy", str(env.package("3.0.0")), "--yes", pipeline=other),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env._env(),
            stdin=subprocess.DEVNULL,
        )
        _out, err, not_up = _watch_up(env, second)
        assert second.returncode == ExitCode.LOCKED, err
        assert "lease is held by deployment" in err
        assert "nothing was drained" in err
        assert not_up == []
        assert first.poll() is None, "the first controller must go on undisturbed"
    finally:
        _out, first_err = first.communicate(timeout=DEPLOY_TIMEOUT_S)
    assert first.returncode == 0, first_err
    assert set(env.versions().values()) == {"2.0.0"}
    env.wait_all_up()
    refused = subprocess.run(
        _argv("history", "--json", pipeline=other),
        capture_output=True,
        text=True,
        env=env._env(),
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert [json.loads(r)["state"] for r in refused] == ["refused"]
    # The first controller released its leases: the second can deploy now.
    again = subprocess.run(
        _argv("deploy", str(env.package("4.0.0")), "--yes", pipeline=other),
        capture_output=True,
        text=True,
        env=env._env(),
        timeout=DEPLOY_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert again.returncode == 0, again.stderr
    assert set(env.versions().values()) == {"4.0.0"}
