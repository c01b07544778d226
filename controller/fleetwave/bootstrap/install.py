"""Install the agent on hosts over SSH with Fabric (``fleetwave agent install``).

Per host, idempotently:

1. a venv (``/opt/fleetwave-agent/venv``) with the fleetwave wheel installed, or, with
   ``local_deb``, the ``fleetwave-agent`` Debian package built by ``packaging/build-deb``
   (``dpkg -i`` when its dependencies are installed, else ``apt-get install``; the
   same version already installed is left alone);
2. the trusted package-signing public keys and the agent config that names them;
3. the deploy key in the deploy user's ``authorized_keys``, pinned to
   ``command="<venv>/bin/fleetwave-agent rpc",restrict`` (an existing fleetwave line is
   replaced, never duplicated; other lines are kept);
4. the systemd unit, enabled and started where systemd runs (the Debian package ships
   and enables its own unit; bootstrap restarts it after changing the config).

With ``resident`` (resident mode, ``docs/agent.md``) the agent config also names an RPC
socket (``rpc_socket``, by default ``<agent root>/rpc.sock``), the deploy key is pinned
to ``command="socat STDIO UNIX-CONNECT:<socket>",restrict`` instead, ``socat`` must be on
the host (installed with apt-get on the Debian-package path when apt is there), and the
drop-in ``packaging/resident.conf`` is installed next to the unit where systemd runs.

The pure part (what each file should contain, what differs) is separate from the
Fabric part (read the host's state, apply only what differs), so a second run
changes nothing and says so. Host keys are checked strictly: paramiko's
``RejectPolicy`` with the configured known_hosts, never AutoAdd.
"""

from __future__ import annotations

import enum
import hashlib
import io
import re
import shlex
import tarfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fleetwave.errors import ConfigError
from fleetwave.planning.model import HostRef

#: Marks the authorized_keys line this tool owns, so a re-run replaces it.
AUTHORIZED_KEY_MARK = "fleetwave-deploy"
WHEEL_MARKER = ".fleetwave-wheel.sha256"
DEFAULT_VENV = PurePosixPath("/opt/fleetwave-agent/venv")
DEFAULT_CONFIG = PurePosixPath("/etc/fleetwave/agent.yaml")
DEFAULT_KEYS_DIR = PurePosixPath("/etc/fleetwave/keys")
DEFAULT_AGENT_ROOT = PurePosixPath("/var/lib/fleetwave")
DEFAULT_UNIT_PATH = PurePosixPath("/etc/systemd/system/fleetwave-agent.service")
#: Where the Debian package puts the agent's launcher.
DEB_AGENT = PurePosixPath("/usr/bin/fleetwave-agent")
DEB_UNIT = "fleetwave-agent.service"
DEFAULT_DROPIN_PATH = PurePosixPath("/etc/systemd/system/fleetwave-agent.service.d/resident.conf")
#: The paths ``packaging/resident.conf`` is written with; rewritten to the host's layout.
_DROPIN_PROGRAM = "/opt/fleetwave-agent/venv/bin/fleetwave-agent"
_DROPIN_CONFIG = "/etc/fleetwave/agent.yaml"
_DROPIN_SOCKET = "/var/lib/fleetwave/rpc.sock"
#: A socket path goes into an authorized_keys command, a socat address (where ``:`` and
#: ``,`` are separators) and a unit's ExecStart: allow only characters safe in all three.
_SAFE_SOCKET = re.compile(r"/[A-Za-z0-9._/+-]+")
_INSTALLED = "install ok installed"


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
    resident: bool = False  # resident mode: `serve --rpc-socket` + a socat relay
    rpc_socket: PurePosixPath | None = None  # None: agent_root / "rpc.sock"
    local_dropin: Path | None = None  # packaging/resident.conf; required with resident
    dropin_path: PurePosixPath = DEFAULT_DROPIN_PATH

    def socket_path(self) -> PurePosixPath:
        """The resident agent's RPC socket on the host."""
        path = self.rpc_socket if self.rpc_socket is not None else self.agent_root / "rpc.sock"
        if not _SAFE_SOCKET.fullmatch(str(path)) or ".." in path.parts:
            raise ConfigError(
                f"--rpc-socket {path}: must be an absolute path of letters, digits and . _ / + -"
            )
        return path

    def relay_command(self) -> str:
        """What sshd runs for the deploy key in resident mode (and the controller's
        ``deploy.ssh.agent_command``)."""
        return f"socat STDIO UNIX-CONNECT:{self.socket_path()}"

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

    def agent_command(self) -> str:
        """The command the deploy key is pinned to."""
        if self.resident:
            return self.relay_command()
        return f"{self.agent_program()} rpc"


