"""The ``fleetwave-agent`` command line.

``fleetwave-agent [--config FILE] [--root DIR] [--trust PUBKEY]... [--debug] [--json] COMMAND``

The global flags are accepted before or after the command's name
(``fleetwave-agent install --root R pkg``): :func:`build_parser` adds them to every
subcommand too, with ``argparse.SUPPRESS`` defaults so that a subcommand not given a
flag does not overwrite what the top level parsed; a flag given in both places takes
the later value, and ``--trust`` keys add up. ``--root`` and ``--trust`` suffice to run
any command without a config file. Only ``install`` (and the ``serve`` and ``rpc``
daemons) may create a missing root; every other command refuses one with exit 5.

Every failure prints one line ``fleetwave-agent: error: ...`` and exits with the
error's exit code (see ``errors.py``); ``--debug`` prints the traceback as well.
Text output is rendered by :mod:`render` from the dicts ``--json`` prints.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace

from fleetwave_agent import __version__, render
from fleetwave_agent.errors import IntegrityError
from fleetwave_core.clirun import run_command
from fleetwave_core.errors import UsageError
from fleetwave_core.exitcodes import ExitCode

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator
    from typing import Any

    from fleetwave_agent.operations import Agent

PROG = "fleetwave-agent"
#: ``set_defaults`` key marking a command that takes ``--json``.
_JSON_OK = "_json_ok"
#: Where a subcommand stores ``--trust``, to be appended to the top level's keys.
_TRUST_AFTER = "_trust_after"


class _Root:
    """What a command may do to a missing root (see :func:`_agent`)."""

    CREATE = "create"  # install, serve, rpc: the first install makes the root
    EXISTING = "existing"  # other mutating commands: the root must exist
    READ = "read"  # read-only commands: the root must exist, nothing is created in it


def _help_formatter() -> type[argparse.HelpFormatter]:
    import argparse

    class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
        """Shows an option's default when it says something: not None, False or []."""

        def _get_help_string(self, action: argparse.Action) -> str | None:
            text = action.help or ""
            if action.default in (None, False, [], (), argparse.SUPPRESS) or "%(default)" in text:
                return text
            if not action.option_strings:
                return text
            return f"{text} (default: %(default)s)"

    return HelpFormatter


def _add_globals(parser: argparse.ArgumentParser, *, top: bool, json_help: str | None) -> None:
    """The global flags, on the top level (``top``) or on a subcommand.

    On a subcommand every default is SUPPRESS (an absent flag leaves the top level's
    value) and ``--trust`` goes to its own list, appended after the top level's.
    """
    import argparse

    from fleetwave_agent.config import DEFAULT_CONFIG_PATH, DEFAULT_ROOT, ENV_CONFIG, ENV_ROOT

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=default(None),
        help=f"agent config (default: ${ENV_CONFIG}, else {DEFAULT_CONFIG_PATH}; "
        "a missing default file means built-in defaults)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        metavar="DIR",
        default=default(None),
        help=f"agent root directory, over the config's root and ${ENV_ROOT} "
        f"(default: {DEFAULT_ROOT})",
    )
    parser.add_argument(
        "--trust",
        type=Path,
        action="append",
        dest="trust" if top else _TRUST_AFTER,
        default=default([]),
        metavar="PUBKEY",
        help="trusted public key; repeatable; replaces the config's trusted_keys "
        "(default: the config's)",
    )
    parser.add_argument(
        "--debug", action="store_true", default=default(False), help="show tracebacks on errors"
    )
    if json_help is not None:
        parser.add_argument("--json", action="store_true", default=default(False), help=json_help)


