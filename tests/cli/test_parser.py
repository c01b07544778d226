"""The ``fleetwave`` parser as a whole: global flags anywhere, help on every option,
``--json`` where the command reports something, and shell completion."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetwave.cli import build_parser, main
from fleetwave.cli.main import walk

REPO = Path(__file__).resolve().parents[2]

#: Commands that print a result and so must have ``--json``.
REPORTING = {
    ("validate",),
    ("plan",),
    ("keygen",),
    ("package", "build"),
    ("package", "verify"),
    ("package", "inspect"),
    ("topology", "import"),
    ("topology", "export"),
    ("agent", "install"),
    ("deploy",),
    ("resume",),
    ("rollback",),
    ("status",),
    ("history",),
    ("explain",),
}


def leaves() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    return [(w, p) for w, p in walk(build_parser()) if not p._subparsers]


@pytest.mark.unit
def test_every_option_and_argument_has_help():
    missing = [
        f"{' '.join(words) or 'fleetwave'} {a.option_strings or a.dest}"
        for words, parser in walk(build_parser())
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction)
        and not a.help
        and not isinstance(a, argparse._HelpAction)
    ]
    assert missing == []


@pytest.mark.unit
def test_every_leaf_command_takes_debug_and_the_reporting_ones_json():
    for words, parser in leaves():
        options = {o for a in parser._actions for o in a.option_strings}
        assert "--debug" in options, words
        if words in REPORTING:
            assert "--json" in options, words


@pytest.mark.unit
def test_pipeline_is_always_dash_f_file():
    takes_pipeline = [
        (words, a)
        for words, parser in leaves()
        for a in parser._actions
        if (a.help or "").startswith("pipeline file")
    ]
    assert len(takes_pipeline) >= 8
    for words, action in takes_pipeline:
        assert action.option_strings[:2] == ["-f", "--file"], words
        assert action.dest == "file", words
    install = dict(leaves())[("agent", "install")]
    args = install.parse_args(["-f", "p.yaml", "--trust", "k.pub"])
    assert args.file == Path("p.yaml")
    old = install.parse_args(["--pipeline", "p.yaml", "--trust", "k.pub"])
    assert old.file == Path("p.yaml")


@pytest.mark.unit
@pytest.mark.parametrize(
    "argv",
    [
        ["--debug", "validate", "-f", "p.yaml"],
        ["validate", "--debug", "-f", "p.yaml"],
        ["validate", "-f", "p.yaml", "--debug"],
    ],
)
def test_debug_is_accepted_anywhere(argv):
    args = build_parser().parse_args(argv)
    assert args.debug is True
    assert args.file == Path("p.yaml")


@pytest.mark.unit
def test_debug_defaults_to_off_and_a_subcommand_does_not_reset_it():
    assert getattr(build_parser().parse_args(["validate", "-f", "p"]), "debug", False) is False
    assert build_parser().parse_args(["--debug", "package", "inspect", "x"]).debug is True


@pytest.mark.unit
@pytest.mark.parametrize(
    "argv",
    [["--json", "validate", "-f", "p"], ["validate", "--json", "-f", "p"]],
)
def test_json_before_or_after_the_subcommand(argv):
    assert build_parser().parse_args(argv).json is True


@pytest.mark.unit
def test_json_off_by_default():
    assert build_parser().parse_args(["validate", "-f", "p"]).json is False


@pytest.mark.unit
def test_json_on_a_command_without_it_is_a_usage_error(capsys):
    assert main(["--json", "schema"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "fleetwave: error: --json does not apply to 'schema'"


@pytest.mark.unit
def test_help_shows_defaults_that_say_something():
    text = dict(leaves())[("validate",)].format_help()
    assert "(default: 50)" in text
    assert "(default: None)" not in text
    assert "(default: False)" not in text


@pytest.mark.unit
def test_debug_after_the_subcommand_shows_the_traceback(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["plan", "-f", str(missing), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("fleetwave: error: ")


def _complete(line: str, tmp_path: Path) -> list[str]:
    """Ask the real ``fleetwave`` program for completions the way bash's hook does."""
    out = tmp_path / "completions"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": "\013",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        "PYTHONPATH": os.pathsep.join([str(REPO / "controller"), str(REPO / "agent")]),
    }
    env.pop("_ARGCOMPLETE_SUPPRESS_SPACE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "fleetwave.cli"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return sorted(w.strip() for w in out.read_text().split("\013") if w.strip())


@pytest.mark.integration
def test_shell_completion_of_a_subcommand_prefix(tmp_path):
    assert _complete("fleetwave va", tmp_path) == ["validate"]
    assert _complete("fleetwave package b", tmp_path) == ["build"]
    assert "--max-errors" in _complete("fleetwave validate --", tmp_path)


@pytest.mark.integration
def test_completion_marker_is_where_argcomplete_looks():
    # The console script runs fleetwave.cli:main; argcomplete's global hook reads the
    # first bytes of that module for the marker.
    head = (REPO / "controller" / "fleetwave" / "cli" / "__init__.py").read_text()[:1024]
    assert "PYTHON_ARGCOMPLETE_OK" in head
    assert "argcomplete" in (REPO / "pyproject.toml").read_text()


@pytest.mark.integration
def test_keygen_json(tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"key_id", "private_key", "public_key"}
    assert Path(doc["public_key"]).is_file()
    assert len(doc["key_id"]) == 16
