"""The agent's configuration: one YAML file, validated once into frozen dataclasses.

Precedence, lowest first: built-in defaults < the config file < environment variables
< command-line flags. The file is ``/etc/fleetwave/agent.yaml`` unless ``--config`` or
``FLEETWAVE_AGENT_CONFIG`` names another; a missing *default* file means "defaults
only", a missing file that was named explicitly is an error.

Environment variables: ``FLEETWAVE_AGENT_CONFIG`` (file), ``FLEETWAVE_AGENT_ROOT``
(root), ``FLEETWAVE_AGENT_TRUST`` (trusted public keys, ``:``-separated; replaces the
file's list). Flags: ``--root`` and ``--trust`` (repeatable, replaces the list).

Every error names the file, the line and the key path; unknown keys are errors.

The validated result of a file is cached (see :mod:`config_cache`) so that agent
sessions do not import PyYAML while the file is unchanged.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from fleetwave_core.durations import parse_duration
from fleetwave_core.yamlsrc import YamlDocument, join_path

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from typing import Any

DEFAULT_CONFIG_PATH = Path("/etc/fleetwave/agent.yaml")
DEFAULT_ROOT = Path("/var/lib/fleetwave")
ENV_CONFIG = "FLEETWAVE_AGENT_CONFIG"
ENV_ROOT = "FLEETWAVE_AGENT_ROOT"
ENV_TRUST = "FLEETWAVE_AGENT_TRUST"

#: Field names of ``package.Limits``; only overrides are kept here so defaults have one home.
LIMIT_KEYS = ("max_package_bytes", "max_expanded_bytes", "max_members", "max_manifest_bytes")

DEFAULT_ACCESS_LOG_FORMAT = (
    r'^\S+ \S+ \S+ \[[^\]]*\] "[^"]*" (?P<status>\d{3}) \S+'
    r'(?: "[^"]*" "[^"]*")?(?: (?P<duration>\d+(?:\.\d+)?))?'
)

_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")


class StopFailurePolicy(enum.Enum):
    """What to do when the previous release's ``stop`` hook fails or times out."""

    CONTINUE = "continue"  # record a warning and install anyway
    ABORT = "abort"  # refuse the install; nothing changes


@dataclass(frozen=True)
class ExporterConfig:
    """Where ``serve`` listens and how often it probes health."""

    listen: str = "127.0.0.1"
    port: int = 9731
    health_interval_s: float = 15.0


@dataclass(frozen=True)
class PrometheusSource:
    """Read the app's request metrics from its own Prometheus endpoint."""

    url: str
    requests_metric: str = "http_requests_total"
    duration_metric: str = "http_request_duration_seconds"
    status_label: str = "code"
    timeout_s: float = 2.0


@dataclass(frozen=True)
class AccessLogSource:
    """Derive request metrics from an access log: named groups ``status``, ``duration``."""

    path: Path
    # Compiled when used, not at import: every `rpc` session imports this module.
    format: re.Pattern[str] = field(default_factory=lambda: re.compile(DEFAULT_ACCESS_LOG_FORMAT))
    duration_unit: str = "s"  # or "ms"


@dataclass(frozen=True)
class LogErrorSource:
    """An app log whose lines matching ``error_pattern`` count as errors."""

    path: Path
    error_pattern: re.Pattern[str] = field(
        default_factory=lambda: re.compile(r"\b(ERROR|CRITICAL|FATAL)\b")
    )


@dataclass(frozen=True)
class ProcessMatch:
    """How to find the app's process: a pid file, else the first process with this name."""

    pid_file: Path | None = None
    name: str | None = None


@dataclass(frozen=True)
class AppConfig:
    """Where the app's metrics, log and process are found."""

    metrics: PrometheusSource | AccessLogSource | None = None
    log: LogErrorSource | None = None
    process: ProcessMatch | None = None


@dataclass(frozen=True)
class AgentConfig:
    """The agent's validated configuration (see docs/agent.md, Configuration)."""

    root: Path = DEFAULT_ROOT
    trusted_keys: tuple[Path, ...] = ()
    revoked_key_ids: tuple[str, ...] = ()
    keep_releases: int = 3
    limits: Mapping[str, int] = field(default_factory=dict)
    stop_failure: StopFailurePolicy = StopFailurePolicy.CONTINUE
    stop_timeout_s: float = 30.0
    hook_output_max_bytes: int = 1 << 20
    exporter: ExporterConfig = ExporterConfig()
    app: AppConfig = AppConfig()
    #: ``serve`` also answers the RPC protocol on this unix socket (resident mode).
    rpc_socket: Path | None = None
    source: str = "defaults"  # the file the values came from, for status output


