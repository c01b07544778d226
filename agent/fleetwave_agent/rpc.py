"""The agent's RPC server: the protocol of :mod:`rpc_protocol`, one SSH session long.

``fleetwave-agent rpc`` runs :func:`serve_stdio` on its stdin and stdout, so one agent
process serves every request of a deployment (Python starts once per host). The
resident mode (``fleetwave-agent serve --rpc-socket PATH``, :mod:`rpcsocket`) runs the
same session loop, :func:`serve_stream`, on each connection to a unix socket, so an SSH
session only relays bytes (``socat STDIO UNIX-CONNECT:PATH``) and starts no Python. The
dispatch, :meth:`RpcServer.handle`, is independent of the stream, so tests and the
in-process fleet drive the very same code from an asyncssh server.

Operations and their arguments -> results:

=====================  ================================  =================================
``ping``               ``{}``                            ``{"pong": true, "agent_version"}``
``has_package``        ``{package_id}``                  ``{"present": bool}``
``upload``             ``{package_id, size, lease?}``    ``{"stored": bool, "present": true}``
                       + ``size`` raw bytes
``install``            ``{package_id, lease?}``          the operation record
``activate``           ``{version, name?, lease?}``      the operation record
``rollback``           ``{force?: bool, lease?}``        the operation record
``status``             ``{probe_health?: bool}``         see ``Agent.status``
``verify_installed``   ``{}``                            ``{"version", "ok", "drift"}``
``gc``                 ``{lease?}``                      ``{"removed", "removed_uploads",
                                                         "freed_bytes"}``
``pin``                ``{version, name?, pinned?}``     ``{"release", "pinned", "changed"}``
``lease_acquire``      ``{deployment_id,                 ``{"lease", "resumed", "replaced"}``
                       controller_id, ttl_s}``
``lease_renew``        ``{deployment_id, ttl_s}``        ``{"lease"}``
``lease_release``      ``{deployment_id}``               ``{"released": bool}``
``metrics``            ``{}``                            ``{"text": Prometheus exposition}``
``snapshot``           ``{}``                            standard metrics as JSON (:mod:`snapshot`)
=====================  ================================  =================================

Uploads: the controller calls ``has_package`` first and sends ``upload`` only when the
agent lacks the package, so a package already present costs no transfer. (If it is
uploaded anyway, the bytes are read and discarded.) SFTP is not needed, so a deploy
key pinned with ``command="fleetwave-agent rpc",restrict`` in authorized_keys works.

A failed operation is an error response naming the error's class, message and exit
code; a self-rollback is the error ``RolledBackError`` (the record is in ``status``).
"""

from __future__ import annotations

import sys

from fleetwave_agent import __version__
from fleetwave_agent.errors import RpcProtocolError
from fleetwave_agent.rpc_protocol import (
    MAX_LINE,
    Request,
    Response,
    check_args,
    decode_request,
    encode_hello,
    encode_response,
)
from fleetwave_core.errors import FleetwaveError, LockedError, UsageError
from fleetwave_core.exitcodes import ExitCode

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from typing import IO, Any, BinaryIO

    from fleetwave_agent.operations import Agent


