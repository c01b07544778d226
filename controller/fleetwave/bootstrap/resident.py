"""Resident mode of the bootstrap (the default, ``docs/agent.md``): the systemd drop-in
rewritten to the host's paths, the relay's ``socat``, and the socket's directory (the
relay and supervisor scripts are in :mod:`fleetwave.bootstrap.relay`)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from fleetwave.bootstrap.options import BootstrapOptions
from fleetwave.bootstrap.remote import run
from fleetwave.errors import ConfigError

#: The paths ``packaging/resident.conf`` is written with; rewritten to the host's layout.
_DROPIN_PROGRAM = "/opt/fleetwave-agent/venv/bin/fleetwave-agent"
_DROPIN_CONFIG = "/etc/fleetwave/agent.yaml"
_DROPIN_SOCKET = "/var/lib/fleetwave/rpc.sock"


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


@dataclass(frozen=True)
class Socat:
    """Whether the relay's ``socat`` is on the host, and whether bootstrap installed it."""

    present: bool
    installed: bool = False


def ensure_socat(conn: Any, options: BootstrapOptions, sudo: bool) -> Socat:
    """Make sure the relay's socat is on the host where bootstrap can install it. Only
    the Debian-package path installs it (that path already relies on apt). A host
    without it is not a failure: the relay then starts the agent in each session."""
    probe = 'for p in socat apt-get; do command -v "$p" >/dev/null && echo "$p"; done; true'
    found = set(run(conn, f"sh -c {shlex.quote(probe)}", sudo).split())
    if "socat" in found:
        return Socat(present=True)
    if options.local_deb is None or "apt-get" not in found:
        return Socat(present=False)
    run(conn, socat_install_command(), sudo)
    return Socat(present=True, installed=True)


def ensure_socket_dir(conn: Any, options: BootstrapOptions, sudo: bool) -> bool:
    """Create the socket's directory for the deploy user if missing; True if created.
    An existing directory is left alone: the daemon itself refuses an unsafe one."""
    q = shlex.quote
    parent = str(options.socket_path().parent)
    user = q(options.deploy_user)
    script = (
        f"test -d {q(parent)} && exit 0; "
        f"install -d -m 0750 -o {user} -g {user} {q(parent)} && echo created"
    )
    return "created" in run(conn, f"sh -c {q(script)}", sudo)
