from __future__ import annotations

import argparse
import errno
from collections.abc import Callable

import pytest

from fleetwave_agent.errors import ChecksumError, StoreError
from fleetwave_core.clirun import run_command

pytestmark = pytest.mark.unit


def _args(func: Callable[[argparse.Namespace], int], debug: bool = False) -> argparse.Namespace:
    return argparse.Namespace(func=func, debug=debug)


def _raise(exc: BaseException) -> Callable[[argparse.Namespace], int]:
    def func(_: argparse.Namespace) -> int:
        raise exc

    return func


def test_status_of_the_command_is_returned() -> None:
    assert run_command("prog", _args(lambda _: 3)) == 3


def test_fleetwave_error_is_one_line_with_its_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_command("prog", _args(_raise(ChecksumError("pkg: payload sha256 differs"))))
    assert code == ChecksumError.exit_code
    assert capsys.readouterr().err == "prog: error: pkg: payload sha256 differs\n"


def test_unmapped_os_error_is_one_line_naming_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    exc = PermissionError(errno.EACCES, "Permission denied", "/var/lib/fleetwave/state")
    assert run_command("prog", _args(_raise(exc))) == StoreError.exit_code
    assert capsys.readouterr().err == "prog: error: /var/lib/fleetwave/state: Permission denied\n"


def test_debug_adds_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    run_command("prog", _args(_raise(StoreError("disk full")), debug=True))
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.endswith("prog: error: disk full\n")


def test_interrupt_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_command("prog", _args(_raise(KeyboardInterrupt()))) == 130
    assert capsys.readouterr().err == "prog: interrupted\n"
