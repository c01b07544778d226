# PYTHON_ARGCOMPLETE_OK
"""The ``fleetwave`` command line.

Each command family lives in its own module of this package with a ``register(subparsers)``
function; every command handler returns an exit status. Errors become one line on
stderr and an exit code (``fleetwave_core.clirun``); ``--debug`` adds the traceback.

Global flags (``--debug``, and ``--json`` on the commands that report something) are
accepted before or after the subcommand: :func:`build_parser` adds them to every
parser with ``argparse.SUPPRESS`` defaults, so a subcommand that was not given the flag
does not overwrite the value the top level parsed. Shell completion: argcomplete (the
marker above; ``eval "$(register-python-argcomplete fleetwave)"``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence

from fleetwave import __version__
from fleetwave.cli import agent as cli_agent
from fleetwave.cli import deploy as cli_deploy
from fleetwave.cli import package as cli_package
from fleetwave.cli import plan as cli_plan
from fleetwave.cli import report as cli_report
from fleetwave.errors import UsageError
from fleetwave_core.clirun import run_command

COMMAND_MODULES = [cli_package, cli_plan, cli_agent, cli_deploy, cli_report]
DEBUG_HELP = "show tracebacks on errors"
JSON_HELP = "print the result as JSON"
#: ``set_defaults`` key that marks a command taking ``--json``.
_JSON_OK = "_json_ok"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default when it says something: not None, False or []."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, [], (), argparse.SUPPRESS) or "%(default)" in text:
            return text
        if not (action.option_strings or action.nargs in (argparse.OPTIONAL, "*")):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The whole ``fleetwave`` parser, with the global flags on every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fleetwave",
        description="Safe, hands-off deployments to fleets of VMs.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fleetwave {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument(
        "--json", action="store_true", help="JSON output, for the commands that have it"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    for _, command in walk(parser):
        if command is not parser:
            _add_globals(command)
    return parser


def _add_globals(command: argparse.ArgumentParser) -> None:
    command.formatter_class = HelpFormatter
    options = {o for a in command._actions for o in a.option_strings}
    if "--debug" not in options:
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
        )
    for action in command._actions:
        if "--json" in action.option_strings:
            # The top level holds the default; a subcommand only sets it when given.
            action.default = argparse.SUPPRESS
            command.set_defaults(**{_JSON_OK: True})


def walk(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser under ``parser`` (itself first) with its command words, in order."""
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, child in action.choices.items():
                if id(child) not in seen:  # aliases share a parser
                    seen.add(id(child))
                    yield from walk(child, (*words, name))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default: ``sys.argv``), completing in the shell under argcomplete."""
    parser = build_parser()
    try:
        import argcomplete
    except ImportError:  # completion is a convenience; the CLI works without it
        pass
    else:
        argcomplete.autocomplete(parser)
    return parser.parse_args(argv)


def _check_json(args: argparse.Namespace) -> None:
    if getattr(args, "json", False) and not getattr(args, _JSON_OK, False):
        raise UsageError(f"--json does not apply to {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fleetwave`` console script."""
    args = parse_args(argv)
    command = args.func

    def checked(ns: argparse.Namespace) -> int:
        # Inside clirun, so a misplaced --json is one line and exit 2 like any error.
        _check_json(ns)
        status: int = command(ns)
        return status

    args.func = checked
    return run_command("fleetwave", args)
