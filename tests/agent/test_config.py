"""Agent config: a good file, precedence, and one error per bad key naming file:line:key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave_agent.config import AccessLogSource, PrometheusSource, StopFailurePolicy
from fleetwave_agent.configure import load_config
from fleetwave_core.errors import ConfigError

pytestmark = pytest.mark.unit

GOOD = """\
root: /srv/fleetwave
trusted_keys: [keys/release.pub]
revoked_key_ids: [0123456789abcdef]
keep_releases: 3
limits: {max_package_bytes: 1000000}
stop_failure: abort
stop_timeout: 5s
hook_output_max_bytes: 65536
exporter: {listen: 0.0.0.0, port: 9999, health_interval: 500ms}
app:
  metrics: {prometheus: "http://127.0.0.1:8080/metrics"}
  log: {path: /var/log/app.log, error_pattern: "ERR"}
  process: {pid_file: /run/app.pid}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_good_file(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD), env={})
    assert cfg.root == Path("/srv/fleetwave")
    assert cfg.trusted_keys == (tmp_path / "keys/release.pub",)
    assert cfg.revoked_key_ids == ("0123456789abcdef",)
    assert cfg.keep_releases == 3
    assert cfg.limits == {"max_package_bytes": 1000000}
    assert cfg.stop_failure is StopFailurePolicy.ABORT
    assert cfg.stop_timeout_s == 5.0
    assert cfg.exporter.port == 9999
    assert cfg.exporter.health_interval_s == 0.5
    assert isinstance(cfg.app.metrics, PrometheusSource)
    assert cfg.app.metrics.url.endswith("/metrics")
    assert cfg.app.log is not None
    assert cfg.app.log.error_pattern.pattern == "ERR"
    assert cfg.app.process is not None
    assert cfg.app.process.pid_file == Path("/run/app.pid")


def test_access_log_source(tmp_path: Path) -> None:
    text = (
        "app:\n  metrics:\n    access_log:\n"
        "      {path: a.log, format: '(?P<status>\\d+) (?P<duration>\\S+)', duration_unit: ms}\n"
    )
    cfg = load_config(_write(tmp_path, text), env={})
    assert isinstance(cfg.app.metrics, AccessLogSource)
    assert cfg.app.metrics.duration_unit == "ms"
    assert cfg.app.metrics.path == tmp_path / "a.log"


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    path = _write(tmp_path, "root: /from/file\ntrusted_keys: [/file.pub]\n")
    assert load_config(path, env={}).root == Path("/from/file")
    env = {"FLEETWAVE_AGENT_ROOT": "/from/env", "FLEETWAVE_AGENT_TRUST": "/a.pub:/b.pub"}
    cfg = load_config(path, env=env)
    assert cfg.root == Path("/from/env")
    assert cfg.trusted_keys == (Path("/a.pub"), Path("/b.pub"))
    cfg = load_config(path, env=env, root=Path("/from/flag"), trust=[Path("/flag.pub")])
    assert cfg.root == Path("/from/flag")
    assert cfg.trusted_keys == (Path("/flag.pub"),)
    env_file = {"FLEETWAVE_AGENT_CONFIG": str(path)}
    assert load_config(None, env=env_file).root == Path("/from/file")


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml", env={})


# (yaml, line, key path, message fragment): one case per bad key.
BAD = [
    ("root: 3\n", 1, "root", "non-empty string"),
    ("bogus: 1\n", 1, "bogus", "unknown key"),
    ("keep_releases: 1\n", 1, "keep_releases", ">= 2"),
    ("keep_releases: yes\n", 1, "keep_releases", "integer"),
    ("trusted_keys: /a.pub\n", 1, "trusted_keys", "list"),
    ("revoked_key_ids: [nothex]\n", 1, "revoked_key_ids[0]", "key id"),
    ("limits:\n  max_members: 0\n", 2, "limits.max_members", ">= 1"),
    ("limits:\n  max_files: 3\n", 2, "limits.max_files", "unknown key"),
    ("stop_failure: ignore\n", 1, "stop_failure", "'continue' or 'abort'"),
    ("stop_timeout: soon\n", 1, "stop_timeout", "duration"),
    ("hook_output_max_bytes: 10\n", 1, "hook_output_max_bytes", ">= 1024"),
    ("exporter:\n  port: 70000\n", 2, "exporter.port", "0-65535"),
    ("exporter:\n  listne: x\n", 2, "exporter.listne", "did you mean 'listen'"),
    ("app:\n  metrics: {prometheus: ftp://x}\n", 2, "app.metrics.prometheus.url", "http"),
    ("app:\n  metrics: {}\n", 2, "app.metrics", "exactly one"),
    (
        "app:\n  log: {path: x, error_pattern: '('}\n",
        2,
        "app.log.error_pattern",
        "regular expression",
    ),
    (
        "app:\n  metrics:\n    access_log: {path: x, format: '\\d+'}\n",
        3,
        "app.metrics.access_log.format",
        "status",
    ),
    ("app:\n  process: {pid_file: a, name: b}\n", 2, "app.process", "exactly one"),
    ("root: /a\nroot: /b\n", 2, "root", "duplicate key"),
]


@pytest.mark.parametrize(("text", "line", "key", "fragment"), BAD, ids=[b[2] for b in BAD])
def test_bad_key_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, fragment: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert fragment in message
    assert "\n" not in message


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=12), st.floats(-1, 1e6)
)
_keys = st.sampled_from(
    [
        "root",
        "trusted_keys",
        "revoked_key_ids",
        "keep_releases",
        "limits",
        "stop_failure",
        "stop_timeout",
        "hook_output_max_bytes",
        "exporter",
        "app",
        "metrics",
        "log",
        "process",
        "prometheus",
        "access_log",
        "path",
        "port",
        "listen",
        "pid_file",
        "name",
        "url",
        "x",
    ]
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6))
def test_loader_accepts_or_raises_config_error_only(tmp_path_factory, data) -> None:
    path = tmp_path_factory.mktemp("cfg") / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    message = ""
    try:
        cfg = load_config(path, env={})
    except ConfigError as exc:
        message = str(exc)
    else:
        assert cfg.keep_releases >= 2
    if message:
        assert message.startswith(str(path))
        assert "\n" not in message
