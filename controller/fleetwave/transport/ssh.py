"""The SSH transport: one asyncssh connection and one ``fleetwave-agent rpc`` session
per host, reused for every step of a deployment.

Every asyncssh, OS and timeout error is mapped here to the types in
:mod:`fleetwave.transport.base`; nothing from asyncssh passes this module.

Safety properties:

* Host keys are always verified strictly, against a known_hosts file and/or host
  certificate authorities. There is no option to turn this off, and the known_hosts
  data is parsed once per transport (asyncssh re-parses a *path* on every connect).
* Only public-key authentication is offered; no passwords, no keyboard-interactive,
  no GSS, and the SSH agent only when a socket path is given explicitly.
* Handshakes that sshd drops under load (``MaxStartups``) are retried with bounded,
  jittered backoff. Host-key, authentication and integrity failures never are.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncssh

from fleetwave.config.settings import SshSettings
from fleetwave.errors import (
    AgentCallTimeoutError,
    AuthenticationError,
    ConfigError,
    HostKeyError,
    HostUnreachableError,
    RemoteAgentError,
    RemoteIntegrityError,
    SessionLostError,
    TransportError,
)
from fleetwave.planning.model import HostRef
from fleetwave.transport.retry import RetryPolicy, retry_async
from fleetwave.transport.ssh_trust import load_client_keys, load_known_hosts
from fleetwave_agent import errors as agent_errors
from fleetwave_agent.errors import RpcProtocolError
from fleetwave_agent.rpc_protocol import (
    Request,
    decode_hello,
    decode_response,
    encode_request,
)

__all__ = ["ErrorCounter", "ErrorKind", "SshAgentSession", "SshTransport", "load_known_hosts"]

#: Upload chunk: large enough that per-chunk overhead vanishes, small enough to bound
#: the memory one host's upload holds at a time.
UPLOAD_CHUNK = 1 << 20

#: Preferred algorithms first; the rest of asyncssh's defaults stay as fallbacks so a
#: server that lacks them still negotiates. AES-GCM uses AES-NI through OpenSSL and is
#: the cheapest cipher for the controller's CPU; curve25519 is the cheapest strong kex.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
PREFERRED_KEX = ("curve25519-sha256", "curve25519-sha256@libssh.org")
FALLBACK_CIPHERS = ("chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr")
FALLBACK_KEX = (
    "curve448-sha512",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group14-sha256",
    "diffie-hellman-group16-sha512",
)

#: Remote error types that mean "integrity": derived from the agent's own hierarchy so
#: a new IntegrityError subclass is covered without touching this module.
INTEGRITY_ERROR_TYPES: frozenset[str] = frozenset(
    cls.__name__
    for cls in (
        agent_errors.IntegrityError,
        *(c for c in vars(agent_errors).values() if isinstance(c, type)),
    )
    if issubclass(cls, agent_errors.IntegrityError)
)

_STDERR_TAIL_LINES = 20


class ErrorKind(enum.Enum):
    """Kinds of transport failure, for the controller's metrics (one label value each)."""

    UNREACHABLE = "unreachable"
    HOST_KEY = "host_key"
    AUTH = "auth"
    TIMEOUT = "timeout"
    SESSION_LOST = "session_lost"
    REMOTE = "remote"
    CONNECT_RETRY = "connect_retry"  # a dropped handshake that was retried


class ErrorCounter:
    """Counts transport failures by kind. ``listener`` (if given) is called with each
    kind and host as it happens, e.g. to increment a Prometheus counter."""

    def __init__(self, listener: Callable[[ErrorKind, str], None] | None = None):
        self._counts: collections.Counter[ErrorKind] = collections.Counter()
        self._listener = listener

    def record(self, kind: ErrorKind, host: str) -> None:
        """Count one failure of ``kind`` on ``host``."""
        self._counts[kind] += 1
        if self._listener is not None:
            self._listener(kind, host)

    def count(self, kind: ErrorKind) -> int:
        """How many failures of ``kind`` were recorded."""
        return self._counts[kind]

    def snapshot(self) -> dict[str, int]:
        """Every kind's count, keyed by its metric label (zeros included)."""
        return {kind.value: self._counts[kind] for kind in ErrorKind}


