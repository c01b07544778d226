"""The test fleet: N namespace hosts with real sshd, a real HAProxy in front of their
app ports and, optionally, a real Prometheus. Always torn down, also on failure or
KeyboardInterrupt; leftovers of killed runs are removed at start.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shlex
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fleetwave_agent.errors

from . import net
from ._proc import LabError, pid_alive, run, ssh_keygen
from .haproxy import Backend, LabHaproxy
from .host import LabHost
from .load import SteadyLoad
from .prometheus import LabPrometheus

#: The agent console script of the venv the tests run in.
AGENT_PATH = Path(sys.executable).parent / "fleetwave-agent"


@dataclass(frozen=True)
class LabConfig:
    """What to build. Every name and the subnet derive from ``run_id`` (random by default)."""

    hosts: int = 3
    user: str = "fwdeploy"
    base_dir: Path = Path("/run/fleetwave-lab")  # root-owned, 0755: StrictModes accepts it
    subnet_base: str = "10.213"
    srv_size: str = "64m"  # the host's disk (tmpfs); tiny to simulate a full disk
    srv_inodes: int | None = None  # tmpfs nr_inodes, for inode exhaustion
    max_startups: str = "200:30:400"
    # Pin the deploy key to the agent: command="<agent> rpc",restrict.
    pin_agent_command: bool = False
    # YAML for /etc/fleetwave/agent.yaml inside each host; None: just the agent root.
    agent_config: Callable[[LabHost], str] | None = None
    haproxy: bool = True
    app_port: int = 8080
    prometheus: bool = False
    # Make the venv's interpreter reachable by the test user inside hosts when one of
    # its directories is private (e.g. a pyenv Python under a 0700 /root).
    expose_private_paths: bool = True
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))


def lab_unavailable_reason() -> str | None:
    """Why e2e tests cannot run here (for pytest.skip), or None when they can."""
    if os.geteuid() != 0:
        return "the namespace lab needs root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if run(["ip", "netns", "list"], check=False).returncode != 0:
        return "ip netns is unavailable"
    return None


def ensure_user(name: str) -> pwd.struct_passwd:
    """Create the non-root test user once, with a proper home so StrictModes is happy."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    proc = run(["useradd", "-m", "-U", "-s", "/bin/bash", name], check=False)
    if proc.returncode not in (0, 9):  # 9: created concurrently by another run
        raise LabError(f"useradd {name}: {proc.stderr.strip()}")
    # A user with a locked ('!') password field is refused by sshd even for keys.
    run(["usermod", "-p", "*", name])
    return pwd.getpwnam(name)


def _private_ancestor(path: Path) -> Path | None:
    """The outermost directory on ``path`` that others cannot traverse, if any."""
    current = Path("/")
    for part in path.parts[1:]:
        current = current / part
        try:
            mode = current.lstat().st_mode
        except OSError:
            return None
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return current
    return None


def _required_paths() -> list[Path]:
    """Directories the test user must reach to run the agent from this venv."""
    paths = [
        Path(sys.executable).parent,
        Path(os.path.realpath(sys.executable)).parent,
        Path(sys.base_prefix),
        Path(fleetwave_agent.errors.__file__).resolve().parent,
    ]
    return list(dict.fromkeys(paths))


