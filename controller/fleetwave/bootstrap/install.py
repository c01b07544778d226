"""Install the agent on hosts over SSH with Fabric (``fleetwave agent install``).

Per host, idempotently:

1. a venv (``/opt/fleetwave-agent/venv``) with the fleetwave wheel installed, or, with
   ``local_deb``, the ``fleetwave-agent`` Debian package built by ``packaging/build-deb``
   (``dpkg -i`` when its dependencies are installed, else ``apt-get install``; the
   same version already installed is left alone; see :mod:`fleetwave.bootstrap.deb`);
2. the trusted package-signing public keys and the agent config that names them;
3. the deploy key in the deploy user's ``authorized_keys``, pinned to
   ``command="<venv>/bin/fleetwave-agent rpc",restrict`` (an existing fleetwave line is
   replaced, never duplicated; other lines are kept);
4. the systemd unit, enabled and started where systemd runs (the Debian package ships
   and enables its own unit; bootstrap restarts it after changing the config).

With ``resident`` (the default; resident mode, ``docs/agent.md``) the agent config also
names an RPC socket (``rpc_socket``, by default ``<agent root>/rpc.sock``), the deploy
key is pinned to the relay script instead (:mod:`fleetwave.bootstrap.relay`: ``socat``
to the socket while the daemon serves it, else ``fleetwave-agent rpc`` in the session),
``socat`` is installed with apt-get on the Debian-package path when apt is there (a host
without it still works, in session mode), and the drop-in ``packaging/resident.conf``
is installed next to the unit where systemd runs; elsewhere a supervisor loop runs
``serve`` (those steps are in :mod:`fleetwave.bootstrap.resident`).

Before anything changes, a preflight names the real cause of what would fail: an admin
login without passwordless sudo, no Python 3.11 for the venv, a missing deploy user.

The pure part (what each file should contain, what differs) is separate from the
Fabric part (read the host's state, apply only what differs), so a second run
changes nothing and says so. Host keys are checked strictly: paramiko's
``RejectPolicy`` with the configured known_hosts, never AutoAdd.
"""

from __future__ import annotations

import hashlib
import io
import shlex
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from fleetwave.bootstrap.deb import DebInfo, install_deb, read_deb_info
from fleetwave.bootstrap.dist import packaged_file
from fleetwave.bootstrap.options import (
    DEB_AGENT,
    DEB_UNIT,
    AdminAccess,
    BootstrapOptions,
    HostResult,
    HostStatus,
    read_local,
)
from fleetwave.bootstrap.relay import (
    render_relay,
    render_supervisor,
    supervisor_restart_command,
    supervisor_start_command,
)
from fleetwave.bootstrap.remote import run
from fleetwave.bootstrap.resident import (
    ensure_socat,
    ensure_socket_dir,
    render_resident_dropin,
)
from fleetwave.errors import ConfigError
from fleetwave.planning.model import HostRef

#: Marks the authorized_keys line this tool owns, so a re-run replaces it.
AUTHORIZED_KEY_MARK = "fleetwave-deploy"
WHEEL_MARKER = ".fleetwave-wheel.sha256"


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
        files[str(options.keys_dir / path.name)] = read_local(path, "trusted key")
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
        dropin = options.local_dropin or packaged_file("resident.conf")
        template = read_local(dropin, "resident drop-in").decode()
        files[str(options.dropin_path)] = render_resident_dropin(options, template).encode()
        files[str(options.relay_file())] = render_relay(options).encode()
        files[str(options.supervisor_file())] = render_supervisor(options).encode()
    if options.local_unit is not None:
        unit = read_local(options.local_unit, "systemd unit").decode()
        unit = unit.replace("/opt/fleetwave-agent/venv", str(options.venv))
        files[str(options.unit_path)] = unit.encode()
    if options.local_deb is not None:
        return Desired(files, deb=read_deb_info(options.local_deb))
    assert options.local_wheel is not None  # checked above
    return Desired(files, sha256(read_local(options.local_wheel, "wheel")))


def changed_files(desired: Desired, remote_digests: Mapping[str, str | None]) -> list[str]:
    """Remote paths whose content differs from what is wanted."""
    return [
        path for path, data in desired.files.items() if remote_digests.get(path) != sha256(data)
    ]


