"""The validated-config cache: exact round trips, invalidation, and distrust."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwave_agent.config import (
    AgentConfig,
    ExporterConfig,
    StopFailurePolicy,
    load_config,
    load_config_file,
)
from fleetwave_agent.config_cache import (
    config_from_json,
    config_to_json,
    default_cache_dir,
    load_cached,
)
from fleetwave_agent.errors import ConfigError

pytestmark = pytest.mark.integration

#: Configs covering every key and every variant of the app's metric sources.
CONFIGS = {
    "empty": "",
    "full-access-log": """
root: /srv/fw
trusted_keys: [keys/a.pub, /etc/fleetwave/b.pub]
revoked_key_ids: [0123456789abcdef]
keep_releases: 3
limits: {max_package_bytes: 1000000, max_members: 50}
stop_failure: abort
stop_timeout: 1m30s
hook_output_max_bytes: 4096
exporter: {listen: 0.0.0.0, port: 9999, health_interval: 5s}
app:
  metrics:
    access_log:
      path: /var/log/app.log
      format: '(?P<status>\\d{3}) (?P<duration>\\S+)'
      duration_unit: ms
  log: {path: /var/log/app.err, error_pattern: '(?i)panic'}
  process: {pid_file: run/app.pid}
""",
    "prometheus": """
app:
  metrics:
    prometheus: {url: 'http://127.0.0.1:8080/metrics', status_label: status, timeout: 500ms}
  process: {name: app}
""",
    "prometheus-short": "app: {metrics: {prometheus: 'http://127.0.0.1:1/m'}}\n",
    "access-log-defaults": "app: {metrics: {access_log: {path: a.log}}, log: {path: e.log}}\n",
}


@pytest.mark.parametrize("text", CONFIGS.values(), ids=CONFIGS.keys())
def test_json_round_trip_is_exact(tmp_path: Path, text: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    cfg = load_config_file(path)
    again = config_from_json(json.loads(json.dumps(config_to_json(cfg))))
    assert again == cfg


@given(
    keep=st.integers(min_value=2, max_value=10**6),
    timeout=st.floats(min_value=0.001, max_value=1e6, allow_nan=False),
    port=st.integers(min_value=0, max_value=65535),
    policy=st.sampled_from(StopFailurePolicy),
    keys=st.lists(st.text(min_size=1, max_size=20).map(lambda s: "/k/" + s), max_size=3),
)
def test_round_trip_property(
    keep: int, timeout: float, port: int, policy: StopFailurePolicy, keys: list[str]
) -> None:
    cfg = AgentConfig(
        keep_releases=keep,
        stop_timeout_s=timeout,
        stop_failure=policy,
        trusted_keys=tuple(Path(k) for k in keys),
        exporter=ExporterConfig(port=port),
    )
    assert config_from_json(json.loads(json.dumps(config_to_json(cfg)))) == cfg


def counting(
    parse: Callable[[Path], AgentConfig],
) -> tuple[list[Path], Callable[[Path], AgentConfig]]:
    calls: list[Path] = []

    def wrapped(path: Path) -> AgentConfig:
        calls.append(path)
        return parse(path)

    return calls, wrapped


def test_cache_hit_skips_parsing_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(CONFIGS["full-access-log"])
    cache = tmp_path / "cache"
    calls, parse = counting(load_config_file)
    first = load_cached(path, cache, parse)
    second = load_cached(path, cache, parse)
    assert first == second
    assert len(calls) == 1
    assert (cache.stat().st_mode & 0o777) == 0o700
    path.write_text(CONFIGS["full-access-log"].replace("keep_releases: 3", "keep_releases: 4"))
    third = load_cached(path, cache, parse)
    assert len(calls) == 2
    assert third.keep_releases == 4


def test_invalid_file_is_never_cached(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("keep_releases: 1\n")
    cache = tmp_path / "cache"
    for _ in range(2):  # the same error each time: nothing was stored
        with pytest.raises(ConfigError, match="keep_releases"):
            load_cached(path, cache, load_config_file)
    assert not cache.exists() or list(cache.iterdir()) == []


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda p: p.write_text("{not json"), id="torn"),
        pytest.param(lambda p: p.chmod(0o666), id="world-writable"),
        pytest.param(lambda p: p.parent.chmod(0o777), id="world-writable-dir"),
        pytest.param(
            lambda p: p.write_text(
                json.dumps({**json.loads(p.read_text()), "config": {"root": 1}})
            ),
            id="malformed-config",
        ),
        pytest.param(
            lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "format": 99})),
            id="other-format",
        ),
    ],
)
def test_spoiled_or_untrusted_cache_is_ignored(
    tmp_path: Path, spoil: Callable[[Path], object]
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("keep_releases: 7\n")
    cache = tmp_path / "cache"
    load_cached(path, cache, load_config_file)
    (entry,) = cache.iterdir()
    spoil(entry)
    calls, parse = counting(load_config_file)
    assert load_cached(path, cache, parse).keep_releases == 7
    assert len(calls) == 1


def test_forged_cache_entry_for_another_file_state_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("keep_releases: 7\n")
    cache = tmp_path / "cache"
    load_cached(path, cache, load_config_file)
    (entry,) = cache.iterdir()
    data = json.loads(entry.read_text())
    data["config"]["keep_releases"] = 99
    data["identity"][2] += 1  # describes some other version of the file
    entry.write_text(json.dumps(data))
    assert load_cached(path, cache, load_config_file).keep_releases == 7


def test_relative_paths_and_no_cache_dir_always_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("keep_releases: 7\n")
    calls, parse = counting(load_config_file)
    load_cached(path, None, parse)
    monkeypatch.chdir(tmp_path)
    load_cached(Path("agent.yaml"), tmp_path / "cache", parse)
    load_cached(Path("agent.yaml"), tmp_path / "cache", parse)
    assert len(calls) == 3
    assert not (tmp_path / "cache").exists()


def test_default_cache_dir_follows_xdg_then_home() -> None:
    assert default_cache_dir({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == Path("/x/fleetwave-agent")
    assert default_cache_dir({"HOME": "/h"}) == Path("/h/.cache/fleetwave-agent")
    assert default_cache_dir({}) is None
    assert default_cache_dir({"XDG_CACHE_HOME": "relative"}) is None
    assert default_cache_dir({"HOME": "/h", "FLEETWAVE_AGENT_NO_CONFIG_CACHE": "1"}) is None


def test_load_config_uses_the_cache_and_still_applies_env_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("root: /from/file\nkeep_releases: 4\n")
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "FLEETWAVE_AGENT_ROOT": "/from/env"}
    for _ in range(2):  # parsed, then cached: the same layering both times
        cfg = load_config(path, env=env)
        assert (cfg.root, cfg.keep_releases) == (Path("/from/env"), 4)
        assert load_config(path, env=env, root=Path("/flag")).root == Path("/flag")
    assert len(list((tmp_path / "xdg" / "fleetwave-agent").iterdir())) == 1
