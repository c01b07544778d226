"""The benchmark's fleet: namespace hosts from ``tests.lab`` plus what the benchmark
needs on top of them (one deploy key for every host, per-tool directories on each
host, host-side CPU accounting, checking every host after a run).

``tests.lab.Fleet`` builds at most 99 hosts on one bridge, so the bench builds as many
fleets of up to :data:`FLEET_CHUNK` hosts as it needs (each on its own /24) and makes
them look like one: fleet 0's client key is added to every other fleet's
authorized_keys file and the known_hosts files are concatenated.

Host-side CPU: every host's sshd listener is moved into one cgroup-v1 ``cpuacct``
group before the runs. Every process sshd forks (sessions, shells, the agent,
ansible's modules, tar, sha256sum) inherits the group, and ``cpuacct.usage`` keeps
counting the CPU of processes after they exit, so the delta around a run is the whole
host side, start-up included. Nothing else is in the group.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.lab import Fleet, LabConfig, LabError, LabHost

#: Hosts per underlying lab fleet (the lab allows 1..99 per bridge).
FLEET_CHUNK = 50
#: Where peers deploy on each host: /srv/bench/<tool>/{incoming,releases,current}.
PEER_BASE = "/srv/bench"
#: The agent's store root on each host (the lab's agent.yaml points there).
AGENT_ROOT = "/srv/fleetwave"
#: The resident agent's RPC socket on each host (``--agent-mode resident``).
RPC_SOCKET = f"{AGENT_ROOT}/rpc.sock"
#: What an SSH session runs to reach the resident agent: a relay, no Python.
RESIDENT_AGENT_COMMAND = f"socat STDIO UNIX-CONNECT:{RPC_SOCKET}"
#: The file every release carries; its sha256 is the release's content digest.
PAYLOAD_NAME = "payload.bin"
CPUACCT = Path("/sys/fs/cgroup/cpuacct")


@dataclass(frozen=True)
class BenchHost:
    """One host as every tool sees it."""

    name: str  # unique across the chunks (n001...)
    ip: str
    lab: LabHost


class CpuGroup:
    """Cumulative CPU of a process tree, through one cgroup-v1 cpuacct group."""

    def __init__(self, name: str):
        self.path = CPUACCT / name
        if not (CPUACCT / "cpuacct.usage").exists():
            raise LabError(f"cgroup v1 cpuacct is not mounted at {CPUACCT}")
        self.path.mkdir()

    def add(self, pid: int) -> None:
        """Account ``pid`` and every process it forks from now on."""
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def join_self(self) -> None:
        """Move the calling process into the group (a ``preexec_fn``)."""
        (self.path / "cgroup.procs").write_text("0\n")

    def pids(self) -> list[int]:
        """The processes in the group right now."""
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def kill_all(self) -> None:
        """SIGKILL what is left in the group (e.g. daemonised ssh ControlMasters); every
        process in it was started by this benchmark."""
        deadline = time.monotonic() + 5.0
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def seconds(self) -> float:
        """CPU seconds used so far by everything in the group, exited processes included."""
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def remove(self) -> None:
        """Delete the group once its processes are gone (bounded wait, best effort)."""
        deadline = time.monotonic() + 10.0
        while self.path.exists() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                for pid in (self.path / "cgroup.procs").read_text().split():
                    # Stragglers go back to the root group so the directory can go.
                    with contextlib.suppress(OSError):
                        (CPUACCT / "cgroup.procs").write_text(pid + "\n")
                self.path.rmdir()
                return
            time.sleep(0.1)


class BenchFleet:
    """``with BenchFleet(100, work_dir, agent_pub) as fleet:``; torn down on exit,
    also on KeyboardInterrupt (the lab fleets clean up after themselves)."""

    def __init__(self, hosts: int, work_dir: Path, agent_pub: Path, *, srv_size: str = "512m"):
        self.size = hosts
        self.work_dir = work_dir
        self.agent_pub = agent_pub
        self.srv_size = srv_size
        self.fleets: list[Fleet] = []
        self.hosts: list[BenchHost] = []
        self.cpu: CpuGroup | None = None
        self.daemons: list[subprocess.Popen[bytes]] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> BenchFleet:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the resident agents, tear down every fleet, then the cgroup."""
        self.stop_resident_agents()
        self._stack.close()
        if self.cpu is not None:
            self.cpu.remove()
            self.cpu = None

    @property
    def client_key(self) -> Path:
        return self.fleets[0].client_key

    @property
    def known_hosts(self) -> Path:
        return self.work_dir / "known_hosts"

    @property
    def user(self) -> str:
        return self.fleets[0].config.user

    def _build(self) -> None:
        agent_yaml = f"root: {AGENT_ROOT}\ntrusted_keys: [{self.agent_pub}]\nkeep_releases: 2\n"
        remaining = self.size
        while remaining > 0:
            chunk = min(FLEET_CHUNK, remaining)
            config = LabConfig(
                hosts=chunk,
                haproxy=False,
                srv_size=self.srv_size,
                agent_config=lambda _host: agent_yaml,
            )
            self.fleets.append(self._stack.enter_context(Fleet(config)))
            remaining -= chunk
        main_pub = self.fleets[0].client_key.with_suffix(".pub").read_text()
        for other in self.fleets[1:]:
            # sshd re-reads AuthorizedKeysFile on every login: one key for all hosts.
            with other.authorized_keys.open("a") as fh:
                fh.write(main_pub)
        self.known_hosts.write_text("".join(f.known_hosts.read_text() for f in self.fleets))
        for fleet in self.fleets:
            for lab_host in fleet.hosts:
                self.hosts.append(BenchHost(f"n{len(self.hosts) + 1:03d}", lab_host.ip, lab_host))
        self.cpu = CpuGroup(f"fwbench-hosts-{self.fleets[0].run_id}")
        for host in self.hosts:
            pid = host.lab.sshd_pid
            if pid is None:
                raise LabError(f"{host.name}: sshd is not running")
            self.cpu.add(pid)

    def prepare_tools(self, tools: list[str]) -> None:
        """Give every peer tool its own empty base directory on every host."""
        if not tools:
            return  # fleetwave only: nothing to prepare (and `mkdir -p` needs an operand)
        dirs = " ".join(
            shlex.quote(f"{PEER_BASE}/{tool}/{sub}")
            for tool in tools
            for sub in ("incoming", "releases")
        )
        script = f"mkdir -p {dirs} && chown -R {shlex.quote(self.user)}: {PEER_BASE}"
        for host in self.hosts:
            host.lab.exec(script, root=True)

    def start_resident_agents(self, timeout: float = 60.0) -> None:
        """Run ``fleetwave-agent serve --rpc-socket`` as the deploy user in every host.

        Each daemon joins the hosts' CPU group, so the work it does for a run is
        counted as host CPU exactly like the per-session agents' is.
        """
        if self.cpu is None:
            raise LabError("the fleet is not built")
        agent = str(self.fleets[0].agent_path)
        argv = [agent, "serve", "--listen", "127.0.0.1", "--port", "0"]
        argv += ["--rpc-socket", RPC_SOCKET]
        for host in self.hosts:
            log = (host.lab.host_dir / "agent-serve.log").open("wb")
            with log:
                proc = subprocess.Popen(
                    host.lab.command(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            self.daemons.append(proc)
            self.cpu.add(proc.pid)  # nsenter and setpriv exec: this pid is the agent
        deadline = time.monotonic() + timeout
        for host, proc in zip(self.hosts, self.daemons, strict=True):
            sock = host.lab.path(RPC_SOCKET)
            while not sock.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    log_text = (host.lab.host_dir / "agent-serve.log").read_text(errors="replace")
                    raise LabError(f"{host.name}: resident agent did not start: {log_text[-300:]}")
                time.sleep(0.05)

    def stop_resident_agents(self, timeout: float = 30.0) -> None:
        """SIGTERM every resident agent and reap it (SIGKILL after ``timeout``)."""
        for proc in self.daemons:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.daemons:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.daemons = []

    def wait_idle(self, timeout: float = 15.0) -> None:
        """Wait until no SSH session is left on any host, so a run's CPU is all counted."""
        deadline = time.monotonic() + timeout
        for host in self.hosts:
            pid = host.lab.sshd_pid
            while pid is not None and _children(pid) and time.monotonic() < deadline:
                time.sleep(0.05)


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_peer_release(host: BenchHost, tool: str, release: str, payload_sha: str) -> str | None:
    """None when ``current`` of ``tool`` on ``host`` is ``release`` with the right payload."""
    base = host.lab.path(f"{PEER_BASE}/{tool}")
    current = base / "current"
    try:
        target = os.readlink(current)
    except OSError as exc:
        return f"{host.name}: {tool} current: {exc.strerror}"
    if target.rstrip("/") not in (f"releases/{release}", f"{base}/releases/{release}"):
        return f"{host.name}: {tool} current -> {target}, expected releases/{release}"
    return _check_payload(host, base / "releases" / release / PAYLOAD_NAME, payload_sha)


def check_agent_release(host: BenchHost, version: str, payload_sha: str) -> str | None:
    """None when the agent's ``current`` is a release of ``version`` with the right payload."""
    current = host.lab.path(f"{AGENT_ROOT}/current")
    try:
        target = os.readlink(current)
    except OSError as exc:
        return f"{host.name}: agent current: {exc.strerror}"
    if not Path(target).name.startswith(f"{version}-"):
        return f"{host.name}: agent current -> {target}, expected version {version}"
    return _check_payload(host, current.parent / target / PAYLOAD_NAME, payload_sha)


def _check_payload(host: BenchHost, path: Path, payload_sha: str) -> str | None:
    try:
        got = file_sha256(path)
    except OSError as exc:
        return f"{host.name}: {path.name}: {exc.strerror}"
    return None if got == payload_sha else f"{host.name}: {path} has sha256 {got[:12]}"


def clean_peer_releases(hosts: list[BenchHost], tool: str, keep: str) -> None:
    """Remove a tool's old releases (all but ``keep``) so the hosts' tmpfs never fills."""
    for host in hosts:
        releases = host.lab.path(f"{PEER_BASE}/{tool}/releases")
        with contextlib.suppress(OSError):
            for entry in releases.iterdir():
                if entry.name != keep:
                    shutil.rmtree(entry, ignore_errors=True)


def check_all(hosts: list[BenchHost], check: Callable[[BenchHost], str | None]) -> list[str]:
    """Every host's problem (empty when all hosts are right)."""
    return [p for p in (check(h) for h in hosts) if p is not None]
