"""Which output a run gets, and what ``--quiet`` prints."""

from __future__ import annotations

import io

import pytest

from fleetwave.observe.events import JsonLinesStream, PlainLines
from fleetwave.observe.live_view import LiveView
from fleetwave.observe.progress import QuietLines, ViewKind, choose_view, make_view
from fleetwave.rollout import HostOp
from tests.observe import scenario as sc

pytestmark = pytest.mark.unit

TTY = {"TERM": "xterm-256color"}


@pytest.mark.parametrize(
    ("json", "quiet", "isatty", "env", "kind"),
    [
        (True, False, True, TTY, ViewKind.JSON),
        (True, False, False, TTY, ViewKind.JSON),
        (False, True, True, TTY, ViewKind.QUIET),
        (False, False, False, TTY, ViewKind.PLAIN),  # piped
        (False, False, True, {"TERM": "dumb"}, ViewKind.PLAIN),
        (False, False, True, {}, ViewKind.PLAIN),  # no TERM: no terminal to drive
        (False, False, True, TTY, ViewKind.LIVE),
    ],
)
def test_choose_view(json: bool, quiet: bool, isatty: bool, env: dict[str, str], kind: ViewKind):
    assert choose_view(json=json, quiet=quiet, isatty=isatty, env=env) is kind


def test_make_view_builds_each_kind() -> None:
    plan = sc.plan()
    out, err = io.StringIO(), io.StringIO()
    assert isinstance(make_view(ViewKind.JSON, plan, out, err), JsonLinesStream)
    assert isinstance(make_view(ViewKind.PLAIN, plan, out, err), PlainLines)
    quiet = make_view(ViewKind.QUIET, plan, out, err)
    assert isinstance(quiet, QuietLines)
    assert quiet.stream is err
    live = make_view(ViewKind.LIVE, plan, out, err)
    assert isinstance(live, LiveView)
    live.close()  # never started: writes nothing
    assert out.getvalue() == err.getvalue() == ""


def test_quiet_prints_only_failures_and_the_rollback() -> None:
    err = io.StringIO()
    sink = QuietLines(err)
    for event in sc.script().events:
        sink.emit(event)
    lines = err.getvalue().splitlines()
    reason = "stage w1/us-east-1/az:use1-az1: 1 failed host(s) exceed the failure budget (0)"
    assert lines == [
        f"host use1-c [w1/us-east-1/az:use1-az1] {HostOp.INSTALL} failed: RemoteAgentError: boom",
        f"deployment {sc.DEP}: rolling_back ({reason})",
    ]


def test_plain_lines_of_the_scripted_run_keep_their_format() -> None:
    out = io.StringIO()
    sink = PlainLines(out)
    for event in sc.script().events:
        sink.emit(event)
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        f"deployment {sc.DEP}: running",
        "stage w1/us-east-1/onebox: checking_blockers",
        "stage w1/eu-west-1/onebox: checking_blockers",
    ]
    assert "host use1-a [w1/us-east-1/onebox] drain ok" in lines
    assert (
        f"deployment {sc.DEP}: finished result=rolled_back ({lines[-1].split('(', 1)[1]}"
        == (lines[-1])
    )


@pytest.mark.parametrize("command", ["deploy", "resume", "rollback"])
def test_quiet_is_a_flag_of_the_run_commands_and_excludes_json(command: str) -> None:
    from fleetwave.cli.main import build_parser

    parser = build_parser()
    tail = ["x.fwpkg"] if command == "deploy" else []
    args = parser.parse_args([command, "-f", "p.yaml", *tail, "--quiet"])
    assert args.quiet is True
    assert args.json is False
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([command, "-f", "p.yaml", *tail, "--quiet", "--json"])
    assert exc.value.code == 2
