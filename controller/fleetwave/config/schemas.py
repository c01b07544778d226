"""JSON Schemas of the other config files: a topology, ``fleetwave-package.yaml`` and the
agent's ``agent.yaml`` (``fleetwave schema --kind ...``).

The topology schema is rendered from :data:`~fleetwave.config.topology.TOPOLOGY_SPEC`,
the spec its loader validates with. The two agent-side files are validated by
hand-written code in ``fleetwave_agent`` (``config.parse_config`` and
``package.load_package_config``), which must not import the controller, so their
schemas are written out here and tests/cli/test_schemas.py holds them to the agent's
validators: for every example and a table of bad and generated inputs, the schema
accepts exactly what the agent accepts. What JSON Schema cannot say (a regular
expression that compiles, health check names unique in the list, durations under half a
millisecond that round to 0 ms) only the agent checks; the tests name these gaps.
"""

from __future__ import annotations

from typing import Any

from fleetwave.config.schema import (
    DURATION_PATTERN,
    JSON_SCHEMA_DIALECT,
    anchored,
    json_schema,
)
from fleetwave.config.topology import TOPOLOGY_SPEC
from fleetwave_agent.config import LIMIT_KEYS
from fleetwave_agent.manifest import HOOK_NAMES

BASE_ID = "https://fleetwave.dev/schema"

# A duration whose every number is zero (``0``, ``0s``, ``0h0m``).
_ZERO_DURATION = (
    r"^\s*0+(\.0+)?\s*(([mM][sS]|[sSmMhHdDwW])(\s*0+(\.0+)?\s*([mM][sS]|[sSmMhHdDwW]))*)?\s*$(?!\n)"
)
_TEXT: dict[str, Any] = {"type": "string", "minLength": 1}
# What Python calls false: ``data.get(key) or default`` treats these as absent.
_FALSY: dict[str, Any] = {"enum": [None, False, 0, "", [], {}]}


def _head(kind: str, title: str, description: str) -> dict[str, Any]:
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{BASE_ID}/{kind}.json",
        "title": title,
        "description": description,
    }


def _positive_duration(description: str = "") -> dict[str, Any]:
    """A duration above 0: a number > 0, or text that is not all zeros."""
    out: dict[str, Any] = {
        "anyOf": [
            {"type": "number", "exclusiveMinimum": 0},
            {"type": "string", "pattern": DURATION_PATTERN, "not": {"pattern": _ZERO_DURATION}},
        ]
    }
    return {"description": description, **out} if description else out


def _obj(
    properties: dict[str, Any], *, required: tuple[str, ...] = (), **extra: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        **extra,
    }
    if required:
        out["required"] = list(required)
    return out


def topology_json_schema() -> dict[str, Any]:
    """The topology file's schema, from the spec the loader validates with.

    Cross-references (a host name or address used twice, an environment's region) are
    checked by the loader only.
    """
    return json_schema(
        TOPOLOGY_SPEC,
        title="fleetwave topology",
        schema_id=f"{BASE_ID}/topology.json",
        partial=False,
    )


def _argv(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "type": "array",
        "minItems": 1,
        "items": {"type": "string"},
    }


_CHECK_COMMON = {
    "name": {**_TEXT, "description": "unique within the package"},
    "kind": {"enum": ["http", "tcp", "command"]},
    "timeout": _positive_duration("one probe (default 2s)"),
    "interval": _positive_duration("between probes (default 500ms)"),
    "deadline": _positive_duration("give up and roll back after (default 30s)"),
}


def _check(kind: str, own: dict[str, Any], required: tuple[str, ...]) -> dict[str, Any]:
    properties = {**_CHECK_COMMON, **own, "kind": {"const": kind}}
    return _obj(properties, required=("name", "kind", *required))


_HEALTH_CHECK = {
    "oneOf": [
        _check(
            "http",
            {
                "url": {"type": "string", "pattern": "^https?://"},
                "expect_status": {"type": "integer", "minimum": 100, "maximum": 599},
            },
            ("url",),
        ),
        _check(
            "tcp",
            {
                "host": {**_TEXT, "description": "default 127.0.0.1"},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            },
            ("port",),
        ),
        _check("command", {"argv": _argv("exit 0 is healthy")}, ("argv",)),
    ]
}


def package_json_schema() -> dict[str, Any]:
    """The schema of ``fleetwave-package.yaml`` (hooks and health checks of a release)."""
    hook = _obj(
        {
            "argv": _argv("program and arguments; a relative path is inside the release"),
            "timeout": _positive_duration("default 60s"),
        },
        required=("argv",),
    )
    hooks = _obj({name: hook for name in HOOK_NAMES})
    return {
        **_head(
            "package",
            "fleetwave-package.yaml",
            "Lifecycle hooks and health checks, at the top of a package's source directory.",
        ),
        "type": ["object", "null"],
        "properties": {
            "hooks": {"anyOf": [hooks, _FALSY]},
            "health_checks": {"anyOf": [{"type": "array", "items": _HEALTH_CHECK}, _FALSY]},
        },
        "additionalProperties": False,
    }


def agent_json_schema() -> dict[str, Any]:
    """The schema of the agent's ``agent.yaml``."""
    path = {**_TEXT, "description": "relative paths are relative to agent.yaml"}
    text = _TEXT
    integer = {"type": "integer"}
    prometheus = _obj(
        {
            "url": {"type": "string", "pattern": "^https?://"},
            "requests_metric": text,
            "duration_metric": text,
            "status_label": text,
            "timeout": _positive_duration(),
        },
        required=("url",),
    )
    one_of: dict[str, Any] = {"minProperties": 1, "maxProperties": 1}
    metrics = _obj(
        {
            "prometheus": {"anyOf": [{"type": "string", "pattern": "^https?://"}, prometheus]},
            "access_log": _obj(
                {
                    "path": path,
                    "format": {**text, "description": "regex with (?P<status>...)"},
                    "duration_unit": {"enum": ["s", "ms"]},
                },
                required=("path",),
            ),
        },
        **one_of,
    )
    app = _obj(
        {
            "metrics": metrics,
            "log": _obj({"path": path, "error_pattern": text}, required=("path",)),
            "process": _obj({"pid_file": path, "name": text}, **one_of),
        }
    )
    return {
        **_head("agent", "fleetwave agent.yaml", "The agent's configuration file."),
        "type": ["object", "null"],
        "properties": {
            "root": path,
            "trusted_keys": {"type": "array", "items": path},
            "revoked_key_ids": {
                "type": "array",
                "items": {"type": "string", "pattern": anchored("[0-9a-f]{16}")},
            },
            "keep_releases": {**integer, "minimum": 2},
            "limits": _obj({k: {**integer, "minimum": 1} for k in LIMIT_KEYS}),
            "stop_failure": {"enum": ["continue", "abort"]},
            "stop_timeout": _positive_duration(),
            "hook_output_max_bytes": {**integer, "minimum": 1024},
            "exporter": _obj(
                {
                    "listen": text,
                    "port": {**integer, "minimum": 0, "maximum": 65535},
                    "health_interval": _positive_duration(),
                }
            ),
            "app": app,
            "rpc_socket": path,
        },
        "additionalProperties": False,
    }
