"""``fleetwave agent install --deb``: the command sequence against a scripted host.

The host is a small in-memory model handed to ``install_agent`` through its
``connect`` seam (no class is patched): it keeps files and dpkg's database, answers
the probes bootstrap sends and records every command. A real sshd + dpkg run is not
done here: installing a .deb would change this machine (user, /usr, /etc).
"""

from __future__ import annotations

import io
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleetwave.bootstrap import AdminAccess, BootstrapOptions, HostStatus, install_agent
from fleetwave.bootstrap.deb import (
    DebInfo,
    deb_install_command,
    missing_dependencies,
    parse_control,
    parse_dpkg_query,
    read_deb_info,
)
from fleetwave.bootstrap.install import sha256
from fleetwave.errors import ConfigError
from fleetwave.planning.model import HostRef

pytestmark = pytest.mark.unit

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0aQmZ0 deployer@ci"
DEPS = (
    "python3",
    "python3-cryptography",
    "python3-yaml",
    "python3-psutil",
    "python3-prometheus-client",
)
CONTROL = (
    "Package: fleetwave-agent\nVersion: 0.1.0\nArchitecture: all\n"
    f"Depends: python3 (>= 3.11), {', '.join(DEPS[1:])}\n"
    "Description: x\n long text\n"
)


def fake_deb(path: Path, control: str = CONTROL) -> Path:
    """A minimal .deb: ar with debian-binary and a gzip control.tar holding ./control."""
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = control.encode()
        info = tarfile.TarInfo("./control")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    out = b"!<arch>\n"
    for name, body in ((b"debian-binary", b"2.0\n"), (b"control.tar.gz", buf.getvalue())):
        header = name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) * 2 + b"100644".ljust(8)
        out += header + str(len(body)).encode().ljust(10) + b"`\n" + body
        out += b"\n" if len(body) % 2 else b""
    path.write_bytes(out)
    return path


@dataclass
class Result:
    stdout: str = ""
    stderr: str = ""
    exited: int = 0


@dataclass
class FakeHost:
    """Files, installed packages and whether systemd runs; records every command."""

    user: str = "root"
    files: dict[str, bytes] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    systemd: bool = False
    commands: list[str] = field(default_factory=list)
    puts: list[str] = field(default_factory=list)
    programs: set[str] = field(default_factory=lambda: {"socat", "apt-get"})
    dirs: set[str] = field(default_factory=lambda: {"/var/lib/fleetwave"})
    python: str = "3.11"  # what the host's python3 reports
    sudo: Result = field(default_factory=Result)  # what `sudo -n true` answers
    supervisor: bool = False  # the no-systemd supervisor is running

    def run(self, command: str, **_: Any) -> Result:
        self.commands.append(command)
        if command == "sudo -n true":
            return self.sudo
        command = command.removeprefix("sudo -n ")  # answered the same, as root
        if "sys.version_info" in command:
            ok = tuple(map(int, self.python.split("."))) >= (3, 11) if self.python else False
            return Result(f"{self.python}\n" if self.python else "", exited=0 if ok else 1)
        if command.startswith("su -s /bin/sh") and "supervise" in command:
            was, self.supervisor = self.supervisor, True
            return Result("running\n" if was else "started\n")
        if "command -v" in command:
            return Result("".join(f"{p}\n" for p in sorted(self.programs)))
        if "apt-get install" in command and command.endswith(" socat"):
            self.programs.add("socat")
            return Result()
        made = re.search(r"install -d -m 0750 .* (\S+) && echo created", command)
        if made:
            created = made.group(1) not in self.dirs
            self.dirs.add(made.group(1))
            return Result("created\n" if created else "")
        marker = re.search(r"echo (\w+) > (\S+)'$", command)
        if marker:
            self.files[marker.group(2)] = marker.group(1).encode() + b"\n"
            return Result()
        if command.startswith("getent passwd"):
            return Result("/var/lib/fleetwave\n")
        if command.startswith("cat "):
            path = shlex.split(command)[1]
            return Result(self.files.get(path, b"").decode())
        if command.startswith("dpkg-query"):
            names = shlex.split(command.split(" 2>")[0])[3:]
            lines = [
                f"{n}\t{self.packages[n]}\tinstall ok installed"
                for n in names
                if n in self.packages
            ]
            return Result("".join(line + "\n" for line in lines))
        if command.startswith("mktemp"):
            return Result("/tmp/fleetwave-deb.abc123\n")
        if " dpkg " in f" {command} " and " -i " in command:
            self.packages["fleetwave-agent"] = "0.1.0"
        if "apt-get install" in command:
            self.packages.update({n: "1" for n in DEPS})
            self.packages["fleetwave-agent"] = "0.1.0"
        if command.startswith("sh -c") and "sha256sum" in command:
            paths = shlex.split(command)[4:]
            out = [f"{sha256(self.files[p])} {p}" if p in self.files else f"- {p}" for p in paths]
            return Result("\n".join(out + (["systemd"] if self.systemd else [])) + "\n")
        moved = re.search(r"mv -f (\S+) (\S+?)'?$", command)
        if moved:
            self.files[moved.group(2)] = self.files.pop(moved.group(1))
        return Result()

    def put(self, local: Any, remote: str) -> None:
        self.puts.append(remote)
        data = local.getvalue() if isinstance(local, io.BytesIO) else Path(local).read_bytes()
        self.files[remote] = data

    def close(self) -> None:
        pass


