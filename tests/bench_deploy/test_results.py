"""Medians, tables and target verdicts of the deploy benchmark."""

from __future__ import annotations

import math

import pytest
from bench.deploy.results import RunResult, markdown, summarise, targets

pytestmark = pytest.mark.unit


def run(tool: str, hosts: int, size: int, wall: float, ctl: float = 1.0, error: str = ""):
    return RunResult(tool, hosts, size, 0, wall, ctl, ctl, 2.0, error)


def test_median_leaves_failed_runs_out_and_counts_them() -> None:
    results = [
        run("fleetwave", 10, 1, 1.0),
        run("fleetwave", 10, 1, 3.0),
        run("fleetwave", 10, 1, 2.0),
        run("fleetwave", 10, 1, 99.0, error="exit 1"),
    ]
    (summary,) = summarise(results)
    assert (summary.runs, summary.failed, summary.wall_s) == (3, 1, 2.0)
    assert summary.per_host_wall_ms == pytest.approx(200.0)


def test_all_failed_gives_nan_not_an_error() -> None:
    (summary,) = summarise([run("pyinfra", 10, 1, 5.0, error="timeout")])
    assert summary.runs == 0
    assert math.isnan(summary.wall_s)


def test_markdown_has_ratios_against_fleetwave() -> None:
    table = markdown(summarise([run("fleetwave", 50, 1, 2.0), run("ansible", 50, 1, 20.0)]))
    assert "### 1 MB package, N = 50" in table
    ansible_row = next(line for line in table.splitlines() if line.startswith("| ansible"))
    assert "10.00x" in ansible_row


@pytest.mark.parametrize(
    ("ansible_wall", "verdict"),
    [(20.0, "met"), (19.9, "NOT met")],
)
def test_ansible_target_is_ten_times(ansible_wall: float, verdict: str) -> None:
    lines = targets(summarise([run("fleetwave", 50, 1, 2.0), run("ansible", 50, 1, ansible_wall)]))
    line = next(x for x in lines if "ansible-core" in x)
    assert f": {verdict} (" in line


def test_unmeasured_targets_say_so() -> None:
    lines = targets(summarise([run("fleetwave", 10, 1, 2.0)]))
    assert any("pyinfra at N=100, 10 MB: not measured" in x for x in lines)


def test_controller_cpu_target_uses_the_asyncssh_floor() -> None:
    lines = targets(
        summarise([run("fleetwave", 100, 1, 2.0, ctl=1.4), run("asyncssh", 100, 1, 2.0, ctl=1.0)])
    )
    line = next(x for x in lines if "controller CPU" in x)
    assert "NOT met" in line
    assert "1.40x" in line
    wall = next(x for x in lines if x.startswith("- wall"))
    assert ": met (" in wall  # 2.0 s against 2.0 s: at most 1.0x


def test_peers_are_compared_at_every_n_and_size() -> None:
    runs = [
        run(t, n, 1, 2.0 if t == "fleetwave" else 3.0)
        for t in ("fleetwave", "fabric")
        for n in (50, 100)
    ]
    lines = targets(summarise(runs))
    assert any("faster than fabric at N=50, 1 MB: met" in x for x in lines)
    assert any("faster than fabric at N=100, 1 MB: met" in x for x in lines)
