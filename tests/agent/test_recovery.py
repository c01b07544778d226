"""The agent recovers from its own crash: at the next operation, RPC session or start."""

from __future__ import annotations

import io
import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetwave_agent.operations import Agent
from fleetwave_agent.recovery import Action, plan
from fleetwave_agent.rpc import RpcServer, serve_stream
from fleetwave_agent.store import CRASH_ENV

from .conftest import AGENT_CMD, PackageBuilder, agent_env, trace

MakeAgent = Callable[..., Agent]
#: Kills the agent (the hook's parent) while ROOT/run/die exists.
DIE = '[ -e "$FLEETWAVE_RUN_DIR/die" ] && kill -9 $PPID\n'
UP = 'touch "$FLEETWAVE_RUN_DIR/up"'
DOWN = 'rm -f "$FLEETWAVE_RUN_DIR/up"'
ID1, ID2 = "1" * 64, "2" * 64


@pytest.mark.unit
@pytest.mark.parametrize(
    ("record", "current", "action"),
    [
        ({"op": "install", "phase": "begun"}, ID1, Action.NOTHING),
        ({"op": "install", "phase": "stopping", "package_id": ID2}, ID1, Action.RESTART_CURRENT),
        (
            {"op": "install", "phase": "switched", "package_id": ID2, "previous_package_id": ID1},
            ID2,
            Action.UNDO,
        ),
        ({"op": "install", "phase": "switched", "package_id": ID2}, ID2, Action.RESTART_CURRENT),
        (
            {"op": "rollback", "phase": "switched", "package_id": ID1, "previous_package_id": ID2},
            ID1,
            Action.RESTART_CURRENT,
        ),
        (
            {"op": "install", "phase": "switched_back", "package_id": ID2},
            ID1,
            Action.RESTART_CURRENT,
        ),
        ({"op": "install", "phase": "stopping"}, None, Action.NOTHING),
        ({"op": "install", "phase": "bogus"}, ID1, Action.RESTART_CURRENT),
        # An operator's stop means "down": a crash in it must not bring the app back.
        ({"op": "stop", "phase": "stopping", "package_id": ID1}, ID1, Action.NOTHING),
        ({"op": "start", "phase": "starting", "package_id": ID1}, ID1, Action.RESTART_CURRENT),
    ],
)
def test_plan(record: dict[str, object], current: str | None, action: Action) -> None:
    decided = plan(record, current)
    assert decided.action is action
    if action is Action.UNDO:
        assert decided.undo_to == ID1


def _cli_install(agent: Agent, keypair: tuple[Path, Path], package: Path, **env: str):
    return subprocess.run(
        [*AGENT_CMD, "--root", str(agent.root), "--trust", str(keypair[1]), "install", package],
        capture_output=True,
        text=True,
        env=agent_env() | env,
        timeout=60,
        check=False,
    )


def _session(agent: Agent) -> None:
    """One RPC session that sends nothing: the hello, then EOF."""
    out = io.BytesIO()
    assert serve_stream(RpcServer(agent), io.BytesIO(b""), out) == 0
    assert out.getvalue().startswith(b'{"hello"')


def _log(agent: Agent) -> list[dict[str, object]]:
    return [json.loads(line) for line in agent.oplog.log_path.read_text().splitlines()]


@pytest.mark.integration
def test_killed_between_stop_and_switch_restarts_the_app_at_the_next_session(
    make_package: PackageBuilder, make_agent: MakeAgent, keypair: tuple[Path, Path]
) -> None:
    agent = make_agent()
    agent.install(make_package("1", {"start": UP, "stop": DOWN + "\n" + DIE}))
    run = agent.root / "run"
    (run / "die").touch()
    (run / "trace").unlink()
    died = _cli_install(agent, keypair, make_package("2", {"start": UP, "stop": DOWN}))
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert not (run / "up").exists()  # the app is down, and 1 is still current
    assert agent.oplog.interrupted() is not None
    (run / "die").unlink()

    _session(agent)

    assert (run / "up").exists()
    assert trace(agent.root) == ["stop 1", "stop 1", "start 1"]
    assert agent.store.current().version == "1"  # type: ignore[union-attr]
    assert agent.oplog.interrupted() is None
    ops = [(e["op"], e["outcome"]) for e in _log(agent)]
    assert ops[-2:] == [("install", "interrupted"), ("recover", "ok")]
    assert agent.status()["bad_releases"] == []


@pytest.mark.integration
def test_killed_during_an_operators_stop_stays_stopped(
    make_package: PackageBuilder, make_agent: MakeAgent, keypair: tuple[Path, Path]
) -> None:
    agent = make_agent()
    agent.install(make_package("1", {"start": UP, "stop": DOWN + "\n" + DIE}))
    run = agent.root / "run"
    (run / "die").touch()
    (run / "trace").unlink()
    died = subprocess.run(
        [*AGENT_CMD, "--root", str(agent.root), "--trust", str(keypair[1]), "stop"],
        capture_output=True,
        text=True,
        env=agent_env(),
        timeout=60,
        check=False,
    )
    assert died.returncode == -signal.SIGKILL, died.stderr
    (run / "die").unlink()

    _session(agent)

    assert not (run / "up").exists()
    assert trace(agent.root) == ["stop 1"]
    ops = [(e["op"], e["outcome"]) for e in _log(agent)]
    assert ops[-1:] == [("stop", "interrupted")]


@pytest.mark.integration
def test_killed_after_the_switch_undoes_the_install_at_the_next_start(
    make_package: PackageBuilder, make_agent: MakeAgent, keypair: tuple[Path, Path]
) -> None:
    agent = make_agent()
    agent.install(make_package("1", {"start": UP, "stop": DOWN}))
    run = agent.root / "run"
    (run / "die").touch()
    died = _cli_install(agent, keypair, make_package("2", {"start": DIE + UP, "stop": DOWN}))
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert agent.store.current().version == "2"  # type: ignore[union-attr]
    (run / "die").unlink()
    (run / "trace").unlink()

    actions = make_agent().recover()

    assert any("after the switch; undoing it" in a for a in actions)
    assert trace(agent.root) == ["stop 2", "start 1"]
    assert agent.store.current().version == "1"  # type: ignore[union-attr]
    assert (run / "up").exists()
    last = agent.oplog.last()
    assert last is not None
    assert (last["op"], last["outcome"], last["current_version"]) == ("recover", "ok", "1")
    assert agent.status()["bad_releases"] == []  # interrupted is not failed


@pytest.mark.integration
def test_a_session_clears_what_a_killed_install_left_in_the_store(
    make_package: PackageBuilder, make_agent: MakeAgent, keypair: tuple[Path, Path]
) -> None:
    agent = make_agent()
    agent.install(make_package("1"))
    died = _cli_install(agent, keypair, make_package("2"), **{CRASH_ENV: "stage:extracted"})
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert list(agent.store.staging_dir.iterdir()) != []

    _session(agent)

    assert list(agent.store.staging_dir.iterdir()) == []
    assert not (agent.store.state_dir / "journal.json").exists()
    assert agent.oplog.interrupted() is None
    assert _log(agent)[-1]["outcome"] == "interrupted"  # nothing to restart: 1 kept running


@pytest.mark.integration
def test_a_session_while_an_operation_runs_does_not_interfere(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    agent.install(make_package("1"))
    with agent.store.lock():
        assert RpcServer(make_agent()).begin_session() == []
