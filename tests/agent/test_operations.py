"""Install/activate/rollback orchestration with real packages, hooks and health checks."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetwave_agent.config import StopFailurePolicy
from fleetwave_agent.errors import (
    HealthCheckError,
    HookError,
    ReleaseNotFoundError,
    RolledBackError,
    SignatureError,
)
from fleetwave_agent.operations import Agent
from fleetwave_agent.release import Release
from fleetwave_core.errors import LockedError

from .conftest import PackageBuilder, free_port, trace

pytestmark = pytest.mark.integration

ALL_HOOKS = {h: "true" for h in ("stop", "before_install", "after_install", "start", "validate")}
MakeAgent = Callable[..., Agent]


def _current(agent: Agent) -> Release:
    current = agent.store.current()
    assert current is not None
    return current


def _last(agent: Agent) -> dict[str, Any]:
    last = agent.oplog.last()
    assert last is not None
    return last


def _tcp_check(port: int, deadline: str = "300ms") -> dict[str, object]:
    return {"name": "port", "kind": "tcp", "port": port, "interval": "50ms", "deadline": deadline}


def test_install_runs_hooks_in_order_and_records(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    v1 = make_package("1", ALL_HOOKS)
    v2 = make_package("2", ALL_HOOKS)
    first = agent.install(v1)
    assert first["outcome"] == "ok"
    assert first["previous_version"] is None
    assert trace(agent.root) == ["before_install 1", "after_install 1", "start 1", "validate 1"]
    (agent.root / "run" / "trace").unlink()
    second = agent.install(v2)
    assert trace(agent.root) == [
        "stop 1",
        "before_install 2",
        "after_install 2",
        "start 2",
        "validate 2",
    ]
    assert second["previous_version"] == "1"
    assert second["current_version"] == "2"
    assert [h["hook"] for h in second["hooks"]] == [
        "stop",
        "before_install",
        "after_install",
        "start",
        "validate",
    ]
    for hook in second["hooks"]:
        assert Path(hook["log"]).is_file()
        assert str(agent.root) in hook["log"]
    assert _last(agent) == second | {"duration_s": _last(agent)["duration_s"]}
    lines = (agent.root / "ops" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["version"] for line in lines] == ["1", "2"]
    again = agent.install(v2)
    assert again["outcome"] == "unchanged"


def test_failed_validate_rolls_back_itself(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    agent.install(make_package("1", ALL_HOOKS))
    bad = make_package("2", ALL_HOOKS | {"validate": "echo 'smoke test failed'; exit 1"})
    (agent.root / "run" / "trace").unlink()
    with pytest.raises(RolledBackError, match=r"2 failed .*validate.*rolled back to 1") as info:
        agent.install(bad)
    assert trace(agent.root) == [
        "stop 1",
        "before_install 2",
        "after_install 2",
        "start 2",
        "validate 2",
        "stop 2",
        "start 1",
    ]
    assert _current(agent).version == "1"
    record = _last(agent)
    assert record["rolled_back"] is True
    assert record["outcome"] == "rolled_back"
    assert "smoke test failed" in record["reason"]
    assert info.value.result["rolled_back"] is True
    assert record["current_version"] == "1"


def test_failed_health_rolls_back_and_checks_previous(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    port = free_port()
    # v1's start "serves" by touching a flag its command check looks for; v2's never passes.
    good_check = {
        "name": "up",
        "kind": "command",
        "argv": ["./bin/check"],
        "interval": "50ms",
        "deadline": "2s",
    }
    v1 = make_package(
        "1",
        {"start": 'touch "$FLEETWAVE_RUN_DIR/up"', "stop": 'rm -f "$FLEETWAVE_RUN_DIR/up"'},
        checks=[good_check],
        scripts={"check": 'test -e "$FLEETWAVE_RUN_DIR/up"'},
    )
    agent.install(v1)
    v2 = make_package("2", {"start": "true", "stop": "true"}, checks=[_tcp_check(port)])
    with pytest.raises(RolledBackError, match=r"health check 'port' failed.*rolled back to 1$"):
        agent.install(v2)
    record = _last(agent)
    assert record["rolled_back"]
    assert [c["name"] for c in record["health"]] == ["up"]
    assert record["health"][0]["ok"] is True
    assert _current(agent).version == "1"


def test_first_install_failing_health_has_nothing_to_roll_back_to(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    pkg = make_package("1", {"start": "true"}, checks=[_tcp_check(free_port())])
    with pytest.raises(HealthCheckError, match="no previous release"):
        agent.install(pkg)
    assert _last(agent)["outcome"] == "failed"


def test_before_install_failure_restarts_the_old_release(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    agent.install(make_package("1", ALL_HOOKS))
    (agent.root / "run" / "trace").unlink()
    with pytest.raises(HookError, match="before_install"):
        agent.install(make_package("2", ALL_HOOKS | {"before_install": "exit 4"}))
    assert trace(agent.root) == ["stop 1", "before_install 2", "start 1"]
    assert _current(agent).version == "1"


@pytest.mark.parametrize("policy", [StopFailurePolicy.CONTINUE, StopFailurePolicy.ABORT])
def test_stop_fencing(
    make_package: PackageBuilder, make_agent: MakeAgent, policy: StopFailurePolicy
) -> None:
    agent = make_agent(stop_failure=policy, stop_timeout_s=0.3)
    agent.install(make_package("1", ALL_HOOKS | {"stop": "sleep 30"}))
    v2 = make_package("2", ALL_HOOKS)
    if policy is StopFailurePolicy.ABORT:
        with pytest.raises(HookError, match=r"stop.*timed out.*stop_failure=abort"):
            agent.install(v2)
        assert _current(agent).version == "1"
        assert _last(agent)["outcome"] == "failed"
    else:
        record = agent.install(v2)
        assert record["outcome"] == "ok"
        assert _current(agent).version == "2"
        assert any("timed out" in w and "continuing" in w for w in record["warnings"])
        assert record["hooks"][0]["timed_out"] is True


def test_activate_and_rollback(make_package: PackageBuilder, make_agent: MakeAgent) -> None:
    agent = make_agent()
    agent.install(make_package("1", ALL_HOOKS))
    agent.install(make_package("2", ALL_HOOKS))
    (agent.root / "run" / "trace").unlink()
    record = agent.rollback()
    assert record["op"] == "rollback"
    assert record["version"] == "1"
    assert trace(agent.root) == ["stop 2", "start 1"]
    assert _current(agent).version == "1"
    record = agent.activate("2")
    assert record["op"] == "activate"
    assert _current(agent).version == "2"
    with pytest.raises(ReleaseNotFoundError):
        agent.activate("9")


def test_rollback_without_previous(make_package: PackageBuilder, make_agent: MakeAgent) -> None:
    agent = make_agent()
    with pytest.raises(ReleaseNotFoundError, match="no previous release"):
        agent.rollback()
    agent.install(make_package("1"))
    with pytest.raises(ReleaseNotFoundError):
        agent.rollback()


def test_refused_package_changes_nothing(
    make_package: PackageBuilder, make_agent: MakeAgent, tmp_path: Path
) -> None:
    agent = make_agent()
    agent.install(make_package("1", ALL_HOOKS))
    pkg = make_package("2", ALL_HOOKS)
    data = bytearray(pkg.read_bytes())
    data[-10] ^= 0xFF
    tampered = tmp_path / "tampered.fwpkg"
    tampered.write_bytes(bytes(data))
    (agent.root / "run" / "trace").unlink()
    with pytest.raises(SignatureError.__mro__[1]):  # IntegrityError (checksum or signature)
        agent.install(tampered)
    assert trace(agent.root) == []  # the running release was not even stopped
    assert _current(agent).version == "1"
    assert [r.version for r in agent.store.releases()] == ["1"]


def test_status_verify_installed_and_gc(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent(keep_releases=2)
    for version in ("1", "2", "3"):
        agent.install(make_package(version, files={"data.txt": version}))
    status = agent.status()
    assert status["current"]["version"] == "3"
    assert status["previous"]["version"] == "2"
    assert status["last_operation"]["version"] == "3"
    assert agent.verify_installed() == {"version": "3", "ok": True, "drift": []}
    target = _current(agent).path / "data.txt"
    os.chmod(target, 0o644)
    target.write_text("tampered")
    drift = agent.verify_installed()
    assert not drift["ok"]
    assert any("data.txt" in d for d in drift["drift"])
    removed = agent.gc()["removed"]
    assert [r["version"] for r in removed] == ["1"]
    assert [r.version for r in agent.store.releases()] == ["2", "3"]


def test_tampered_copy_of_an_installed_package_is_refused(
    make_package: PackageBuilder, make_agent: MakeAgent, tmp_path: Path
) -> None:
    agent = make_agent()
    v1 = make_package("1", ALL_HOOKS)
    agent.install(v1)
    agent.install(make_package("2", ALL_HOOKS))
    data = bytearray(v1.read_bytes())
    data[-10] ^= 0xFF  # same manifest (same package id), corrupted payload
    tampered = tmp_path / "again.fwpkg"
    tampered.write_bytes(bytes(data))
    with pytest.raises(SignatureError.__mro__[1]):
        agent.install(tampered)
    assert _current(agent).version == "2"


def test_a_second_operation_is_refused_while_one_runs(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    pkg = make_package("1")
    with agent.store.lock(), pytest.raises(LockedError, match=f"pid {os.getpid()}"):
        make_agent().install(pkg)
    assert agent.store.current() is None
