"""HAProxy answer parsing, driven by captured Runtime API answers (one case per file
under ``cases/``), plus properties of the admin-state decoding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwave.lb.base import ServerState
from fleetwave.lb.haproxy import (
    health_from_status,
    parse_admin_state,
    parse_stat_row,
    state_from_admin,
)

pytestmark = pytest.mark.unit

CASES = sorted((Path(__file__).parent / "cases").glob("*.json"))


@pytest.mark.parametrize("case_path", CASES, ids=[p.stem for p in CASES])
def test_captured_answers(case_path: Path) -> None:
    case: dict[str, Any] = json.loads(case_path.read_text())
    backend, server, expect = case["backend"], case["server"], case["expect"]
    if "error" in expect:
        with pytest.raises(LookupError, match=expect["error"]):
            parse_admin_state(case["show_servers_state"], backend, server)
        with pytest.raises(LookupError):
            parse_stat_row(case["show_stat"], backend, server)
        return
    admin = parse_admin_state(case["show_servers_state"], backend, server)
    row = parse_stat_row(case["show_stat"], backend, server)
    assert state_from_admin(admin).value == expect["state"]
    assert int(row["scur"]) + int(row["qcur"] or 0) == expect["sessions"]
    assert health_from_status(row["status"]) is expect["healthy"]


def test_every_case_file_was_collected() -> None:
    assert len(CASES) >= 6


@given(st.integers(min_value=0, max_value=0xFF))
def test_admin_state_decoding(bits: int) -> None:
    state = state_from_admin(bits)
    if bits & 0x67:  # any maintenance bit wins over drain
        assert state is ServerState.MAINT
    elif bits & 0x18:
        assert state is ServerState.DRAIN
    else:
        assert state is ServerState.READY


@pytest.mark.parametrize(
    ("status", "healthy"),
    [
        ("UP", True),
        ("UP 1/2", True),
        ("DRAIN", True),
        ("NOLB", True),
        ("DOWN", False),
        ("DOWN 1/2", False),
        ("MAINT", None),
        ("MAINT (via app/s2)", None),
        ("no check", None),
        ("", None),
    ],
)
def test_health_from_status(status: str, healthy: bool | None) -> None:
    assert health_from_status(status) is healthy


_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0-9_", min_size=1, max_size=12)


@given(
    st.lists(
        st.tuples(_NAME, st.integers(0, 10_000)), min_size=1, max_size=8, unique_by=lambda t: t[0]
    )
)
def test_stat_row_found_among_many(servers: list[tuple[str, int]]) -> None:
    header = "# pxname,svname,qcur,scur,status"
    rows = [f"app,{name},0,{scur},UP" for name, scur in servers]
    text = "\n".join([header, "app,FRONTEND,,0,OPEN", *rows, "app,BACKEND,0,0,UP", ""])
    for name, scur in servers:
        assert parse_stat_row(text, "app", name)["scur"] == str(scur)