def _authorized_keys_path(options: BootstrapOptions) -> PurePosixPath:
    if options.authorized_keys is not None:
        return options.authorized_keys
    return PurePosixPath(f"~{options.deploy_user}/.ssh/authorized_keys")


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


#: Files that must be executable on the host (the others are 0644, authorized_keys 0600).
def _mode(options: BootstrapOptions, path: str, auth_path: PurePosixPath) -> str:
    if path == str(auth_path):
        return "600"
    if options.resident and path in (str(options.relay_file()), str(options.supervisor_file())):
        return "755"
    return "644"


def preflight(conn: Any, options: BootstrapOptions, sudo: bool) -> None:
    """Fail with the real cause before anything changes: no sudo, no Python 3.11."""
    if sudo:
        result = conn.run("sudo -n true", hide=True, warn=True, in_stream=False)
        if result.exited != 0:
            detail = ((result.stderr or result.stdout).strip().splitlines() or [""])[-1]
            if result.exited == 127 or "not found" in detail:
                why = "sudo is not installed"
            else:
                why = f"sudo -n true failed: {detail or f'exit {result.exited}'}"
            raise RuntimeError(
                f"admin user {conn.user!r} cannot run commands as root without a password "
                f"({why}): log in as root (--admin-user root) or allow passwordless sudo"
            )
    if options.local_deb is None:
        q = shlex.quote
        check = (
            "import sys; print('%d.%d' % sys.version_info[:2]); "
            "sys.exit(sys.version_info < (3, 11))"
        )
        result = conn.run(
            f"{q(options.python)} -c {q(check)}", hide=True, warn=True, in_stream=False
        )
        version = (result.stdout or "").strip()
        if result.exited == 127 or not version:
            raise RuntimeError(
                f"no {options.python} on the host: the agent needs Python 3.11 or later "
                "(install it, or give --python PATH)"
            )
        if result.exited != 0:
            raise RuntimeError(
                f"the host's {options.python} is Python {version}; the agent needs 3.11 or "
                "later (install it, give --python PATH, or use --deb)"
            )


def _install_one(conn: Any, host: HostRef, options: BootstrapOptions) -> HostResult:
    sudo = conn.user != "root"
    q = shlex.quote
    changes: list[str] = []
    notes: list[str] = []
    preflight(conn, options, sudo)
    if options.resident:
        socat = ensure_socat(conn, options, sudo)
        if socat.installed:
            changes.append("socat")
        if not socat.present:
            notes.append(
                "socat is not installed: the relay starts the agent in each session until "
                "it is (install socat for resident mode)"
            )
    # The package creates the deploy user, so it goes first.
    if options.local_deb is not None and install_deb(conn, options, sudo):
        changes.append("agent package")
    auth_path = _authorized_keys_path(options)
    if options.authorized_keys is None:
        home = run(conn, f"getent passwd {q(options.deploy_user)} | cut -d: -f6", sudo).strip()
        if not home:
            raise RuntimeError(
                f"deploy user {options.deploy_user!r} does not exist on the host "
                "(create it, or set deploy.ssh.user in the pipeline)"
            )
        auth_path = PurePosixPath(home) / ".ssh/authorized_keys"
        options = replace(options, authorized_keys=auth_path)
    current_auth = run(conn, f"cat {q(str(auth_path))} 2>/dev/null || true", sudo)
    desired = desired_state(options, current_auth)
    marker = options.venv / WHEEL_MARKER
    paths = [*desired.files] + ([] if desired.deb else [str(marker)])
    probe = " ".join(q(p) for p in paths)
    script = (
        'for f in "$@"; do if [ -f "$f" ]; then '
        'echo "$(sha256sum < "$f" | cut -c1-64) $f"; else echo "- $f"; fi; done; '
        "[ -d /run/systemd/system ] && echo systemd; true"
    )
    out = run(conn, f"sh -c {q(script)} sh {probe}", sudo)
    digests: dict[str, str | None] = {}
    systemd = False
    for line in out.splitlines():
        if line == "systemd":
            systemd = True
            continue
        digest, _, path = line.partition(" ")
        digests[path] = None if digest == "-" else digest
    if options.resident:
        # systemd runs the daemon with the drop-in; elsewhere the supervisor does.
        unused = options.supervisor_file() if systemd else options.dropin_path
        desired.files.pop(str(unused), None)
    if desired.deb is None:
        marker_text = run(conn, f"cat {q(str(marker))} 2>/dev/null || true", sudo).strip()
        if marker_text != desired.wheel_sha256:
            _install_wheel(conn, options, desired.wheel_sha256, sudo)
            changes.append("agent wheel")
    if options.resident and ensure_socket_dir(conn, options, sudo):
        changes.append(str(options.socket_path().parent))
    for path in changed_files(desired, digests):
        _put_file(conn, path, desired.files[path], sudo, mode=_mode(options, path, auth_path))
        changes.append(path)
    if options.resident and not systemd:
        notes.append(_supervise(conn, options, sudo, restart=bool(changes)))
        result = HostStatus.CHANGED if changes else HostStatus.OK
        return HostResult(host.name, result, tuple(changes), "; ".join(notes))
    message = ""
    how = options.serve_command() if options.resident else ""
    unit_changed = str(options.unit_path) in changes
    if options.local_unit is not None:
        if systemd:
            if unit_changed or changes:
                run(conn, "systemctl daemon-reload", sudo)
                run(conn, "systemctl enable fleetwave-agent.service", sudo)
                run(conn, "systemctl restart fleetwave-agent.service", sudo)
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
                    run(conn, "systemctl daemon-reload", sudo)
                # postinst enabled and started it before the config was written.
                run(conn, f"systemctl restart {DEB_UNIT}", sudo)
                changes.append("service restarted")
        else:
            message = _no_systemd_message(
                how or f"{DEB_AGENT} --config {options.config_path} serve", options
            )
    status = HostStatus.CHANGED if changes else HostStatus.OK
    return HostResult(
        host.name, status, tuple(changes), "; ".join(n for n in (*notes, message) if n)
    )


