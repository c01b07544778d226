"""The controller's host lease (``rollout/lease.py``): with fake agents that apply the
agent's own lease rules (``fleetwave_agent.lease``), and with the real agent in process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from fleetwave.errors import LeaseRefusedError, RemoteAgentError
from fleetwave.lb.base import ServerState
from fleetwave.planning.model import HostRef
from fleetwave.rollout.gates import Gates
from fleetwave.rollout.journal import Journal
from fleetwave.rollout.lease import MUTATING_OPS, LeaseKeeper
from fleetwave.rollout.runner import DeploymentInfo, Runner
from fleetwave.rollout.types import Finish, Stopped
from fleetwave_agent import lease as agent_lease
from fleetwave_agent.errors import LeaseError

from .fakes import FakeBalancer, FakeClock, FakeFleet, FakeSession
from .sim import make_plan

pytestmark = pytest.mark.integration

PKG = "b" * 64


class LeaseSession(FakeSession):
    """A fake agent session that keeps a lease with the agent's own rules."""

    fleet: LeaseFleet

    async def call(
        self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        args = args or {}
        leases = self.fleet.leases
        now = self.fleet.now
        held = leases.get(self.host.name)
        self.fleet.log.append((self.host.name, op, args.get("lease")))
        try:
            if op == "lease_acquire":
                new = agent_lease.acquire(
                    held, args["deployment_id"], args["controller_id"], args["ttl_s"], now
                )
                leases[self.host.name] = new
                replaced = (
                    held.to_dict() if held and held.deployment_id != new.deployment_id else None
                )
                return {"lease": new.to_dict(), "resumed": False, "replaced": replaced}
            if op == "lease_renew":
                new = agent_lease.renew(held, args["deployment_id"], args["ttl_s"], now)
                leases[self.host.name] = new
                return {"lease": new.to_dict()}
            if op == "lease_release":
                if held is not None and held.deployment_id == args["deployment_id"]:
                    del leases[self.host.name]
                    return {"released": True}
                return {"released": False}
            if op in MUTATING_OPS:
                agent_lease.fence(held, args.get("lease"), op, now)
        except LeaseError as exc:
            raise RemoteAgentError(self.host.name, type(exc).__name__, str(exc), 16) from None
        return await super().call(op, args, timeout_s=timeout_s)

    async def ensure_package(
        self, path: Path, package_id: str, *, lease: str | None = None
    ) -> bool:
        self.fleet.log.append((self.host.name, "upload", lease))
        return await super().ensure_package(path, package_id, lease=lease)


class LeaseFleet(FakeFleet):
    def __init__(self, hosts: list[HostRef]) -> None:
        super().__init__(hosts)
        self.leases: dict[str, agent_lease.Lease] = {}
        self.log: list[tuple[str, str, str | None]] = []
        self.now = 1_700_000_000.0

    async def open(self, host: HostRef) -> LeaseSession:
        await super().open(host)
        return LeaseSession(self, host)


def _setup(tmp_path: Path, dep: str) -> tuple[Journal, DeploymentInfo, Any]:
    plan = make_plan([[[1]], [[3]]], max_out=1, min_serving=1, bake_s=60.0)
    journal = Journal(tmp_path / "journal.db")
    journal.create_deployment(
        deployment_id=dep,
        pipeline="p",
        environment="prod",
        package_id=PKG,
        package_path="/pkg",
        plan={},
        now=0.0,
        controller="test",
    )
    return journal, DeploymentInfo(dep, plan, Path("/pkg"), PKG, 5.0), plan


def _runner(info: DeploymentInfo, journal: Journal, fleet: LeaseFleet, lb: FakeBalancer) -> Runner:
    return Runner(
        info,
        journal=journal,
        transport=fleet,
        balancers={"lb": lb},
        gates=Gates(),
        clock=FakeClock(),
        request_poll_s=None,
        leases=LeaseKeeper(info.deployment_id, "ctl-test:1", 60.0),
    )


def _run(coro: Coroutine[Any, Any, Finish | Stopped]) -> Finish:
    out = asyncio.run(asyncio.wait_for(coro, timeout=30))
    assert isinstance(out, Finish), out
    return out


def test_every_mutating_call_carries_the_lease_and_leases_are_released(tmp_path: Path) -> None:
    journal, info, plan = _setup(tmp_path, "d1")
    fleet, lb = LeaseFleet(plan.hosts()), FakeBalancer()
    fin = _run(_runner(info, journal, fleet, lb).run())
    assert fin.result == "succeeded"
    mutating = [(h, op, lease) for h, op, lease in fleet.log if op in MUTATING_OPS]
    assert {op for _, op, _ in mutating} == {"install", "upload", "gc"}
    assert all(lease == "d1" for _, _, lease in mutating)
    # Every host was leased before its first mutating call, and all were given back.
    for host in fleet.agents:
        ops = [op for h, op, _ in fleet.log if h == host]
        assert ops.index("lease_acquire") < ops.index("upload")
    assert fleet.leases == {}
    assert lb.max_out == 1  # the hosts were drained (and returned) under their leases


def test_second_controller_is_refused_and_drains_nothing(tmp_path: Path) -> None:
    journal, info, plan = _setup(tmp_path, "d2")
    fleet, lb = LeaseFleet(plan.hosts()), FakeBalancer()
    first = sorted(fleet.agents)[-1]
    fleet.leases[first] = agent_lease.Lease("d-other", "ci-7:4242", fleet.now, fleet.now + 60)
    runner = _runner(info, journal, fleet, lb)
    with pytest.raises(LeaseRefusedError, match=rf"refused on host {first}: .*d-other.*ci-7:4242"):
        _run(runner.run())
    assert lb.states == {}  # nothing was drained
    assert lb.max_out == 0
    assert not any(op in MUTATING_OPS for _, op, _ in fleet.log)
    assert set(fleet.leases) == {first}  # what it took on the other hosts was given back
    row = journal.deployment("d2")
    assert row.state == "refused"
    assert "d-other" in (row.reason or "")
    assert journal.events("d2") == []


def test_an_expired_lease_is_taken_over_and_noted(tmp_path: Path) -> None:
    journal, info, plan = _setup(tmp_path, "d3")
    fleet, lb = LeaseFleet(plan.hosts()), FakeBalancer()
    host = sorted(fleet.agents)[0]
    fleet.leases[host] = agent_lease.Lease("dead", "gone:1", fleet.now - 100, fleet.now - 1)
    notes: list[str] = []
    runner = _runner(info, journal, fleet, lb)
    assert runner.leases is not None
    runner.leases = LeaseKeeper("d3", "ctl:1", 60.0, note=notes.append)
    assert _run(runner.run()).result == "succeeded"
    assert any("took over the expired lease of deployment dead" in n for n in notes)
    assert all(s is ServerState.READY for s in lb.states.values())


def test_renewal_extends_and_reclaims_a_lost_lease(tmp_path: Path) -> None:
    hosts = make_plan([[[2]]]).hosts()
    fleet = LeaseFleet(hosts)
    keeper = LeaseKeeper("d4", "ctl:1", 30.0)
    assert keeper.renew_every_s == 10.0

    async def main() -> None:
        await keeper.start(hosts, fleet.open)
        a, b = (h.name for h in hosts)
        first_expiry = fleet.leases[a].expires_at
        fleet.now += 20
        await keeper.renew_once()
        assert fleet.leases[a].expires_at == first_expiry + 20
        # b's lease vanished (an operator broke it): renewal takes it again
        del fleet.leases[b]
        await keeper.renew_once()
        assert fleet.leases[b].deployment_id == "d4"
        # a is now held by someone else: renewal gives it up, and says so
        fleet.leases[a] = agent_lease.Lease("thief", "x:1", fleet.now, fleet.now + 60)
        await keeper.renew_once()
        assert keeper.held == {b}
        await keeper.release_all()
        assert set(fleet.leases) == {a}

    asyncio.run(asyncio.wait_for(main(), timeout=10))


def test_resume_of_the_same_deployment_reclaims_its_own_leases(tmp_path: Path) -> None:
    journal, info, plan = _setup(tmp_path, "d5")
    fleet, lb = LeaseFleet(plan.hosts()), FakeBalancer()
    # A crashed controller of d5 left its unexpired leases behind.
    for name in fleet.agents:
        fleet.leases[name] = agent_lease.Lease("d5", "crashed:9", fleet.now, fleet.now + 60)
    fin = _run(_runner(info, journal, fleet, lb).resume())
    assert fin.result == "succeeded"
    assert fleet.leases == {}


def test_a_host_unreachable_at_start_is_leased_before_its_first_step(tmp_path: Path) -> None:
    plan = make_plan([[[1]], [[3]]])
    fleet = LeaseFleet(plan.hosts())
    late = sorted(fleet.agents)[-1]
    fleet.unreachable.add(late)
    keeper = LeaseKeeper("d6", "ctl:1", 60.0)

    async def main() -> None:
        await keeper.start(plan.hosts(), fleet.open)
        assert late not in keeper.held
        fleet.unreachable.discard(late)
        # another deployment took it meanwhile: refused before anything happens there
        fleet.leases[late] = agent_lease.Lease("other", "y:1", fleet.now, fleet.now + 60)
        ref = next(h for h in plan.hosts() if h.name == late)
        with pytest.raises(LeaseRefusedError, match="other"):
            await keeper.ensure(ref)

    asyncio.run(asyncio.wait_for(main(), timeout=10))


# -- the real agent, in process ------------------------------------------------------------


def test_real_agents_fence_a_second_deployment(tmp_path: Path) -> None:
    from fleetwave.config.settings import SshSettings
    from fleetwave.transport.ssh import SshTransport
    from tests.engine.test_inproc import _plan
    from tests.inproc.agents import make_package, real_agent_factory
    from tests.inproc.fleet import start_fleet

    v1 = make_package(tmp_path / "p1", version="1.0.0")

    async def main() -> None:
        fleet = await start_fleet(3, tmp_path / "hosts", real_agent_factory(v1.public_key))
        transport = SshTransport(
            SshSettings(user="deploy", connect_timeout_s=10.0, connect_retries=1),
            client_keys=[fleet.client_key],
            known_hosts=fleet.known_hosts(),
        )
        try:
            holder = LeaseKeeper("d-first", "ctl-a:1", 60.0)
            await holder.start(fleet.refs(), transport.open)
            journal = Journal(tmp_path / "state" / "journal.db")
            journal.create_deployment(
                deployment_id="d-second",
                pipeline="p",
                environment="prod",
                package_id=v1.package_id,
                package_path=str(v1.path),
                plan={},
                now=0.0,
                controller="t",
            )
            runner = Runner(
                DeploymentInfo("d-second", _plan(fleet.refs()), v1.path, v1.package_id),
                journal=journal,
                transport=transport,
                balancers={},
                clock=FakeClock(),
                request_poll_s=None,
                leases=LeaseKeeper("d-second", "ctl-b:2", 60.0),
            )
            with pytest.raises(LeaseRefusedError, match="d-first"):
                await runner.run()
            for h in fleet.hosts:
                assert not (h.root / "current").exists()  # nothing installed anywhere
                lease = json.loads((h.root / "state" / "lease.json").read_text())
                assert lease["deployment_id"] == "d-first"
            await holder.release_all()
            assert not any((h.root / "state" / "lease.json").exists() for h in fleet.hosts)
        finally:
            await transport.close()
            await fleet.close()

    asyncio.run(asyncio.wait_for(main(), timeout=60))
