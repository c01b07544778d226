"""The ``fleetwave`` command line.

Each command family lives in its own ``cli_*`` module with a ``register(subparsers)``
function; every command handler returns an exit status. Errors derived from
FleetwaveError become one line on stderr and the error's exit code; ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from . import __version__, cli_agent, cli_deploy, cli_package, cli_plan
from .errors import FleetwaveError

COMMAND_MODULES = [cli_package, cli_plan, cli_agent, cli_deploy]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetwave", description="Safe, hands-off deployments to fleets of VMs."
    )
    parser.add_argument("--version", action="version", version=f"fleetwave {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except FleetwaveError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"fleetwave: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fleetwave: interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
