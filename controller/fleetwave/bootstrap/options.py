"""What ``fleetwave agent install`` installs and where (:class:`BootstrapOptions`), how
it logs in (:class:`AdminAccess`), and what it reports per host (:class:`HostResult`).

Pure data and the derived commands and paths; nothing here touches a host.
"""

from __future__ import annotations

import enum
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fleetwave.errors import ConfigError

DEFAULT_VENV = PurePosixPath("/opt/fleetwave-agent/venv")
DEFAULT_CONFIG = PurePosixPath("/etc/fleetwave/agent.yaml")
DEFAULT_KEYS_DIR = PurePosixPath("/etc/fleetwave/keys")
DEFAULT_AGENT_ROOT = PurePosixPath("/var/lib/fleetwave")
DEFAULT_UNIT_PATH = PurePosixPath("/etc/systemd/system/fleetwave-agent.service")
DEFAULT_DROPIN_PATH = PurePosixPath("/etc/systemd/system/fleetwave-agent.service.d/resident.conf")
#: The deploy key's forced command in resident mode, and the no-systemd supervisor
#: (with a wheel install: next to the venv, e.g. /opt/fleetwave-agent/relay).
DEFAULT_RELAY_PATH = PurePosixPath("/opt/fleetwave-agent/relay")
DEFAULT_SUPERVISOR_PATH = PurePosixPath("/opt/fleetwave-agent/supervise")
#: Where the Debian package puts the agent's launcher.
DEB_AGENT = PurePosixPath("/usr/bin/fleetwave-agent")
DEB_UNIT = "fleetwave-agent.service"
#: A socket path goes into an authorized_keys command, a socat address (where ``:`` and
#: ``,`` are separators) and a unit's ExecStart: allow only characters safe in all three.
_SAFE_SOCKET = re.compile(r"/[A-Za-z0-9._/+-]+")


class HostStatus(enum.Enum):
    OK = "ok"  # nothing to change
    CHANGED = "changed"
    FAILED = "failed"


@dataclass(frozen=True)
class HostResult:
    host: str
    status: HostStatus
    changes: tuple[str, ...] = ()
    message: str = ""

    def line(self) -> str:
        """One report line: ``web-1: changed (venv, config)`` or the failure reason."""
        if self.status is HostStatus.FAILED:
            return f"{self.host}: failed: {self.message}"
        if self.status is HostStatus.CHANGED:
            return f"{self.host}: changed ({', '.join(self.changes)})" + (
                f"; {self.message}" if self.message else ""
            )
        return f"{self.host}: ok (nothing to change)" + (
            f"; {self.message}" if self.message else ""
        )


@dataclass(frozen=True)
class BootstrapOptions:
    """What to install and where. Paths are on the host unless named ``local_*``."""

    local_wheel: Path | None  # exactly one of local_wheel and local_deb
    local_trusted_keys: tuple[Path, ...]
    deploy_public_key: str  # one OpenSSH public key line
    deploy_user: str = "fleetwave"
    python: str = "python3"
    venv: PurePosixPath = DEFAULT_VENV
    config_path: PurePosixPath = DEFAULT_CONFIG
    keys_dir: PurePosixPath = DEFAULT_KEYS_DIR
    agent_root: PurePosixPath = DEFAULT_AGENT_ROOT
    authorized_keys: PurePosixPath | None = None  # None: ~deploy_user/.ssh/authorized_keys
    local_unit: Path | None = None  # packaging/fleetwave-agent.service
    unit_path: PurePosixPath = DEFAULT_UNIT_PATH
    pip_args: tuple[str, ...] = ()  # e.g. --no-index --find-links /srv/wheels
    system_site_packages: bool = False
    local_deb: Path | None = None  # fleetwave-agent_<version>_all.deb instead of a wheel
    resident: bool = True  # resident mode: `serve --rpc-socket` + the relay; False: session
    rpc_socket: PurePosixPath | None = None  # None: agent_root / "rpc.sock"
    local_dropin: Path | None = None  # None: the drop-in shipped with fleetwave
    dropin_path: PurePosixPath = DEFAULT_DROPIN_PATH
    relay_path: PurePosixPath | None = None  # None: next to the venv (DEFAULT_RELAY_PATH)
    supervisor_path: PurePosixPath | None = None  # None: next to the venv

    def relay_file(self) -> PurePosixPath:
        """Where the relay script goes on the host."""
        if self.relay_path is not None:
            return self.relay_path
        return DEFAULT_RELAY_PATH if self.local_deb is not None else self.venv.parent / "relay"

    def supervisor_file(self) -> PurePosixPath:
        """Where the no-systemd supervisor script goes on the host."""
        if self.supervisor_path is not None:
            return self.supervisor_path
        if self.local_deb is not None:
            return DEFAULT_SUPERVISOR_PATH
        return self.venv.parent / "supervise"

    def socket_path(self) -> PurePosixPath:
        """The resident agent's RPC socket on the host."""
        path = self.rpc_socket if self.rpc_socket is not None else self.agent_root / "rpc.sock"
        if not _SAFE_SOCKET.fullmatch(str(path)) or ".." in path.parts:
            raise ConfigError(
                f"--rpc-socket {path}: must be an absolute path of letters, digits and . _ / + -"
            )
        return path

    def relay_command(self) -> str:
        """What sshd runs for the deploy key in resident mode: the relay script (socat
        to the socket while the daemon serves it, else the agent in the session)."""
        return str(self.relay_file())

    def serve_command(self) -> str:
        """The resident daemon's command line, for hosts without systemd."""
        return f"{self.agent_program()} --config {self.config_path} serve --rpc-socket " + str(
            self.socket_path()
        )

    def agent_program(self) -> str:
        """The agent's launcher on the host, for the pinned key and the messages."""
        if self.local_deb is not None:
            return str(DEB_AGENT)
        return f"{self.venv}/bin/fleetwave-agent"

    def rpc_command(self) -> str:
        """The agent started in an SSH session; names the config unless it is at the
        agent's default path (where the agent looks anyway)."""
        if self.config_path == DEFAULT_CONFIG:
            config = ""
        else:
            config = f" --config {shlex.quote(str(self.config_path))}"
        return f"{self.agent_program()}{config} rpc"

    def agent_command(self) -> str:
        """The command the deploy key is pinned to."""
        if self.resident:
            return self.relay_command()
        return self.rpc_command()


@dataclass(frozen=True)
class AdminAccess:
    """How Fabric logs in to install (not the deploy key, which is pinned to the agent)."""

    user: str = "root"
    identity: Path | None = None
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    connect_timeout_s: float = 10.0


def read_local(path: Path, what: str) -> bytes:
    """A controller-side input file, or a ConfigError naming what it was for."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