def _algs(
    preferred: Sequence[str], fallback: Sequence[str], supported: Sequence[bytes]
) -> list[str]:
    have = {alg.decode() for alg in supported}
    return [alg for alg in (*preferred, *fallback) if alg in have]


def _is_retryable(exc: BaseException) -> bool:
    """True for handshakes dropped by a busy sshd; never for trust or auth failures."""
    if isinstance(exc, agent_errors.IntegrityError | TransportError):
        return False
    if isinstance(exc, asyncssh.ConnectionLost):
        return True
    if isinstance(exc, asyncssh.DisconnectError):
        return exc.code == asyncssh.DISC_TOO_MANY_CONNECTIONS
    return isinstance(
        exc,
        ConnectionResetError
        | ConnectionAbortedError
        | BrokenPipeError
        | asyncio.IncompleteReadError,
    )


def _map_connect_error(host: str, exc: BaseException) -> tuple[ErrorKind, TransportError]:
    """Translate what asyncssh/the OS raised while connecting into our error types."""
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return ErrorKind.HOST_KEY, HostKeyError(host, f"host key not verified: {exc.reason}")
    if isinstance(exc, asyncssh.KeyExchangeFailed) and "host key" in exc.reason.lower():
        return ErrorKind.HOST_KEY, HostKeyError(host, f"no trusted host key type: {exc.reason}")
    if isinstance(exc, asyncssh.PermissionDenied):
        return ErrorKind.AUTH, AuthenticationError(host, f"deploy key refused: {exc.reason}")
    if isinstance(exc, TimeoutError):
        return ErrorKind.UNREACHABLE, HostUnreachableError(host, "connect timed out")
    if isinstance(exc, asyncssh.DisconnectError):
        return ErrorKind.UNREACHABLE, HostUnreachableError(
            host, f"SSH handshake failed: {exc.reason or type(exc).__name__}"
        )
    if isinstance(exc, OSError | asyncio.IncompleteReadError):
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return ErrorKind.UNREACHABLE, HostUnreachableError(
            host, f"cannot connect: {detail or type(exc).__name__}"
        )
    return ErrorKind.UNREACHABLE, HostUnreachableError(
        host, f"cannot connect: {type(exc).__name__}: {exc}"
    )


