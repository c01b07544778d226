"""Every load-balancer driver against the shared conformance checks: HAProxy for real
(started here, in front of loopback HTTP servers), the command driver with a
file-backed balancer script, and ``none`` where the checks mean something."""

from __future__ import annotations

import asyncio
import fcntl
import json
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleetwave.config.settings import LoadBalancerSettings
from fleetwave.errors import LoadBalancerError
from fleetwave.lb.base import ServerRef, ServerState
from fleetwave.lb.registry import create_load_balancer
from tests.lab import Backend, LabHaproxy, wait_until
from tests.lb import conformance
from tests.lb.backends import BackendServer, HttpHeldSession
from tests.lb.conformance import DriverCase, HeldSession
from tests.lb.ssh_server import LoopbackSshServer

pytestmark = pytest.mark.integration

STATE_LB = Path(__file__).with_name("state_lb.py")
DRIVERS = ("haproxy-unix", "haproxy-tcp", "haproxy-ssh", "command", "none")


def _applies(driver: str, check: str) -> bool:
    if driver == "none":
        return check not in conformance.NEEDS_UNKNOWN | conformance.NEEDS_SESSIONS
    return True


CASES = [
    pytest.param(driver, check, id=f"{driver}-{check}")
    for driver in DRIVERS
    for check in conformance.ALL_CHECKS
    if _applies(driver, check)
]


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabHaproxy, BackendServer]]:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed")
    backend = BackendServer().start()
    lab = LabHaproxy(
        tmp_path_factory.mktemp("haproxy"),
        [Backend("s1", "127.0.0.1", backend.server_port)],
        tcp_admin=True,
        check_inter="200ms",
    )
    try:
        lab.start()
        lab.wait_status("s1", "UP")
        yield lab, backend
    finally:
        lab.stop()
        backend.stop()


def _haproxy_case(
    lab: LabHaproxy, backend: BackendServer, kind: str, ssh_options: dict[str, object]
) -> DriverCase:
    options: dict[str, object]
    if kind == "unix":
        options = {"socket": str(lab.socket_path)}
    elif kind == "tcp":
        options = {"tcp": f"127.0.0.1:{lab.admin_port}"}
    else:
        options = {"ssh": ssh_options}
    options["poll_interval_s"] = 0.05
    driver = create_load_balancer(LoadBalancerSettings("lb1", "haproxy", options))

    def hold() -> HeldSession:
        key = uuid.uuid4().hex
        session = HttpHeldSession("127.0.0.1", lab.frontend_port, backend, key)
        wait_until(lambda: key in backend.arrived, timeout=10, what="held request at backend")
        return session

    return DriverCase(
        driver=driver,
        ref=ServerRef("lb1", lab.backend, "s1"),
        unknown_ref=ServerRef("lb1", lab.backend, "nosuch"),
        hold_session=hold,
    )


class FileHeldSession:
    """A session of the file-backed balancer: ``sessions`` + 1 until released."""

    def __init__(self, state: Path, key: str):
        self._state, self._key = state, key
        self._bump(+1)

    def _bump(self, delta: int) -> None:
        with self._state.open("r+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            servers = json.load(fh)
            servers[self._key]["sessions"] += delta
            fh.seek(0)
            fh.truncate()
            json.dump(servers, fh)

    def release(self) -> None:
        self._bump(-1)

    def finished_ok(self) -> bool:
        return True


def _command_case(tmp_path: Path) -> DriverCase:
    state = tmp_path / "lb-state.json"
    state.write_text(json.dumps({"app/s1": {"state": "ready", "sessions": 0}}))

    def argv(action: str) -> list[str]:
        return [sys.executable, str(STATE_LB), str(state), action, "{backend}", "{server}"]

    options = {
        "drain": argv("drain"),
        "ready": argv("ready"),
        "maint": argv("maint"),
        "status": argv("status"),
        "poll_interval_s": 0.05,
        "timeout_s": 10,
    }
    driver = create_load_balancer(LoadBalancerSettings("lb2", "command", options))
    return DriverCase(
        driver=driver,
        ref=ServerRef("lb2", "app", "s1"),
        unknown_ref=ServerRef("lb2", "app", "nosuch"),
        hold_session=lambda: FileHeldSession(state, "app/s1"),
    )


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshServer]:
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed")
    with LoopbackSshServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def make_case(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str], DriverCase]]:
    cases: list[DriverCase] = []

    def make(driver: str) -> DriverCase:
        if driver.startswith("haproxy-"):
            lab, backend = request.getfixturevalue("haproxy")
            kind = driver.removeprefix("haproxy-")
            ssh_options: dict[str, object] = {}
            if kind == "ssh":
                srv = request.getfixturevalue("ssh_server")
                ssh_options = {
                    "host": "127.0.0.1",
                    "port": srv.port,
                    "identity": str(srv.client_key),
                    "known_hosts": str(srv.known_hosts),
                    "socket": str(lab.socket_path),
                }
            case = _haproxy_case(lab, backend, kind, ssh_options)
        elif driver == "command":
            case = _command_case(tmp_path)
        else:
            lb = create_load_balancer(LoadBalancerSettings("lb3", "none", {}))
            case = DriverCase(lb, ServerRef("lb3", "app", "h1"), None, None)
        cases.append(case)
        return case

    yield make

    async def reset(case: DriverCase) -> None:
        try:
            if case.hold_session is not None:  # leave the shared HAProxy as we found it
                await case.driver.ready(case.ref)
        finally:
            await case.driver.close()

    for case in cases:
        asyncio.run(reset(case))


@pytest.mark.parametrize(("driver", "check"), CASES)
def test_conformance(make_case: Callable[[str], DriverCase], driver: str, check: str) -> None:
    case = make_case(driver)

    async def go() -> None:
        # One event loop per test: drivers holding connections (ssh) are loop-bound.
        try:
            await conformance.ALL_CHECKS[check](case)
        finally:
            await case.driver.close()

    asyncio.run(go())


def test_haproxy_restart_forgets_drain_and_reconcile_restores_it(
    haproxy: tuple[LabHaproxy, BackendServer],
) -> None:
    """A reload without a server-state file undoes a drain; reconcile re-asserts it."""
    lab, _ = haproxy
    lb = create_load_balancer(
        LoadBalancerSettings("lb1", "haproxy", {"socket": str(lab.socket_path)})
    )
    ref = ServerRef("lb1", lab.backend, "s1")

    async def scenario() -> None:
        await lb.drain(ref, timeout_s=1)
        await asyncio.to_thread(lab.restart)
        assert (await lb.status(ref)).state is ServerState.READY
        assert await lb.reconcile({ref: ServerState.MAINT}) == [ref]
        assert (await lb.status(ref)).state is ServerState.MAINT
        await lb.ready(ref)
        await lb.close()

    asyncio.run(scenario())
    lab.wait_status("s1", "UP")


def test_missing_socket_names_the_server(tmp_path: Path) -> None:
    lb = create_load_balancer(
        LoadBalancerSettings("lb1", "haproxy", {"socket": str(tmp_path / "gone.sock")})
    )
    with pytest.raises(LoadBalancerError, match=r"lb1:app/s9: unix socket .*gone\.sock"):
        asyncio.run(lb.status(ServerRef("lb1", "app", "s9")))
