"""Bootstrap's preflight: a host that cannot be installed fails first, naming the
real cause, with nothing changed (scripted host of tests/packaging)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetwave.bootstrap import BootstrapOptions, HostStatus
from tests.packaging.test_bootstrap_deb import FakeHost, Result, install, options

pytestmark = pytest.mark.unit


def wheel_options(tmp_path: Path, **changes: Any) -> BootstrapOptions:
    wheel = tmp_path / "fleetwave-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    return options(tmp_path, local_deb=None, local_wheel=wheel, **changes)


@pytest.mark.parametrize(
    ("sudo", "needle"),
    [
        (Result(stderr="sudo: a password is required", exited=1), "a password is required"),
        (Result(stderr="sh: 1: sudo: not found", exited=127), "sudo is not installed"),
    ],
)
def test_admin_without_sudo_is_named_not_a_missing_deploy_user(
    tmp_path: Path, sudo: Result, needle: str
) -> None:
    host = FakeHost(user="admin", sudo=sudo)
    result = install(host, wheel_options(tmp_path))
    assert result.status is HostStatus.FAILED
    assert result.message.startswith(
        "admin user 'admin' cannot run commands as root without a password ("
    )
    assert needle in result.message
    assert "does not exist" not in result.message
    assert host.commands == ["sudo -n true"]
    assert host.files == {}


def test_sudo_capable_admin_installs_with_sudo(tmp_path: Path) -> None:
    host = FakeHost(user="admin")
    result = install(host, wheel_options(tmp_path))
    assert result.status is HostStatus.CHANGED, result.line()
    assert host.commands[0] == "sudo -n true"
    assert any(c.startswith("sudo -n getent passwd fleetwave") for c in host.commands)


@pytest.mark.parametrize(
    ("python", "needle"),
    [
        ("3.9", "the host's python3 is Python 3.9; the agent needs 3.11 or later"),
        ("", "no python3 on the host: the agent needs Python 3.11 or later"),
    ],
)
def test_old_or_missing_python_fails_before_any_change(
    tmp_path: Path, python: str, needle: str
) -> None:
    host = FakeHost(python=python)
    result = install(host, wheel_options(tmp_path))
    assert result.status is HostStatus.FAILED
    assert result.message.startswith(needle)
    assert host.files == {}
    assert len(host.commands) == 1


def test_deb_install_does_not_need_the_hosts_python_up_front(tmp_path: Path) -> None:
    host = FakeHost(python="3.9")  # dpkg's dependencies decide for the package
    assert install(host, options(tmp_path)).status is HostStatus.CHANGED
