# PYTHON_ARGCOMPLETE_OK (the console script's module: argcomplete looks for this marker)
"""The ``fleetwave`` command line: one module per command family (``package``, ``plan``,
``agent``, ``deploy``), each with a ``register(subparsers)`` function."""

from fleetwave.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
