"""SshTransport against real in-process asyncssh servers running the real agent."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from fleetwave.config.settings import SshSettings
from fleetwave.errors import (
    AgentCallTimeoutError,
    AuthenticationError,
    HostKeyError,
    HostUnreachableError,
    RemoteAgentError,
    RemoteIntegrityError,
    SessionLostError,
)
from fleetwave.planning.model import HostRef
from fleetwave.transport.retry import RetryPolicy
from fleetwave.transport.ssh import ErrorCounter, ErrorKind, SshTransport
from fleetwave_agent.errors import IntegrityError
from fleetwave_agent.package import HEADER_BYTES, MAGIC
from tests.inproc.agents import SignedPackage, make_package, real_agent_factory
from tests.inproc.fleet import Fleet, start_fleet

pytestmark = pytest.mark.integration

SETTINGS = SshSettings(
    user="deploy",
    connect_timeout_s=5.0,
    command_timeout_s=20.0,
    idle_timeout_s=60.0,
    concurrency=10,
    connect_retries=3,
)
FAST_RETRY = RetryPolicy(retries=3, base_delay_s=0.01, max_delay_s=0.05)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> SignedPackage:
    return make_package(tmp_path_factory.mktemp("pkg"))


def run_with_fleet(
    tmp_path: Path,
    package: SignedPackage,
    scenario: Callable[[Fleet], Awaitable[None]],
    **fleet_options: Any,
) -> Fleet:
    async def main() -> Fleet:
        fleet = await start_fleet(
            fleet_options.pop("count", 1),
            tmp_path / "hosts",
            real_agent_factory(package.public_key),
            **fleet_options,
        )
        try:
            async with asyncio.timeout(60):
                await scenario(fleet)
        finally:
            await fleet.close()
        return fleet

    return asyncio.run(main())


def transport_for(fleet: Fleet, settings: SshSettings = SETTINGS, **kwargs: Any) -> SshTransport:
    kwargs.setdefault("client_keys", [fleet.client_key])
    kwargs.setdefault("known_hosts", fleet.known_hosts())
    kwargs.setdefault("retry", FAST_RETRY)
    return SshTransport(settings, **kwargs)


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_connect_hello_and_status(tmp_path, package):
    async def scenario(fleet: Fleet) -> None:
        transport = transport_for(fleet)
        host = fleet.hosts[0].ref()
        session = await transport.open(host)
        assert session.hello["protocol"] == 1
        status = await session.call("status")
        assert status["current"] is None
        assert await transport.open(host) is session  # one session per host, reused
        await transport.close()

    fleet = run_with_fleet(tmp_path, package, scenario)
    assert fleet.hosts[0].connections == 1
    assert fleet.hosts[0].requests == ["status"]


def test_upload_install_then_nothing_to_transfer(tmp_path, package):
    size = package.path.stat().st_size

    async def scenario(fleet: Fleet) -> None:
        transport = transport_for(fleet)
        session = await transport.open(fleet.hosts[0].ref())
        assert await session.ensure_package(package.path, package.package_id) is True
        assert session.bytes_uploaded == size
        await session.call("install", {"package_id": package.package_id})
        status = await session.call("status")
        assert status["current"]["version"] == package.version
        assert await session.ensure_package(package.path, package.package_id) is False
        assert session.bytes_uploaded == size
        await transport.close()

        # A fresh connection to the same host asks and sends nothing either.
        again = transport_for(fleet)
        fresh = await again.open(fleet.hosts[0].ref())
        assert await fresh.ensure_package(package.path, package.package_id) is False
        assert fresh.bytes_uploaded == 0
        await again.close()

    fleet = run_with_fleet(tmp_path, package, scenario)
    assert fleet.hosts[0].requests.count("upload") == 1
    assert fleet.hosts[0].requests.count("has_package") == 3


def test_host_key_mismatch_never_touches_the_host(tmp_path, package):
    async def scenario(fleet: Fleet) -> None:
        host = fleet.hosts[0]
        before = tree(host.root)
        impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
        known = asyncssh.import_known_hosts(f"[{host.address}]:{host.port} {impostor}")
        errors = ErrorCounter()
        transport = transport_for(fleet, known_hosts=known, errors=errors)
        with pytest.raises(HostKeyError, match=host.name):
            await transport.open(host.ref())
        assert errors.count(ErrorKind.HOST_KEY) == 1
        assert errors.count(ErrorKind.CONNECT_RETRY) == 0
        assert tree(host.root) == before
        await transport.close()

    fleet = run_with_fleet(tmp_path, package, scenario)
    assert fleet.hosts[0].requests == []
    assert fleet.hosts[0].connections == 1  # never retried


def test_unknown_host_is_refused(tmp_path, package):
    async def scenario(fleet: Fleet) -> None:
        other = fleet.hosts[1]
        # known_hosts only knows host 1; host 0 must be refused although the key is the same.
        known = asyncssh.import_known_hosts(
            f"[{other.address}]:{other.port} " + fleet.host_key.export_public_key().decode()
        )
        transport = transport_for(fleet, known_hosts=known)
        with pytest.raises(HostKeyError):
            await transport.open(fleet.hosts[0].ref())
        await transport.close()

    fleet = run_with_fleet(tmp_path, package, scenario, count=2)
    assert fleet.hosts[0].requests == []


def test_refused_deploy_key(tmp_path, package):
    async def scenario(fleet: Fleet) -> None:
        errors = ErrorCounter()
        transport = transport_for(
            fleet, client_keys=[asyncssh.generate_private_key("ssh-ed25519")], errors=errors
        )
        with pytest.raises(AuthenticationError):
            await transport.open(fleet.hosts[0].ref())
        assert errors.snapshot()["auth"] == 1
        await transport.close()

    fleet = run_with_fleet(tmp_path, package, scenario)
    assert fleet.hosts[0].connections == 1


def test_closed_port_is_unreachable_without_retries(tmp_path, package):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    async def scenario(fleet: Fleet) -> None:
        errors = ErrorCounter()
        # A slow policy: if a refused connect were retried the test would take minutes.
        transport = transport_for(
            fleet, retry=RetryPolicy(retries=5, base_delay_s=30, max_delay_s=60), errors=errors
        )
        ref = HostRef("gone", "127.0.0.1", "r", "a", ssh_user="deploy", ssh_port=closed_port)
        with pytest.raises(HostUnreachableError, match="gone: cannot connect"):
            await transport.open(ref)
        assert errors.count(ErrorKind.UNREACHABLE) == 1
        assert errors.count(ErrorKind.CONNECT_RETRY) == 0
        await transport.close()

    run_with_fleet(tmp_path, package, scenario)


def test_dropped_handshakes_are_retried(tmp_path, package):
    async def scenario(fleet: Fleet) -> None:
        errors = ErrorCounter()
        transport = transport_for(fleet, errors=errors)
        session = await transport.open(fleet.hosts[0].ref())
        assert (await session.call("ping")) is not None
        assert errors.count(ErrorKind.CONNECT_RETRY) == 2
        await transport.close()

    fleet = run_with_fleet(tmp_path, package, scenario, drop_handshakes=2)
    assert fleet.hosts[0].dropped == 2
    assert fleet.hosts[0].connections == 3


def test_always_dropped_handshakes_give_up(tmp_path, package):
    async def scenario(fleet: Fleet) -> None:
        errors = ErrorCounter()
        transport = transport_for(fleet, errors=errors)
        with pytest.raises(HostUnreachableError):
            await transport.open(fleet.hosts[0].ref())
        assert errors.count(ErrorKind.CONNECT_RETRY) == FAST_RETRY.retries
        assert errors.count(ErrorKind.UNREACHABLE) == 1
        await transport.close()

    fleet = run_with_fleet(tmp_path, package, scenario, drop_handshakes=1000)
    assert fleet.hosts[0].connections == FAST_RETRY.retries + 1


def test_hung_agent_times_out_and_the_session_is_replaced(tmp_path, package):
    async def scenario(fleet: Fleet) -> None:
        errors = ErrorCounter()
        transport = transport_for(fleet, errors=errors)
        ref = fleet.hosts[0].ref()
        session = await transport.open(ref)
        with pytest.raises(AgentCallTimeoutError, match="status did not answer"):
            await session.call("status", timeout_s=0.3)
        assert errors.count(ErrorKind.TIMEOUT) == 1
        # The stream may still carry the late answer: the session refuses further use.
        with pytest.raises(SessionLostError):
            await session.call("ping")
        replacement = await transport.open(ref)
        assert replacement is not session
        assert (await replacement.call("ping")) is not None
        await transport.close()

    run_with_fleet(tmp_path, package, scenario, hang_ops=frozenset({"status"}))


def test_cancelled_call_breaks_the_session(tmp_path, package):
    async def scenario(fleet: Fleet) -> None:
        transport = transport_for(fleet)
        ref = fleet.hosts[0].ref()
        session = await transport.open(ref)
        call = asyncio.ensure_future(session.call("status", timeout_s=30))
        await asyncio.sleep(0.2)  # the request is sent; its answer never comes
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # A late answer could be read as the next call's: the session refuses further use.
        with pytest.raises(SessionLostError, match="broke"):
            await session.call("ping")
        replacement = await transport.open(ref)
        assert (await replacement.call("ping")) is not None
        await transport.close()

    run_with_fleet(tmp_path, package, scenario, hang_ops=frozenset({"status"}))


def test_tampered_package_is_an_integrity_error_and_not_retried(tmp_path, package):
    data = bytearray(package.path.read_bytes())
    assert data.startswith(MAGIC)
    (manifest_len,) = struct.unpack(">I", data[len(MAGIC) : HEADER_BYTES])
    data[HEADER_BYTES + manifest_len + 3] ^= 0xFF  # inside the signature
    tampered = tmp_path / "tampered.fwpkg"
    tampered.write_bytes(bytes(data))

    async def scenario(fleet: Fleet) -> None:
        errors = ErrorCounter()
        transport = transport_for(fleet, errors=errors)
        session = await transport.open(fleet.hosts[0].ref())
        await session.ensure_package(tampered, package.package_id)
        with pytest.raises(RemoteIntegrityError) as caught:
            await session.call("install", {"package_id": package.package_id})
        assert isinstance(caught.value, IntegrityError)
        assert caught.value.error_type in {"SignatureError", "ChecksumError", "IntegrityError"}
        assert errors.count(ErrorKind.REMOTE) == 1
        status = await session.call("status")
        assert status["current"] is None
        await transport.close()

    fleet = run_with_fleet(tmp_path, package, scenario)
    assert fleet.hosts[0].requests.count("install") == 1


def test_other_agent_errors_are_remote_agent_errors(tmp_path, package):
    async def scenario(fleet: Fleet) -> None:
        transport = transport_for(fleet)
        session = await transport.open(fleet.hosts[0].ref())
        with pytest.raises(RemoteAgentError) as caught:
            await session.call("rollback")
        assert not isinstance(caught.value, RemoteIntegrityError)
        assert caught.value.error_type == "ReleaseNotFoundError"
        assert (await session.call("ping")) is not None  # the session survives
        await transport.close()

    run_with_fleet(tmp_path, package, scenario)


def test_certificate_authority_signed_host_keys(tmp_path, package):
    ca = asyncssh.generate_private_key("ssh-ed25519")
    ca_file = tmp_path / "host_ca.pub"
    ca.write_public_key(ca_file)
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("# only the CA is trusted\n")

    async def scenario(fleet: Fleet) -> None:
        assert fleet.known_hosts_text.startswith("@cert-authority")
        via_object = transport_for(fleet)
        session = await via_object.open(fleet.hosts[0].ref())
        assert session.hello["protocol"] == 1
        await via_object.close()

        # The same trust from settings: known_hosts file + ca_keys, loaded once.
        settings = SshSettings(
            user="deploy", known_hosts=empty_known_hosts, ca_keys=(ca_file,), connect_retries=0
        )
        via_settings = SshTransport(settings, client_keys=[fleet.client_key])
        session = await via_settings.open(fleet.hosts[0].ref())
        assert (await session.call("ping")) is not None
        await via_settings.close()

        # A different CA is refused.
        other_ca = tmp_path / "other_ca.pub"
        asyncssh.generate_private_key("ssh-ed25519").write_public_key(other_ca)
        refused = SshTransport(
            SshSettings(user="deploy", known_hosts=empty_known_hosts, ca_keys=(other_ca,)),
            client_keys=[fleet.client_key],
        )
        with pytest.raises(HostKeyError):
            await refused.open(fleet.hosts[0].ref())
        await refused.close()

    run_with_fleet(tmp_path, package, scenario, host_ca=ca)


def test_idle_sessions_close_and_reconnect_on_next_call(tmp_path, package):
    settings = SshSettings(user="deploy", idle_timeout_s=0.2, connect_retries=0)

    async def scenario(fleet: Fleet) -> None:
        transport = transport_for(fleet, settings)
        session = await transport.open(fleet.hosts[0].ref())
        await session.call("ping")
        for _ in range(50):  # bounded: at most 5 s
            if fleet.hosts[0].connections == 1 and session._proc is None:
                break
            await asyncio.sleep(0.1)
        assert session._proc is None
        await session.call("ping")
        await transport.close()

    fleet = run_with_fleet(tmp_path, package, scenario)
    assert fleet.hosts[0].connections == 2
