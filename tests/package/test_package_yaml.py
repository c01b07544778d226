"""``fleetwave-package.yaml``: one spelling of durations, and hostile files refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetwave_agent.manifest import HealthCheckSpec, HookSpec
from fleetwave_agent.package import load_package_config
from fleetwave_core.errors import ConfigError

pytestmark = pytest.mark.unit


def _load(tmp_path: Path, text: str | bytes):
    path = tmp_path / "fleetwave-package.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return load_package_config(path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("hooks: {start: {argv: [x], timeout_ms: 500}}\n", "hooks.start.timeout_ms"),
        (
            "health_checks: [{name: a, kind: tcp, port: 1, deadline_ms: 5}]\n",
            "health_checks[0].deadline_ms",
        ),
    ],
)
def test_manifest_spelling_is_refused_with_the_yaml_one(tmp_path: Path, text: str, key: str):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert info.value.key_path == key
    assert f"write {key.rsplit('.', 1)[1].removesuffix('_ms')}: with a unit" in str(info.value)


def test_unset_durations_take_the_manifest_defaults(tmp_path: Path) -> None:
    hooks, checks = _load(
        tmp_path,
        "hooks: {start: {argv: [x]}}\nhealth_checks: [{name: a, kind: tcp, port: 1}]\n",
    )
    assert hooks["start"].timeout_ms == HookSpec(argv=("x",)).timeout_ms
    default = HealthCheckSpec(name="a", kind="tcp")
    check = checks[0]
    assert (check.timeout_ms, check.interval_ms, check.deadline_ms) == (
        default.timeout_ms,
        default.interval_ms,
        default.deadline_ms,
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("hooks: {start: {argv: [x], timeout: 99999999999d}}\n", "too long to schedule"),
        ("hooks: {start: {argv: [x], timeout: " + "9" * 5000 + "}}\n", "5000 digits"),
        ("hooks: " + "[" * 500 + "]" * 500 + "\n", "levels deep"),
        ("a: &a [*a]\n", "own ancestor"),
    ],
)
def test_hostile_package_yaml_is_one_config_error(tmp_path: Path, text: str, needle: str):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_package_yaml_must_be_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_package_config(fifo)