class SshTransport:
    """Opens and caches one :class:`SshAgentSession` per host (implements ``Transport``).

    ``known_hosts`` may be an already parsed ``asyncssh.SSHKnownHosts`` (shared by many
    transports) or a path; by default ``settings.known_hosts`` plus ``settings.ca_keys``.
    ``client_keys`` defaults to ``settings.identity`` (or ~/.ssh/id_*), loaded once.
    ``agent_path`` is the only way to let an SSH agent sign; it is off by default.
    """

    def __init__(
        self,
        settings: SshSettings,
        *,
        client_keys: Sequence[asyncssh.SSHKey] | None = None,
        known_hosts: asyncssh.SSHKnownHosts | Path | None = None,
        agent_path: str | None = None,
        retry: RetryPolicy | None = None,
        errors: ErrorCounter | None = None,
    ):
        if settings.concurrency < 1:
            raise ConfigError(f"ssh.concurrency must be >= 1, not {settings.concurrency}")
        self.settings = settings
        self.errors = errors if errors is not None else ErrorCounter()
        self.retry = retry if retry is not None else RetryPolicy(retries=settings.connect_retries)
        if isinstance(known_hosts, asyncssh.SSHKnownHosts):
            self._known_hosts = known_hosts
        else:
            self._known_hosts = load_known_hosts(
                known_hosts if known_hosts is not None else settings.known_hosts, settings.ca_keys
            )
        keys = list(client_keys) if client_keys is not None else load_client_keys(settings.identity)
        if not keys and agent_path is None:
            raise ConfigError("no SSH identity: set ssh.identity to the deploy key")
        from asyncssh.encryption import get_encryption_algs
        from asyncssh.kex import get_kex_algs

        # Built once: asyncssh copies these per connect instead of re-deriving them.
        self._options = asyncssh.SSHClientConnectionOptions(
            known_hosts=self._known_hosts,
            client_keys=keys or None,
            agent_path=agent_path,
            agent_forwarding=False,
            password_auth=False,
            kbdint_auth=False,
            gss_auth=False,
            gss_kex=False,
            preferred_auth="publickey",
            x509_trusted_certs=None,
            connect_timeout=settings.connect_timeout_s,
            login_timeout=settings.connect_timeout_s,
            keepalive_interval=max(1.0, settings.idle_timeout_s / 3),
            keepalive_count_max=3,
            encryption_algs=_algs(PREFERRED_CIPHERS, FALLBACK_CIPHERS, get_encryption_algs()),
            kex_algs=_algs(PREFERRED_KEX, FALLBACK_KEX, get_kex_algs()),
            # Packages are already compressed; zlib would only burn CPU on both ends.
            compression_algs=["none"],
            config=None,
        )
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._sessions: dict[str, SshAgentSession] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._closed = False

    async def open(self, host: HostRef) -> SshAgentSession:
        """Return the host's live session, connecting (with retries) when needed."""
        if self._closed:
            raise SessionLostError(host.name, "transport is closed")
        lock = self._opening.setdefault(host.name, asyncio.Lock())
        async with lock:
            session = self._sessions.get(host.name)
            if session is not None and session.usable:
                return session
            session = SshAgentSession(self, host)
            await session.connect()
            self._sessions[host.name] = session
            return session

    async def close(self) -> None:
        """Close every session this transport opened."""
        self._closed = True
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    async def _connect(self, host: HostRef) -> asyncssh.SSHClientConnection:
        """One connection to ``host`` under the concurrency limit, with retries."""
        port = host.ssh_port if host.ssh_port is not None else self.settings.port
        user = host.ssh_user if host.ssh_user is not None else self.settings.user

        async def attempt() -> asyncssh.SSHClientConnection:
            return await asyncssh.connect(
                host.address, port, options=self._options, username=user, config=None
            )

        def on_retry(_number: int, _exc: BaseException, _pause: float) -> None:
            self.errors.record(ErrorKind.CONNECT_RETRY, host.name)

        async with self._semaphore:
            try:
                return await retry_async(attempt, self.retry, _is_retryable, on_retry=on_retry)
            except (asyncssh.Error, OSError, asyncio.IncompleteReadError) as exc:
                kind, error = _map_connect_error(host.name, exc)
                self.errors.record(kind, host.name)
                raise error from None