def _supervise(conn: Any, options: BootstrapOptions, sudo: bool, *, restart: bool) -> str:
    """No systemd: run the resident daemon under the supervisor loop (started now if it
    is not running; told to restart ``serve`` when code or config changed)."""
    out = run(conn, supervisor_start_command(options), sudo)
    if "started" in out:
        return (
            f"no systemd: started the resident agent under {options.supervisor_file()} "
            "(not started at boot; until it is, sessions start the agent themselves)"
        )
    if restart:
        run(conn, supervisor_restart_command(options), sudo)
        return "no systemd: restarted the resident agent under its supervisor"
    return "no systemd: the resident agent runs under its supervisor"


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


def _install_wheel(conn: Any, options: BootstrapOptions, wheel_sha: str, sudo: bool) -> None:
    q = shlex.quote
    venv = str(options.venv)
    assert options.local_wheel is not None
    remote_wheel = f"{options.venv.parent}/{options.local_wheel.name}"
    run(conn, f"mkdir -p {q(str(options.venv.parent))}", sudo)
    if not sudo:
        conn.put(str(options.local_wheel), remote_wheel)
    else:
        tmp = f"/tmp/{options.local_wheel.name}"
        conn.put(str(options.local_wheel), tmp)
        run(conn, f"mv -f {q(tmp)} {q(remote_wheel)}", sudo)
    site = " --system-site-packages" if options.system_site_packages else ""
    run(conn, f"test -x {q(venv)}/bin/python || {q(options.python)} -m venv{site} {q(venv)}", sudo)
    pip = f"{q(venv)}/bin/pip install --quiet --disable-pip-version-check"
    extra = " ".join(q(a) for a in options.pip_args)
    run(conn, f"{pip} {extra} {q(remote_wheel)}", sudo)
    # Same version, new build: the first install skips it, so force the wheel itself.
    run(conn, f"{pip} {extra} --no-deps --force-reinstall {q(remote_wheel)}", sudo)
    run(conn, f"sh -c 'echo {wheel_sha} > {q(venv)}/{WHEEL_MARKER}'", sudo)


def _put_file(conn: Any, path: str, data: bytes, sudo: bool, *, mode: str) -> None:
    q = shlex.quote
    parent = str(PurePosixPath(path).parent)
    tmp = f"/tmp/.fleetwave-{sha256(path.encode())[:16]}"
    conn.put(io.BytesIO(data), tmp)
    run(
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
