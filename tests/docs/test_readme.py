"""The README's tables that restate the code, checked against it so they cannot drift:
the exit-code table is ``ExitCode``, and the layout table names every package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleetwave_core.exitcodes import ExitCode

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def section(text: str, heading: str) -> str:
    """The body of the Markdown section under ``heading`` (up to the next heading)."""
    lines = text.splitlines()
    try:
        start = lines.index(heading) + 1
    except ValueError:
        raise AssertionError(f"README.md has no heading {heading!r}") from None
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#")), len(lines))
    return "\n".join(lines[start:end])


def table_rows(body: str) -> list[list[str]]:
    """The cells of every data row of the Markdown tables in ``body``."""
    rows = []
    for line in body.splitlines():
        if not line.startswith("|") or re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line):
            continue
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[1:] if rows else rows  # drop the header row


def exit_code_rows(text: str) -> list[tuple[int, str, str]]:
    rows = table_rows(section(text, "### Exit codes"))
    parsed = []
    for cells in rows:
        assert len(cells) == 3, f"exit-code row {cells} is not code | name | meaning"
        code, name, meaning = cells
        parsed.append((int(code), name.strip("`"), meaning))
    return parsed


def test_exit_code_table_is_the_enum() -> None:
    rows = exit_code_rows(README.read_text())
    assert [(code, name) for code, name, _ in rows] == [(c.value, c.name) for c in ExitCode]
    assert all(meaning for _, _, meaning in rows)


def test_a_drifted_table_is_caught() -> None:
    """The check reads what the README says: a renamed or missing row changes it."""
    text = README.read_text()
    drifted = text.replace("| 11 | `LOAD_BALANCER` |", "| 11 | `LB` |")
    assert drifted != text
    parsed = exit_code_rows(drifted)
    assert (11, "LB") in [(code, name) for code, name, _ in parsed]
    with pytest.raises(AssertionError, match="no heading"):
        exit_code_rows(text.replace("### Exit codes\n", "### Exits\n"))


def test_layout_table_names_every_package() -> None:
    paths = {cells[0].strip("`") for cells in table_rows(section(README.read_text(), "## Layout"))}
    packages = [
        f"{init.parent.relative_to(ROOT).as_posix()}/"
        for pattern in ("controller/fleetwave/*/__init__.py", "agent/*/__init__.py")
        for init in sorted(ROOT.glob(pattern))
    ]
    assert len(packages) >= 11
    missing = [p for p in packages if p not in paths]
    assert missing == [], f"README.md's layout table lacks {missing}"
