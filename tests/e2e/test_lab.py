"""The lab itself: hosts reachable over real SSH with strict host keys, each with its
own hostname and disk; HAProxy in front of the demo app; zero failed requests while
hosts are drained and restarted one by one; Prometheus scraping; nothing left behind."""

from __future__ import annotations

import asyncio
import subprocess
import urllib.request
from collections.abc import Callable

import asyncssh
import pytest

from fleetwave.config.settings import LoadBalancerSettings
from fleetwave.lb.base import ServerRef, ServerState
from fleetwave.lb.registry import create_load_balancer
from tests.e2e.conftest import DEMO_APP
from tests.lab import Fleet, LabConfig, LabHost, wait_until

pytestmark = pytest.mark.e2e

RUN_DIR = "/srv/fleetwave/run"  # the agent root's run dir, as hooks get it


def start_demo(host: LabHost) -> None:
    host.exec(["env", f"FLEETWAVE_RUN_DIR={RUN_DIR}", str(DEMO_APP / "bin" / "start")])


def wait_healthy(host: LabHost) -> None:
    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://{host.ip}:8080/health", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    wait_until(healthy, timeout=20, what=f"demo app health on {host.name}")


def stop_demo(host: LabHost) -> None:
    host.exec(["env", f"FLEETWAVE_RUN_DIR={RUN_DIR}", str(DEMO_APP / "bin" / "stop")])


async def _ssh_run(fleet: Fleet, host: LabHost, command: str, known_hosts: object) -> str:
    async with asyncssh.connect(
        host.ip,
        username=fleet.config.user,
        client_keys=[str(fleet.client_key)],
        known_hosts=known_hosts,
        connect_timeout=10,
    ) as conn:
        result = await conn.run(command, check=True, timeout=30)
        return str(result.stdout)


def test_ssh_with_strict_host_keys_own_hostname_and_disk(module_fleet: Fleet) -> None:
    fleet = module_fleet
    known = asyncssh.read_known_hosts(str(fleet.known_hosts))

    async def each() -> list[str]:
        return await asyncio.gather(
            *(
                _ssh_run(
                    fleet,
                    h,
                    f"hostname; id -un; echo {h.name} > /srv/fleetwave/marker; "
                    "command -v fleetwave-agent",
                    known,
                )
                for h in fleet.hosts
            )
        )

    outputs = asyncio.run(each())
    for host, out in zip(fleet.hosts, outputs, strict=True):
        name, user, agent = out.split("\n")[:3]
        assert name == host.name
        assert user == fleet.config.user
        assert agent == str(fleet.agent_path)
        # Each host wrote its own name: with a shared /srv one write would win.
        assert host.read_text("/srv/fleetwave/marker") == f"{host.name}\n"
    assert len({h.hostname() for h in fleet.hosts}) == len(fleet.hosts)


def test_wrong_host_key_is_refused(module_fleet: Fleet) -> None:
    fleet = module_fleet
    first, second = fleet.hosts[0], fleet.hosts[1]
    # A known_hosts that pins second's key under first's address.
    key_line = second.host_key.with_suffix(".pub").read_text().split()
    wrong = asyncssh.import_known_hosts(f"{first.ip} {key_line[0]} {key_line[1]}\n")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        asyncio.run(_ssh_run(fleet, first, "true", wrong))


def test_haproxy_sees_demo_app_on_every_host(module_fleet: Fleet) -> None:
    fleet = module_fleet
    assert fleet.haproxy is not None
    for host in fleet.hosts:
        # Nothing listens yet: HAProxy's checks mark it DOWN (servers start UP).
        fleet.haproxy.wait_status(host.name, "DOWN")
        start_demo(host)
    for host in fleet.hosts:
        fleet.haproxy.wait_status(host.name, "UP")
        assert host.read_text(f"{RUN_DIR}/demo-app.pid").strip().isdigit()