def options(tmp_path: Path, **changes: Any) -> BootstrapOptions:
    trust = tmp_path / "signer.pub"
    trust.write_text("pub\n")
    base = BootstrapOptions(
        local_wheel=None,
        local_deb=fake_deb(tmp_path / "fleetwave-agent_0.1.0_all.deb"),
        local_trusted_keys=(trust,),
        deploy_public_key=KEY,
        resident=False,  # session mode here; resident mode is test_resident's
    )
    from dataclasses import replace

    return replace(base, **changes)


def install(host: FakeHost, opts: BootstrapOptions) -> Any:
    [result] = install_agent(
        [HostRef("h1", "10.0.0.1", "r", "a")], opts, AdminAccess(), connect=lambda h, a: host
    )
    return result


def test_fresh_host_with_dependencies_uses_dpkg_and_pins_usr_bin(tmp_path: Path) -> None:
    host = FakeHost(packages={n: "1" for n in DEPS})
    result = install(host, options(tmp_path))
    assert result.status is HostStatus.CHANGED, result.line()
    assert result.changes[0] == "agent package"
    installs = [c for c in host.commands if "dpkg --force-confold" in c or "apt-get" in c]
    assert installs == [
        "env DEBIAN_FRONTEND=noninteractive dpkg --force-confold --force-confdef -i "
        "/tmp/fleetwave-deb.abc123/fleetwave-agent_0.1.0_all.deb"
    ]
    # The package goes first: it creates the deploy user the next steps look up.
    assert host.commands.index(installs[0]) < next(
        i for i, c in enumerate(host.commands) if c.startswith("getent")
    )
    assert "rm -rf /tmp/fleetwave-deb.abc123" in host.commands
    auth = host.files["/var/lib/fleetwave/.ssh/authorized_keys"].decode()
    assert auth.startswith('command="/usr/bin/fleetwave-agent rpc",restrict ssh-ed25519 ')
    assert (
        b"trusted_keys:\n  - /etc/fleetwave/keys/signer.pub"
        in host.files["/etc/fleetwave/agent.yaml"]
    )
    assert "/usr/bin/fleetwave-agent --config /etc/fleetwave/agent.yaml serve" in result.message
    assert not [c for c in host.commands if "venv" in c or "pip" in c]


def test_missing_dependencies_go_through_apt(tmp_path: Path) -> None:
    host = FakeHost(packages={"python3": "3.11"})
    result = install(host, options(tmp_path))
    assert result.status is HostStatus.CHANGED
    [apt] = [c for c in host.commands if "apt-get" in c]
    assert "-o Dpkg::Options::=--force-confold" in apt
    assert apt.endswith("/tmp/fleetwave-deb.abc123/fleetwave-agent_0.1.0_all.deb")


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    host = FakeHost(packages={n: "1" for n in DEPS})
    opts = options(tmp_path)
    install(host, opts)
    host.commands.clear()
    host.puts.clear()
    again = install(host, opts)
    assert again.status is HostStatus.OK, again.line()
    assert host.puts == []
    assert not [c for c in host.commands if "dpkg -" in c or "apt-get" in c or "mktemp" in c]


