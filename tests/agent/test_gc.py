"""Disks that never fill: ``keep_releases``, pins, uploads removed once installed, and a
200-deployment soak on one agent root."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetwave_agent.config import AgentConfig
from fleetwave_agent.operations import Agent
from fleetwave_agent.package import read_manifest
from fleetwave_agent.rpc import RpcServer
from fleetwave_agent.rpc_protocol import Request

from .conftest import PackageBuilder

pytestmark = pytest.mark.integration

MakeAgent = Callable[..., Agent]


def upload_and_install(agent: Agent, package: Path) -> dict[str, object]:
    """What the controller does over RPC: has_package, upload, install by id."""
    data = package.read_bytes()
    package_id = read_manifest(package).package_id
    if not agent.has_package(package_id):
        agent.receive_upload(package_id, len(data), io.BytesIO(data))
    return agent.install_package_id(package_id)


def versions(agent: Agent) -> list[str]:
    return [r.version for r in agent.store.releases()]


def test_default_keeps_three_current_previous_and_newest(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    assert agent.config.keep_releases == 3 == AgentConfig().keep_releases
    for version in ("1", "2", "3", "4", "5"):
        agent.install(make_package(version))
    agent.activate("2")  # current 2, previous 5 (the last one current before it)
    result = agent.gc()
    assert [r["version"] for r in result["removed"]] == ["1", "3"]
    assert versions(agent) == ["2", "4", "5"]
    assert result["freed_bytes"] > 0
    assert agent.gc()["removed"] == []  # idempotent


def test_pinned_release_is_never_removed(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent(keep_releases=2)
    for version in ("1", "2", "3", "4"):
        agent.install(make_package(version))
    assert agent.pin("1")["changed"] is True
    assert agent.pin("1")["changed"] is False
    # Pinned 1, current 4, previous 3: more than keep_releases, all kept.
    assert [r["version"] for r in agent.gc()["removed"]] == ["2"]
    assert versions(agent) == ["1", "3", "4"]
    pinned = {r["version"]: r["pinned"] for r in agent.status(probe_health=False)["releases"]}
    assert pinned == {"1": True, "3": False, "4": False}
    agent.pin("1", pinned=False)
    assert [r["version"] for r in agent.gc()["removed"]] == ["1"]


def test_upload_is_removed_once_installed_and_reinstall_still_works(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    v1, v2 = make_package("1"), make_package("2")
    id1 = read_manifest(v1).package_id
    upload_and_install(agent, v1)
    assert os.listdir(agent.store.incoming_dir) == []
    assert agent.has_package(id1)  # installed: the controller uploads nothing again
    upload_and_install(agent, v2)
    record = upload_and_install(agent, v1)  # back to 1 by id: an activation, no file needed
    assert record["version"] == "1"
    assert os.listdir(agent.store.incoming_dir) == []


def test_install_of_an_operators_file_leaves_it(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    package = make_package("1")
    agent.install(package)
    assert package.is_file()


def test_gc_drops_installed_uploads_and_keeps_pending_ones(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    v1, v2 = make_package("1"), make_package("2")
    agent.install(v1)
    id1, id2 = read_manifest(v1).package_id, read_manifest(v2).package_id
    # A leftover from an older agent (installed, file kept) and a package on its way.
    (agent.store.incoming_dir / f"{id1}.fwpkg").write_bytes(v1.read_bytes())
    agent.receive_upload(id2, v2.stat().st_size, io.BytesIO(v2.read_bytes()))
    status = agent.status(probe_health=False)
    assert [u["package_id"] for u in status["uploads"]] == sorted([id1, id2])
    result = agent.gc()
    assert result["removed_uploads"] == [id1]
    assert result["freed_bytes"] == v1.stat().st_size
    assert os.listdir(agent.store.incoming_dir) == [f"{id2}.fwpkg"]


def test_status_shows_disk_used_per_release(
    make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    agent.install(make_package("1", files={"a.txt": "x" * 1000, "b.txt": "y" * 24}))
    status = agent.status(probe_health=False)
    on_disk = sum(
        os.lstat(os.path.join(d, f)).st_size
        for d, _, files in os.walk(status["current"]["path"])
        for f in files
    )
    assert status["releases"][0]["bytes"] == on_disk >= 1024
    assert status["disk_bytes"] == {"releases": on_disk, "uploads": 0}
    assert status["keep_releases"] == 3


def test_pin_and_gc_over_rpc(make_package: PackageBuilder, make_agent: MakeAgent) -> None:
    agent = make_agent(keep_releases=2)
    for version in ("1", "2", "3"):
        agent.install(make_package(version))
    server = RpcServer(agent)
    pinned = server.handle(Request(1, "pin", {"version": "1"}), None)
    assert pinned.ok, pinned
    assert pinned.result["pinned"] is True
    bad = server.handle(Request(2, "pin", {"version": "1", "pinned": "no"}), None)
    assert not bad.ok
    assert bad.error_type == "UsageError"
    gc = server.handle(Request(3, "gc", {}), None)
    assert gc.ok
    assert gc.result == {"removed": [], "removed_uploads": [], "freed_bytes": 0}


def disk_usage(root: Path, under: str = "") -> int:
    """Bytes allocated under ``root/under`` (st_blocks, as ``du`` counts)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root / under):
        for name in filenames + dirnames:
            st = os.lstat(os.path.join(dirpath, name))
            total += st.st_blocks * 512
    return total


def test_soak_200_deployments_disk_stays_flat(
    tmp_path: Path, make_package: PackageBuilder, make_agent: MakeAgent
) -> None:
    """Each deployment: upload, install by id, gc (what the controller runs per host).
    Releases and uploads stay at exactly three releases' worth from the third on; the
    only growth is metadata kept on purpose (the ledger binds every version ever
    installed to its package id; ``ops/log.jsonl`` has one line per operation)."""
    agent = make_agent()
    payload = os.urandom(64 * 1024).hex()  # 128 KiB per release: growth would show
    data_after: list[int] = []
    total_after: list[int] = []
    for n in range(1, 201):
        package = make_package(f"1.0.{n:03d}", files={"data.txt": payload})
        upload_and_install(agent, package)
        agent.gc()
        package.unlink()  # the controller's copy, not the host's
        data_after.append(disk_usage(agent.root, "releases") + disk_usage(agent.root, "incoming"))
        total_after.append(disk_usage(agent.root))
    assert versions(agent) == ["1.0.198", "1.0.199", "1.0.200"]
    assert len(set(data_after[2:])) == 1, sorted(set(data_after))
    assert data_after[2] >= 3 * 128 * 1024
    growth = total_after[-1] - total_after[2]
    assert growth < 200 * 1024, f"{growth} bytes of growth in 197 deployments"
