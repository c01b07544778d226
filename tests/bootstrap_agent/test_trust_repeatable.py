"""``fleetwave agent install --trust A --trust B`` installs both keys, also when they
share a file name (a key rotation: ``old/release.pub`` and ``new/release.pub``)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from fleetwave.bootstrap import BootstrapOptions
from fleetwave.bootstrap.install import desired_state, render_agent_config
from fleetwave.cli.agent import trusted_key_files
from fleetwave.cli.main import build_parser
from fleetwave_agent.keys import generate_keypair, key_id, load_public_key
from fleetwave_core.errors import ConfigError

pytestmark = pytest.mark.unit

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0aQmZ0 deployer@ci"


def _options(tmp_path: Path, keys: tuple[Path, ...]) -> BootstrapOptions:
    wheel = tmp_path / "fleetwave-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    return BootstrapOptions(
        local_wheel=wheel,
        local_trusted_keys=keys,
        deploy_public_key=KEY,
        authorized_keys=PurePosixPath("/home/fw/.ssh/authorized_keys"),
    )


def test_two_keys_with_one_name_both_reach_the_host(tmp_path: Path) -> None:
    _, old = generate_keypair(tmp_path / "old", "release")
    _, new = generate_keypair(tmp_path / "new", "release")
    args = build_parser().parse_args(
        ["agent", "install", "-f", "p.yaml", "--trust", str(old), "--trust", str(new)]
    )
    assert args.trust == [old, new]
    keys = trusted_key_files(args.trust, tmp_path / "scratch")
    files = desired_state(_options(tmp_path, keys), "").files
    installed = set()
    for i, (name, data) in enumerate(sorted(files.items())):
        if name.startswith("/etc/fleetwave/keys/"):
            copy = tmp_path / f"installed-{i}.pub"
            copy.write_bytes(data)
            installed.add(key_id(load_public_key(copy)))
    assert installed == {key_id(load_public_key(old)), key_id(load_public_key(new))}
    config = render_agent_config(_options(tmp_path, keys))
    assert config.count("/etc/fleetwave/keys/") == 2


def test_unique_names_are_kept_and_duplicates_count_once(tmp_path: Path) -> None:
    _, a = generate_keypair(tmp_path / "k", "a")
    _, b = generate_keypair(tmp_path / "k", "b")
    assert trusted_key_files([a, b, a], tmp_path / "scratch") == (a, b)


def test_a_file_that_is_not_a_public_key_fails_before_any_host(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_text("hello\n")
    with pytest.raises(ConfigError, match=r"bad\.pub"):
        trusted_key_files([bad], tmp_path / "scratch")
