"""The ``fleetwave-agent`` command line.

``fleetwave-agent [--config FILE] [--root DIR] [--trust PUBKEY]... [--debug] COMMAND``

``--root`` and ``--trust`` suffice to run any command without a config file. Every
failure prints one line ``fleetwave-agent: error: ...`` and exits with the error's
exit code (see ``errors.py``); ``--debug`` prints the traceback as well.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace

from fleetwave_agent import __version__
from fleetwave_agent.errors import IntegrityError
from fleetwave_core.clirun import run_command

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    import argparse
    from typing import Any

PROG = "fleetwave-agent"


def build_parser() -> argparse.ArgumentParser:
    """The full command line (``rpc`` alone is parsed by :func:`rpc_fast_path`)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=PROG, description="fleetwave host agent: install, roll back and report releases."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--config", type=Path, help="agent config (default /etc/fleetwave/agent.yaml)"
    )
    parser.add_argument("--root", type=Path, help="agent root directory (overrides the config)")
    parser.add_argument(
        "--trust",
        type=Path,
        action="append",
        default=[],
        metavar="PUBKEY",
        help="trusted public key; repeatable; replaces the config's list",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("install", help="verify, stage and switch to a package, with hooks")
    p.add_argument("package", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_install)

    p = sub.add_parser("activate", help="switch to an installed release, with hooks")
    p.add_argument("version")
    p.add_argument("--name", help="package name, when the root holds several")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_activate)

    p = sub.add_parser("rollback", help="go back to the previous good release (local, no download)")
    p.add_argument(
        "--force",
        action="store_true",
        help="activate the previous release even when it is known bad",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_rollback)

    p = sub.add_parser("status", help="current and previous release, last operation, health")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-health", action="store_true", help="do not probe health checks")
    p.set_defaults(func=_status)

    p = sub.add_parser("verify-installed", help="report files changed since install")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_verify_installed)

    p = sub.add_parser("gc", help="keep keep_releases releases, remove uploads already installed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_gc)

    for command, verb in (("pin", "keep"), ("unpin", "stop keeping")):
        p = sub.add_parser(command, help=f"{verb} an installed release whatever gc would do")
        p.add_argument("version")
        p.add_argument("--name", help="package name, when the root holds several")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=_pin, pinned=command == "pin")

    p = sub.add_parser("lease", help="show the host's lease (which deployment may change it)")
    p.add_argument(
        "--break",
        dest="break_lease",
        action="store_true",
        help="drop the lease whoever holds it (an operator's override; the holder is fenced)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_lease)

    p = sub.add_parser("serve", help="run the Prometheus exporter (foreground)")
    p.add_argument("--listen", help="address to listen on (overrides the config)")
    p.add_argument("--port", type=int, help="port to listen on (overrides the config)")
    p.add_argument(
        "--rpc-socket",
        type=Path,
        metavar="PATH",
        help="also serve the RPC protocol on this unix socket (overrides the config)",
    )
    p.set_defaults(func=_serve)

    p = sub.add_parser("rpc", help="serve the agent RPC protocol on stdin/stdout")
    p.set_defaults(func=_rpc)
    return parser


def _agent(args: argparse.Namespace) -> Any:
    from fleetwave_agent.config import load_config
    from fleetwave_agent.operations import Agent

    root = args.root.absolute() if args.root else None
    trust = [t.absolute() for t in args.trust]
    return Agent(load_config(args.config, root=root, trust=trust))


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(text)


def _describe(record: dict[str, Any]) -> str:
    verb = {"install": "installed", "activate": "activated", "rollback": "rolled back to"}
    if record.get("outcome") == "unchanged":
        return f"{record.get('version')} is already current; nothing to do"
    was = record.get("previous_version")
    text = f"{verb.get(record['op'], record['op'])} {record.get('version')}"
    text += f" (was {was})" if was else ""
    return text + f" in {record.get('duration_s', 0):.2f}s"


def _warn(record: dict[str, Any]) -> None:
    for warning in record.get("warnings", []):
        print(f"{PROG}: warning: {warning}", file=sys.stderr)


def _install(args: argparse.Namespace) -> int:
    record = _agent(args).install(args.package.absolute())
    _warn(record)
    _emit(args, record, _describe(record))
    return 0


def _activate(args: argparse.Namespace) -> int:
    record = _agent(args).activate(args.version, args.name)
    _warn(record)
    _emit(args, record, _describe(record))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    record = _agent(args).rollback(force=args.force)
    _warn(record)
    _emit(args, record, _describe(record))
    return 0


def _release_line(label: str, rel: dict[str, Any] | None) -> str:
    if rel is None:
        return f"{label:<10} -"
    return f"{label:<10} {rel['name']} {rel['version']}  ({rel['package_id'][:12]})"


def _status(args: argparse.Namespace) -> int:
    data = _agent(args).status(probe_health=not args.no_health)
    lines = [
        f"root       {data['root']}",
        _release_line("current", data["current"]),
        _release_line("previous", data["previous"]),
    ]
    for rel in data["releases"]:
        pin = "  pinned" if rel["pinned"] else ""
        lines.append(
            f"release    {rel['name']} {rel['version']}  ({rel['package_id'][:12]})  "
            f"{_size(rel['bytes'])}{pin}"
        )
    disk = data["disk_bytes"]
    lines.append(
        f"disk       releases {_size(disk['releases'])} ({len(data['releases'])} kept, "
        f"keep_releases {data['keep_releases']}), uploads {_size(disk['uploads'])}"
    )
    for bad in data["bad_releases"]:
        lines.append(
            f"bad        {bad['name']} {bad['version']}  ({bad['package_id'][:12]}): "
            f"failed in {bad['op']}: {bad['reason']}"
        )
    lines.append(_lease_line(data["lease"]))
    last = data["last_operation"]
    if last:
        extra = f" (rolled back: {last['reason']})" if last.get("rolled_back") else ""
        if last.get("outcome") == "failed":
            extra = f" ({last.get('reason')})"
        version = f" {last['version']}" if last.get("version") else ""
        lines.append(f"last op    {last['op']}{version}: {last['outcome']}{extra}")
    for check in data["health"]:
        state = "ok" if check["ok"] else "FAILING"
        lines.append(f"health     {check['name']}: {state} ({check['detail']})")
    _emit(args, data, "\n".join(lines))
    return 0


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _lease_line(lease: dict[str, Any] | None) -> str:
    if lease is None:
        return "lease      -"
    state = " (expired)" if lease.get("expired") else ""
    return (
        f"lease      deployment {lease['deployment_id']} (controller {lease['controller_id']}) "
        f"until {lease['expires']}{state}"
    )


def _lease(args: argparse.Namespace) -> int:
    agent = _agent(args)
    if args.break_lease:
        data = agent.lease.break_()
        broken = data["broken"]
        _emit(
            args,
            data,
            "broke the lease of " + _lease_line(broken).split(maxsplit=1)[1]
            if broken
            else "no lease to break",
        )
        return 0
    lease = agent.lease.status()
    _emit(args, {"lease": lease}, _lease_line(lease))
    return 0


def _verify_installed(args: argparse.Namespace) -> int:
    data = _agent(args).verify_installed()
    if data["ok"]:
        _emit(args, data, f"{data['version']}: no drift since install")
        return 0
    _emit(args, data, "\n".join(data["drift"]))
    print(
        f"{PROG}: error: {data['version']}: {len(data['drift'])} file(s) changed since install",
        file=sys.stderr,
    )
    return IntegrityError.exit_code


def _gc(args: argparse.Namespace) -> int:
    data = _agent(args).gc()
    removed = [f"{r['name']} {r['version']}" for r in data["removed"]]
    removed += [f"upload {i[:12]}" for i in data["removed_uploads"]]
    text = (
        f"removed {', '.join(removed)}; freed {_size(data['freed_bytes'])}"
        if removed
        else "nothing to remove"
    )
    _emit(args, data, text)
    return 0


def _pin(args: argparse.Namespace) -> int:
    data = _agent(args).pin(args.version, args.name, pinned=args.pinned)
    rel = data["release"]
    state = "pinned" if args.pinned else "unpinned"
    _emit(
        args,
        data,
        f"{rel['name']} {rel['version']} {state}" + ("" if data["changed"] else " (already)"),
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from fleetwave_agent.config import load_config
    from fleetwave_agent.config_cache import ENV_DISABLE
    from fleetwave_agent.exporter import serve
    from fleetwave_agent.operations import Agent

    # The daemon starts once, so it always parses the YAML itself: the config cache
    # exists for short-lived `rpc` sessions and stores only what they read.
    env = {**os.environ, ENV_DISABLE: "1"}
    root = args.root.absolute() if args.root else None
    trust = [t.absolute() for t in args.trust]
    agent = Agent(load_config(args.config, env=env, root=root, trust=trust))
    rpc_socket = args.rpc_socket.absolute() if args.rpc_socket else None
    return serve(agent, listen=args.listen, port=args.port, rpc_socket=rpc_socket)


def _rpc(args: argparse.Namespace) -> int:
    from fleetwave_agent.rpc import RpcServer, serve_stdio

    # The protocol owns fd 1: point fd 1 (and sys.stdout) at stderr so a stray print or
    # child process can never corrupt the stream.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with out:
        return serve_stdio(RpcServer(_agent(args)), sys.stdin.buffer, out)


#: Global options of ``rpc_fast_path``: name -> whether it repeats.
_RPC_OPTIONS = {"--config": False, "--root": False, "--trust": True}


def rpc_fast_path(argv: Sequence[str]) -> SimpleNamespace | None:
    """``[--config F] [--root D] [--trust K]... [--debug] rpc``, parsed without argparse.

    ``rpc`` starts once per host per deployment (the pinned deploy key runs it), and
    argparse with what it imports (gettext, locale, shutil) is a good part of its
    start-up. Only these exact spellings (``--opt VALUE`` or ``--opt=VALUE``) are taken
    here; anything else (abbreviations, ``--help``, a value missing or starting with
    ``-``) returns None, and argparse parses it, with its own errors.
    """
    if not argv or argv[-1] != "rpc":
        return None
    found: dict[str, Any] = {"config": None, "root": None, "trust": [], "debug": False}
    rest = list(argv[:-1])
    while rest:
        word = rest.pop(0)
        if word == "--debug":
            found["debug"] = True
            continue
        name, eq, value = word.partition("=")
        if name not in _RPC_OPTIONS:
            return None
        if not eq:
            if not rest:
                return None
            value = rest.pop(0)
        if not value or value.startswith("-"):
            return None
        key = name.removeprefix("--")
        if _RPC_OPTIONS[name]:
            found[key].append(Path(value))
        else:
            found[key] = Path(value)
    return SimpleNamespace(command="rpc", func=_rpc, **found)


class _DeferredInspect(ModuleType):
    """Stands in for ``inspect`` until an attribute is used, then imports the real one
    and forwards to it (``importlib.util.LazyLoader`` cannot do this on 3.11: the
    ``import`` statement itself reads ``__spec__``, which loads a lazy module)."""

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get("inspect") is self:
            del sys.modules["inspect"]
        import importlib

        return getattr(importlib.import_module("inspect"), attr)


def defer_inspect() -> None:
    """Defer ``import inspect`` in this process (the ``rpc`` path only).

    ``dataclasses`` imports ``inspect`` (and with it ast, dis, tokenize, linecache:
    ~10-20 ms of CPU) only to write a docstring for a class that has none; every
    dataclass on the ``rpc`` path has one, so the real module is never needed there,
    and is imported on first use if it ever is. ``tests/agent/test_startup.py`` checks
    that it stays unloaded.
    """
    if "inspect" not in sys.modules:
        sys.modules["inspect"] = _DeferredInspect("inspect")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fleetwave-agent`` console script."""
    args: Any = rpc_fast_path(sys.argv[1:] if argv is None else argv)
    if args is not None:
        defer_inspect()
    else:
        args = build_parser().parse_args(argv)
    return run_command(PROG, args)


if __name__ == "__main__":
    sys.exit(main())
