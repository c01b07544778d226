"""The host lease: one deployment at a time may change a host; others are fenced off."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetwave_agent import lease as lease_module
from fleetwave_agent.errors import LeaseHeldError, LeaseLostError
from fleetwave_agent.lease import HostLease, Lease
from fleetwave_agent.operations import Agent
from fleetwave_agent.rpc import RpcServer, serve_stream
from fleetwave_agent.rpc_protocol import Request, decode_response, encode_request
from fleetwave_core.errors import UsageError
from fleetwave_core.exitcodes import ExitCode

from .conftest import AGENT_CMD, PackageBuilder, agent_env

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
MakeAgent = Callable[..., Agent]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.mark.unit
def test_pure_rules() -> None:
    held = Lease("d1", "c1", T0, T0 + 60)
    assert lease_module.acquire(None, "d2", "c2", 30, T0).expires_at == T0 + 30
    with pytest.raises(LeaseHeldError):
        lease_module.acquire(held, "d2", "c2", 30, T0 + 59)
    assert lease_module.acquire(held, "d2", "c2", 30, T0 + 60).deployment_id == "d2"
    resumed = lease_module.acquire(held, "d1", "c9", 30, T0 + 10)
    assert (resumed.controller_id, resumed.acquired_at) == ("c9", T0)
    assert lease_module.renew(held, "d1", 60, T0 + 50).expires_at == T0 + 110
    with pytest.raises(LeaseLostError):
        lease_module.renew(None, "d1", 60, T0)
    lease_module.fence(held, "d1", "install", T0)
    lease_module.fence(None, None, "install", T0)
    lease_module.fence(held, None, "install", T0 + 60)
    with pytest.raises(LeaseHeldError):
        lease_module.fence(held, None, "install", T0)


@pytest.mark.unit
def test_acquire_renew_release_with_a_fake_clock(tmp_path: Path, clock: Clock) -> None:
    leases = HostLease(tmp_path, clock)
    first = leases.acquire("deploy-1", "ci-runner-a", 60)
    assert first == {
        "lease": {
            "deployment_id": "deploy-1",
            "controller_id": "ci-runner-a",
            "acquired_at": T0,
            "expires_at": T0 + 60,
            "expires": "2027-01-15T08:01:00Z",
        },
        "resumed": False,
        "replaced": None,
    }
    with pytest.raises(LeaseHeldError) as info:
        HostLease(tmp_path, clock).acquire("deploy-2", "laptop", 60)  # durable: another reader
    assert str(info.value) == (
        "lease for deployment deploy-2 refused: this host's lease is held by deployment "
        "deploy-1 (controller ci-runner-a) until 2027-01-15T08:01:00Z"
    )
    assert info.value.exit_code == ExitCode.LEASE_HELD
    assert info.value.holder["deployment_id"] == "deploy-1"
    clock.now += 30
    again = leases.acquire("deploy-1", "ci-runner-b", 60)  # resume from another controller
    assert again["resumed"] is True
    assert again["lease"]["controller_id"] == "ci-runner-b"
    assert leases.renew("deploy-1", 120)["lease"]["expires_at"] == clock.now + 120
    clock.now += 121
    taken = leases.acquire("deploy-2", "laptop", 60)  # expired: anyone may take it
    assert taken["replaced"]["deployment_id"] == "deploy-1"
    with pytest.raises(LeaseHeldError):
        leases.renew("deploy-1", 60)  # fenced off: it cannot come back by renewing
    with pytest.raises(LeaseHeldError):
        leases.release("deploy-1")
    assert leases.release("deploy-2") == {"released": True}
    assert leases.release("deploy-2") == {"released": False}
    with pytest.raises(LeaseLostError):
        leases.renew("deploy-2", 60)
    assert leases.status() is None


@pytest.mark.unit
@pytest.mark.parametrize(
    ("deployment_id", "controller_id", "ttl_s"),
    [
        ("", "c", 60),
        ("d", "c\n", 60),
        ("d", 5, 60),
        ("d", "c", 0),
        ("d", "c", 3601),
        ("d", "c", True),
        ("d", "c", "60"),
    ],
)
def test_bad_arguments_are_refused(
    tmp_path: Path, clock: Clock, deployment_id: object, controller_id: object, ttl_s: object
) -> None:
    with pytest.raises(UsageError):
        HostLease(tmp_path, clock).acquire(deployment_id, controller_id, ttl_s)
    assert not (tmp_path / "lease.json").exists()


@pytest.mark.integration
def test_mutating_operations_are_fenced_while_another_deployment_holds_the_lease(
    make_package: PackageBuilder, make_agent: MakeAgent, clock: Clock
) -> None:
    agent = Agent(make_agent().config, clock=clock)
    agent.install(make_package("1"))  # no lease held: works as it always did
    agent.install(make_package("2"))
    agent.lease.acquire("deploy-1", "ctl-a", 60)
    v3 = make_package("3")
    calls: list[Callable[[], object]] = [
        lambda: agent.install(v3),
        lambda: agent.install(v3, lease="deploy-2"),
        lambda: agent.rollback(lease="deploy-2"),
        lambda: agent.activate("1"),
        lambda: agent.gc(),
    ]
    for call in calls:
        with pytest.raises(LeaseHeldError, match="held by deployment deploy-1 \\(controller ctl-a"):
            call()
    assert agent.store.current().version == "2"  # type: ignore[union-attr]
    assert agent.install(v3, lease="deploy-1")["outcome"] == "ok"
    clock.now += 61
    assert agent.rollback()["version"] == "2"  # an expired lease fences nobody
    assert agent.status()["lease"]["expired"] is True


@pytest.mark.integration
def test_rpc_lease_ops_and_a_fenced_upload_keep_the_session(
    make_agent: MakeAgent, clock: Clock
) -> None:
    agent = Agent(make_agent().config, clock=clock)
    requests = [
        Request(1, "lease_acquire", {"deployment_id": "d1", "controller_id": "c1", "ttl_s": 60}),
        Request(2, "lease_acquire", {"deployment_id": "d2", "controller_id": "c2", "ttl_s": 60}),
        Request(3, "upload", {"package_id": "ab" * 32, "size": 5, "lease": "d2"}),
        Request(4, "lease_renew", {"deployment_id": "d1", "ttl_s": 30}),
        Request(5, "lease_release", {"deployment_id": "d1"}),
        Request(6, "lease_acquire", {"deployment_id": "d1", "controller_id": "c1"}),
        Request(7, "gc", {"lease": 7}),
    ]
    stream = b""
    for request in requests:
        stream += encode_request(request) + (b"12345" if request.op == "upload" else b"")
    out = io.BytesIO()
    assert serve_stream(RpcServer(agent), io.BytesIO(stream), out) == 0
    responses = [decode_response(line) for line in out.getvalue().splitlines(keepends=True)[1:]]
    assert [r.id for r in responses] == [1, 2, 3, 4, 5, 6, 7]
    assert responses[0].ok
    assert responses[0].result["lease"]["expires"] == "2027-01-15T08:01:00Z"
    assert (responses[1].error_type, responses[1].exit_code) == ("LeaseHeldError", 16)
    assert "deployment d1 (controller c1) until 2027-01-15T08:01:00Z" in (
        responses[1].error_message
    )
    assert (responses[2].error_type, responses[2].exit_code) == ("LeaseHeldError", 16)
    assert not agent.store.incoming_path("ab" * 32).exists()
    assert responses[3].result["lease"]["expires_at"] == T0 + 30
    assert responses[4].result == {"released": True}
    assert (responses[5].error_type, responses[5].exit_code) == ("UsageError", 2)  # no ttl_s
    assert (responses[6].error_type, responses[6].exit_code) == ("UsageError", 2)


@pytest.mark.integration
def test_cli_lease_shows_and_breaks(make_agent: MakeAgent, keypair: tuple[Path, Path]) -> None:
    agent = make_agent()
    agent.lease.acquire("deploy-9", "ctl", 600)
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

    shown = run("lease")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("lease      deployment deploy-9 (controller ctl) until ")
    assert json.loads(run("lease", "--json").stdout)["lease"]["deployment_id"] == "deploy-9"
    broken = run("lease", "--break")
    assert broken.stdout.startswith("broke the lease of deployment deploy-9")
    assert agent.lease.status() is None