def build_parser() -> argparse.ArgumentParser:
    """The full command line (``rpc`` alone is parsed by :func:`rpc_fast_path`)."""
    import argparse

    from fleetwave_agent.config import ExporterConfig

    formatter = _help_formatter()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="fleetwave host agent: install, roll back and report releases.",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _add_globals(parser, top=True, json_help="print the result as JSON (reporting commands)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, func: Any, json_help: str | None) -> Any:
        p = sub.add_parser(name, help=help, description=help, formatter_class=formatter)
        _add_globals(p, top=False, json_help=json_help)
        p.set_defaults(func=func, **({_JSON_OK: True} if json_help else {}))
        return p

    record = "print the operation record as JSON"
    p = command("install", "verify, stage and switch to a package, with hooks", _install, record)
    p.add_argument("package", type=Path, metavar="PACKAGE", help="the .fwpkg file")

    p = command("activate", "switch to an installed release, with hooks", _activate, record)
    p.add_argument("version", metavar="VERSION", help="an installed version (see list)")
    p.add_argument("--name", help="package name, when the root holds several")

    p = command(
        "rollback", "go back to the previous good release (local, no download)", _rollback, record
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="activate the previous release even when it is known bad",
    )

    p = command(
        "status",
        "current and previous release, last operation, health; exit 7 if health is failing",
        _status,
        "print the full status as JSON (exit codes as without --json)",
    )
    p.add_argument(
        "--no-health", action="store_true", help="do not probe health checks (exit 0 then)"
    )

    command(
        "list",
        "installed releases: version, package id, install time, size, marks",
        _list,
        "print {releases: [...]} as JSON",
    )
    command(
        "stop",
        "stop the current release's app with its stop hook (it stays current)",
        _stop,
        record,
    )
    command(
        "start",
        "start the current release's app with its start hook, then health checks",
        _start,
        record,
    )
    command(
        "verify-installed",
        "report files changed since install; exit 4 on drift",
        _verify_installed,
        "print {version, ok, drift} as JSON",
    )
    command(
        "gc",
        "keep keep_releases releases, remove uploads already installed",
        _gc,
        "print {removed, removed_uploads, freed_bytes} as JSON",
    )
    for name, verb in (("pin", "keep"), ("unpin", "stop keeping")):
        p = command(
            name,
            f"{verb} an installed release whatever gc would do",
            _pin,
            "print {release, pinned, changed} as JSON",
        )
        p.add_argument("version", metavar="VERSION", help="an installed version (see list)")
        p.add_argument("--name", help="package name, when the root holds several")
        p.set_defaults(pinned=name == "pin")

    p = command(
        "lease",
        "show the host's lease (which deployment may change it)",
        _lease,
        "print {lease} (or, with --break, {broken}) as JSON",
    )
    p.add_argument(
        "--break",
        dest="break_lease",
        action="store_true",
        help="drop the lease whoever holds it (an operator's override; the holder is fenced)",
    )

    p = command("serve", "run the Prometheus exporter (foreground)", _serve, None)
    p.add_argument(
        "--listen",
        metavar="ADDR",
        help="address to listen on, over the config's exporter.listen "
        f"(default: {ExporterConfig.listen})",
    )
    p.add_argument(
        "--port",
        type=int,
        help=f"port to listen on, over the config's exporter.port (default: {ExporterConfig.port})",
    )
    p.add_argument(
        "--rpc-socket",
        type=Path,
        metavar="PATH",
        help="also serve the RPC protocol on this unix socket, over the config's rpc_socket "
        "(default: none)",
    )

    command("rpc", "serve the agent RPC protocol on stdin/stdout", _rpc, None)
    return parser


def walk(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser under ``parser`` (itself first) with its command words, in order."""
    import argparse

    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, (*words, name))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and merge the global flags."""
    args = build_parser().parse_args(argv)
    after = vars(args).pop(_TRUST_AFTER, None)
    if after:
        args.trust = [*args.trust, *after]
    return args


# -- building the agent ------------------------------------------------------------


def _agent(args: argparse.Namespace, root_use: str = _Root.EXISTING) -> Agent:
    """The agent for ``args``; see :class:`_Root` for what happens to a missing root."""
    from fleetwave_agent.configure import load_config
    from fleetwave_agent.operations import Agent
    from fleetwave_agent.store import ReleaseStore

    root = args.root.absolute() if args.root else None
    trust = [t.absolute() for t in args.trust]
    config = load_config(args.config, root=root, trust=trust)
    if root_use == _Root.CREATE:
        return Agent(config)
    # create=False raises StoreError (exit 5) for a missing root, before anything else.
    store = ReleaseStore(config.root, keep=config.keep_releases, create=False)
    if root_use == _Root.EXISTING:
        store = ReleaseStore(config.root, keep=config.keep_releases)
    return Agent(config, store=store)


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(text)


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _warn(record: dict[str, Any]) -> None:
    for warning in record.get("warnings", []):
        print(f"{PROG}: warning: {warning}", file=sys.stderr)


def _report(args: argparse.Namespace, record: dict[str, Any]) -> int:
    _warn(record)
    _emit(args, record, render.describe(record))
    return 0


# -- the commands --------------------------------------------------------------------


def _install(args: argparse.Namespace) -> int:
    return _report(args, _agent(args, _Root.CREATE).install(args.package.absolute()))


def _activate(args: argparse.Namespace) -> int:
    return _report(args, _agent(args).activate(args.version, args.name))


def _rollback(args: argparse.Namespace) -> int:
    return _report(args, _agent(args).rollback(force=args.force))


def _stop(args: argparse.Namespace) -> int:
    return _report(args, _agent(args).stop())


def _start(args: argparse.Namespace) -> int:
    return _report(args, _agent(args).start())


def _status(args: argparse.Namespace) -> int:
    data = _agent(args, _Root.READ).status(probe_health=not args.no_health)
    _emit(args, data, render.status_text(data))
    failing = [c["name"] for c in data["health"] if not c["ok"]]
    if not failing:
        return 0
    current = data["current"]
    _error(
        f"{current['name']} {current['version']}: health failing "
        f"({len(failing)} of {len(data['health'])} checks: {', '.join(failing)})"
    )
    return ExitCode.HEALTH


def _list(args: argparse.Namespace) -> int:
    releases = _agent(args, _Root.READ).list_releases()
    _emit(args, {"releases": releases}, render.list_text(releases))
    return 0


def _lease(args: argparse.Namespace) -> int:
    agent = _agent(args, _Root.EXISTING if args.break_lease else _Root.READ)
    if args.break_lease:
        data = agent.lease.break_()
        broken = data["broken"]
        text = "no lease to break"
        if broken:
            text = "broke the lease of " + render.lease_line(broken).split(maxsplit=1)[1]
        _emit(args, data, text)
        return 0
    lease = agent.lease.status()
    _emit(args, {"lease": lease}, render.lease_line(lease))
    return 0


def _verify_installed(args: argparse.Namespace) -> int:
    data = _agent(args, _Root.READ).verify_installed()
    if data["ok"]:
        _emit(args, data, f"{data['version']}: no drift since install")
        return 0
    _emit(args, data, "\n".join(data["drift"]))
    _error(f"{data['version']}: {len(data['drift'])} file(s) changed since install")
    return IntegrityError.exit_code


def _gc(args: argparse.Namespace) -> int:
    data = _agent(args).gc()
    _emit(args, data, render.gc_text(data))
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
    from fleetwave_agent.config_cache import ENV_DISABLE
    from fleetwave_agent.configure import load_config
    from fleetwave_agent.daemon import serve
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
        return serve_stdio(RpcServer(_agent(args, _Root.CREATE)), sys.stdin.buffer, out)


# -- the fast path of `rpc` ----------------------------------------------------------

#: Global options of ``rpc_fast_path``: name -> whether it repeats.
_RPC_OPTIONS = {"--config": False, "--root": False, "--trust": True}


def rpc_fast_path(argv: Sequence[str]) -> SimpleNamespace | None:
    """``[GLOBALS] rpc [GLOBALS]``, parsed without argparse; GLOBALS are ``--config F``,
    ``--root D``, ``--trust K`` (repeatable) and ``--debug``.

    ``rpc`` starts once per host per deployment (the pinned deploy key runs it), and
    argparse with what it imports (gettext, locale, shutil) is a good part of its
    start-up. Only these exact spellings (``--opt VALUE`` or ``--opt=VALUE``) are taken
    here, with argparse's meaning (a later value wins, ``--trust`` keys add up);
    anything else (abbreviations, ``--help``, ``--json``, a value missing or starting
    with ``-``, a second command word) returns None, and argparse parses it, with its
    own errors.
    """
    found: dict[str, Any] = {"config": None, "root": None, "trust": [], "debug": False}
    rest = list(argv)
    seen_rpc = False
    while rest:
        word = rest.pop(0)
        if word == "rpc" and not seen_rpc:
            seen_rpc = True
            continue
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
    if not seen_rpc:
        return None
    return SimpleNamespace(command="rpc", func=_rpc, json=False, **found)


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
        return run_command(PROG, args)
    args = parse_args(argv)
    command = args.func

    def checked(ns: argparse.Namespace) -> int:
        # Inside run_command, so a misplaced --json is one line and exit 2 like any error.
        if ns.json and not getattr(ns, _JSON_OK, False):
            raise UsageError(f"--json does not apply to {ns.command!r}")
        status: int = command(ns)
        return status

    args.func = checked
    return run_command(PROG, args)


if __name__ == "__main__":
    sys.exit(main())
