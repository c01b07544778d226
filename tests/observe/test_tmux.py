"""The live view in a real terminal: tmux panes of 80 and 200 columns run
tmux_driver.py, and at every checkpoint the screen is exactly the latest frame (no
stale line left by a longer or wider earlier one, nothing wider than the pane), the
countdown moves by the timer alone, and the end leaves the full final frame."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.cells import cell_len

from tests.binaries import require_binary

pytestmark = pytest.mark.integration

DRIVER = Path(__file__).with_name("tmux_driver.py")
HEIGHT = 40
WAIT_S = 20.0
CHECKPOINTS = ("baking", "baking_later", "rolling", "rolling_back")


class Pane:
    """One detached tmux server on a private socket, running one command."""

    def __init__(self, tmux: str, work: Path, width: int, command: str) -> None:
        self.tmux = tmux
        self.socket = work / "tmux.sock"
        conf = work / "tmux.conf"
        # remain-on-exit: the pane (and its last screen) outlives the driver
        conf.write_text("set -g remain-on-exit on\nset -g history-limit 5000\n")
        self._run("-f", str(conf), "new-session", "-d", "-x", str(width), "-y", str(HEIGHT),
                  command)  # fmt: skip

    def _run(self, *args: str) -> str:
        proc = subprocess.run(
            [self.tmux, "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return proc.stdout

    def lines(self, *, history: bool = False) -> list[str]:
        """The screen (or all of it, with the scrollback), right-trimmed, no trailing
        blank lines."""
        args = ["capture-pane", "-p", "-t", "0"] + (["-S", "-"] if history else [])
        return _trim([line.rstrip() for line in self._run(*args).splitlines()])

    def dead(self) -> bool:
        return self._run("display-message", "-p", "-t", "0", "#{pane_dead}").strip() == "1"

    def kill(self) -> None:
        subprocess.run(
            [self.tmux, "-S", str(self.socket), "kill-server"],
            capture_output=True,
            timeout=10,
            check=False,
        )


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _frame(path: Path) -> list[str]:
    return _trim([line.rstrip() for line in path.read_text().splitlines()])


def _wait_for(path: Path, pane: Pane) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"driver never reached {path.name}; screen:\n" + "\n".join(pane.lines()))
        time.sleep(0.05)


def _screen_becomes(
    pane: Pane, want: list[str], *, history: bool = False, wait_s: float = WAIT_S
) -> list[str]:
    """The screen once it shows ``want`` (the timer redraws 4 times a second), or the
    last screen seen after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        got = pane.lines(history=history)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


@pytest.fixture
def work() -> Iterator[Path]:
    # tmux sockets live in a short path: a socket path is limited to ~100 bytes
    path = Path(tempfile.mkdtemp(prefix="fwtmux-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("width", [80, 200])
def test_live_view_leaves_no_stale_lines_in_a_real_terminal(work: Path, width: int) -> None:
    tmux = require_binary("tmux", "tmux")
    out = work / "frames"
    out.mkdir()
    env = {"TERM": "tmux-256color", "PATH": os.environ.get("PATH", ""), "COLUMNS": "", "LINES": ""}
    command = " ".join(
        [
            "env",
            "-i",
            *(f"{k}={shlex.quote(v)}" for k, v in env.items() if v),
            shlex.quote(sys.executable),
            shlex.quote(str(DRIVER)),
            shlex.quote(str(out)),
            f"2>{shlex.quote(str(work / 'driver.err'))}",
        ]
    )
    pane = Pane(tmux, work, width, command)
    try:
        for name in CHECKPOINTS:
            _wait_for(out / f"{name}.ready", pane)
            want = _frame(out / f"{name}.frame")
            got = _screen_becomes(pane, want)
            assert got == want, (name, got, want)
            assert all(cell_len(line) <= width for line in got)
            (out / f"{name}.go").touch()
        _wait_for(out / "end.ready", pane)
        deadline = time.monotonic() + WAIT_S
        while not pane.dead() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pane.dead(), "the driver did not exit"
        err = (work / "driver.err").read_text() if (work / "driver.err").exists() else ""
        got = pane.lines(history=True)
        # tmux's own notice under a dead pane (remain-on-exit) is not the view's
        if got and got[-1].startswith("Pane is dead"):
            got = _trim(got[:-1])
        want = _frame(out / "end.frame")
        # the whole pane, scrollback included, is the final frame and nothing else
        assert got == want, (got, want, err)
        assert all(cell_len(line) <= width for line in got)
        assert not any(word in line for line in got for word in ("rolling", "baking"))
        assert got[-1].startswith("deployment 20240101T000000Z-abc123: rolled_back in 11m30s")
    finally:
        pane.kill()


def test_the_checks_see_a_stale_line(work: Path) -> None:
    """The comparison fails on a screen that still holds a line of an older frame."""
    tmux = require_binary("tmux", "tmux")
    script = work / "stale.sh"
    # a long line, then cursor-up-and-overwrite with a shorter one, without erasing
    script.write_text("printf 'old frame line that is long\\rnew\\n'; sleep 30\n")
    pane = Pane(tmux, work, 80, f"sh {shlex.quote(str(script))}")
    try:
        got = _screen_becomes(pane, ["new"], wait_s=1.0)
        assert got != ["new"]
        assert got[0].startswith("new")
    finally:
        pane.kill()