@dataclass(frozen=True)
class AdminAccess:
    """How Fabric logs in to install (not the deploy key, which is pinned to the agent)."""

    user: str = "root"
    identity: Path | None = None
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    connect_timeout_s: float = 10.0


@dataclass(frozen=True)
class DebInfo:
    """What bootstrap needs from a .deb's control file."""

    package: str
    version: str
    depends: str = ""

    def dependency_names(self) -> tuple[str, ...]:
        """Every package named in Depends (all alternatives), for one dpkg-query."""
        names: list[str] = []
        for clause in _depends_clauses(self.depends):
            names.extend(n for n in clause if n not in names)
        return tuple(names)


@dataclass(frozen=True)
class Desired:
    """Every file the host should have, by remote path."""

    files: dict[str, bytes] = field(default_factory=dict)
    wheel_sha256: str = ""
    deb: DebInfo | None = None


# ------------------------------------------------------------------- pure helpers


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def render_agent_config(options: BootstrapOptions) -> str:
    """The agent config YAML naming the copied trusted keys (and, resident, the socket)."""
    keys = "".join(f"  - {options.keys_dir / path.name}\n" for path in options.local_trusted_keys)
    socket = f"rpc_socket: {options.socket_path()}\n" if options.resident else ""
    return (
        "# Written by `fleetwave agent install`; re-running it overwrites this file.\n"
        f"root: {options.agent_root}\n"
        f"trusted_keys:\n{keys}{socket}"
    )


def render_resident_dropin(options: BootstrapOptions, template: str) -> str:
    """``packaging/resident.conf`` with this host's program, config and socket paths."""
    if "\nExecStart=\n" not in f"\n{template}" or _DROPIN_PROGRAM not in template:
        raise ConfigError(
            "resident drop-in must reset ExecStart= and start "
            f"{_DROPIN_PROGRAM} (as packaging/resident.conf does)"
        )
    return (
        template.replace(_DROPIN_PROGRAM, options.agent_program())
        .replace(_DROPIN_CONFIG, str(options.config_path))
        .replace(_DROPIN_SOCKET, str(options.socket_path()))
    )


def socat_install_command() -> str:
    """How the Debian-package path installs the relay when the host lacks it."""
    return (
        "env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        "-o DPkg::Lock::Timeout=60 socat"
    )


def pinned_key_line(options: BootstrapOptions) -> str:
    """The authorized_keys line that lets the deploy key run only the agent's RPC."""
    parts = options.deploy_public_key.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise ConfigError(f"deploy public key is not an OpenSSH public key: {parts[:1]}")
    command = options.agent_command().replace('"', '\\"')
    return f'command="{command}",restrict {parts[0]} {parts[1]} {AUTHORIZED_KEY_MARK}'


def pin_authorized_key(existing: str, line: str) -> str:
    """``existing`` authorized_keys with our line replacing any earlier fleetwave line
    (or the same key unpinned); every other line is kept as it was."""
    key_blob = line.split()[-2]  # "... restrict TYPE BLOB MARK"
    kept = [
        current
        for current in existing.splitlines()
        if not current.rstrip().endswith(AUTHORIZED_KEY_MARK) and key_blob not in current.split()
    ]
    return "\n".join([*kept, line]) + "\n"


