"""Resident mode: the systemd drop-in and ``fleetwave agent install --resident``.

The drop-in is parsed as systemd reads it (repeated keys kept in order); the bootstrap
runs against the scripted host of :mod:`test_bootstrap_deb` through ``install_agent``'s
``connect`` seam, on both the Debian-package and the wheel paths.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from fleetwave.bootstrap import DEFAULT_DROPIN_PATH, BootstrapOptions, HostStatus
from fleetwave.bootstrap.install import render_agent_config
from fleetwave.bootstrap.resident import render_resident_dropin
from fleetwave.errors import ConfigError

from .test_bootstrap_deb import DEPS, FakeHost, install
from .test_bootstrap_deb import options as deb_options

pytestmark = pytest.mark.unit

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
DROPIN = PACKAGING / "resident.conf"
UNIT = PACKAGING / "fleetwave-agent.service"
SOCK = "/var/lib/fleetwave/rpc.sock"
RELAY = "/opt/fleetwave-agent/relay"
DROPIN_PATH = str(DEFAULT_DROPIN_PATH)

#: Main-unit settings the drop-in keeps, and why: same user as session mode (the
#: socket is 0600), supervision, and an empty ambient set (as an SSH login has).
KEPT = {"Type", "User", "Group", "Restart", "RestartSec", "AmbientCapabilities"}


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order, as systemd reads them."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {raw!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def last(pairs: list[tuple[str, str, str]]) -> dict[str, str]:
    return {key: value for _, key, value in pairs}


def test_dropin_resets_execstart_then_serves_the_socket() -> None:
    pairs = directives(DROPIN.read_text())
    assert {section for section, _, _ in pairs} == {"Service"}
    starts = [value for _, key, value in pairs if key == "ExecStart"]
    assert starts[0] == ""  # reset first, or systemd rejects a second ExecStart
    assert len(starts) == 2
    main_start = last(directives(UNIT.read_text()))["ExecStart"]
    # The same program and config as the shipped unit, plus the socket.
    assert starts[1] == f"{main_start} --rpc-socket {SOCK}"


def test_dropin_lifts_caps_and_keeps_hook_started_apps_alive() -> None:
    values = last(directives(DROPIN.read_text()))
    assert values["KillMode"] == "process"
    assert values["CPUQuota"] == ""
    assert values["MemoryMax"] == "infinity"
    assert values["TasksMax"] == "infinity"


def test_dropin_undoes_every_sandboxing_setting_of_the_unit() -> None:
    unit = {key for section, key, _ in directives(UNIT.read_text()) if section == "Service"}
    values = last(directives(DROPIN.read_text()))
    overridden = set(values)
    assert unit - KEPT - {"ExecStart"} <= overridden, "a main-unit setting is not reset"
    assert not (KEPT & overridden)
    # Session mode: setuid programs work, full bounding set, sshd's umask.
    assert values["NoNewPrivileges"] == "no"
    assert values["CapabilityBoundingSet"] == "~"
    assert values["UMask"] == "0022"
    for key, value in values.items():
        if key.startswith(("Protect", "Private", "Restrict")) and key != "RestrictAddressFamilies":
            assert value == "no", key
    for key in ("SystemCallFilter", "SystemCallArchitectures", "RestrictAddressFamilies"):
        assert values[key] == "", key


def resident(tmp_path: Path, **changes: Any) -> BootstrapOptions:
    return deb_options(tmp_path, resident=True, local_dropin=DROPIN, **changes)


def test_dropin_is_templated_for_each_layout(tmp_path: Path) -> None:
    deb = resident(tmp_path, rpc_socket=PurePosixPath("/srv/fw/run/agent.sock"))
    text = render_resident_dropin(deb, DROPIN.read_text())
    start = [v for _, k, v in directives(text) if k == "ExecStart"][1]
    assert start == (
        "/usr/bin/fleetwave-agent --config /etc/fleetwave/agent.yaml serve "
        "--rpc-socket /srv/fw/run/agent.sock"
    )
    wheel = resident(tmp_path, local_deb=None, venv=PurePosixPath("/opt/v"))
    text = render_resident_dropin(wheel, DROPIN.read_text())
    assert [v for _, k, v in directives(text) if k == "ExecStart"][1] == (
        f"/opt/v/bin/fleetwave-agent --config /etc/fleetwave/agent.yaml serve --rpc-socket {SOCK}"
    )
    with pytest.raises(ConfigError, match="reset ExecStart="):
        render_resident_dropin(deb, "[Service]\nKillMode=process\n")


def test_config_names_the_socket_only_when_resident(tmp_path: Path) -> None:
    assert f"rpc_socket: {SOCK}\n" in render_agent_config(resident(tmp_path))
    assert "rpc_socket" not in render_agent_config(deb_options(tmp_path))


@pytest.mark.parametrize(
    "path", ["relative/rpc.sock", "/run/a b.sock", "/run/a,b.sock", "/run/a:b", '/r/"x', "/a/../b"]
)
def test_unsafe_socket_path_is_one_clear_error(tmp_path: Path, path: str) -> None:
    host = FakeHost()
    with pytest.raises(ConfigError, match="--rpc-socket"):
        install(host, resident(tmp_path, rpc_socket=PurePosixPath(path)))
    assert host.commands == []


def test_deb_resident_on_systemd_pins_the_relay_and_installs_the_dropin(tmp_path: Path) -> None:
    host = FakeHost(packages={n: "1" for n in DEPS}, systemd=True)
    result = install(host, resident(tmp_path))
    assert result.status is HostStatus.CHANGED, result.line()
    auth = host.files["/var/lib/fleetwave/.ssh/authorized_keys"].decode()
    assert auth.startswith(f'command="{RELAY}",restrict ssh-ed25519 ')
    assert "fleetwave-agent rpc" not in auth
    relay = host.files[RELAY].decode()
    assert f"sock={SOCK}\n" in relay
    assert relay.endswith("exec /usr/bin/fleetwave-agent rpc\n")  # the default config
    assert any("chmod 755 " in c and c.endswith(f" {RELAY}'") for c in host.commands)
    assert "/opt/fleetwave-agent/supervise" not in host.files  # systemd runs it
    assert f"rpc_socket: {SOCK}".encode() in host.files["/etc/fleetwave/agent.yaml"]
    dropin = host.files[DROPIN_PATH].decode()
    assert (
        "ExecStart=/usr/bin/fleetwave-agent --config /etc/fleetwave/agent.yaml serve "
        f"--rpc-socket {SOCK}" in dropin
    )
    # The new drop-in is loaded before the restart that applies it.
    reload = host.commands.index("systemctl daemon-reload")
    assert reload < host.commands.index("systemctl restart fleetwave-agent.service")
    assert result.message == ""
    host.commands.clear()
    again = install(host, resident(tmp_path))
    assert again.status is HostStatus.OK, again.line()
    assert not [c for c in host.commands if c.startswith(("systemctl", "env "))]


def test_deb_path_installs_missing_socat_with_apt_first(tmp_path: Path) -> None:
    host = FakeHost(packages={n: "1" for n in DEPS}, programs={"apt-get"})
    result = install(host, resident(tmp_path))
    assert result.changes[0] == "socat"
    [apt] = [c for c in host.commands if c.endswith(" socat")]
    assert apt.startswith("env DEBIAN_FRONTEND=noninteractive apt-get install -y")
    assert host.commands.index(apt) < next(
        i for i, c in enumerate(host.commands) if "dpkg --force-confold" in c
    )


@pytest.mark.parametrize(
    ("programs", "deb"), [({"apt-get"}, False), (set(), True)], ids=["wheel", "deb-no-apt"]
)
def test_missing_socat_installs_anyway_and_says_sessions_start_the_agent(
    tmp_path: Path, programs: set[str], deb: bool
) -> None:
    changes: dict[str, Any] = {}
    if not deb:
        wheel = tmp_path / "fleetwave-0.1.0-py3-none-any.whl"
        wheel.write_bytes(b"wheel")
        changes = {"local_deb": None, "local_wheel": wheel}
    host = FakeHost(packages={n: "1" for n in DEPS}, programs=programs, systemd=True)
    result = install(host, resident(tmp_path, **changes))
    assert result.status is HostStatus.CHANGED, result.line()
    assert "socat is not installed: the relay starts the agent in each session" in result.message
    assert not [c for c in host.commands if c.endswith(" socat")]  # nothing to install it with
    assert RELAY in host.files


def test_wheel_resident_without_systemd_starts_the_supervisor(tmp_path: Path) -> None:
    wheel = tmp_path / "fleetwave-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    opts = resident(
        tmp_path,
        local_deb=None,
        local_wheel=wheel,
        local_unit=UNIT,
        rpc_socket=PurePosixPath("/srv/fw/rpc.sock"),
    )
    host = FakeHost()
    result = install(host, opts)
    assert result.status is HostStatus.CHANGED, result.line()
    assert "/srv/fw" in result.changes  # the socket's directory, for the deploy user
    assert any("install -d -m 0750 -o fleetwave -g fleetwave /srv/fw" in c for c in host.commands)
    assert DROPIN_PATH not in host.files  # no systemd: no drop-in
    supervise = host.files["/opt/fleetwave-agent/supervise"].decode()
    assert (
        "/opt/fleetwave-agent/venv/bin/fleetwave-agent --config /etc/fleetwave/agent.yaml "
        "serve --rpc-socket /srv/fw/rpc.sock &" in supervise
    )
    [start] = [c for c in host.commands if c.startswith("su -s /bin/sh fleetwave -c ")]
    assert "setsid nohup /bin/sh /opt/fleetwave-agent/supervise" in start
    assert result.message.startswith(
        "no systemd: started the resident agent under /opt/fleetwave-agent/supervise"
    )
    auth = host.files["/var/lib/fleetwave/.ssh/authorized_keys"].decode()
    assert auth.startswith(f'command="{RELAY}",restrict ')
    assert "sock=/srv/fw/rpc.sock\n" in host.files[RELAY].decode()
    host.commands.clear()
    again = install(host, opts)
    assert again.status is HostStatus.OK, again.line()
    assert again.message == "no systemd: the resident agent runs under its supervisor"


def test_wheel_resident_on_systemd_reloads_and_restarts(tmp_path: Path) -> None:
    wheel = tmp_path / "fleetwave-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    opts = resident(tmp_path, local_deb=None, local_wheel=wheel, local_unit=UNIT)
    host = FakeHost(systemd=True)
    result = install(host, opts)
    assert DROPIN_PATH in result.changes
    assert (
        "/opt/fleetwave-agent/venv/bin/fleetwave-agent --config" in host.files[DROPIN_PATH].decode()
    )
    tail = host.commands[-3:]
    assert tail == [
        "systemctl daemon-reload",
        "systemctl enable fleetwave-agent.service",
        "systemctl restart fleetwave-agent.service",
    ]


def test_cli_rpc_socket_does_not_apply_to_session(capsys: pytest.CaptureFixture[str]) -> None:
    from fleetwave.cli import main

    argv = ["agent", "install", "-f", "/nonexistent.yaml", "--trust", "k", "--rpc-socket", "/s"]
    assert main([*argv, "--session"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--rpc-socket does not apply with --session" in err[0]