def test_other_installed_version_is_upgraded(tmp_path: Path) -> None:
    host = FakeHost(packages={**{n: "1" for n in DEPS}, "fleetwave-agent": "0.0.9"})
    result = install(host, options(tmp_path))
    assert "agent package" in result.changes
    assert host.packages["fleetwave-agent"] == "0.1.0"


def test_systemd_host_restarts_the_packaged_unit_after_changes(tmp_path: Path) -> None:
    host = FakeHost(packages={n: "1" for n in DEPS}, systemd=True)
    result = install(host, options(tmp_path))
    assert "systemctl restart fleetwave-agent.service" in host.commands
    assert result.changes[-1] == "service restarted"
    assert not [p for p in host.files if p.startswith("/etc/systemd")]
    host.commands.clear()
    assert install(host, options(tmp_path)).status is HostStatus.OK
    assert "systemctl restart fleetwave-agent.service" not in host.commands


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"local_wheel": Path("x.whl")}, "not both"),
        ({"local_unit": Path("x.service")}, "package ships fleetwave-agent.service"),
        ({"local_deb": None}, "wheel or as a Debian package"),
    ],
)
def test_conflicting_sources_fail_before_any_host(
    tmp_path: Path, changes: dict[str, Any], match: str
) -> None:
    host = FakeHost()
    with pytest.raises(ConfigError, match=match):
        install(host, options(tmp_path, **changes))
    assert host.commands == []


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"PK\x03\x04zip", "no ar archive header"),
        (b"!<arch>\n", "no control.tar member"),
        (b"!<arch>\ncontrol.tar.gz   0           0     0     100644  zz        `\n", "corrupt"),
    ],
)
def test_bad_deb_is_one_clear_error(tmp_path: Path, data: bytes, match: str) -> None:
    path = tmp_path / "bad.deb"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=match):
        read_deb_info(path)


def test_read_deb_info_and_control_parsing(tmp_path: Path) -> None:
    info = read_deb_info(fake_deb(tmp_path / "a.deb"))
    assert info.package == "fleetwave-agent"
    assert info.version == "0.1.0"
    assert info.dependency_names() == DEPS
    assert parse_control(CONTROL)["Description"] == "x long text"


def test_missing_dependencies_honour_alternatives() -> None:
    deb = DebInfo("p", "1", "a (>= 2), b | c, d:any, e [amd64]")
    ok = "install ok installed"
    packages = parse_dpkg_query(f"a\t2\t{ok}\nc\t1\t{ok}\nd\t1\tdeinstall ok config-files\n")
    assert missing_dependencies(deb, packages) == ["d", "e"]
    assert deb_install_command("/t/x.deb", []).startswith("dpkg ")
    assert "apt-get install -y" in deb_install_command("/t/x y.deb", ["d"])
    assert deb_install_command("/t/x y.deb", ["d"]).endswith("'/t/x y.deb'")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--venv", "/v", "--python", "p"], "--python, --venv only apply to a wheel install"),
        (["--pip-arg=--no-index"], "--pip-arg only apply to a wheel install"),
    ],
)
def test_cli_rejects_wheel_options_with_deb(
    capsys: pytest.CaptureFixture[str], extra: list[str], expected: str
) -> None:
    from fleetwave.cli import main

    argv = ["agent", "install", "-f", "/nonexistent.yaml", "--trust", "k", "--deb", "x.deb"]
    assert main([*argv, *extra]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert expected in err[0]


def test_cli_wheel_and_deb_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    from fleetwave.cli import main

    argv = ["agent", "install", "-f", "p.yaml", "--trust", "k", "--deb", "x.deb", "--wheel", "w"]
    with pytest.raises(SystemExit):
        main(argv)
    assert "not allowed with argument" in capsys.readouterr().err
