"""A 200-host sweep through SshTransport: upload and install a small package everywhere."""

from __future__ import annotations

import asyncio

import pytest

from fleetwave.config.settings import SshSettings
from fleetwave.planning.model import HostRef
from fleetwave.transport.ssh import ErrorCounter, SshTransport
from tests.inproc.agents import make_package, real_agent_factory
from tests.inproc.fleet import raised_fd_limit, start_fleet

pytestmark = pytest.mark.integration

HOSTS = 200


def test_sweep_installs_everywhere(tmp_path):
    package = make_package(tmp_path / "pkg")
    settings = SshSettings(user="deploy", concurrency=50, connect_timeout_s=20.0)

    async def main() -> tuple[dict[str, str | BaseException], dict[str, int], int]:
        fleet = await start_fleet(HOSTS, tmp_path / "hosts", real_agent_factory(package.public_key))
        errors = ErrorCounter()
        transport = SshTransport(
            settings, client_keys=[fleet.client_key], known_hosts=fleet.known_hosts(), errors=errors
        )

        async def deploy(ref: HostRef) -> str:
            session = await transport.open(ref)
            await session.ensure_package(package.path, package.package_id)
            await session.call("install", {"package_id": package.package_id})
            status = await session.call("status")
            return str(status["current"]["version"])

        try:
            async with asyncio.timeout(120):
                results = await asyncio.gather(
                    *(deploy(ref) for ref in fleet.refs()), return_exceptions=True
                )
                uploaded = sum(s.bytes_uploaded for s in transport._sessions.values())
        finally:
            await transport.close()
            await fleet.close()
        outcome = {ref.name: r for ref, r in zip(fleet.refs(), results, strict=True)}
        return outcome, errors.snapshot(), uploaded

    with raised_fd_limit(4096):
        outcome, errors, uploaded = asyncio.run(main())
    failed = {name: r for name, r in outcome.items() if isinstance(r, BaseException)}
    assert not failed, next(iter(failed.values()))
    assert set(outcome.values()) == {package.version}
    assert uploaded == HOSTS * package.path.stat().st_size
    assert errors["remote"] == 0