class Fleet:
    """``with Fleet(LabConfig(hosts=6)) as fleet: ...``; see the module docstring."""

    def __init__(self, config: LabConfig | None = None):
        self.config = config or LabConfig()
        self.run_id = self.config.run_id
        self.run_dir = self.config.base_dir / self.run_id
        self.hosts: list[LabHost] = []
        self.haproxy: LabHaproxy | None = None
        self.prometheus: LabPrometheus | None = None
        self.names: net.RunNames | None = None
        self.client_key = self.run_dir / "ssh" / "id_ed25519"
        self.known_hosts = self.run_dir / "ssh" / "known_hosts"
        self.authorized_keys = self.run_dir / "ssh" / "authorized_keys"
        self.agent_path = AGENT_PATH
        self._bridge_made = False

    # -- build ------------------------------------------------------------------------

    def __enter__(self) -> Fleet:
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def _build(self) -> None:
        cfg = self.config
        if not 1 <= cfg.hosts <= 99:
            raise LabError(f"hosts must be 1..99, got {cfg.hosts}")
        if not os.access(self.agent_path, os.X_OK):
            raise LabError(f"agent script {self.agent_path} is missing or not executable")
        cfg.base_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        net.clean_leftovers(cfg.base_dir)
        self.run_dir.mkdir(mode=0o755)
        net.write_owner(self.run_dir)
        ensure_user(cfg.user)
        for d in ("/run/sshd", "/etc/fleetwave"):
            Path(d).mkdir(mode=0o755, parents=True, exist_ok=True)
        self._make_keys()
        self.names = net.RunNames(self.run_id, net.pick_subnet(self.run_id, cfg.subnet_base))
        net.create_bridge(self.names)
        self._bridge_made = True
        exposures = self._exposures()
        for index in range(1, cfg.hosts + 1):
            self.hosts.append(self._make_host(index))
        for host in self.hosts:
            net.create_host_netns(self.names, host.index)
            host.start_anchor(self._setup_script(host, exposures))
        for host in self.hosts:
            host.wait_anchor()
            host.start_sshd()
        for host in self.hosts:
            host.wait_sshd()
        self._check_agent_runnable(self.hosts[0])
        if cfg.haproxy:
            self.haproxy = LabHaproxy(
                self.run_dir / "haproxy",
                [Backend(h.name, h.ip, cfg.app_port) for h in self.hosts],
            )
            self.haproxy.start()
            net.record_pid(self.run_dir, self.haproxy.pid or 0)
        if cfg.prometheus:
            self.prometheus = LabPrometheus(self.run_dir / "prometheus")
            self.prometheus.start()
            net.record_pid(self.run_dir, self.prometheus.pid or 0)

    def _make_keys(self) -> None:
        ssh_dir = self.run_dir / "ssh"
        ssh_dir.mkdir(mode=0o755)
        pub = ssh_keygen(self.client_key, "fleetwave-lab")
        if self.config.pin_agent_command:
            pub = f'command="{self.agent_path} rpc",restrict {pub}'
        self.authorized_keys.write_text(pub + "\n")
        self.authorized_keys.chmod(0o644)

    def _make_host(self, index: int) -> LabHost:
        assert self.names is not None
        host_dir = self.run_dir / "hosts" / f"h{index:02d}"
        host_dir.mkdir(parents=True, mode=0o755)
        host = LabHost(
            index=index,
            netns=self.names.netns(index),
            ip=self.names.host_ip(index),
            host_dir=host_dir,
            user=self.config.user,
            sshd_config=host_dir / "sshd_config",
        )
        ssh_keygen(host.host_key, host.name)
        host.sshd_config.write_text(self._sshd_config(host))
        agent_yaml = (
            self.config.agent_config(host) if self.config.agent_config else "root: /srv/fleetwave\n"
        )
        (host_dir / "agent.yaml").write_text(agent_yaml)
        with self.known_hosts.open("a") as fh:
            key = host.host_key.with_suffix(".pub").read_text().split()
            fh.write(f"{host.name},{host.ip} {key[0]} {key[1]}\n")
        return host

    def _sshd_config(self, host: LabHost) -> str:
        path = f"{self.agent_path.parent}:/usr/local/bin:/usr/bin:/bin"
        return "\n".join(
            [
                "Port 22",
                f"ListenAddress {host.ip}",
                f"HostKey {host.host_key}",
                "PidFile none",
                "UsePAM no",
                "UseDNS no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                f"AuthorizedKeysFile {self.authorized_keys}",
                "StrictModes yes",
                f"AllowUsers {self.config.user}",
                f"MaxStartups {self.config.max_startups}",
                "MaxSessions 100",
                # The agent is the venv's console script; hosts find it on PATH.
                f"SetEnv PATH={path}",
                "Subsystem sftp internal-sftp",
                "LogLevel INFO",
                "",
            ]
        )

    def _exposures(self) -> dict[Path, list[Path]]:
        """Private directory -> required paths under it, for the test user's sake."""
        blocked: dict[Path, list[Path]] = {}
        for required in _required_paths():
            private = _private_ancestor(required)
            if private is None:
                continue
            if not self.config.expose_private_paths:
                raise LabError(
                    f"the test user {self.config.user} cannot reach {required}: {private} "
                    "is not world-traversable (chmod o+x it or enable expose_private_paths)"
                )
            blocked.setdefault(private, []).append(required)
        return blocked

    def _setup_script(self, host: LabHost, exposures: dict[Path, list[Path]]) -> str:
        cfg = self.config
        q = shlex.quote
        srv_opts = f"size={cfg.srv_size},mode=0755"
        if cfg.srv_inodes is not None:
            srv_opts += f",nr_inodes={cfg.srv_inodes}"
        lines = [
            "set -eu",
            f"echo {q(host.name)} > /proc/sys/kernel/hostname",
            f"mount -t tmpfs -o {srv_opts} fwlab-srv /srv",
            "mkdir -p /srv/fleetwave",
            f"chown {q(cfg.user)}: /srv/fleetwave",
            "mount -t tmpfs -o size=4m,mode=0755 fwlab-etc /etc/fleetwave",
            f"cp {q(str(host.host_dir / 'agent.yaml'))} /etc/fleetwave/agent.yaml",
        ]
        # Inside this host only: a private directory (e.g. /root) is replaced by an
        # empty traversable tmpfs into which the needed subtrees are bound back.
        stages = []
        for n, (private, required) in enumerate(exposures.items()):
            for m, path in enumerate(required):
                stage = host.host_dir / f"expose-{n}-{m}"
                stage.mkdir()
                stages.append((stage, path))
                lines.append(f"mount --bind {q(str(path))} {q(str(stage))}")
            lines.append(f"mount -t tmpfs -o size=1m,mode=0755 fwlab-expose {q(str(private))}")
        for stage, path in stages:
            lines.append(f"mkdir -p {q(str(path))}")
            lines.append(f"mount --move {q(str(stage))} {q(str(path))}")
        lines += [f"touch {q(str(host.host_dir / 'ready'))}", "exec sleep infinity"]
        return "\n".join(lines)

    def _check_agent_runnable(self, host: LabHost) -> None:
        proc = host.exec([sys.executable, "-c", "import fleetwave_agent"], check=False)
        if proc.returncode != 0:
            raise LabError(
                f"the test user {self.config.user} cannot run {sys.executable} inside "
                f"{host.name}: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}"
            )

    # -- use --------------------------------------------------------------------------

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if name in (host.name, host.ip):
                return host
        raise LabError(f"no lab host {name!r}")

    def load(self, **kwargs: Any) -> SteadyLoad:
        """Steady client load through the HAProxy frontend (see :class:`SteadyLoad`)."""
        if self.haproxy is None:
            raise LabError("this fleet has no haproxy (LabConfig.haproxy=False)")
        return SteadyLoad(self.haproxy.frontend_url + "/", **kwargs)

    def leftovers(self) -> dict[str, list[str]]:
        """What of this run still exists: namespaces, links, live processes, run dir."""
        objects = net.lab_objects(self.run_id)
        pids = [str(p) for p in self._own_pids() if pid_alive(p)]
        objects["processes"] = pids
        objects["run_dir"] = [str(self.run_dir)] if self.run_dir.exists() else []
        return objects

    def _own_pids(self) -> Iterator[int]:
        for host in self.hosts:
            with contextlib.suppress(LabError):
                yield host.anchor_pid
            if host.sshd_pid:
                yield host.sshd_pid
        for daemon in (self.haproxy, self.prometheus):
            if daemon is not None and daemon.pid:
                yield daemon.pid

    # -- tear down --------------------------------------------------------------------

    def teardown(self) -> None:
        """Stop everything this run started and delete its objects. Idempotent."""
        for daemon in (self.prometheus, self.haproxy):
            if daemon is not None:
                daemon.stop()
        for host in self.hosts:
            # Processes started over SSH or by nsenter live in the netns too; SIGTERM
            # first so apps can finish, the netns deletion below SIGKILLs stragglers.
            own = {host.sshd_pid, host.running_anchor_pid}
            for pid in net.netns_pids(host.netns):
                if pid not in own:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, 15)
            host.stop()
        for host in self.hosts:
            net.delete_host_netns(host.netns, self.names.veth(host.index) if self.names else "")
        if self.names is not None and self._bridge_made:
            net.delete_bridge(self.names.bridge)
        # Anything of ours that escaped (e.g. a half-built host) goes by name.
        net.destroy_run(self.run_id, self.run_dir)