class SshAgentSession:
    """One host's RPC session (implements ``AgentSession``): calls are serialised,
    one in flight at a time. After ``idle_timeout_s`` without calls the connection is
    closed; the next call reconnects transparently."""

    def __init__(self, transport: SshTransport, host: HostRef):
        self.host = host
        self.hello: dict[str, Any] = {}
        self.bytes_uploaded = 0
        self.uploads = 0
        self._transport = transport
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._proc: asyncssh.SSHClientProcess[bytes] | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._stderr_task: asyncio.Task[None] | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._broken = False  # a failure left the stream in an unknown state
        self._closed = False  # closed by the caller

    @property
    def usable(self) -> bool:
        """False once the session is closed or broken; the transport then reopens."""
        return not (self._broken or self._closed)

    async def connect(self) -> None:
        """Connect, start the agent and read its hello."""
        name = self.host.name
        settings = self._transport.settings
        conn = await self._transport._connect(self.host)
        try:
            proc = await conn.create_process(settings.agent_command, encoding=None)
            self._conn, self._proc = conn, proc
            self._stderr_task = asyncio.create_task(self._drain_stderr(proc))
            # Its own deadline: the connection is up; what remains is the agent's start-up,
            # which is CPU-bound and slow when many sessions start on a loaded host.
            async with asyncio.timeout(settings.agent_start_timeout_s):
                line = await proc.stdout.readline()
        except TimeoutError:
            await self._abort()
            self._transport.errors.record(ErrorKind.TIMEOUT, name)
            raise AgentCallTimeoutError(
                name,
                f"agent did not say hello within {settings.agent_start_timeout_s:g}s "
                "(ssh.agent_start_timeout_s)",
            ) from None
        except (asyncssh.Error, OSError) as exc:
            await self._abort()
            self._transport.errors.record(ErrorKind.SESSION_LOST, name)
            raise SessionLostError(name, f"cannot start the agent: {exc}") from None
        if not line:
            await self._abort(wait_stderr=True)
            self._transport.errors.record(ErrorKind.SESSION_LOST, name)
            raise SessionLostError(name, f"agent exited before its hello{self._stderr_suffix()}")
        try:
            self.hello = decode_hello(line)
        except RpcProtocolError as exc:
            await self._abort()
            self._transport.errors.record(ErrorKind.SESSION_LOST, name)
            raise SessionLostError(name, f"bad agent hello: {exc}") from None
        self._broken = False
        self._arm_idle_timer()

    async def call(
        self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Run one RPC operation and return its result; agent errors become
        RemoteAgentError (RemoteIntegrityError for signature/checksum failures)."""
        return await self._call(op, args or {}, timeout_s=timeout_s)

    async def ensure_package(
        self, path: Path, package_id: str, *, lease: str | None = None
    ) -> bool:
        """Upload the package unless the agent already has it; True when bytes were sent.
        ``lease`` (a deployment id) fences the upload like every mutating call."""
        present = await self.call("has_package", {"package_id": package_id})
        if _truthy_presence(present):
            return False
        try:
            # A local stat of the package the controller just built: not worth a thread hop.
            size = path.stat().st_size  # noqa: ASYNC240
        except OSError as exc:
            raise TransportError(self.host.name, f"cannot read package {path}: {exc}") from None
        args: dict[str, Any] = {"package_id": package_id, "size": size}
        if lease is not None:
            args["lease"] = lease
        await self._call("upload", args, body=(path, size))
        return True

    async def close(self) -> None:
        """Close the agent session and the connection."""
        self._closed = True
        async with self._lock:
            await self._shutdown()

    # -- internals -------------------------------------------------------------

    async def _call(
        self,
        op: str,
        args: dict[str, Any],
        *,
        timeout_s: float | None = None,
        body: tuple[Path, int] | None = None,
    ) -> dict[str, Any]:
        name = self.host.name
        errors = self._transport.errors
        timeout = timeout_s if timeout_s is not None else self._transport.settings.command_timeout_s
        async with self._lock:
            if self._closed:
                raise SessionLostError(name, "session is closed")
            if self._broken:
                raise SessionLostError(name, "session broke on an earlier call")
            if self._proc is None:
                await self.connect()  # closed for idleness: reconnect
            proc = self._proc
            assert proc is not None
            self._disarm_idle_timer()
            request = Request(id=next(self._ids), op=op, args=args)
            try:
                async with asyncio.timeout(timeout):
                    proc.stdin.write(encode_request(request))
                    if body is not None:
                        await self._stream_body(proc, *body)
                    line = await proc.stdout.readline()
            except asyncio.CancelledError:
                # The request may be on the wire and its answer still unread: the stream
                # can no longer be matched to requests. Close it now without awaiting
                # (we are being cancelled) so the next call fails cleanly.
                self._break_now()
                raise
            except TimeoutError:
                await self._break()
                errors.record(ErrorKind.TIMEOUT, name)
                raise AgentCallTimeoutError(
                    name, f"{op} did not answer within {timeout:g}s"
                ) from None
            except (asyncssh.Error, OSError) as exc:
                await self._break()
                errors.record(ErrorKind.SESSION_LOST, name)
                raise SessionLostError(name, f"{op}: connection lost: {exc}") from None
            if not line:
                await self._break(wait_stderr=True)
                errors.record(ErrorKind.SESSION_LOST, name)
                raise SessionLostError(name, f"{op}: agent exited{self._stderr_suffix()}")
            try:
                response = decode_response(line)
                if response.id != request.id:
                    raise RpcProtocolError(
                        f"answer to request {response.id}, expected {request.id}"
                    )
            except RpcProtocolError as exc:
                await self._break()
                errors.record(ErrorKind.SESSION_LOST, name)
                raise SessionLostError(name, f"{op}: protocol error: {exc}") from None
            self._arm_idle_timer()
        if not response.ok:
            errors.record(ErrorKind.REMOTE, name)
            error_cls = (
                RemoteIntegrityError
                if response.error_type in INTEGRITY_ERROR_TYPES
                else RemoteAgentError
            )
            raise error_cls(name, response.error_type, response.error_message, response.exit_code)
        if body is not None:
            self.uploads += 1
            self.bytes_uploaded += body[1]
        return response.result

    async def _stream_body(
        self, proc: asyncssh.SSHClientProcess[bytes], path: Path, size: int
    ) -> None:
        """Write exactly ``size`` bytes of ``path``; a file that changed size is an error."""
        sent = 0
        try:
            with path.open("rb") as handle:
                while sent < size:
                    chunk = handle.read(min(UPLOAD_CHUNK, size - sent))
                    if not chunk:
                        break
                    proc.stdin.write(chunk)
                    sent += len(chunk)
                    # drain() only waits when the channel's buffer is over its high-water
                    # mark, so with 1 MiB chunks this is one await per chunk, not per packet.
                    await proc.stdin.drain()
        except OSError as exc:
            if isinstance(exc, asyncssh.Error | ConnectionError):
                raise
            # The agent is mid-body and the stream can no longer be resynchronised.
            await self._break()
            raise TransportError(self.host.name, f"cannot read package {path}: {exc}") from None
        if sent != size:
            await self._break()
            raise TransportError(
                self.host.name, f"package {path} shrank while uploading ({sent} of {size} bytes)"
            )

    async def _drain_stderr(self, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        # The agent's stderr must be read or a chatty agent would stall on flow control;
        # the tail is kept for error messages.
        try:
            while True:
                line = await proc.stderr.readline()
                if not line:
                    return
                self._stderr_tail.append(line.decode("utf-8", "replace").rstrip())
        except (asyncssh.Error, OSError):
            return

    def _stderr_suffix(self) -> str:
        tail = [line for line in self._stderr_tail if line]
        return f": {tail[-1]}" if tail else ""

    def _arm_idle_timer(self) -> None:
        self._disarm_idle_timer()
        idle = self._transport.settings.idle_timeout_s
        if idle > 0:
            loop = asyncio.get_running_loop()
            self._idle_handle = loop.call_later(idle, self._on_idle)

    def _disarm_idle_timer(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def _on_idle(self) -> None:
        self._idle_handle = None
        if self._lock.locked() or self._proc is None:
            return
        task = asyncio.get_running_loop().create_task(self._idle_close())
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _idle_close(self) -> None:
        async with self._lock:
            if self._idle_handle is None and not self._broken:
                await self._shutdown()

    def _break_now(self) -> None:
        """Mark the session broken and drop its connection without awaiting anything."""
        self._broken = True
        self._disarm_idle_timer()
        conn, self._proc, self._conn = self._conn, None, None
        if conn is not None:
            conn.close()

    async def _break(self, *, wait_stderr: bool = False) -> None:
        self._broken = True
        await self._abort(wait_stderr=wait_stderr)

    async def _abort(self, *, wait_stderr: bool = False) -> None:
        if wait_stderr and self._stderr_task is not None:
            # Give the agent's last words a moment to arrive for the error message.
            await asyncio.wait({self._stderr_task}, timeout=1.0)
        await self._shutdown(graceful=False)

    async def _shutdown(self, *, graceful: bool = True) -> None:
        self._disarm_idle_timer()
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None and graceful:
            with contextlib.suppress(asyncssh.Error, OSError):
                proc.stdin.write_eof()
        if conn is not None:
            conn.close()
            try:
                async with asyncio.timeout(5.0):
                    await conn.wait_closed()
            except (TimeoutError, asyncssh.Error, OSError):
                pass
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            self._stderr_task = None


def _truthy_presence(result: dict[str, Any]) -> bool:
    """Interpret ``has_package``'s answer (``{"present": bool}``)."""
    return bool(result.get("present", False))


#: Strong references to fire-and-forget tasks (asyncio keeps only weak ones).
_background: set[asyncio.Task[None]] = set()
