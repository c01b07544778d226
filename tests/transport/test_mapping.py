"""Classification of asyncssh/OS errors at the transport boundary (pure logic)."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest

from fleetwave.errors import AuthenticationError, HostKeyError, HostUnreachableError
from fleetwave.transport import ssh
from fleetwave_agent.errors import ChecksumError, IntegrityError

pytestmark = pytest.mark.unit

RETRYABLE = [
    asyncssh.ConnectionLost("lost"),
    asyncssh.DisconnectError(asyncssh.DISC_TOO_MANY_CONNECTIONS, "too many"),
    ConnectionResetError(104, "Connection reset by peer"),
    BrokenPipeError(32, "Broken pipe"),
    asyncio.IncompleteReadError(b"", 10),
]
NOT_RETRYABLE = [
    asyncssh.HostKeyNotVerifiable("bad key"),
    asyncssh.PermissionDenied("denied"),
    asyncssh.KeyExchangeFailed("no kex"),
    asyncssh.ProtocolError("garbage"),
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError(),
    ChecksumError("digest differs"),
    IntegrityError("bad"),
    HostKeyError("h", "x"),
]


@pytest.mark.parametrize("exc", RETRYABLE, ids=lambda e: type(e).__name__)
def test_dropped_handshakes_are_retryable(exc):
    assert ssh._is_retryable(exc)


@pytest.mark.parametrize("exc", NOT_RETRYABLE, ids=lambda e: type(e).__name__)
def test_trust_auth_and_integrity_failures_are_not_retryable(exc):
    assert not ssh._is_retryable(exc)


@pytest.mark.parametrize(
    ("exc", "kind", "error_type"),
    [
        (asyncssh.HostKeyNotVerifiable("mismatch"), ssh.ErrorKind.HOST_KEY, HostKeyError),
        (
            asyncssh.KeyExchangeFailed("No matching host key format"),
            ssh.ErrorKind.HOST_KEY,
            HostKeyError,
        ),
        (asyncssh.PermissionDenied("denied"), ssh.ErrorKind.AUTH, AuthenticationError),
        (TimeoutError(), ssh.ErrorKind.UNREACHABLE, HostUnreachableError),
        (
            ConnectionRefusedError(111, "Connection refused"),
            ssh.ErrorKind.UNREACHABLE,
            HostUnreachableError,
        ),
        (asyncssh.ConnectionLost("lost"), ssh.ErrorKind.UNREACHABLE, HostUnreachableError),
        (OSError(113, "No route to host"), ssh.ErrorKind.UNREACHABLE, HostUnreachableError),
    ],
    ids=lambda v: getattr(v, "__name__", None) or type(v).__name__,
)
def test_connect_errors_map_to_transport_errors(exc, kind, error_type):
    got_kind, error = ssh._map_connect_error("web-1", exc)
    assert got_kind is kind
    assert type(error) is error_type
    assert str(error).startswith("web-1: ")
    assert "\n" not in str(error)


def test_integrity_types_come_from_the_agent_hierarchy():
    assert {
        "IntegrityError",
        "SignatureError",
        "UntrustedKeyError",
        "RevokedKeyError",
        "ChecksumError",
    } <= ssh.INTEGRITY_ERROR_TYPES
    assert "PackageError" not in ssh.INTEGRITY_ERROR_TYPES
    assert "HookError" not in ssh.INTEGRITY_ERROR_TYPES


def test_error_counter_counts_and_notifies():
    seen = []
    counter = ssh.ErrorCounter(lambda kind, host: seen.append((kind.value, host)))
    counter.record(ssh.ErrorKind.TIMEOUT, "a")
    counter.record(ssh.ErrorKind.TIMEOUT, "b")
    assert counter.count(ssh.ErrorKind.TIMEOUT) == 2
    snap = counter.snapshot()
    assert snap["timeout"] == 2
    assert snap["auth"] == 0
    assert set(snap) == {
        "unreachable",
        "host_key",
        "auth",
        "timeout",
        "session_lost",
        "remote",
        "connect_retry",
    }
    assert seen == [("timeout", "a"), ("timeout", "b")]
