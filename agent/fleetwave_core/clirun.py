"""How both command lines (``fleetwave`` and ``fleetwave-agent``) end: one line per error.

Errors derived from FleetwaveError print ``PROG: error: MESSAGE`` and exit with the
error's code; OS errors the code did not map (a root or state directory that is not
writable, a full disk) print one line too; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import sys

from fleetwave_core.errors import FleetwaveError
from fleetwave_core.exitcodes import ExitCode

TYPE_CHECKING = False  # argparse is not imported here: `fleetwave-agent rpc` skips it
if TYPE_CHECKING:
    import argparse


def run_command(prog: str, args: argparse.Namespace) -> int:
    """Run ``args.func(args)`` and turn what it raises into one line and an exit code."""
    try:
        status: int = args.func(args)
    except FleetwaveError as exc:
        return _fail(prog, args, str(exc), exc.exit_code)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(prog, args, f"{where}{exc.strerror or exc}", ExitCode.STORE)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    return status


def _fail(prog: str, args: argparse.Namespace, message: str, code: int) -> int:
    if getattr(args, "debug", False):
        import traceback

        traceback.print_exc()
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code
