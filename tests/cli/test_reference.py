"""docs/cli.md is the generated reference, byte for byte."""

import argparse
from pathlib import Path

import pytest

from fleetwave.cli.main import build_parser, walk
from fleetwave.cli.reference import exit_meanings, render
from fleetwave_core.exitcodes import ExitCode

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_committed_reference_is_the_generated_one():
    committed = (REPO / "docs" / "cli.md").read_text()
    assert committed == render(), (
        "docs/cli.md is stale: run `python -m fleetwave.cli.reference > docs/cli.md`"
    )


def test_reference_has_every_command_and_flag():
    text = render()
    for words, parser in walk(build_parser()):
        if parser._subparsers is not None and words:
            continue  # a group; its commands have sections
        assert f"## `{' '.join(('fleetwave', *words))}`" in text
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert f"`{option}" in text, (words, option)


def test_every_exit_code_has_its_meaning_from_the_enum():
    meanings = exit_meanings()
    assert set(meanings) == set(ExitCode)
    assert meanings[ExitCode.CONFIG].startswith("A configuration file or the command line")


def test_troubleshooting_explains_every_exit_code():
    text = (REPO / "docs" / "troubleshooting.md").read_text()
    for code in ExitCode:
        assert f"| {int(code)} | `{code.name}` |" in text, code.name


def test_docs_link_to_files_that_exist():
    import re

    for name in ("security.md", "troubleshooting.md", "cli.md", "pipelines.md"):
        text = (REPO / "docs" / name).read_text()
        for target in re.findall(r"\]\(([a-z-]+\.md)(?:#[^)]*)?\)", text):
            assert (REPO / "docs" / target).is_file(), (name, target)
