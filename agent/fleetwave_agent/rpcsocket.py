"""The resident agent's RPC endpoint: the protocol of :mod:`rpc_protocol` on a unix socket.

``fleetwave-agent serve --rpc-socket PATH`` (or ``rpc_socket:`` in the config) serves,
besides ``/metrics``, the very session loop of ``fleetwave-agent rpc``
(:func:`rpc.serve_stream`) on every connection to ``PATH``. An SSH session then only
relays bytes to it, ``socat STDIO UNIX-CONNECT:PATH``, and no Python starts per host
and deployment; the wire protocol, hello included, is byte for byte the same, so the
controller only needs ``ssh.agent_command`` set to that relay.

Safety:

* The socket is created mode 0600 (umask around ``bind``): only the agent's user and
  root can connect. Its directory must exist and must not be world-writable, otherwise
  anyone could replace the socket. Packages still have to be signed by a trusted key,
  so the socket is defence in depth, not the trust boundary.
* ``PATH.lock`` is ``flock``'d for the daemon's lifetime: a second daemon on the same
  path is refused, and a socket file left by a dead one is replaced.
* Each connection runs in its own thread with its own :class:`rpc.RpcServer`; one
  connection's failure ends only that connection. Mutating operations are serialised
  by the release store's lock exactly as for concurrent ``rpc`` processes (a second
  concurrent install gets ``LockedError``). At most ``max_connections`` sessions run at
  once; further connections are closed at once, so a flood cannot exhaust threads.
* On :meth:`RpcSocketServer.close` the socket is unlinked first (no new sessions),
  idle sessions see EOF, and a request in progress finishes and gets its response.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import socketserver
import stat
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from fleetwave_agent.rpc import RpcServer, serve_stream
from fleetwave_core.errors import ConfigError, LockedError

if TYPE_CHECKING:
    from fleetwave_agent.operations import Agent

#: Sessions served at once; connections beyond this are closed unanswered.
DEFAULT_MAX_CONNECTIONS = 32
#: How long :meth:`RpcSocketServer.close` waits for requests in progress to finish.
DEFAULT_DRAIN_TIMEOUT_S = 60.0
#: ``sun_path`` holds 108 bytes on Linux, the terminating NUL included.
_MAX_PATH_BYTES = 107


def check_socket_dir(path: Path) -> None:
    """Raise ConfigError unless ``path``'s directory exists and is not world-writable."""
    if len(os.fsencode(path)) > _MAX_PATH_BYTES:
        raise ConfigError(
            f"{path}: path is longer than {_MAX_PATH_BYTES} bytes (unix socket limit)",
            key_path="rpc_socket",
        )
    parent = path.parent
    try:
        st = os.stat(parent)
    except OSError as exc:
        raise ConfigError(
            f"{parent}: socket directory is not usable: {exc.strerror}", key_path="rpc_socket"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{parent}: socket directory is not a directory", key_path="rpc_socket")
    if st.st_mode & stat.S_IWOTH:
        # Anyone could unlink the socket and put their own in its place.
        raise ConfigError(
            f"{parent}: socket directory is world-writable (mode {stat.S_IMODE(st.st_mode):04o});"
            " use a directory only the agent's user can write",
            key_path="rpc_socket",
        )


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        # The client going away ends only its own session.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            # rfile is a BufferedReader, wfile a raw socket writer: both binary streams.
            serve_stream(
                RpcServer(self.server.agent), cast(BinaryIO, self.rfile), cast(BinaryIO, self.wfile)
            )


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # close() drains sessions itself, with a deadline; never join a hung client forever.
    block_on_close = False

    def __init__(self, path: Path, agent: Agent, max_connections: int) -> None:
        self.agent = agent
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._active: dict[socket.socket, threading.Thread | None] = {}
        self._refusing = False
        old = os.umask(0o177)
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            if not self._refusing:  # one line per burst, not one per connection
                print(
                    "fleetwave-agent: rpc socket: too many sessions; refusing connections",
                    file=sys.stderr,
                    flush=True,
                )
            self._refusing = True
            self.shutdown_request(request)
            return
        self._refusing = False
        with self._lock:
            self._active[request] = None
        try:
            thread = threading.Thread(
                target=self.process_request_thread,
                args=(request, client_address),
                name="rpc-session",
                daemon=True,
            )
            with self._lock:
                self._active[request] = thread
            thread.start()
        except BaseException:
            self._forget(request)
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: socket.socket) -> None:
        with self._lock:
            self._active.pop(request, None)
        self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        print(f"fleetwave-agent: rpc session failed: {exc!r}", file=sys.stderr, flush=True)

    def drain(self, timeout_s: float) -> None:
        """End idle sessions (EOF on their next read) and wait for requests in progress."""
        with self._lock:
            active = dict(self._active)
        for conn in active:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RD)
        for thread in active.values():
            if thread is not None:
                thread.join(timeout=timeout_s)

    def active_sessions(self) -> int:
        with self._lock:
            return len(self._active)


class RpcSocketServer:
    """The agent RPC protocol on a unix socket, served by a background thread.

    ``start()`` validates and binds (raising ConfigError or LockedError with nothing
    left behind), ``close()`` stops and unlinks; also a context manager.
    """

    def __init__(
        self,
        agent: Agent,
        path: Path,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.agent = agent
        self.path = path.absolute()
        self.max_connections = max_connections
        self.drain_timeout_s = drain_timeout_s
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._inode: tuple[int, int] | None = None

    def __enter__(self) -> RpcSocketServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def active_sessions(self) -> int:
        """Sessions being served right now."""
        return 0 if self._server is None else self._server.active_sessions()

    def start(self) -> None:
        """Claim the path, bind the socket (mode 0600) and start accepting sessions."""
        if self._server is not None:
            raise RuntimeError("already started")
        check_socket_dir(self.path)
        self._lock_fd = self._claim()
        try:
            server = _Server(self.path, self.agent, self.max_connections)
            try:
                os.chmod(self.path, 0o600)  # whatever umask the kernel applied
                st = os.stat(self.path)
            except BaseException:
                server.server_close()
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                raise
        except BaseException:
            self._release()
            raise
        self._inode = (st.st_dev, st.st_ino)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="rpc-socket"
        )
        self._thread.daemon = True
        self._thread.start()

    def close(self) -> None:
        """Unlink the socket, stop accepting, end idle sessions, drain the busy ones."""
        server, self._server = self._server, None
        if server is None:
            return
        self._unlink_own()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        server.drain(self.drain_timeout_s)
        self._release()

    def _claim(self) -> int:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"{self.path}: another agent is already serving this rpc socket"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return fd
        except OSError as exc:
            os.close(fd)
            raise ConfigError(f"{self.path}: {exc.strerror}", key_path="rpc_socket") from None
        if not stat.S_ISSOCK(st.st_mode):
            os.close(fd)
            raise ConfigError(
                f"{self.path}: exists and is not a socket; refusing to replace it",
                key_path="rpc_socket",
            )
        # We hold the lock, so no live agent owns this socket: it is stale.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        return fd

    def _unlink_own(self) -> None:
        try:
            st = os.lstat(self.path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == self._inode:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None