def desired_state(options: BootstrapOptions, authorized_keys_now: str) -> Desired:
    """Compute every file's wanted content from the options and the host's current
    authorized_keys (the only file we merge rather than own)."""
    files: dict[str, bytes] = {}
    for path in options.local_trusted_keys:
        files[str(options.keys_dir / path.name)] = _read_local(path, "trusted key")
    files[str(options.config_path)] = render_agent_config(options).encode()
    files[str(_authorized_keys_path(options))] = pin_authorized_key(
        authorized_keys_now, pinned_key_line(options)
    ).encode()
    if options.local_deb is not None:
        if options.local_wheel is not None:
            raise ConfigError("give either a wheel or a Debian package, not both")
        if options.local_unit is not None:
            raise ConfigError(
                "a systemd unit does not apply to a Debian package install: "
                f"the package ships {DEB_UNIT}"
            )
    elif options.local_wheel is None:
        raise ConfigError("give the agent as a wheel or as a Debian package")
    if options.resident:
        if options.local_dropin is None:
            raise ConfigError("resident mode needs the drop-in (packaging/resident.conf)")
        template = _read_local(options.local_dropin, "resident drop-in").decode()
        files[str(options.dropin_path)] = render_resident_dropin(options, template).encode()
    if options.local_unit is not None:
        unit = _read_local(options.local_unit, "systemd unit").decode()
        unit = unit.replace("/opt/fleetwave-agent/venv", str(options.venv))
        files[str(options.unit_path)] = unit.encode()
    if options.local_deb is not None:
        return Desired(files, deb=read_deb_info(options.local_deb))
    assert options.local_wheel is not None  # checked above
    return Desired(files, sha256(_read_local(options.local_wheel, "wheel")))


def read_deb_info(path: Path) -> DebInfo:
    """Package, Version and Depends from a .deb, read in Python (the controller may not
    have dpkg): an ``ar`` archive whose ``control.tar.{gz,xz}`` holds ``./control``."""
    data = _read_local(path, "Debian package")

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{path}: not a usable Debian package: {why}")

    if not data.startswith(b"!<arch>\n"):
        raise bad("no ar archive header")
    offset = 8
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise bad(f"corrupt member header at byte {offset}") from None
        body = data[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size & 1)
        if not name.startswith("control.tar"):
            continue
        if name.endswith(".zst"):
            raise bad("control.tar.zst is not readable here; build it with packaging/build-deb")
        try:
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                member = tar.extractfile("./control")
                text = member.read().decode("utf-8") if member is not None else ""
        except (tarfile.TarError, KeyError, EOFError, OSError, UnicodeDecodeError) as exc:
            raise bad(f"unreadable {name}: {exc}") from None
        fields = parse_control(text)
        missing = [k for k in ("Package", "Version") if not fields.get(k)]
        if missing:
            raise bad(f"control file lacks {', '.join(missing)}")
        return DebInfo(fields["Package"], fields["Version"], fields.get("Depends", ""))
    raise bad("no control.tar member")


