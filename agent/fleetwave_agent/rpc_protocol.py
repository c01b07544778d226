"""Framing of the agent's RPC protocol (``fleetwave-agent rpc`` over one SSH session).

Pure encoding and decoding; the agent's server loop and the controller's transport
both use these functions, so the wire format has one definition.

Wire format (version 1), on the session's stdin and stdout:

* Every message is one line of canonical-ish JSON (UTF-8, ``\\n``-terminated, at most
  ``MAX_LINE`` bytes).
* The agent speaks first: ``{"hello": {"protocol": 1, "agent_version": "..."}}``.
* Request: ``{"id": 7, "op": "status", "args": {...}}``. Ids are chosen by the client
  and echoed back; requests are answered in order.
* ``upload`` is the one request with a body: ``args`` carries ``size`` (bytes) and
  ``package_id``, and exactly ``size`` raw bytes follow the request line.
* Response: ``{"id": 7, "ok": true, "result": {...}}`` or
  ``{"id": 7, "ok": false, "error": {"type": "SignatureError", "message": "...",
  "exit_code": 4}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from fleetwave_agent.errors import RpcProtocolError

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from typing import Any, TypeGuard

PROTOCOL_VERSION = 1
MAX_LINE = 1 << 20  # 1 MiB: status and metrics snapshots fit many times over

#: Operations the agent serves; the arguments of each are documented in ``rpc.py``.
OPERATIONS = frozenset(
    {
        "has_package",
        "upload",
        "install",
        "activate",
        "rollback",
        "status",
        "verify_installed",
        "gc",
        "pin",
        "metrics",
        "snapshot",
        "ping",
        "lease_acquire",
        "lease_renew",
        "lease_release",
    }
)


#: The arguments each operation takes, by name, and the JSON types each may have
#: (``None`` for an optional one that may be left out or null). :func:`check_args`
#: refuses unknown names and wrong types before the agent looks at a value.
ARGUMENTS: dict[str, dict[str, tuple[type | None, ...]]] = {
    "has_package": {"package_id": (str,)},
    # ``lease``: the caller's deployment id, checked against the host's lease (lease.py).
    "upload": {"package_id": (str,), "size": (int,), "lease": (str, None)},
    "install": {"package_id": (str,), "lease": (str, None)},
    "activate": {"version": (str,), "name": (str, None), "lease": (str, None)},
    "rollback": {"force": (bool, None), "lease": (str, None)},
    "status": {"probe_health": (bool, None)},
    "verify_installed": {},
    "gc": {"lease": (str, None)},
    "pin": {"version": (str,), "name": (str, None), "pinned": (bool, None)},
    "metrics": {},
    "snapshot": {},
    "ping": {},
    "lease_acquire": {"deployment_id": (str,), "controller_id": (str,), "ttl_s": (int, float)},
    "lease_renew": {"deployment_id": (str,), "ttl_s": (int, float)},
    "lease_release": {"deployment_id": (str,)},
}
#: Ids and integer arguments fit in 63 bits; bigger numbers are refused, not echoed.
MAX_INT = 2**63 - 1
#: Longest string argument (package ids are 64, versions at most 64 characters).
MAX_STR = 4096


@dataclass(frozen=True)
class Request:
    """One request: its id, the operation and its arguments."""

    id: int
    op: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    """The answer to one request: a result, or an error's type, message and exit code."""

    id: int
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error_type: str = ""
    error_message: str = ""
    exit_code: int = 0


