"""The runner with the real SshTransport against the in-process asyncssh fleet running
the real agent code: forward deployments, a rollback of a finished deployment, and a
host whose key changed (it fails and is never touched)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncssh
import pytest

from fleetwave.config.settings import SshSettings
from fleetwave.planning.model import (
    BakeRequirement,
    Batching,
    HostRef,
    Plan,
    RegionPlan,
    Stage,
    StageKind,
    Wave,
)
from fleetwave.rollout.journal import Journal
from fleetwave.rollout.runner import DeploymentInfo, Runner
from fleetwave.rollout.types import Finish
from fleetwave.transport.ssh import SshTransport
from tests.inproc.agents import SignedPackage, make_package, real_agent_factory
from tests.inproc.fleet import Fleet, start_fleet

from .fakes import FakeClock

pytestmark = pytest.mark.integration

HOSTS = 6


def _plan(refs: list[HostRef], budget: int = 0) -> Plan:
    onebox = Stage(
        "w1/test-1/onebox",
        StageKind.ONEBOX,
        "test-1",
        "onebox",
        (refs[0],),
        Batching(1, 0, 1),
        BakeRequirement(30.0),
        budget,
    )
    rest = Stage(
        "w1/test-1/az:test-1a",
        StageKind.AZ,
        "test-1",
        "test-1a",
        tuple(refs[1:]),
        Batching(2, 2, 3),
        BakeRequirement(60.0),
        budget,
    )
    return Plan("p", "svc", (Wave(1, "one", (RegionPlan("test-1", (onebox, rest)),)),))


async def _deploy(
    fleet: Fleet,
    journal: Journal,
    dep: str,
    pkg: SignedPackage,
    plan: Plan,
    *,
    known_hosts: asyncssh.SSHKnownHosts | None = None,
    rollback: bool = False,
) -> Finish:
    if not rollback:
        journal.create_deployment(
            deployment_id=dep,
            pipeline="p",
            environment="prod",
            package_id=pkg.package_id,
            package_path=str(pkg.path),
            plan={},
            now=0.0,
            controller="t",
        )
    transport = SshTransport(
        SshSettings(user="deploy", connect_timeout_s=10.0, connect_retries=1),
        client_keys=[fleet.client_key],
        known_hosts=known_hosts or fleet.known_hosts(),
    )
    runner = Runner(
        DeploymentInfo(dep, plan, pkg.path, pkg.package_id),
        journal=journal,
        transport=transport,
        balancers={},
        clock=FakeClock(),
        request_poll_s=None,
    )
    try:
        async with asyncio.timeout(60):
            out = await (runner.rollback("test", "pytest") if rollback else runner.run())
            assert isinstance(out, Finish), out
            return out
    finally:
        await transport.close()


def _versions(fleet: Fleet) -> dict[str, str | None]:
    out = {}
    for h in fleet.hosts:
        current = h.root / "current"
        out[h.name] = current.resolve().name.split("-")[0] if current.exists() else None
    return out


def test_deploy_then_rollback_through_real_ssh_and_agents(tmp_path: Path) -> None:
    v1 = make_package(tmp_path / "p1", version="1.0.0")
    v2 = make_package(tmp_path / "p2", version="2.0.0", keys=(v1.private_key, v1.public_key))

    async def main() -> tuple[Finish, Finish, Finish, dict[str, str | None], dict[str, str | None]]:
        fleet = await start_fleet(HOSTS, tmp_path / "hosts", real_agent_factory(v1.public_key))
        try:
            plan = _plan(fleet.refs())
            journal = Journal(tmp_path / "state" / "journal.db")
            f1 = await _deploy(fleet, journal, "d1", v1, plan)
            f2 = await _deploy(fleet, journal, "d2", v2, plan)
            after_v2 = _versions(fleet)
            f3 = await _deploy(fleet, journal, "d2", v2, plan, rollback=True)
            return f1, f2, f3, after_v2, _versions(fleet)
        finally:
            await fleet.close()

    f1, f2, f3, after_v2, after_rb = asyncio.run(main())
    assert f1.result == "succeeded", f1
    assert f2.result == "succeeded", f2
    assert set(after_v2.values()) == {"2.0.0"}
    assert f3.result == "rolled_back", f3
    assert set(after_rb.values()) == {"1.0.0"}


def test_old_releases_are_collected_after_each_install(tmp_path: Path) -> None:
    first = make_package(tmp_path / "p1", version="1.0.0")
    keys = (first.private_key, first.public_key)
    packages = [first] + [
        make_package(tmp_path / f"p{n}", version=f"{n}.0.0", keys=keys) for n in range(2, 6)
    ]

    async def main() -> tuple[list[Finish], dict[str, list[str]]]:
        fleet = await start_fleet(HOSTS, tmp_path / "hosts", real_agent_factory(first.public_key))
        try:
            plan = _plan(fleet.refs())
            journal = Journal(tmp_path / "state" / "journal.db")
            done = [await _deploy(fleet, journal, f"d{i}", p, plan) for i, p in enumerate(packages)]
            kept = {
                h.name: sorted(
                    r.name for r in (h.root / "releases" / "demo").iterdir() if r.is_dir()
                )
                + sorted(p.name for p in (h.root / "incoming").iterdir())
                for h in fleet.hosts
            }
            return done, kept
        finally:
            await fleet.close()

    done, kept = asyncio.run(main())
    assert [f.result for f in done] == ["succeeded"] * 5, [f.rollback_reason for f in done]
    for releases in kept.values():
        # keep_releases (3): the current, the previous and one more; no upload left
        assert [r.split("-")[0] for r in releases] == ["3.0.0", "4.0.0", "5.0.0"], releases


def test_changed_host_key_fails_that_host_only(tmp_path: Path) -> None:
    v1 = make_package(tmp_path / "p1", version="1.0.0")

    async def main() -> tuple[Finish, dict[str, str | None], list[str], str]:
        fleet = await start_fleet(HOSTS, tmp_path / "hosts", real_agent_factory(v1.public_key))
        try:
            # known_hosts lists another key for host 3: a changed (or spoofed) host key
            other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
            lines = fleet.known_hosts_text.splitlines()
            bad = fleet.hosts[3]
            lines = [ln for ln in lines if not ln.startswith((f"[{bad.address}]", bad.address))]
            lines.append(f"[{bad.address}]:{bad.port} {other.strip()}")
            known = asyncssh.import_known_hosts("\n".join(lines) + "\n")
            plan = _plan(fleet.refs(), budget=1)
            journal = Journal(tmp_path / "state" / "journal.db")
            fin = await _deploy(fleet, journal, "d1", v1, plan, known_hosts=known)
            return fin, _versions(fleet), list(bad.requests), bad.name
        finally:
            await fleet.close()

    fin, versions, requests, bad = asyncio.run(main())
    assert fin.result == "succeeded_with_failures", fin
    assert [h for h, _ in fin.failed] == [bad]
    assert "HostKeyError" in fin.failed[0][1]
    assert versions[bad] is None
    assert requests == []  # never touched
    assert {v for h, v in versions.items() if h != bad} == {"1.0.0"}