def parse_control(text: str) -> dict[str, str]:
    """The fields of one deb822 paragraph; continuation lines are joined with spaces."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    return fields


def _depends_clauses(depends: str) -> list[tuple[str, ...]]:
    """``a (>= 1), b | c`` -> ``[("a",), ("b", "c")]``: names without versions/arches."""
    clauses = []
    for clause in depends.split(","):
        names = tuple(
            re.split(r"[\s(:\[]", alt.strip(), maxsplit=1)[0] for alt in clause.split("|")
        )
        if any(names):
            clauses.append(tuple(n for n in names if n))
    return clauses


def parse_dpkg_query(out: str) -> dict[str, tuple[str, str]]:
    """``dpkg-query -W -f='${Package}\\t${Version}\\t${Status}\\n'`` -> name: (ver, status)."""
    packages: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            packages[parts[0]] = (parts[1], parts[2])
    return packages


def missing_dependencies(deb: DebInfo, packages: Mapping[str, tuple[str, str]]) -> list[str]:
    """Depends clauses with no installed alternative (version constraints are left to
    dpkg, which refuses the install and says why)."""
    return [
        " | ".join(clause)
        for clause in _depends_clauses(deb.depends)
        if not any(packages.get(name, ("", ""))[1] == _INSTALLED for name in clause)
    ]


def deb_is_installed(deb: DebInfo, packages: Mapping[str, tuple[str, str]]) -> bool:
    """Is exactly this version of the package installed (not half-configured)?"""
    return packages.get(deb.package) == (deb.version, _INSTALLED)


def deb_install_command(remote_deb: str, missing: Sequence[str]) -> str:
    """``dpkg -i`` when every dependency is there (no apt, no network), else
    ``apt-get install`` of the file, which pulls the missing ones from the host's
    repositories. ``--force-confold``: bootstrap owns /etc/fleetwave/agent.yaml, so an
    upgrade keeps it and never stops at a conffile prompt."""
    q = shlex.quote(remote_deb)
    if not missing:
        return f"dpkg --force-confold --force-confdef -i {q}"
    return (
        "apt-get install -y -q --no-install-recommends "
        "-o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef "
        f"-o DPkg::Lock::Timeout=60 {q}"
    )


def changed_files(desired: Desired, remote_digests: Mapping[str, str | None]) -> list[str]:
    """Remote paths whose content differs from what is wanted."""
    return [
        path for path, data in desired.files.items() if remote_digests.get(path) != sha256(data)
    ]


def _authorized_keys_path(options: BootstrapOptions) -> PurePosixPath:
    if options.authorized_keys is not None:
        return options.authorized_keys
    return PurePosixPath(f"~{options.deploy_user}/.ssh/authorized_keys")


def _read_local(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


# ------------------------------------------------------------------- Fabric shell


def install_agent(
    hosts: Sequence[HostRef],
    options: BootstrapOptions,
    access: AdminAccess,
    *,
    workers: int = 10,
    connect: Callable[[HostRef, AdminAccess], Any] | None = None,
) -> list[HostResult]:
    """Install on every host in parallel; one result per host, failures included."""
    opener = connect or open_connection
    # Read local inputs once, up front: a bad wheel or key path fails before any host.
    desired_state(options, "")

    def one(host: HostRef) -> HostResult:
        try:
            conn = opener(host, access)
        except Exception as exc:
            return HostResult(host.name, HostStatus.FAILED, message=_reason(exc))
        try:
            return _install_one(conn, host, options)
        except Exception as exc:
            return HostResult(host.name, HostStatus.FAILED, message=_reason(exc))
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(hosts) or 1))) as pool:
        return list(pool.map(one, hosts))


def open_connection(host: HostRef, access: AdminAccess) -> Any:
    """A Fabric connection that refuses unknown or mismatched host keys."""
    import paramiko  # type: ignore[import-untyped]
    from fabric import Connection

    known_hosts = access.known_hosts or Path("~/.ssh/known_hosts").expanduser()
    if not known_hosts.is_file():
        raise ConfigError(f"known_hosts file {known_hosts} does not exist")
    connect_kwargs: dict[str, Any] = {"allow_agent": False, "look_for_keys": False}
    if access.identity is not None:
        connect_kwargs["key_filename"] = [str(access.identity)]
    else:
        connect_kwargs["look_for_keys"] = True
    conn = Connection(
        host.address,
        user=access.user,
        port=host.ssh_port or 22,
        connect_timeout=access.connect_timeout_s,
        connect_kwargs=connect_kwargs,
    )
    # Fabric defaults to AutoAddPolicy; a deployer must never trust on first use.
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    conn.client.load_host_keys(str(known_hosts))
    return conn


def _run(conn: Any, command: str, sudo: bool) -> str:
    result = conn.run(("sudo -n " if sudo else "") + command, hide=True, warn=True, in_stream=False)
    if result.exited != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        # Name the program, not an `env VAR=value` prefix.
        words = [w for w in command.split() if w != "env" and "=" not in w]
        program = words[0] if words else command
        raise RuntimeError(f"`{program}` exited {result.exited}: {tail[0]}")
    return str(result.stdout)


def _install_one(conn: Any, host: HostRef, options: BootstrapOptions) -> HostResult:
    sudo = conn.user != "root"
    q = shlex.quote
    changes: list[str] = []
    # Before anything is changed: a host that cannot get socat fails untouched.
    if options.resident and _ensure_socat(conn, options, sudo):
        changes.append("socat")
    # The package creates the deploy user, so it goes first.
    if options.local_deb is not None and _install_deb(conn, options, sudo):
        changes.append("agent package")
    auth_path = _authorized_keys_path(options)
    if options.authorized_keys is None:
        home = _run(conn, f"getent passwd {q(options.deploy_user)} | cut -d: -f6", sudo).strip()
        if not home:
            raise RuntimeError(f"deploy user {options.deploy_user!r} does not exist")
        auth_path = PurePosixPath(home) / ".ssh/authorized_keys"
        options = _with_auth_path(options, auth_path)
    current_auth = _run(conn, f"cat {q(str(auth_path))} 2>/dev/null || true", sudo)
    desired = desired_state(options, current_auth)
    marker = options.venv / WHEEL_MARKER
    paths = [*desired.files] + ([] if desired.deb else [str(marker)])
    probe = " ".join(q(p) for p in paths)
    script = (
        'for f in "$@"; do if [ -f "$f" ]; then '
        'echo "$(sha256sum < "$f" | cut -c1-64) $f"; else echo "- $f"; fi; done; '
        "[ -d /run/systemd/system ] && echo systemd; true"
    )
    out = _run(conn, f"sh -c {q(script)} sh {probe}", sudo)
    digests: dict[str, str | None] = {}
    systemd = False
    for line in out.splitlines():
        if line == "systemd":
            systemd = True
            continue
        digest, _, path = line.partition(" ")
        digests[path] = None if digest == "-" else digest
    if options.resident and not systemd:
        # No systemd, no drop-in: the message below says how to run the daemon instead.
        desired.files.pop(str(options.dropin_path), None)
    if desired.deb is None:
        marker_text = _run(conn, f"cat {q(str(marker))} 2>/dev/null || true", sudo).strip()
        if marker_text != desired.wheel_sha256:
            _install_wheel(conn, options, desired.wheel_sha256, sudo)
            changes.append("agent wheel")
    if options.resident and _ensure_socket_dir(conn, options, sudo):
        changes.append(str(options.socket_path().parent))
    for path in changed_files(desired, digests):
        _put_file(conn, path, desired.files[path], sudo, private=path == str(auth_path))
        changes.append(path)
    message = ""
    how = options.serve_command() if options.resident else ""
    unit_changed = str(options.unit_path) in changes
    if options.local_unit is not None:
        if systemd:
            if unit_changed or changes:
                _run(conn, "systemctl daemon-reload", sudo)
                _run(conn, "systemctl enable fleetwave-agent.service", sudo)
                _run(conn, "systemctl restart fleetwave-agent.service", sudo)
                changes.append("service restarted")
        else:
            message = _no_systemd_message(
                how or f"{options.agent_program()} --config {options.config_path} serve",
                options,
            )
    elif desired.deb is not None:
        if systemd:
            if changes:
                if str(options.dropin_path) in changes:
                    _run(conn, "systemctl daemon-reload", sudo)
                # postinst enabled and started it before the config was written.
                _run(conn, f"systemctl restart {DEB_UNIT}", sudo)
                changes.append("service restarted")
        else:
            message = _no_systemd_message(
                how or f"{DEB_AGENT} --config {options.config_path} serve", options
            )
    status = HostStatus.CHANGED if changes else HostStatus.OK
    return HostResult(host.name, status, tuple(changes), message)


def _no_systemd_message(command: str, options: BootstrapOptions) -> str:
    if options.resident:
        return (
            "no systemd on this host: start the resident agent with "
            f"`{command}` as {options.deploy_user} under your init system"
        )
    return (
        f"no systemd on this host: start the agent's exporter with `{command}` "
        "under your init system"
    )


def _ensure_socat(conn: Any, options: BootstrapOptions, sudo: bool) -> bool:
    """Make sure the relay is on the host; True if it was installed now. Only the
    Debian-package path installs it (that path already relies on apt); otherwise a
    missing socat fails the host with what to do."""
    probe = 'for p in socat apt-get; do command -v "$p" >/dev/null && echo "$p"; done; true'
    found = set(_run(conn, f"sh -c {shlex.quote(probe)}", sudo).split())
    if "socat" in found:
        return False
    if options.local_deb is None or "apt-get" not in found:
        raise RuntimeError(
            "socat is not installed (resident mode relays SSH sessions with it): "
            "install the socat package, or drop --resident"
        )
    _run(conn, socat_install_command(), sudo)
    return True


def _ensure_socket_dir(conn: Any, options: BootstrapOptions, sudo: bool) -> bool:
    """Create the socket's directory for the deploy user if missing; True if created.
    An existing directory is left alone: the daemon itself refuses an unsafe one."""
    q = shlex.quote
    parent = str(options.socket_path().parent)
    user = q(options.deploy_user)
    script = (
        f"test -d {q(parent)} && exit 0; "
        f"install -d -m 0750 -o {user} -g {user} {q(parent)} && echo created"
    )
    return "created" in _run(conn, f"sh -c {q(script)}", sudo)


def _with_auth_path(options: BootstrapOptions, path: PurePosixPath) -> BootstrapOptions:
    from dataclasses import replace

    return replace(options, authorized_keys=path)


def _install_deb(conn: Any, options: BootstrapOptions, sudo: bool) -> bool:
    """Install the .deb unless this version is installed; True if it changed anything."""
    assert options.local_deb is not None
    deb = read_deb_info(options.local_deb)
    q = shlex.quote
    names = " ".join(q(n) for n in (deb.package, *deb.dependency_names()))
    fmt = q("${Package}\\t${Version}\\t${Status}\\n")
    packages = parse_dpkg_query(
        _run(conn, f"dpkg-query -W -f={fmt} {names} 2>/dev/null; true", sudo)
    )
    if deb_is_installed(deb, packages):
        return False
    # A fresh private directory of the admin login: SFTP writes as that user, and no
    # other local user can swap the file before root installs it.
    tmp_dir = _run(conn, "mktemp -d /tmp/fleetwave-deb.XXXXXX", False).strip()
    remote_deb = f"{tmp_dir}/{options.local_deb.name}"
    try:
        conn.put(str(options.local_deb), remote_deb)
        command = deb_install_command(remote_deb, missing_dependencies(deb, packages))
        _run(conn, f"env DEBIAN_FRONTEND=noninteractive {command}", sudo)
    finally:
        _run(conn, f"rm -rf {q(tmp_dir)}", False)
    return True


def _install_wheel(conn: Any, options: BootstrapOptions, wheel_sha: str, sudo: bool) -> None:
    q = shlex.quote
    venv = str(options.venv)
    assert options.local_wheel is not None
    remote_wheel = f"{options.venv.parent}/{options.local_wheel.name}"
    _run(conn, f"mkdir -p {q(str(options.venv.parent))}", sudo)
    if not sudo:
        conn.put(str(options.local_wheel), remote_wheel)
    else:
        tmp = f"/tmp/{options.local_wheel.name}"
        conn.put(str(options.local_wheel), tmp)
        _run(conn, f"mv -f {q(tmp)} {q(remote_wheel)}", sudo)
    site = " --system-site-packages" if options.system_site_packages else ""
    _run(conn, f"test -x {q(venv)}/bin/python || {q(options.python)} -m venv{site} {q(venv)}", sudo)
    pip = f"{q(venv)}/bin/pip install --quiet --disable-pip-version-check"
    extra = " ".join(q(a) for a in options.pip_args)
    _run(conn, f"{pip} {extra} {q(remote_wheel)}", sudo)
    # Same version, new build: the first install skips it, so force the wheel itself.
    _run(conn, f"{pip} {extra} --no-deps --force-reinstall {q(remote_wheel)}", sudo)
    _run(conn, f"sh -c 'echo {wheel_sha} > {q(venv)}/{WHEEL_MARKER}'", sudo)


def _put_file(conn: Any, path: str, data: bytes, sudo: bool, *, private: bool) -> None:
    q = shlex.quote
    parent = str(PurePosixPath(path).parent)
    tmp = f"/tmp/.fleetwave-{sha256(path.encode())[:16]}"
    conn.put(io.BytesIO(data), tmp)
    mode = "600" if private else "644"
    _run(
        conn,
        f"sh -c 'mkdir -p {q(parent)} && chmod {mode} {q(tmp)} && mv -f {q(tmp)} {q(path)}'",
        sudo,
    )


def _reason(exc: BaseException) -> str:
    """One line naming why a host failed, without library tracebacks."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    if name == "BadHostKeyException":
        return "host key does not match known_hosts"
    if name == "SSHException" and "not found in known_hosts" in detail:
        return "host is not in known_hosts (host keys are never added automatically)"
    if name == "AuthenticationException":
        return "admin login refused"
    if isinstance(exc, TimeoutError | OSError):
        return f"cannot connect: {detail or name}"
    return f"{detail or name}"
