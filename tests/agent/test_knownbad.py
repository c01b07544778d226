"""Known-bad releases: recorded when they fail, never rolled back to unless forced."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetwave_agent.errors import HookError, KnownBadReleaseError, RolledBackError
from fleetwave_agent.exporter import render_snapshot
from fleetwave_agent.operations import Agent
from fleetwave_agent.rpc import RpcServer
from fleetwave_agent.rpc_protocol import Request
from fleetwave_core.exitcodes import ExitCode

from .conftest import AGENT_CMD, PackageBuilder, agent_env, trace

pytestmark = pytest.mark.integration

MakeAgent = Callable[..., Agent]
HOOKS = {"stop": "true", "start": "true"}
#: A start hook that fails while ROOT/run/broken exists.
FRAGILE = {"stop": "true", "start": 'test ! -e "$FLEETWAVE_RUN_DIR/broken"'}
#: The app "runs" while ROOT/run/up exists, and its health check says so.
SERVING = {"start": 'touch "$FLEETWAVE_RUN_DIR/up"', "stop": 'rm -f "$FLEETWAVE_RUN_DIR/up"'}
UP_CHECK = {
    "name": "up",
    "kind": "command",
    "argv": ["./bin/check"],
    "interval": "20ms",
    "deadline": "300ms",
}
CHECK_SCRIPT = {"check": 'test -e "$FLEETWAVE_RUN_DIR/up"'}


def _versions(items: list[dict[str, object]]) -> list[object]:
    return [item["version"] for item in items]


def test_a_release_that_failed_is_never_previous_nor_rolled_back_to(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    """The reproduction of issue 8: 1, 2, then a 3 whose start hook exits 1."""
    agent = make_agent()
    agent.install(make_package("1", HOOKS))
    agent.install(make_package("2", HOOKS))
    with pytest.raises(RolledBackError, match="rolled back to 2"):
        agent.install(make_package("3", {"stop": "true", "start": "exit 1"}))
    status = agent.status()
    assert status["current"]["version"] == "2"
    assert status["previous"]["version"] == "1"  # the last good one, not 3
    [bad] = status["bad_releases"]
    assert (bad["version"], bad["op"]) == ("3", "install")
    assert "start" in bad["reason"]
    assert agent.oplog.last()["marked_bad"] == ["3"]  # type: ignore[index]
    (agent.root / "run" / "trace").unlink()
    record = agent.rollback()
    assert record["version"] == "1"
    assert trace(agent.root) == ["stop 2", "start 1"]
    assert 'fleetwave_agent_bad_release_info{name="app",operation="install",package_id=' in (
        render_snapshot(agent)
    )


def test_rollback_refuses_a_known_bad_release_unless_forced(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    broken = agent.root / "run" / "broken"
    broken.parent.mkdir(parents=True)
    broken.touch()
    with pytest.raises(HookError, match="no previous release"):
        agent.install(make_package("1", FRAGILE))  # a first install that fails stays current
    broken.unlink()
    agent.install(make_package("2", HOOKS))
    assert agent.status()["previous"] is None
    with pytest.raises(KnownBadReleaseError) as info:
        agent.rollback()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("rollback refused: the previous release app 1 (")
    assert message.endswith("is known bad; give --force to activate it anyway")
    assert info.value.exit_code == ExitCode.KNOWN_BAD_RELEASE
    assert agent.store.current().version == "2"  # type: ignore[union-attr]
    record = agent.rollback(force=True)
    assert record["version"] == "1"
    assert any(
        w.startswith("forced: activating the known-bad release app 1") for w in record["warnings"]
    )
    assert any("no longer marked bad" in w for w in record["warnings"])
    assert agent.status()["bad_releases"] == []


def test_a_forced_rollback_that_fails_again_stays_marked(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    (agent.root / "run").mkdir(parents=True)
    (agent.root / "run" / "broken").touch()
    with pytest.raises(HookError):
        agent.install(make_package("1", FRAGILE))
    agent.install(make_package("2", HOOKS))
    with pytest.raises(HookError):
        agent.rollback(force=True)
    assert _versions(agent.status()["bad_releases"]) == ["1"]


def test_before_install_failure_marks_the_release_bad(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    agent.install(make_package("1", HOOKS))
    with pytest.raises(HookError):
        agent.install(make_package("2", HOOKS | {"before_install": "exit 3"}))
    assert _versions(agent.status()["bad_releases"]) == ["2"]
    assert agent.status()["previous"] is None  # 2 was never current; 1 is


def test_activating_the_current_release_restarts_an_app_that_is_down(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    agent.install(make_package("1", SERVING, checks=[UP_CHECK], scripts=CHECK_SCRIPT))
    assert agent.activate("1")["outcome"] == "unchanged"  # healthy: left alone
    (agent.root / "run" / "up").unlink()  # e.g. killed between its stop hook and a switch
    (agent.root / "run" / "trace").unlink()
    record = agent.activate("1")
    assert record["outcome"] == "ok"
    assert any("failing health (up); restarting it" in w for w in record["warnings"])
    assert trace(agent.root) == ["stop 1", "start 1"]
    assert (agent.root / "run" / "up").exists()


def test_activating_the_current_release_that_cannot_start_marks_it_bad(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    hooks = SERVING | {"start": 'test ! -e "$FLEETWAVE_RUN_DIR/broken" && ' + SERVING["start"]}
    agent.install(make_package("1", hooks, checks=[UP_CHECK], scripts=CHECK_SCRIPT))
    (agent.root / "run" / "up").unlink()
    (agent.root / "run" / "broken").touch()
    with pytest.raises(HookError):
        agent.activate("1")
    assert _versions(agent.status()["bad_releases"]) == ["1"]


def test_rpc_rollback_takes_force_and_reports_the_refusal(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    (agent.root / "run").mkdir(parents=True)
    (agent.root / "run" / "broken").touch()
    with pytest.raises(HookError):
        agent.install(make_package("1", FRAGILE))
    (agent.root / "run" / "broken").unlink()
    agent.install(make_package("2", HOOKS))
    server = RpcServer(agent)
    refused = server.handle(Request(id=1, op="rollback", args={}), None)
    assert (refused.ok, refused.error_type, refused.exit_code) == (
        False,
        "KnownBadReleaseError",
        15,
    )
    wrong = server.handle(Request(id=2, op="rollback", args={"force": "yes"}), None)
    assert (wrong.ok, wrong.exit_code) == (False, ExitCode.CONFIG)
    forced = server.handle(Request(id=3, op="rollback", args={"force": True}), None)
    assert forced.ok
    assert forced.result["version"] == "1"


def test_cli_status_shows_bad_releases_and_rollback_refuses_in_one_line(
    make_package: PackageBuilder, keypair: tuple[Path, Path], make_agent: MakeAgent
) -> None:
    agent = make_agent()
    (agent.root / "run").mkdir(parents=True)
    (agent.root / "run" / "broken").touch()
    with pytest.raises(HookError):
        agent.install(make_package("1", FRAGILE))
    (agent.root / "run" / "broken").unlink()
    agent.install(make_package("2", HOOKS))
    base = [*AGENT_CMD, "--root", str(agent.root), "--trust", str(keypair[1])]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args],
            capture_output=True,
            text=True,
            env=agent_env(),
            timeout=60,
            check=False,
        )

    status = run("status", "--no-health")
    assert status.returncode == 0, status.stderr
    assert any(
        line.startswith("bad        app 1  (") and "failed in install" in line
        for line in status.stdout.splitlines()
    )
    refused = run("rollback")
    assert refused.returncode == 15
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("fleetwave-agent: error: rollback refused: the previous release app 1")
    forced = run("rollback", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "rolled back to 1" in forced.stdout
