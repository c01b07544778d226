"""The decision trail, readable: what ``fleetwave explain`` prints.

Pure functions over the journal's step rows. Every gate verdict (``GateResult``),
alarm change (``AlarmChanged``), anomaly outcome change (``AnomalyJudged``) and
override (``OverrideGranted``) is an engine event in the journal, with the inputs it
rests on; these functions turn them into lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

TRAIL_EVENTS = frozenset(
    ("GateResult", "AlarmChanged", "AnomalyJudged", "OverrideGranted", "RollbackRequested")
)


def trail(steps: Iterable[Any]) -> list[dict[str, Any]]:
    """The decision-trail entries among journal steps, as plain dicts (``--json``)."""
    out = []
    for step in steps:
        if step.kind != "event" or step.name not in TRAIL_EVENTS:
            continue
        out.append({"seq": step.seq, "at": step.at, **step.payload})
    return out


def render(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """One block of lines per entry."""
    lines: list[str] = []
    for e in entries:
        at = _hms(e["at"])
        kind = e.get("type")
        if kind == "GateResult":
            v = e.get("verdict", {})
            why = f": {v['reason']}" if v.get("reason") else ""
            lines.append(f"{at}  {v.get('kind', '?'):<4} {e['purpose']} {e['target']}{why}")
            lines += [f"           {text}" for text in _inputs(v.get("inputs", []))]
        elif kind == "AlarmChanged":
            lines.append(
                f"{at}  alarm {e['alarm']} ({e['role']}) -> {e['state']}: {e.get('reason', '')}"
            )
            lines += [f"           {text}" for text in _evidence(e.get("evidence") or {}, 0)]
        elif kind == "AnomalyJudged":
            lines.append(f"{at}  anomaly {e['stage_id']} -> {e['outcome']}: {e.get('reason', '')}")
            lines += [f"           {text}" for text in anomaly_lines(e.get("evidence") or {})]
        elif kind == "OverrideGranted":
            lines.append(
                f"{at}  OVERRIDE skip {', '.join(e['skip'])}: {e['reason']!r} "
                f"approved by {e['approver']} (run by {e['by']})"
            )
        elif kind == "RollbackRequested":
            lines.append(f"{at}  rollback requested by {e['by']}: {e['reason']}")
    return lines


def _inputs(records: Iterable[Mapping[str, Any]]) -> list[str]:
    out = []
    for r in records:
        gate = r.get("gate")
        if r.get("skipped"):
            out.append(f"{gate}: skipped by override")
        elif gate == "window":
            state = "open" if r.get("open") else f"closed until {r.get('next_open')}"
            out.append(f"window {r.get('region')}: {state}")
        elif gate == "bake":
            text = f"bake: {r.get('elapsed_s')}s of {r.get('duration_s')}s"
            if "datapoints" in r:
                text += (
                    f", {r['datapoints']} of {r['min_datapoints']} {r.get('metric')}"
                    f" served by {r.get('release') or 'the new release'}"
                )
                if r.get("missing"):
                    text += " (no data: counts as 0)"
            if "on_insufficient" in r:
                text += f", max_bake {r['max_bake_s']}s passed: {r['on_insufficient']}"
            out.append(text)
        elif gate == "anomaly":
            v = r.get("verdict") or {}
            text = f"anomaly: {r.get('outcome') or 'no verdict yet'}"
            if r.get("idle"):
                text += " (idle: no request anywhere, nothing to judge)"
            if v.get("reason"):
                text += f": {v['reason']}"
            if "on_insufficient" in r:
                text += f", max_bake {r['max_bake_s']}s passed: {r['on_insufficient']}"
            out.append(text)
        elif gate == "blocker":
            out.append(f"blocker {r.get('expression')}: {r.get('truth')}")
        elif gate == "rollback_alarm":
            out.append(f"rollback alarm {r.get('alarm')}: {r.get('state')}")
        elif gate == "test":
            out.append(f"test {r.get('command')!r}: exit {r.get('exit_status')}")
            tail = str(r.get("output", "")).strip().splitlines()[-3:]
            out += [f"  | {line}" for line in tail]
        elif "alarm" in r:
            out += _evidence(r, 0)
    return out


def anomaly_lines(verdict: Mapping[str, Any]) -> list[str]:
    """The detector's verdict, one line for the split and one per finding: n, the
    statistic, p against its threshold, the effect against its floors."""
    if not verdict:
        return []
    out = [
        f"reference {verdict.get('reference')}, {verdict.get('sensitivity')}, "
        f"alpha {verdict.get('alpha')} over {verdict.get('planned_rounds')} rounds "
        f"(round alpha {_num(verdict.get('round_alpha'))})"
    ]
    for f in verdict.get("findings", []):
        out.append(f"  {_finding(f)}")
        c = f.get("corroboration")
        if c:
            out.append(f"    corroboration: {_finding(c)}")
    return out


def _finding(f: Mapping[str, Any]) -> str:
    text = f"{f.get('check')} ({f.get('basis')}): {f.get('outcome')}"
    if f.get("test"):
        n = f.get("n") or []
        text += f", {f['test']}, n {'/'.join(_num(x) for x in n)}"
        text += f", statistic {_num(f.get('statistic'))}"
        text += f", p {_num(f.get('p'))} vs threshold {_num(f.get('threshold'))}"
        floor = f.get("floor") or {}
        rel = "inf" if f.get("reference_zero") else _num(f.get("relative_effect"))
        text += (
            f", effect {_num(f.get('effect'))} {f.get('unit', '')} (relative {rel};"
            f" floors {_num(floor.get('absolute'))} and {_num(floor.get('relative'))})"
        )
    else:
        text += f": {f.get('reason', '')}"
    return text


def _num(v: Any) -> str:
    return "-" if not isinstance(v, int | float) else f"{v:.3g}"


def _evidence(ev: Mapping[str, Any], depth: int) -> list[str]:
    if not ev or depth > 4:
        return []
    pad = "  " * depth
    text = f"{pad}{ev.get('alarm')} {ev.get('state')}"
    if ev.get("scope"):
        text += f" [{ev['scope']}]"
    text += f": {ev.get('reason', '')}"
    out = [text]
    if ev.get("kind") == "metric" and "m_of_n" in ev:
        m, n = ev["m_of_n"]
        out.append(
            f"{pad}  {ev.get('comparison')} {ev.get('threshold')}, {m} of {n}, "
            f"marks {ev.get('marks')}, values {_nums(ev.get('values', []))}, "
            f"samples {_nums(ev.get('samples', []))}"
        )
    for child in ev.get("children", [])[:20]:
        out += _evidence(child, depth + 1)
    return out


def _nums(values: Iterable[Any]) -> str:
    return "[" + ", ".join("-" if v is None else f"{v:.4g}" for v in values) + "]"


def _hms(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


__all__ = ["TRAIL_EVENTS", "anomaly_lines", "render", "trail"]
