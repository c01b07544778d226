"""Pure parts of the agent bootstrap: pinned key lines, merging, config, diffs."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from fleetwave.bootstrap import BootstrapOptions, HostResult, HostStatus
from fleetwave.bootstrap.install import (
    AUTHORIZED_KEY_MARK,
    changed_files,
    desired_state,
    pin_authorized_key,
    pinned_key_line,
    render_agent_config,
    sha256,
)
from fleetwave.errors import ConfigError

pytestmark = pytest.mark.unit

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0aQmZ0 deployer@ci"


def options(tmp_path: Path, **changes: object) -> BootstrapOptions:
    wheel = tmp_path / "fleetwave-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    trust = tmp_path / "signer.pub"
    trust.write_text("pub\n")
    base = BootstrapOptions(
        local_wheel=wheel,
        local_trusted_keys=(trust,),
        deploy_public_key=KEY,
        authorized_keys=PurePosixPath("/home/fw/.ssh/authorized_keys"),
        resident=False,  # session mode unless a test asks for resident
    )
    from dataclasses import replace

    return replace(base, **changes)  # type: ignore[arg-type]


def test_pinned_line_restricts_the_key_to_the_agent(tmp_path):
    line = pinned_key_line(options(tmp_path))
    assert line.startswith('command="/opt/fleetwave-agent/venv/bin/fleetwave-agent rpc",restrict ')
    assert line.endswith(AUTHORIZED_KEY_MARK)
    assert "deployer@ci" not in line


def test_pinned_command_keeps_a_config_not_at_the_default_path(tmp_path):
    opts = options(tmp_path, config_path=PurePosixPath("/srv/fw/agent.yaml"))
    assert pinned_key_line(opts).startswith(
        'command="/opt/fleetwave-agent/venv/bin/fleetwave-agent --config /srv/fw/agent.yaml rpc",'
    )
    odd = options(tmp_path, config_path=PurePosixPath("/srv/my fw/agent.yaml"))
    assert odd.rpc_command().endswith("--config '/srv/my fw/agent.yaml' rpc")


def test_resident_is_the_default():
    assert BootstrapOptions(local_wheel=None, local_trusted_keys=(), deploy_public_key="").resident


@pytest.mark.parametrize(
    "existing",
    [
        "",
        "ssh-rsa AAAAother admin\n",
        'ssh-rsa AAAAother admin\ncommand="/old/bin/fleetwave-agent rpc",restrict ssh-ed25519 '
        "AAAAold fleetwave-deploy\n",
        f"{KEY}\nssh-rsa AAAAother admin\n",  # the same key unpinned: must not stay usable
    ],
)
def test_pinning_replaces_never_duplicates_and_keeps_other_lines(tmp_path, existing):
    line = pinned_key_line(options(tmp_path))
    merged = pin_authorized_key(existing, line)
    assert merged.splitlines().count(line) == 1
    assert sum(AUTHORIZED_KEY_MARK in x for x in merged.splitlines()) == 1
    assert ("ssh-rsa AAAAother admin" in merged) == ("AAAAother" in existing)
    assert pin_authorized_key(merged, line) == merged  # idempotent
    assert [x for x in merged.splitlines() if "AAAAC3NzaC1lZDI1NTE5AAAAIE0aQmZ0" in x] == [line]


def test_bad_deploy_key_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not an OpenSSH public key"):
        pinned_key_line(options(tmp_path, deploy_public_key="hello"))


def test_config_names_the_copied_keys(tmp_path):
    text = render_agent_config(options(tmp_path))
    assert "root: /var/lib/fleetwave" in text
    assert "  - /etc/fleetwave/keys/signer.pub" in text


def test_desired_state_and_diff(tmp_path):
    desired = desired_state(options(tmp_path), "")
    assert set(desired.files) == {
        "/etc/fleetwave/keys/signer.pub",
        "/etc/fleetwave/agent.yaml",
        "/home/fw/.ssh/authorized_keys",
    }
    assert desired.wheel_sha256 == sha256(b"wheel")
    same = {p: sha256(d) for p, d in desired.files.items()}
    assert changed_files(desired, same) == []
    assert changed_files(desired, {**same, "/etc/fleetwave/agent.yaml": None}) == [
        "/etc/fleetwave/agent.yaml"
    ]


def test_missing_local_input_fails_before_any_host(tmp_path):
    with pytest.raises(ConfigError, match="cannot read wheel"):
        desired_state(options(tmp_path, local_wheel=tmp_path / "nope.whl"), "")


def test_report_lines():
    assert HostResult("a", HostStatus.OK).line() == "a: ok (nothing to change)"
    assert HostResult("b", HostStatus.CHANGED, ("x", "y")).line() == "b: changed (x, y)"
    assert HostResult("c", HostStatus.FAILED, message="boom").line() == "c: failed: boom"


def test_resident_pins_the_relay_and_names_the_socket(tmp_path):
    opts = options(tmp_path, resident=True, agent_root=PurePosixPath("/srv/fw"))
    line = pinned_key_line(opts)
    assert line.startswith('command="/opt/fleetwave-agent/relay",restrict ')
    assert "rpc_socket: /srv/fw/rpc.sock\n" in render_agent_config(opts)
    custom = options(tmp_path, resident=True, rpc_socket=PurePosixPath("/run/fw/a.sock"))
    assert custom.serve_command().endswith("serve --rpc-socket /run/fw/a.sock")


def test_resident_ships_relay_supervisor_and_packaged_dropin(tmp_path):
    desired = desired_state(options(tmp_path, resident=True), "")
    assert {
        "/opt/fleetwave-agent/relay",
        "/opt/fleetwave-agent/supervise",
        "/etc/systemd/system/fleetwave-agent.service.d/resident.conf",
    } <= set(desired.files)
    dropin = desired.files["/etc/systemd/system/fleetwave-agent.service.d/resident.conf"]
    assert b"serve --rpc-socket /var/lib/fleetwave/rpc.sock" in dropin
