"""The ``fleetwave`` command line.

Each command family lives in its own module of this package with a ``register(subparsers)``
function; every command handler returns an exit status. Errors become one line on
stderr and an exit code (``fleetwave_core.clirun``); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from fleetwave import __version__
from fleetwave.cli import agent as cli_agent
from fleetwave.cli import deploy as cli_deploy
from fleetwave.cli import package as cli_package
from fleetwave.cli import plan as cli_plan
from fleetwave_core.clirun import run_command

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
    """Entry point of the ``fleetwave`` console script."""
    return run_command("fleetwave", build_parser().parse_args(argv))
