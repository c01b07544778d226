"""The validated-config cache: exact round trips, invalidation, and distrust."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwave_agent.config import (
    AccessLogSource,
    AgentConfig,
    AppConfig,
    ExporterConfig,
    LogErrorSource,
    ProcessMatch,
    PrometheusSource,
    StopFailurePolicy,
    load_config_file,
)
from fleetwave_agent.config_cache import (
    config_from_json,
    config_to_json,
    default_cache_dir,
    load_cached,
)
from fleetwave_agent.configure import load_config
from fleetwave_core.errors import ConfigError

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
rpc_socket: /var/lib/fleetwave/rpc.sock
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


#: A config in which every field, at every level, differs from its default; a field
#: added to any of these dataclasses and not listed here fails the test below.
NOT_DEFAULT = AgentConfig(
    root=Path("/srv/other"),
    trusted_keys=(Path("/k/a.pub"),),
    revoked_key_ids=("0123456789abcdef",),
    keep_releases=9,
    limits={"max_members": 7},
    stop_failure=StopFailurePolicy.ABORT,
    stop_timeout_s=1.5,
    hook_output_max_bytes=77,
    exporter=ExporterConfig(listen="0.0.0.0", port=1, health_interval_s=2.0),
    app=AppConfig(
        metrics=PrometheusSource(
            url="http://127.0.0.1:1/m",
            requests_metric="r",
            duration_metric="d",
            status_label="s",
            timeout_s=0.5,
        ),
        log=LogErrorSource(path=Path("/e.log"), error_pattern=re.compile("boom", re.I)),
        process=ProcessMatch(pid_file=Path("/p.pid"), name="app"),
    ),
    rpc_socket=Path("/run/fw/rpc.sock"),
    source="/etc/fleetwave/agent.yaml",
)
ACCESS_LOG = AccessLogSource(path=Path("/a.log"), format=re.compile("x"), duration_unit="ms")


def _defaults(cls: type) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


@pytest.mark.parametrize(
    "value",
    [NOT_DEFAULT, dataclasses.replace(NOT_DEFAULT, app=AppConfig(metrics=ACCESS_LOG))],
    ids=["prometheus", "access-log"],
)
def test_every_field_survives_the_cache_round_trip(value: AgentConfig) -> None:
    again = config_from_json(json.loads(json.dumps(config_to_json(value))))
    pending: list[tuple[str, object, object]] = [("config", value, again)]
    seen = 0
    while pending and seen < 1000:  # bounded: the dataclass tree is small and acyclic
        where, want, got = pending.pop()
        seen += 1
        assert type(got) is type(want), where
        if not dataclasses.is_dataclass(want):
            assert got == want, where
            continue
        defaults = _defaults(type(want))
        for f in dataclasses.fields(want):
            w, g = getattr(want, f.name), getattr(got, f.name)
            if f.name in defaults and w is not None:
                # Only a non-default value proves the field is carried, not re-defaulted.
                assert w != defaults[f.name], f"{where}.{f.name}: give it a non-default value"
            pending.append((f"{where}.{f.name}", w, g))
    assert not pending
    assert again == value


def test_cache_written_before_rpc_socket_existed_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("rpc_socket: /var/lib/fleetwave/rpc.sock\n")
    cache = tmp_path / "cache"
    load_cached(path, cache, load_config_file)
    (entry,) = cache.iterdir()
    data = json.loads(entry.read_text())
    del data["config"]["rpc_socket"]
    data["format"] = 1
    entry.write_text(json.dumps(data))
    calls, parse = counting(load_config_file)
    assert load_cached(path, cache, parse).rpc_socket == Path("/var/lib/fleetwave/rpc.sock")
    assert len(calls) == 1
