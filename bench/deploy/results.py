"""Result records, medians, the markdown tables and the issue's targets."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

#: The reference every ratio is taken against.
REFERENCE = "fleetwave"


@dataclass(frozen=True)
class RunResult:
    """One timed run of one tool. CPU figures are seconds; ``error`` is empty when every
    host ended up with the right release."""

    tool: str
    hosts: int
    size_mb: int
    rep: int
    wall_s: float
    controller_cpu_s: float  # cpuacct of the tool's whole process tree
    controller_cpu_rusage_s: float  # RUSAGE_CHILDREN delta (misses daemonised children)
    host_cpu_s: float  # cpuacct of every host's sshd tree
    error: str = ""
    load1: float = 0.0  # the machine's 1-minute load average before the run (noise)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Summary:
    """Medians over the successful runs of one tool in one (size, N) cell."""

    tool: str
    hosts: int
    size_mb: int
    runs: int
    failed: int
    wall_s: float
    controller_cpu_s: float
    host_cpu_s: float

    @property
    def per_host_wall_ms(self) -> float:
        return 1000 * self.wall_s / self.hosts

    @property
    def per_host_cpu_ms(self) -> float:
        return 1000 * (self.controller_cpu_s + self.host_cpu_s) / self.hosts

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "per_host_wall_ms": self.per_host_wall_ms}


def summarise(results: Iterable[RunResult]) -> list[Summary]:
    """One summary per (size, N, tool), in first-seen order; failed runs are counted,
    not averaged in."""
    groups: dict[tuple[int, int, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.size_mb, r.hosts, r.tool), []).append(r)
    out = []
    for (size, hosts, tool), runs in groups.items():
        good = [r for r in runs if not r.error]
        nan = float("nan")
        out.append(
            Summary(
                tool=tool,
                hosts=hosts,
                size_mb=size,
                runs=len(good),
                failed=len(runs) - len(good),
                wall_s=statistics.median(r.wall_s for r in good) if good else nan,
                controller_cpu_s=(
                    statistics.median(r.controller_cpu_s for r in good) if good else nan
                ),
                host_cpu_s=statistics.median(r.host_cpu_s for r in good) if good else nan,
            )
        )
    return out


def _ratio(value: float, ref: float) -> str:
    if ref != ref or value != value or ref <= 0:  # NaN or nothing to compare with
        return "—"
    return f"{value / ref:.2f}x"


def markdown(summaries: list[Summary]) -> str:
    """One table per (size, N): medians, per-host figures and ratios to fleetwave
    (a ratio above 1 means the tool needed more than fleetwave)."""
    lines: list[str] = []
    cells = sorted({(s.size_mb, s.hosts) for s in summaries})
    for size, hosts in cells:
        rows = [s for s in summaries if (s.size_mb, s.hosts) == (size, hosts)]
        ref = next((s for s in rows if s.tool == REFERENCE), None)
        lines += [
            f"### {size} MB package, N = {hosts}",
            "",
            "| tool | runs ok | wall s | ctrl CPU s | host CPU s | wall/host ms "
            "| CPU/host ms | wall vs fw | ctrl CPU vs fw |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in rows:
            runs = f"{s.runs}" + (f" ({s.failed} failed)" if s.failed else "")
            lines.append(
                f"| {s.tool} | {runs} | {s.wall_s:.2f} | {s.controller_cpu_s:.2f} "
                f"| {s.host_cpu_s:.2f} | {s.per_host_wall_ms:.0f} | {s.per_host_cpu_ms:.0f} "
                f"| {_ratio(s.wall_s, ref.wall_s) if ref else '—'} "
                f"| {_ratio(s.controller_cpu_s, ref.controller_cpu_s) if ref else '—'} |"
            )
        lines.append("")
    return "\n".join(lines)


#: Issue 11's targets for the default mode.
ANSIBLE_FACTOR = 10.0  # ansible-core at N = 50: at least this many times slower
CPU_VS_ASYNCSSH = 1.0  # controller CPU, at most this times the bare asyncssh script's
WALL_VS_ASYNCSSH_N = 100  # wall time at most the bare asyncssh script's, at this N
ROLLBACK_100_S = 3.0  # rolling back 100 hosts, under this


def targets(summaries: list[Summary]) -> list[str]:
    """The issue's targets, each 'met' / 'NOT met' / 'not measured', with the numbers."""
    by = {(s.tool, s.hosts, s.size_mb): s for s in summaries if s.runs}
    sizes = sorted({s.size_mb for s in summaries})
    out: list[str] = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    for size in sizes:
        fw, an = by.get((REFERENCE, 50, size)), by.get(("ansible", 50, size))
        name = f"≥{ANSIBLE_FACTOR:g}x faster than ansible-core at N=50, {size} MB"
        if fw and an:
            ratio = an.wall_s / fw.wall_s
            out.append(
                f"- {name}: {verdict(ratio >= ANSIBLE_FACTOR)} "
                f"(ansible {an.wall_s:.2f} s, fleetwave {fw.wall_s:.2f} s, {ratio:.1f}x)"
            )
        else:
            out.append(f"- {name}: not measured")
    for peer in ("pyinfra", "fabric"):
        for n in (50, 100):  # the cells: N = 50 and 100, 1 MB and 10 MB
            for size in (1, 10):
                fw, p = by.get((REFERENCE, n, size)), by.get((peer, n, size))
                name = f"faster than {peer} at N={n}, {size} MB"
                if fw and p:
                    out.append(
                        f"- {name}: {verdict(fw.wall_s < p.wall_s)} "
                        f"({peer} {p.wall_s:.2f} s, fleetwave {fw.wall_s:.2f} s)"
                    )
                else:
                    out.append(f"- {name}: not measured")
    for s in summaries:
        if s.tool != REFERENCE or not s.runs:
            continue
        floor = by.get(("asyncssh", s.hosts, s.size_mb))
        if floor is None:
            continue
        ratio = s.controller_cpu_s / floor.controller_cpu_s
        out.append(
            f"- controller CPU ≤ {CPU_VS_ASYNCSSH:g}x bare asyncssh, N={s.hosts}, "
            f"{s.size_mb} MB: {verdict(ratio <= CPU_VS_ASYNCSSH)} "
            f"(fleetwave {s.controller_cpu_s:.2f} s, "
            f"asyncssh {floor.controller_cpu_s:.2f} s, {ratio:.2f}x)"
        )
        if s.hosts == WALL_VS_ASYNCSSH_N:
            wall = s.wall_s / floor.wall_s
            out.append(
                f"- wall ≤ 1x bare asyncssh, N={s.hosts}, {s.size_mb} MB: "
                f"{verdict(wall <= 1.0)} (fleetwave {s.wall_s:.2f} s, "
                f"asyncssh {floor.wall_s:.2f} s, {wall:.2f}x)"
            )
    return out