def test_drain_and_restart_each_host_under_load_loses_no_request(module_fleet: Fleet) -> None:
    fleet = module_fleet
    assert fleet.haproxy is not None
    for host in fleet.hosts:
        fleet.haproxy.wait_status(host.name, "UP")
    lb = create_load_balancer(
        LoadBalancerSettings("lab", "haproxy", {"socket": str(fleet.haproxy.socket_path)})
    )

    async def roll(load_wait: Callable[[int], None]) -> None:
        for host in fleet.hosts:
            ref = ServerRef("lab", fleet.haproxy.backend, host.name)  # type: ignore[union-attr]
            drained = await lb.drain(ref, timeout_s=10)
            assert drained.state is ServerState.MAINT
            assert drained.sessions == 0
            await asyncio.to_thread(stop_demo, host)
            await asyncio.to_thread(load_wait, 10)
            await asyncio.to_thread(start_demo, host)
            await asyncio.to_thread(fleet.haproxy.wait_status, host.name, "MAINT")  # type: ignore[union-attr]
            await asyncio.to_thread(wait_healthy, host)
            assert (await lb.ready(ref)).state is ServerState.READY
            await asyncio.to_thread(fleet.haproxy.wait_status, host.name, "UP")  # type: ignore[union-attr]
            await asyncio.to_thread(load_wait, 10)
        await lb.close()

    with fleet.load(workers=2, max_seconds=120) as load:
        load.wait_requests(20)
        asyncio.run(roll(load.wait_requests))
        report = load.stop()
    assert report.failures == []
    assert report.requests >= 80
    assert set(report.by_server) == {h.name for h in fleet.hosts}


def test_prometheus_scrapes_demo_apps(module_fleet: Fleet) -> None:
    fleet = module_fleet
    assert fleet.prometheus is not None
    fleet.prometheus.set_targets("demo", [f"{h.ip}:8080" for h in fleet.hosts], {"job": "demo"})
    up = fleet.prometheus.wait_for(
        'up{job="demo"} == 1', lambda r: len(r) == len(fleet.hosts), timeout=40
    )
    assert {r["metric"]["instance"] for r in up} == {f"{h.ip}:8080" for h in fleet.hosts}
    fleet.prometheus.wait_for(
        'demo_build_info{job="demo",version="1.0.0"}', lambda r: len(r) == len(fleet.hosts)
    )


def test_teardown_leaves_nothing_behind() -> None:
    from tests.e2e.conftest import require_lab

    require_lab()
    fleet = Fleet(LabConfig(hosts=2))
    with fleet:
        for host in fleet.hosts:
            start_demo(host)
            host.exec("setsid sleep 300 > /dev/null 2>&1 < /dev/null &")
        in_hosts = [pid for h in fleet.hosts for pid in _netns_pids(h.netns)]
        assert len(in_hosts) >= 2 * 4  # anchor, sshd, demo app, sleep
    assert fleet.leftovers() == {"namespaces": [], "links": [], "processes": [], "run_dir": []}
    for pid in in_hosts:
        assert not _alive(pid)


def test_leftovers_of_a_killed_run_are_cleaned(fleet_factory: Callable[..., Fleet]) -> None:
    killed = fleet_factory(hosts=1)
    # Pretend its owner died: a pid that has exited.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (killed.run_dir / "owner.json").write_text(f'{{"pid": {dead.pid}, "start": "0"}}')
    fresh = fleet_factory(hosts=1)
    assert killed.leftovers()["namespaces"] == []
    assert killed.leftovers()["links"] == []
    assert not killed.run_dir.exists()
    assert fresh.leftovers()["namespaces"] == [fresh.hosts[0].netns]


def _netns_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_fault_helpers(fleet: Fleet) -> None:
    host = fleet.hosts[0]
    known = asyncssh.read_known_hosts(str(fleet.known_hosts))

    async def attempt(connect_s: float = 5.0) -> str:
        try:
            async with asyncssh.connect(
                host.ip,
                username=fleet.config.user,
                client_keys=[str(fleet.client_key)],
                known_hosts=known,
                connect_timeout=connect_s,
            ) as conn:
                await conn.run("true", check=True, timeout=10)
                return "ok"
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "timeout"

    assert asyncio.run(attempt()) == "ok"
    host.reject_ssh()
    assert asyncio.run(attempt()) == "refused"
    host.drop_ssh()
    assert asyncio.run(attempt(connect_s=1.0)) == "timeout"
    host.clear_faults()
    assert asyncio.run(attempt()) == "ok"
    host.kill_sshd()
    assert host.sshd_pid is None
    assert asyncio.run(attempt()) == "refused"
    host.restart_sshd()
    assert asyncio.run(attempt()) == "ok"
    # The disk survives the sshd restart (the anchor holds the namespaces).
    host.exec("echo kept > /srv/fleetwave/kept")
    host.restart_sshd()
    assert host.read_text("/srv/fleetwave/kept") == "kept\n"
    written = host.fill_disk()
    assert written > 0
    full = host.exec("dd if=/dev/zero of=/srv/fleetwave/more bs=64k count=1", check=False)
    assert full.returncode != 0
    assert "No space left" in full.stderr
    host.free_disk()
    host.exec("echo x > /srv/fleetwave/more")
