"""The CLI reference (``docs/cli.md``), generated from the parsers so it cannot drift.

Regenerate after changing any command or flag::

    python -m fleetwave.cli.reference > docs/cli.md

tests/cli/test_reference.py fails while the committed file differs from the output.
"""

from __future__ import annotations

import argparse
import inspect
import sys

from fleetwave.cli.main import HelpFormatter, build_parser, walk
from fleetwave_core.exitcodes import ExitCode

HEADER = """\
# `fleetwave` command reference

Generated from the command's own parsers by `python -m fleetwave.cli.reference >
docs/cli.md`; do not edit by hand. `fleetwave COMMAND --help` prints the same.

Every command accepts `--debug` (a traceback with the error) before or after the
command's name, and the commands that report something accept `--json` there too.
Shell completion: `eval "$(register-python-argcomplete fleetwave)"` in `~/.bashrc`
(argcomplete is installed with fleetwave; zsh and fish: see argcomplete's docs). Exit
codes are listed at the end and explained in [troubleshooting](troubleshooting.md).
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _help(action: argparse.Action, prog: str) -> str:
    formatter = HelpFormatter(prog)
    text = formatter._get_help_string(action) or ""
    params = {**vars(action), "prog": prog}
    if isinstance(params.get("choices"), list | tuple | dict):
        params["choices"] = ", ".join(map(str, params["choices"]))
    if params.get("default") is argparse.SUPPRESS:
        params.pop("default")
    return text % params


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest.upper()}`"
    if action.nargs == 0:
        value = ""
    else:
        metavar = action.metavar or (
            "{" + ",".join(map(str, action.choices)) + "}"
            if action.choices
            else action.dest.upper()
        )
        value = f" {metavar}"
    return ", ".join(f"`{o}{value}`" for o in action.option_strings)


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=88)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, "")
    return formatter.format_help().strip()


def render() -> str:
    """The whole reference as Markdown."""
    parser = build_parser()
    parts = [HEADER]
    for words, command in walk(parser):
        if command._subparsers is not None and words:
            continue  # a group (`package`, `topology`, `agent`): its commands follow
        title = " ".join(("fleetwave", *words))
        parts.append(f"\n## `{title}`\n")
        text = command.description or _summary(parser, words)
        if text:
            parts.append(f"\n{text}\n")
        parts.append(f"\n```\n{_usage(command)}\n```\n")
        rows = [
            (_flags(a), _help(a, command.prog))
            for a in command._actions
            if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
            and a.help is not argparse.SUPPRESS
        ]
        if rows:
            parts.append("\n| argument | meaning |\n|---|---|\n")
            parts.extend(f"| {_cell(flag)} | {_cell(text)} |\n" for flag, text in rows)
    parts.append("\n## Exit codes\n\n| code | name | meaning |\n|---|---|---|\n")
    for code in ExitCode:
        parts.append(f"| {int(code)} | `{code.name}` | {_cell(_exit_meaning(code))} |\n")
    return "".join(parts)


def _summary(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> str:
    """The one-line help the parent gave the command (``add_parser(help=...)``)."""
    current = parser
    help_text = ""
    for word in words:
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction) and word in action.choices:
                for choice in action._choices_actions:
                    if choice.dest == word:
                        help_text = choice.help or ""
                current = action.choices[word]
                break
    return help_text[:1].upper() + help_text[1:] + "." if help_text else ""


def exit_meanings() -> dict[ExitCode, str]:
    """Each exit code's ``#:`` comment in ``fleetwave_core/exitcodes.py`` (the one source)."""
    meanings: dict[ExitCode, str] = {ExitCode.OK: "Success."}
    comment: list[str] = []
    for line in inspect.getsource(ExitCode).splitlines():
        text = line.strip()
        if text.startswith("#:"):
            comment.append(text[2:].strip())
        elif "=" in text and comment:
            meanings[ExitCode[text.split("=")[0].strip()]] = " ".join(comment)
            comment = []
    return meanings


def _exit_meaning(code: ExitCode) -> str:
    return exit_meanings().get(code, "")


def main() -> None:
    """Print the reference to stdout."""
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
