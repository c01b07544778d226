"""The fleetwave-agent parsers: global flags anywhere, help on every flag, --json, text.

Pure: no root, no subprocess (the commands themselves are in test_cli.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from fleetwave_agent import cli, render
from fleetwave_core.exitcodes import ExitCode

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "argv",
    [
        ["install", "--root", "R", "pkg"],
        ["install", "pkg", "--root", "R"],
        ["--root", "R", "install", "pkg"],
        ["install", "--root=R", "pkg"],
    ],
)
def test_root_is_taken_as_the_root_before_or_after_the_command(argv: list[str]) -> None:
    args = cli.parse_args(argv)
    assert (args.root, args.package, args.command) == (Path("R"), Path("pkg"), "install")


def test_every_global_flag_works_after_the_command() -> None:
    args = cli.parse_args(
        ["status", "--config", "c.yaml", "--root", "r", "--trust", "k", "--debug", "--json"]
    )
    assert (args.config, args.root, args.trust) == (Path("c.yaml"), Path("r"), [Path("k")])
    assert args.debug is True
    assert args.json is True


def test_trust_keys_add_up_and_a_later_value_wins() -> None:
    args = cli.parse_args(
        ["--trust", "a", "--root", "first", "list", "--trust", "b", "--root", "second"]
    )
    assert args.trust == [Path("a"), Path("b")]
    assert args.root == Path("second")
    assert not hasattr(args, "_trust_after")


def test_flags_not_given_keep_their_defaults() -> None:
    args = cli.parse_args(["--debug", "--json", "gc"])
    assert (args.debug, args.json, args.root, args.trust) == (True, True, None, [])
    args = cli.parse_args(["gc"])
    assert (args.debug, args.json, args.config) == (False, False, None)


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    return [(" ".join(words) or "(top)", p) for words, p in cli.walk(cli.build_parser())]


def test_every_flag_and_argument_has_help_and_shows_a_meaningful_default() -> None:
    missing, no_default = [], []
    for name, parser in _parsers():
        parser.format_help()  # every help string formats (no stray %)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help or action.help is argparse.SUPPRESS:
                missing.append(label)
            meaningful = action.default not in (None, False, [], argparse.SUPPRESS)
            if meaningful and action.option_strings:
                formatter = parser._get_formatter()
                if "%(default)" not in (formatter._get_help_string(action) or ""):
                    no_default.append(label)
    assert missing == []
    assert no_default == []


def test_json_is_on_every_command_that_reports() -> None:
    without = {
        name
        for name, parser in _parsers()
        if name != "(top)" and not any("--json" in a.option_strings for a in parser._actions)
    }
    assert without == {"serve", "rpc"}  # a daemon and the protocol: nothing to report


def test_json_on_a_command_without_it_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--json", "serve"]) == ExitCode.CONFIG
    assert capsys.readouterr().err == "fleetwave-agent: error: --json does not apply to 'serve'\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["rpc", "--root", "/r"],
        ["--trust", "/a", "rpc", "--trust=/b", "--debug"],
        ["--root", "/a", "rpc", "--root", "/b", "--config=/c.yaml"],
    ],
)
def test_rpc_fast_path_takes_globals_after_rpc_as_argparse_does(argv: list[str]) -> None:
    fast = cli.rpc_fast_path(argv)
    assert fast is not None
    full = cli.parse_args(argv)
    for key in ("config", "root", "trust", "debug", "json", "command", "func"):
        assert getattr(fast, key) == getattr(full, key), key


@pytest.mark.parametrize("argv", [["rpc", "rpc"], ["--json", "rpc"], ["rpc", "--json"], []])
def test_rpc_fast_path_leaves_the_rest_to_argparse(argv: list[str]) -> None:
    assert cli.rpc_fast_path(argv) is None


def _release(version: str, **marks: bool) -> dict[str, object]:
    return {
        "name": "app",
        "version": version,
        "package_id": version * 64,
        "installed": "2026-12-01T10:00:00Z",
        "bytes": 2048,
    } | marks


def test_list_text_is_an_aligned_table_with_marks() -> None:
    text = render.list_text(
        [_release("1", previous=True, pinned=True), _release("10", current=True, bad=False)]
    )
    assert text.splitlines() == [
        "NAME  VERSION  PACKAGE ID    INSTALLED             SIZE     MARKS",
        "app   1        111111111111  2026-12-01T10:00:00Z  2.0 KiB  previous, pinned",
        "app   10       101010101010  2026-12-01T10:00:00Z  2.0 KiB  current",
    ]
    assert render.list_text([]) == "no releases installed"


def test_operator_stop_and_start_read_as_verbs() -> None:
    record = {"op": "stop", "version": "2", "duration_s": 0.5, "outcome": "ok"}
    assert render.describe(record) == "stopped 2 in 0.50s"
    assert render.describe(record | {"op": "start"}) == "started 2 in 0.50s"