_TOP_KEYS = (
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
    "rpc_socket",
)


class _Reader:
    """Typed access to one document's values, raising errors that point into the file."""

    def __init__(self, doc: YamlDocument) -> None:
        self.doc = doc
        self.base = doc.path.parent

    def mapping(self, value: Any, path: str, allowed: Sequence[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.doc.error(path, "must be a mapping")
        for key in value:
            if key not in allowed:
                import difflib  # only for the error message

                hint = difflib.get_close_matches(str(key), allowed, n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self.doc.error(join_path(path, str(key)), f"unknown key{extra}")
        return value

    def integer(self, value: Any, path: str, minimum: int = 0) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.doc.error(path, f"must be an integer >= {minimum}")
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.doc.error(path, "must be a non-empty string")
        return value

    def path(self, value: Any, path: str) -> Path:
        # Relative paths are relative to the config file, so a file can be moved with its keys.
        text = self.string(value, path)
        return Path(text) if os.path.isabs(text) else self.base / text

    def duration(self, value: Any, path: str) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.doc.error(path, str(exc)) from None
        if seconds <= 0:
            raise self.doc.error(path, "must be a positive duration")
        return seconds

    def regex(self, value: Any, path: str) -> re.Pattern[str]:
        text = self.string(value, path)
        try:
            return re.compile(text)
        except re.error as exc:
            raise self.doc.error(path, f"invalid regular expression: {exc}") from None


def parse_config(doc: YamlDocument) -> AgentConfig:
    """Validate a loaded YAML document into an :class:`AgentConfig`."""
    r = _Reader(doc)
    if doc.data is None:
        return AgentConfig(source=str(doc.path))
    top = r.mapping(doc.data, "", _TOP_KEYS)
    cfg = AgentConfig(source=str(doc.path))
    changes: dict[str, Any] = {}
    if "root" in top:
        changes["root"] = r.path(top["root"], "root")
    if "trusted_keys" in top:
        keys = top["trusted_keys"]
        if not isinstance(keys, list):
            raise doc.error("trusted_keys", "must be a list of public key paths")
        changes["trusted_keys"] = tuple(
            r.path(k, join_path("trusted_keys", i)) for i, k in enumerate(keys)
        )
    if "revoked_key_ids" in top:
        ids = top["revoked_key_ids"]
        if not isinstance(ids, list):
            raise doc.error("revoked_key_ids", "must be a list of key ids")
        for i, key_id in enumerate(ids):
            if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
                raise doc.error(
                    join_path("revoked_key_ids", i), "must be a key id (16 lower-case hex digits)"
                )
        changes["revoked_key_ids"] = tuple(ids)
    if "keep_releases" in top:
        changes["keep_releases"] = r.integer(top["keep_releases"], "keep_releases", minimum=2)
    if "limits" in top:
        limits = r.mapping(top["limits"], "limits", LIMIT_KEYS)
        changes["limits"] = {
            k: r.integer(v, join_path("limits", k), minimum=1) for k, v in limits.items()
        }
    if "stop_failure" in top:
        value = top["stop_failure"]
        try:
            changes["stop_failure"] = StopFailurePolicy(value)
        except ValueError:
            raise doc.error("stop_failure", "must be 'continue' or 'abort'") from None
    if "stop_timeout" in top:
        changes["stop_timeout_s"] = r.duration(top["stop_timeout"], "stop_timeout")
    if "hook_output_max_bytes" in top:
        changes["hook_output_max_bytes"] = r.integer(
            top["hook_output_max_bytes"], "hook_output_max_bytes", minimum=1024
        )
    if "exporter" in top:
        changes["exporter"] = _exporter(r, top["exporter"])
    if "app" in top:
        changes["app"] = _app(r, top["app"])
    if "rpc_socket" in top:
        changes["rpc_socket"] = r.path(top["rpc_socket"], "rpc_socket")
    return replace(cfg, **changes)


def _exporter(r: _Reader, value: Any) -> ExporterConfig:
    obj = r.mapping(value, "exporter", ("listen", "port", "health_interval"))
    out = ExporterConfig()
    if "listen" in obj:
        out = replace(out, listen=r.string(obj["listen"], "exporter.listen"))
    if "port" in obj:
        port = r.integer(obj["port"], "exporter.port", minimum=0)
        if port > 65535:
            raise r.doc.error("exporter.port", "must be a port number 0-65535")
        out = replace(out, port=port)
    if "health_interval" in obj:
        out = replace(
            out, health_interval_s=r.duration(obj["health_interval"], "exporter.health_interval")
        )
    return out


def _app(r: _Reader, value: Any) -> AppConfig:
    obj = r.mapping(value, "app", ("metrics", "log", "process"))
    app = AppConfig()
    if "metrics" in obj:
        app = replace(app, metrics=_metrics_source(r, obj["metrics"]))
    if "log" in obj:
        log = r.mapping(obj["log"], "app.log", ("path", "error_pattern"))
        if "path" not in log:
            raise r.doc.error("app.log", "needs a path")
        source = LogErrorSource(path=r.path(log["path"], "app.log.path"))
        if "error_pattern" in log:
            source = replace(
                source, error_pattern=r.regex(log["error_pattern"], "app.log.error_pattern")
            )
        app = replace(app, log=source)
    if "process" in obj:
        proc = r.mapping(obj["process"], "app.process", ("pid_file", "name"))
        if len(proc) != 1:
            raise r.doc.error("app.process", "needs exactly one of pid_file or name")
        if "pid_file" in proc:
            match = ProcessMatch(pid_file=r.path(proc["pid_file"], "app.process.pid_file"))
        else:
            match = ProcessMatch(name=r.string(proc["name"], "app.process.name"))
        app = replace(app, process=match)
    return app


def _metrics_source(r: _Reader, value: Any) -> PrometheusSource | AccessLogSource:
    where = "app.metrics"
    obj = r.mapping(value, where, ("prometheus", "access_log"))
    if len(obj) != 1:
        raise r.doc.error(where, "needs exactly one of prometheus or access_log")
    if "prometheus" in obj:
        raw = obj["prometheus"]
        path = f"{where}.prometheus"
        if isinstance(raw, str):
            raw = {"url": raw}
        prom = r.mapping(
            raw,
            path,
            ("url", "requests_metric", "duration_metric", "status_label", "timeout"),
        )
        url = r.string(prom.get("url"), f"{path}.url")
        if not url.startswith(("http://", "https://")):
            raise r.doc.error(f"{path}.url", "must be an http(s) URL")
        source = PrometheusSource(url=url)
        source = PrometheusSource(
            url=url,
            requests_metric=r.string(
                prom.get("requests_metric", source.requests_metric), f"{path}.requests_metric"
            ),
            duration_metric=r.string(
                prom.get("duration_metric", source.duration_metric), f"{path}.duration_metric"
            ),
            status_label=r.string(
                prom.get("status_label", source.status_label), f"{path}.status_label"
            ),
        )
        if "timeout" in prom:
            source = replace(source, timeout_s=r.duration(prom["timeout"], f"{path}.timeout"))
        return source
    path = f"{where}.access_log"
    log = r.mapping(obj["access_log"], path, ("path", "format", "duration_unit"))
    if "path" not in log:
        raise r.doc.error(path, "needs a path")
    access = AccessLogSource(path=r.path(log["path"], f"{path}.path"))
    if "format" in log:
        pattern = r.regex(log["format"], f"{path}.format")
        if "status" not in pattern.groupindex:
            raise r.doc.error(f"{path}.format", "needs a named group (?P<status>...)")
        access = replace(access, format=pattern)
    if "duration_unit" in log:
        unit = log["duration_unit"]
        if unit not in ("s", "ms"):
            raise r.doc.error(f"{path}.duration_unit", "must be 's' or 'ms'")
        access = replace(access, duration_unit=unit)
    return access


def load_config_file(path: Path) -> AgentConfig:
    """Read and validate one config file (no cache, no environment, no flags)."""
    from fleetwave_core.yamlsrc import load_yaml  # PyYAML only when a file is actually parsed

    return parse_config(load_yaml(path))
