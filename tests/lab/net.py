"""Names and plumbing for one lab run: a bridge in the root namespace and one network
namespace per host joined to it by a veth pair, plus clean-up of killed runs.

Every name embeds the run id, so two runs never collide and a leftover of a killed run
can be found and removed by its prefix alone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ._proc import LabError, kill_pid, pid_alive, pid_start_time, run

#: Every lab object's name starts with this; a run adds its six-hex-digit id.
NAME_PREFIX = "fwl"
_NETNS_RE = re.compile(rf"^{NAME_PREFIX}([0-9a-f]{{6}})-h\d+$")
OWNER_FILE = "owner.json"
PIDS_FILE = "pids"


@dataclass(frozen=True)
class RunNames:
    """Every name one run uses, derived from its id."""

    run_id: str
    subnet: ipaddress.IPv4Network

    @property
    def bridge(self) -> str:
        return f"{NAME_PREFIX}b{self.run_id}"

    def netns(self, index: int) -> str:
        return f"{NAME_PREFIX}{self.run_id}-h{index:02d}"

    def veth(self, index: int) -> str:
        # Interface names are limited to 15 bytes: "fwlv" + 6 + "h" + 2 = 13.
        return f"{NAME_PREFIX}v{self.run_id}h{index:02d}"

    @property
    def bridge_ip(self) -> str:
        return str(self.subnet.network_address + 1)

    def host_ip(self, index: int) -> str:
        return str(self.subnet.network_address + 10 + index)


def pick_subnet(run_id: str, base: str = "10.213") -> ipaddress.IPv4Network:
    """A /24 under ``base`` derived from the run id and not in use in the root namespace."""
    used = run(["ip", "-4", "-o", "addr", "show"]).stdout
    start = int(run_id, 16) % 200 + 20
    for step in range(200):
        third = (start + step - 20) % 200 + 20
        net = ipaddress.IPv4Network(f"{base}.{third}.0/24")
        if f" {base}.{third}." not in used:
            return net
    raise LabError(f"no free /24 under {base}.0.0/16 for the lab bridge")


def create_bridge(names: RunNames) -> None:
    """The run's bridge with its gateway address, up."""
    run(["ip", "link", "add", names.bridge, "type", "bridge"])
    run(
        [
            "ip",
            "-batch",
            "-",
        ],
        input_text=(
            f"addr add {names.bridge_ip}/{names.subnet.prefixlen} dev {names.bridge}\n"
            f"link set {names.bridge} up\n"
        ),
    )


def create_host_netns(names: RunNames, index: int) -> None:
    """A namespace whose eth0 is on the bridge with the host's address."""
    ns, veth = names.netns(index), names.veth(index)
    run(["ip", "netns", "add", ns])
    run(
        ["ip", "-batch", "-"],
        input_text=(
            f"link add {veth} type veth peer name eth0 netns {ns}\n"
            f"link set {veth} master {names.bridge}\n"
            f"link set {veth} up\n"
        ),
    )
    run(
        ["ip", "-n", ns, "-batch", "-"],
        input_text=(
            f"addr add {names.host_ip(index)}/{names.subnet.prefixlen} dev eth0\n"
            "link set eth0 up\nlink set lo up\n"
            f"route add default via {names.bridge_ip}\n"
        ),
    )


def netns_pids(ns: str) -> list[int]:
    """Pids of every process living in namespace ``ns``."""
    proc = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def delete_host_netns(ns: str, veth: str) -> None:
    """Kill what runs in ``ns``, delete its veth, then the namespace (in that order:
    namespace deletion is asynchronous, the veth deletion is not)."""
    for pid in netns_pids(ns):
        kill_pid(pid)
    run(["ip", "link", "del", veth], check=False)
    run(["ip", "netns", "del", ns], check=False)


def delete_bridge(bridge: str) -> None:
    run(["ip", "link", "del", bridge], check=False)


def lab_objects(run_id: str | None = None) -> dict[str, list[str]]:
    """Namespaces and links of one run (or every run) that exist right now."""
    ns_out = run(["ip", "netns", "list"], check=False).stdout
    namespaces = []
    for line in ns_out.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _NETNS_RE.match(name)
        if match and (run_id is None or match.group(1) == run_id):
            namespaces.append(name)
    links = []
    link_json = run(["ip", "-j", "link", "show"], check=False).stdout or "[]"
    for link in json.loads(link_json):
        name = str(link.get("ifname", ""))
        wanted = f"{NAME_PREFIX}b{run_id}" if run_id else f"{NAME_PREFIX}b"
        wanted_v = f"{NAME_PREFIX}v{run_id}" if run_id else f"{NAME_PREFIX}v"
        if name.startswith((wanted, wanted_v)):
            links.append(name)
    return {"namespaces": namespaces, "links": links}


def write_owner(run_dir: Path) -> None:
    """Record which process owns the run, so a later run can tell it is dead."""
    pid = os.getpid()
    (run_dir / OWNER_FILE).write_text(json.dumps({"pid": pid, "start": pid_start_time(pid)}))


def record_pid(run_dir: Path, pid: int) -> None:
    """Remember a root-namespace daemon of this run for clean-up after a kill."""
    with (run_dir / PIDS_FILE).open("a") as fh:
        fh.write(f"{pid} {pid_start_time(pid)}\n")


def _owner_alive(run_dir: Path) -> bool:
    try:
        owner = json.loads((run_dir / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return False
    pid = int(owner["pid"])
    return pid_alive(pid) and pid_start_time(pid) == owner.get("start")


def clean_leftovers(base_dir: Path) -> list[str]:
    """Remove every lab object of runs whose owner process is gone; returns run ids."""
    run_ids: set[str] = set()
    for ns in lab_objects()["namespaces"]:
        match = _NETNS_RE.match(ns)
        if match:
            run_ids.add(match.group(1))
    for link in lab_objects()["links"]:
        run_ids.add(link[len(NAME_PREFIX) + 1 : len(NAME_PREFIX) + 7])
    if base_dir.is_dir():
        run_ids.update(p.name for p in base_dir.iterdir() if re.fullmatch(r"[0-9a-f]{6}", p.name))
    cleaned = []
    for run_id in sorted(run_ids):
        run_dir = base_dir / run_id
        if _owner_alive(run_dir):
            continue
        destroy_run(run_id, run_dir)
        cleaned.append(run_id)
    return cleaned


def destroy_run(run_id: str, run_dir: Path) -> None:
    """Best-effort removal of everything a run created; used for leftovers."""
    with contextlib.suppress(OSError):
        for line in (run_dir / PIDS_FILE).read_text().splitlines():
            pid_s, _, start = line.partition(" ")
            if pid_start_time(int(pid_s)) == start:
                kill_pid(int(pid_s))
    objects = lab_objects(run_id)
    for ns in objects["namespaces"]:
        index = int(ns.rsplit("-h", 1)[1])
        delete_host_netns(ns, f"{NAME_PREFIX}v{run_id}h{index:02d}")
    for link in lab_objects(run_id)["links"]:
        run(["ip", "link", "del", link], check=False)
    shutil.rmtree(run_dir, ignore_errors=True)