class RpcServer:
    """Maps requests to :class:`operations.Agent` calls; never raises FleetwaveError."""

    def __init__(self, ops: Agent) -> None:
        self.ops = ops

    def begin_session(self) -> list[str]:
        """Recover from a crash of an earlier agent process, if one left work behind.

        Never fails the session: while another session's operation holds the store
        lock it has recovered already, and a recovery failure is reported on stderr
        (the operation that follows reports it again, in its record).
        """
        try:
            return self.ops.recover()
        except LockedError:
            return []
        except FleetwaveError as exc:
            print(f"fleetwave-agent: recovery failed: {exc}", file=sys.stderr, flush=True)
            return []

    def handle(self, request: Request, body: BinaryIO | None) -> Response:
        """Run one request. ``body`` is the upload's byte stream (``size`` bytes long)."""
        try:
            result = self._dispatch(request, body)
        except FleetwaveError as exc:
            return Response(
                id=request.id,
                ok=False,
                error_type=type(exc).__name__,
                error_message=str(exc),
                exit_code=exc.exit_code,
            )
        except Exception as exc:  # a bug must not kill the session; report it as one
            import logging  # only on this path: logging costs ~5 ms of every agent start

            logging.getLogger(__name__).exception("rpc %s failed", request.op)
            return Response(
                id=request.id,
                ok=False,
                error_type="InternalError",
                error_message=f"{type(exc).__name__}: {exc}",
                exit_code=ExitCode.INTERNAL,
            )
        return Response(id=request.id, ok=True, result=result)

    def _dispatch(self, request: Request, body: BinaryIO | None) -> dict[str, Any]:
        check_args(request)  # names and JSON types, per rpc_protocol.ARGUMENTS
        args = request.args
        op = request.op
        lease = args.get("lease")  # the caller's deployment id, for fencing (lease.py)
        if lease is not None and not isinstance(lease, str):
            raise UsageError("argument 'lease' must be a string (a deployment id)")
        if op == "ping":
            return {"pong": True, "agent_version": __version__}
        if op == "has_package":
            return {"present": self.ops.has_package(_arg(args, "package_id", str))}
        if op == "upload":
            if body is None:
                raise RpcProtocolError("upload without a body")
            return self.ops.receive_upload(
                _arg(args, "package_id", str), _arg(args, "size", int), body, lease=lease
            )
        if op == "install":
            return self.ops.install_package_id(_arg(args, "package_id", str), lease=lease)
        if op == "activate":
            name = args.get("name")
            if name is not None and not isinstance(name, str):
                raise UsageError("activate: name must be a string")
            return self.ops.activate(_arg(args, "version", str), name, lease=lease)
        if op == "rollback":
            return self.ops.rollback(force=_flag(args, "force"), lease=lease)
        if op == "status":
            return self.ops.status(probe_health=bool(args.get("probe_health", True)))
        if op == "verify_installed":
            return self.ops.verify_installed()
        if op == "gc":
            return self.ops.gc(lease=lease)
        if op == "pin":  # argument types were checked by check_args
            pinned = args.get("pinned")
            return self.ops.pin(
                args["version"], args.get("name"), pinned=True if pinned is None else pinned
            )
        if op == "lease_acquire":
            return self.ops.lease.acquire(
                args.get("deployment_id"), args.get("controller_id"), args.get("ttl_s")
            )
        if op == "lease_renew":
            return self.ops.lease.renew(args.get("deployment_id"), args.get("ttl_s"))
        if op == "lease_release":
            return self.ops.lease.release(args.get("deployment_id"))
        if op == "metrics":
            from fleetwave_agent.exporter import render_snapshot  # lazy: keeps `rpc` start-up cheap

            return {"text": render_snapshot(self.ops)}
        if op == "snapshot":
            from fleetwave_agent.snapshot import snapshot  # lazy, as for metrics

            return snapshot(self.ops)
        raise RpcProtocolError(f"unknown operation {op!r}")


def _arg(args: dict[str, Any], key: str, kind: type[Any]) -> Any:
    value = args.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UsageError(f"argument {key!r} must be a {kind.__name__}")
    return value


def _flag(args: dict[str, Any], key: str) -> bool:
    value = args.get(key, False)
    if not isinstance(value, bool):
        raise UsageError(f"argument {key!r} must be a boolean")
    return value


class _Body:
    """Exactly ``size`` bytes of the underlying stream, then EOF."""

    def __init__(self, stream: IO[bytes], size: int) -> None:
        self._stream = stream
        self.left = size
        self.truncated = False  # the stream ended before ``size`` bytes

    def read(self, n: int = -1, /) -> bytes:
        if self.left <= 0 or self.truncated:
            return b""
        want = self.left if n < 0 else min(n, self.left)
        data = self._stream.read(want)
        if not data:
            self.truncated = True
        self.left -= len(data)
        return data

    def drain(self) -> None:
        while self.left > 0 and self.read(1 << 20):
            pass


def serve_stdio(server: RpcServer, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """``fleetwave-agent rpc``: one session on stdin/stdout (see :func:`serve_stream`)."""
    return serve_stream(server, stdin, stdout)


def serve_stream(server: RpcServer, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Greet, then answer requests in order until EOF. Returns the exit status.

    The one session loop of the protocol, over any pair of binary streams: the stdio of
    an SSH session (:func:`serve_stdio`) or a connection to the resident agent's unix
    socket (:mod:`rpcsocket`).
    """
    stdout.write(encode_hello(__version__))
    stdout.flush()
    # After the hello, so a recovery that restarts an app cannot time out the greeting.
    server.begin_session()
    while True:
        line = stdin.readline(MAX_LINE + 1)
        if not line:
            return 0
        try:
            request = decode_request(line)
        except RpcProtocolError as exc:
            # Framing is lost (we cannot know where the next message starts): say why, stop.
            stdout.write(
                encode_response(
                    Response(
                        id=0,
                        ok=False,
                        error_type=type(exc).__name__,
                        error_message=str(exc),
                        exit_code=exc.exit_code,
                    )
                )
            )
            stdout.flush()
            return exc.exit_code
        body = _Body(stdin, int(request.args["size"])) if request.op == "upload" else None
        response = server.handle(request, body)  # type: ignore[arg-type]
        if body is not None:
            body.drain()
            if body.truncated:
                return RpcProtocolError.exit_code  # stream ended inside the body
        try:
            data = encode_response(response)
        except RpcProtocolError as exc:
            data = encode_response(
                Response(
                    id=request.id,
                    ok=False,
                    error_type=type(exc).__name__,
                    error_message=str(exc),
                    exit_code=exc.exit_code,
                )
            )
        stdout.write(data)
        stdout.flush()
