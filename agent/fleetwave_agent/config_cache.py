"""A cache of the validated agent config, so an RPC session need not import PyYAML.

Every ``fleetwave-agent rpc`` session (one per host per deployment) reads the agent
config; importing PyYAML costs ~15-20 ms of CPU, a third of the agent's start-up. The
result of :func:`config.parse_config` for one file is therefore stored as JSON and
reused while the file is unchanged. There is still one validation path: the cache only
ever holds what ``parse_config`` returned, and is rebuilt from the YAML whenever the
file's identity (device, inode, size, mtime and ctime in nanoseconds) differs.
Environment variables and flags are applied after the cache, exactly as before.

Where: ``$XDG_CACHE_HOME/fleetwave-agent/`` (default ``~/.cache/fleetwave-agent/``),
one file per config file. Not under the agent root: the root is usually set *by* the
config file, so it is unknown until the file has been parsed. Only absolute config
paths are cached (relative paths in the file resolve against its directory).

Trust: a cache file is used only if it is owned by the effective user and not writable
by group or others, in a directory with the same properties. Whoever can write it is
the agent's own user, who can already change the agent root (its releases and their
hooks), so the cache grants nothing new. Any unreadable, foreign or malformed cache is
ignored and replaced; failing to write one is never an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from fleetwave_agent.config import (
    AccessLogSource,
    AgentConfig,
    AppConfig,
    ExporterConfig,
    LogErrorSource,
    ProcessMatch,
    PrometheusSource,
    StopFailurePolicy,
)
from fleetwave_core.fsutil import atomic_write

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from typing import Any

#: Bumped whenever a field is added, so an older cache is rebuilt, never half-read.
FORMAT = 2
ENV_DISABLE = "FLEETWAVE_AGENT_NO_CONFIG_CACHE"


def default_cache_dir(env: Mapping[str, str]) -> Path | None:
    """``$XDG_CACHE_HOME/fleetwave-agent`` or ``~/.cache/fleetwave-agent``; None: no cache."""
    if env.get(ENV_DISABLE):
        return None
    base = env.get("XDG_CACHE_HOME") or (
        os.path.join(env["HOME"], ".cache") if env.get("HOME") else ""
    )
    if not base or not os.path.isabs(base):
        return None
    return Path(base) / "fleetwave-agent"


def load_cached(
    path: Path, cache_dir: Path | None, parse: Callable[[Path], AgentConfig]
) -> AgentConfig:
    """``parse(path)``, or its earlier result for this very file from ``cache_dir``."""
    if cache_dir is None or not path.is_absolute():
        return parse(path)
    try:
        st = os.stat(path)
    except OSError:
        return parse(path)  # parse() reports a missing or unreadable file properly
    identity = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    entry = cache_dir / f"config-{st.st_dev:x}-{st.st_ino:x}.json"
    cached = _read(entry, str(path), identity)
    if cached is not None:
        return cached
    cfg = parse(path)
    _write(cache_dir, entry, {"format": FORMAT, "path": str(path), "identity": identity}, cfg)
    return cfg


def _read(entry: Path, path: str, identity: list[int]) -> AgentConfig | None:
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not _private(os.fstat(fd)) or not _private(os.stat(entry.parent)):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = json.loads(fh.read())
        if (
            data.get("format") != FORMAT
            or data.get("path") != path
            or data.get("identity") != identity
        ):
            return None
        return config_from_json(data["config"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError, re.error):
        return None
    finally:
        os.close(fd)


def _write(cache_dir: Path, entry: Path, head: dict[str, Any], cfg: AgentConfig) -> None:
    with contextlib.suppress(OSError):
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(os.stat(cache_dir)):
            return
        data = json.dumps({**head, "config": config_to_json(cfg)}, sort_keys=True).encode()
        # Not durable: a cache lost in a crash is rebuilt; a torn one fails to parse.
        atomic_write(entry, data, mode=0o600, durable=False)


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


# -- JSON form of AgentConfig: every field, so a round trip is exact ---------------------


def config_to_json(cfg: AgentConfig) -> dict[str, Any]:
    """The JSON-safe form of a validated config (inverse of :func:`config_from_json`)."""
    app = cfg.app
    metrics: dict[str, Any] | None = None
    if isinstance(app.metrics, PrometheusSource):
        m = app.metrics
        metrics = {
            "kind": "prometheus",
            "url": m.url,
            "requests_metric": m.requests_metric,
            "duration_metric": m.duration_metric,
            "status_label": m.status_label,
            "timeout_s": m.timeout_s,
        }
    elif isinstance(app.metrics, AccessLogSource):
        a = app.metrics
        metrics = {
            "kind": "access_log",
            "path": str(a.path),
            "format": _pattern(a.format),
            "duration_unit": a.duration_unit,
        }
    log = app.log
    proc = app.process
    return {
        "root": str(cfg.root),
        "trusted_keys": [str(p) for p in cfg.trusted_keys],
        "revoked_key_ids": list(cfg.revoked_key_ids),
        "keep_releases": cfg.keep_releases,
        "limits": dict(cfg.limits),
        "stop_failure": cfg.stop_failure.value,
        "stop_timeout_s": cfg.stop_timeout_s,
        "hook_output_max_bytes": cfg.hook_output_max_bytes,
        "exporter": {
            "listen": cfg.exporter.listen,
            "port": cfg.exporter.port,
            "health_interval_s": cfg.exporter.health_interval_s,
        },
        "app": {
            "metrics": metrics,
            "log": None
            if log is None
            else {"path": str(log.path), "error_pattern": _pattern(log.error_pattern)},
            "process": None
            if proc is None
            else {
                "pid_file": None if proc.pid_file is None else str(proc.pid_file),
                "name": proc.name,
            },
        },
        "rpc_socket": None if cfg.rpc_socket is None else str(cfg.rpc_socket),
        "source": cfg.source,
    }


def config_from_json(data: dict[str, Any]) -> AgentConfig:
    """Rebuild the config :func:`config_to_json` described; raises on anything else."""
    exporter = data["exporter"]
    app = data["app"]
    metrics: PrometheusSource | AccessLogSource | None = None
    m = app["metrics"]
    if m is not None and m["kind"] == "prometheus":
        metrics = PrometheusSource(
            url=_str(m["url"]),
            requests_metric=_str(m["requests_metric"]),
            duration_metric=_str(m["duration_metric"]),
            status_label=_str(m["status_label"]),
            timeout_s=_num(m["timeout_s"]),
        )
    elif m is not None and m["kind"] == "access_log":
        metrics = AccessLogSource(
            path=Path(_str(m["path"])),
            format=_compile(m["format"]),
            duration_unit=_str(m["duration_unit"]),
        )
    elif m is not None:
        raise ValueError(f"unknown metrics kind {m['kind']!r}")
    log = app["log"]
    proc = app["process"]
    rpc_socket = data["rpc_socket"]
    return AgentConfig(
        root=Path(_str(data["root"])),
        trusted_keys=tuple(Path(_str(p)) for p in data["trusted_keys"]),
        revoked_key_ids=tuple(_str(k) for k in data["revoked_key_ids"]),
        keep_releases=_int(data["keep_releases"]),
        limits={_str(k): _int(v) for k, v in data["limits"].items()},
        stop_failure=StopFailurePolicy(data["stop_failure"]),
        stop_timeout_s=_num(data["stop_timeout_s"]),
        hook_output_max_bytes=_int(data["hook_output_max_bytes"]),
        exporter=ExporterConfig(
            listen=_str(exporter["listen"]),
            port=_int(exporter["port"]),
            health_interval_s=_num(exporter["health_interval_s"]),
        ),
        app=AppConfig(
            metrics=metrics,
            log=None
            if log is None
            else LogErrorSource(
                path=Path(_str(log["path"])), error_pattern=_compile(log["error_pattern"])
            ),
            process=None
            if proc is None
            else ProcessMatch(
                pid_file=None if proc["pid_file"] is None else Path(_str(proc["pid_file"])),
                name=None if proc["name"] is None else _str(proc["name"]),
            ),
        ),
        rpc_socket=None if rpc_socket is None else Path(_str(rpc_socket)),
        source=_str(data["source"]),
    )


def _pattern(p: re.Pattern[str]) -> dict[str, Any]:
    return {"pattern": p.pattern, "flags": p.flags}


def _compile(d: dict[str, Any]) -> re.Pattern[str]:
    return re.compile(_str(d["pattern"]), _int(d["flags"]))


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("expected a string")
    return v


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError("expected an integer")
    return v


def _num(v: Any) -> float:
    if not isinstance(v, int | float) or isinstance(v, bool):
        raise TypeError("expected a number")
    return float(v)
