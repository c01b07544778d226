"""Hostile RPC frames: each is one error reply (protocol or usage), never a traceback.

A frame that breaks framing (no id, no operation, no upload size) ends the session
with one RpcProtocolError reply and exit 8; a request with bad arguments gets one
UsageError reply (exit code 2) and the session answers the next request.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetwave_agent.errors import RpcProtocolError
from fleetwave_agent.operations import Agent
from fleetwave_agent.rpc import RpcServer, serve_stdio
from fleetwave_agent.rpc_protocol import (
    ARGUMENTS,
    MAX_LINE,
    Request,
    decode_hello,
    decode_request,
    decode_response,
    encode_request,
)
from fleetwave_core.exitcodes import ExitCode

pytestmark = pytest.mark.integration

PING = encode_request(Request(99, "ping", {}))

FRAMING = {
    "op-is-a-list": b'{"id": 1, "op": ["status"]}\n',
    "op-is-an-object": b'{"id": 1, "op": {"a": 1}}\n',
    "deep-nesting": b'{"id": 1, "op": "ping", "args": {"x": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}}\n",
    "5000-digit-id": b'{"id": ' + b"9" * 5000 + b', "op": "ping"}\n',
    "4000-digit-id": b'{"id": ' + b"9" * 4000 + b', "op": "ping"}\n',
    "negative-id": b'{"id": -1, "op": "ping"}\n',
    "5000-digit-size": b'{"id": 1, "op": "upload", "args": {"size": ' + b"9" * 5000 + b"}}\n",
    "huge-size": b'{"id": 1, "op": "upload", "args": {"size": ' + b"9" * 30 + b"}}\n",
    "args-a-list": b'{"id": 1, "op": "ping", "args": []}\n',
    "not-an-object": b"[1, 2]\n",
    "not-utf8": b'{"id": 1, "op": "\xff"}\n',
    "too-long": b'{"id": 1, "op": "' + b"a" * MAX_LINE + b'"}\n',
}


@pytest.mark.parametrize("frame", FRAMING.values(), ids=FRAMING.keys())
def test_broken_framing_is_one_protocol_error(
    make_agent: Callable[..., Agent], frame: bytes
) -> None:
    out = io.BytesIO()
    code = serve_stdio(RpcServer(make_agent()), io.BytesIO(frame + PING), out)
    lines = out.getvalue().splitlines(keepends=True)
    assert code == ExitCode.RPC_PROTOCOL
    decode_hello(lines[0])
    assert len(lines) == 2  # one reply, then the session ends (framing is lost)
    reply = decode_response(lines[1])
    assert reply.error_type == "RpcProtocolError"
    assert len(reply.error_message) < 200


BAD_ARGS = {
    "package-id-a-list": ("has_package", {"package_id": ["a"]}),
    "package-id-huge-int": ("install", {"package_id": 10**4000}),
    "version-an-object": ("activate", {"version": {"x": [1]}}),
    "name-a-number": ("activate", {"version": "1", "name": 5}),
    "probe-health-a-string": ("status", {"probe_health": "yes"}),
    "unknown-argument": ("rollback", {"forcefully": True}),
    "missing-argument": ("install", {}),
    "upload-id-a-number": ("upload", {"package_id": 1, "size": 0}),
    "long-version": ("activate", {"version": "v" * 10_000}),
    "deep-value": ("status", {"x": json.loads("[" * 500 + "]" * 500)}),
}


@pytest.mark.parametrize(("op", "args"), BAD_ARGS.values(), ids=BAD_ARGS.keys())
def test_bad_arguments_are_one_usage_error_and_the_session_goes_on(
    make_agent: Callable[..., Agent], op: str, args: dict[str, object]
) -> None:
    frame = json.dumps({"id": 1, "op": op, "args": args}).encode() + b"\n"
    out = io.BytesIO()
    code = serve_stdio(RpcServer(make_agent()), io.BytesIO(frame + PING), out)
    lines = out.getvalue().splitlines(keepends=True)
    assert code == 0
    reply = decode_response(lines[1])
    assert (reply.ok, reply.error_type, reply.exit_code) == (False, "UsageError", 2)
    assert len(reply.error_message) < 200
    assert decode_response(lines[2]).result["pong"] is True


def test_controller_side_refuses_bad_error_replies() -> None:
    for reply in (
        b'{"id": 1, "ok": false, "error": {"exit_code": "x"}}\n',
        b'{"id": 1, "ok": false, "error": {"exit_code": [1]}}\n',
        b'{"id": 1, "ok": false, "error": {"message": {"a": 1}}}\n',
        b'{"id": 1, "ok": false, "error": []}\n',
        b'{"id": ' + b"1" * 5000 + b', "ok": true}\n',
    ):
        with pytest.raises(RpcProtocolError):
            decode_response(reply)


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(max_size=8),
        st.sampled_from(sorted(ARGUMENTS)),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
frames = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "id": json_values,
            "op": st.one_of(st.sampled_from(sorted(ARGUMENTS)), json_values),
            "args": st.one_of(
                st.dictionaries(
                    st.sampled_from(["package_id", "size", "version", "name", "probe_health", "x"]),
                    json_values,
                    max_size=3,
                ),
                json_values,
            ),
        },
    ).map(lambda d: json.dumps(d).encode() + b"\n"),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"") + b"\n"),
)


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, min_size=1, max_size=4))
def test_generated_frames_never_raise_past_the_protocol(frames_: list[bytes]) -> None:
    from fleetwave_agent.rpc_protocol import check_args
    from fleetwave_core.errors import UsageError

    for frame in frames_:
        try:
            request = decode_request(frame)
        except RpcProtocolError:
            continue
        try:
            check_args(request)
        except UsageError:  # anything else fails the test
            continue
        for key, value in request.args.items():
            types = ARGUMENTS[request.op][key]
            assert value is None or any(t is not None and type(value) is t for t in types)


def test_every_operation_has_an_argument_table() -> None:
    # check_args looks each op up in ARGUMENTS: an op without a row would be a KeyError.
    from fleetwave_agent.rpc_protocol import ARGUMENTS, OPERATIONS

    assert set(ARGUMENTS) == OPERATIONS
