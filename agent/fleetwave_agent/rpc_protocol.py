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
    from typing import Any

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
        raise RpcProtocolError(f"agent did not greet with protocol {PROTOCOL_VERSION}: {obj!r}")
    return hello


def encode_request(request: Request) -> bytes:
    return _line({"id": request.id, "op": request.op, "args": request.args})


def decode_request(line: bytes) -> Request:
    obj = _decode(line)
    req_id, op, args = obj.get("id"), obj.get("op"), obj.get("args", {})
    if not isinstance(req_id, int) or isinstance(req_id, bool):
        raise RpcProtocolError("request needs an integer id")
    if op not in OPERATIONS:
        raise RpcProtocolError(f"unknown operation {op!r}")
    if not isinstance(args, dict):
        raise RpcProtocolError("request args must be an object")
    if op == "upload":
        size = args.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RpcProtocolError("upload needs a non-negative integer size")
    return Request(id=req_id, op=op, args=args)


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
    if not isinstance(req_id, int) or isinstance(req_id, bool):
        raise RpcProtocolError(f"response without an integer id: {obj!r}")
    if obj.get("ok") is True:
        result = obj.get("result", {})
        if not isinstance(result, dict):
            raise RpcProtocolError("response result must be an object")
        return Response(id=req_id, ok=True, result=result)
    error = obj.get("error")
    if not isinstance(error, dict):
        raise RpcProtocolError(f"failed response without an error object: {obj!r}")
    return Response(
        id=req_id,
        ok=False,
        error_type=str(error.get("type", "FleetwaveError")),
        error_message=str(error.get("message", "")),
        exit_code=int(error.get("exit_code", 1)),
    )


def _decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise RpcProtocolError(f"line of {len(line)} bytes exceeds the {MAX_LINE}-byte limit")
    if not line.endswith(b"\n"):
        raise RpcProtocolError("stream ended in the middle of a message")
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RpcProtocolError(f"not a JSON message: {exc}") from None
    if not isinstance(obj, dict):
        raise RpcProtocolError("message must be a JSON object")
    return obj