def _line(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    if len(data) > MAX_LINE:
        raise RpcProtocolError(f"message of {len(data)} bytes exceeds the {MAX_LINE}-byte limit")
    return data


def encode_hello(agent_version: str) -> bytes:
    return _line({"hello": {"protocol": PROTOCOL_VERSION, "agent_version": agent_version}})


def decode_hello(line: bytes) -> dict[str, Any]:
    obj = _decode(line)
    hello = obj.get("hello")
    if not isinstance(hello, dict) or hello.get("protocol") != PROTOCOL_VERSION:
        raise RpcProtocolError(
            f"agent did not greet with protocol {PROTOCOL_VERSION}: {str(obj)[:200]}"
        )
    return hello


def encode_request(request: Request) -> bytes:
    return _line({"id": request.id, "op": request.op, "args": request.args})


def decode_request(line: bytes) -> Request:
    """Parse one request line; RpcProtocolError (the session ends) if it breaks framing.

    Framing is the id, the operation and, for ``upload``, the body size: without them
    the stream cannot be read on. Other arguments are checked by :func:`check_args`,
    whose UsageError is answered and the session goes on.
    """
    obj = _decode(line)
    req_id, op, args = obj.get("id"), obj.get("op"), obj.get("args", {})
    if not _is_int(req_id) or not 0 <= req_id <= MAX_INT:
        raise RpcProtocolError(f"request needs an integer id from 0 to {MAX_INT}")
    if not isinstance(op, str):
        raise RpcProtocolError(f"operation must be a string, got {_json_type(op)}")
    if op not in OPERATIONS:
        raise RpcProtocolError(f"unknown operation {op[:64]!r}")
    if not isinstance(args, dict):
        raise RpcProtocolError(f"request args must be an object, got {_json_type(args)}")
    if op == "upload":
        size = args.get("size")
        if not _is_int(size) or not 0 <= size <= MAX_INT:
            raise RpcProtocolError("upload needs a non-negative integer size")
    return Request(id=req_id, op=op, args=args)


def check_args(request: Request) -> None:
    """UsageError unless every argument of ``request`` is known and of its type.

    The server calls this before dispatching, so an operation only ever sees values
    of the types in :data:`ARGUMENTS` (strings of at most MAX_STR characters, integers
    within 63 bits), and a wrong one is one error reply, not a traceback.
    """
    from fleetwave_core.errors import UsageError

    allowed = ARGUMENTS[request.op]
    for key, value in request.args.items():
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise UsageError(f"{request.op}: unknown argument {key[:64]!r} (takes: {known})")
        types = allowed[key]
        if value is None and None in types:
            continue
        if not any(t is not None and _has_type(value, t) for t in types):
            names = " or ".join("null" if t is None else _TYPE_NAMES[t] for t in types)
            raise UsageError(
                f"{request.op}: argument {key!r} must be {names}, got {_json_type(value)}"
            )
        if isinstance(value, str) and len(value) > MAX_STR:
            raise UsageError(f"{request.op}: argument {key!r} is longer than {MAX_STR}")
        if _is_int(value) and not -MAX_INT <= value <= MAX_INT:
            raise UsageError(f"{request.op}: argument {key!r} is out of range")
    for key, types in allowed.items():
        if key not in request.args and None not in types:
            raise UsageError(f"{request.op}: missing argument {key!r}")


_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
}


def _has_type(value: Any, kind: type) -> bool:
    if kind is int:
        return _is_int(value)
    return isinstance(value, kind)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    """The JSON type of ``value``, named without quoting it (it may be huge)."""
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number")):
        if isinstance(value, kind):
            return name
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def encode_response(response: Response) -> bytes:
    if response.ok:
        return _line({"id": response.id, "ok": True, "result": response.result})
    return _line(
        {
            "id": response.id,
            "ok": False,
            "error": {
                "type": response.error_type,
                "message": response.error_message,
                "exit_code": response.exit_code,
            },
        }
    )


def decode_response(line: bytes) -> Response:
    obj = _decode(line)
    req_id = obj.get("id")
    if not _is_int(req_id):
        raise RpcProtocolError("response without an integer id")
    if obj.get("ok") is True:
        result = obj.get("result", {})
        if not isinstance(result, dict):
            raise RpcProtocolError("response result must be an object")
        return Response(id=req_id, ok=True, result=result)
    error = obj.get("error")
    if not isinstance(error, dict):
        raise RpcProtocolError("failed response without an error object")
    error_type = error.get("type", "FleetwaveError")
    message = error.get("message", "")
    exit_code = error.get("exit_code", 1)
    if not isinstance(error_type, str) or not isinstance(message, str):
        raise RpcProtocolError("error type and message must be strings")
    if not _is_int(exit_code) or not 0 <= exit_code <= 255:
        raise RpcProtocolError("error exit_code must be an integer from 0 to 255")
    return Response(
        id=req_id,
        ok=False,
        error_type=error_type[:200],
        error_message=message,
        exit_code=exit_code,
    )


def _decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise RpcProtocolError(f"line of {len(line)} bytes exceeds the {MAX_LINE}-byte limit")
    if not line.endswith(b"\n"):
        raise RpcProtocolError("stream ended in the middle of a message")
    try:
        obj = json.loads(line)
    except RecursionError:
        raise RpcProtocolError("message nests too deeply") from None
    except UnicodeDecodeError:
        raise RpcProtocolError("message is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise RpcProtocolError(f"not a JSON message: {exc.msg} at byte {exc.pos}") from None
    except ValueError:  # an integer of more than 4,300 digits (int max_str_digits)
        raise RpcProtocolError("message holds a number too large to read") from None
    if not isinstance(obj, dict):
        raise RpcProtocolError("message must be a JSON object")
    return obj
