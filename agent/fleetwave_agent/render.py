"""What ``fleetwave-agent`` prints without ``--json``: pure functions of the result dicts.

The dicts are the ones ``--json`` prints (and the RPC returns), so the text and the JSON
never disagree; nothing here reads the root.
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from typing import Any

_VERBS = {
    "install": "installed",
    "activate": "activated",
    "rollback": "rolled back to",
    "stop": "stopped",
    "start": "started",
}


def describe(record: dict[str, Any]) -> str:
    """One line for an operation record: ``installed 2 (was 1) in 0.42s``."""
    if record.get("outcome") == "unchanged":
        return f"{record.get('version')} is already current; nothing to do"
    was = record.get("previous_version")
    text = f"{_VERBS.get(record['op'], record['op'])} {record.get('version')}"
    text += f" (was {was})" if was else ""
    return text + f" in {record.get('duration_s', 0):.2f}s"


def size(n: int) -> str:
    """Bytes for people: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def lease_line(lease: dict[str, Any] | None) -> str:
    """``lease      deployment D (controller C) until 2026-12-01T10:00:00Z``."""
    if lease is None:
        return "lease      -"
    state = " (expired)" if lease.get("expired") else ""
    return (
        f"lease      deployment {lease['deployment_id']} (controller {lease['controller_id']}) "
        f"until {lease['expires']}{state}"
    )


def marks(release: dict[str, Any]) -> list[str]:
    """The marks of a ``list_releases`` entry, in a fixed order."""
    return [m for m in ("current", "previous", "pinned", "bad") if release.get(m)]


def _release_line(label: str, rel: dict[str, Any] | None) -> str:
    if rel is None:
        return f"{label:<10} -"
    return f"{label:<10} {rel['name']} {rel['version']}  ({rel['package_id'][:12]})"


def status_text(data: dict[str, Any]) -> str:
    """``fleetwave-agent status``: one ``label  value`` line per fact."""
    lines = [
        f"root       {data['root']}",
        _release_line("current", data["current"]),
        _release_line("previous", data["previous"]),
    ]
    for rel in data["releases"]:
        pin = "  pinned" if rel["pinned"] else ""
        lines.append(
            f"release    {rel['name']} {rel['version']}  ({rel['package_id'][:12]})  "
            f"{size(rel['bytes'])}{pin}"
        )
    disk = data["disk_bytes"]
    lines.append(
        f"disk       releases {size(disk['releases'])} ({len(data['releases'])} kept, "
        f"keep_releases {data['keep_releases']}), uploads {size(disk['uploads'])}"
    )
    for bad in data["bad_releases"]:
        lines.append(
            f"bad        {bad['name']} {bad['version']}  ({bad['package_id'][:12]}): "
            f"failed in {bad['op']}: {bad['reason']}"
        )
    lines.append(lease_line(data["lease"]))
    last = data["last_operation"]
    if last:
        extra = f" (rolled back: {last['reason']})" if last.get("rolled_back") else ""
        if last.get("outcome") == "failed":
            extra = f" ({last.get('reason')})"
        version = f" {last['version']}" if last.get("version") else ""
        lines.append(f"last op    {last['op']}{version}: {last['outcome']}{extra}")
    for check in data["health"]:
        state = "ok" if check["ok"] else "FAILING"
        lines.append(f"health     {check['name']}: {state} ({check['detail']})")
    return "\n".join(lines)


def list_text(releases: list[dict[str, Any]]) -> str:
    """``fleetwave-agent list``: a table, oldest install first."""
    if not releases:
        return "no releases installed"
    header = ("NAME", "VERSION", "PACKAGE ID", "INSTALLED", "SIZE", "MARKS")
    rows = [header] + [
        (
            r["name"],
            r["version"],
            r["package_id"][:12],
            r["installed"] or "-",
            size(r["bytes"]),
            ", ".join(marks(r)),
        )
        for r in releases
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in rows
    )


def gc_text(data: dict[str, Any]) -> str:
    """``fleetwave-agent gc``: what was removed and the bytes freed."""
    removed = [f"{r['name']} {r['version']}" for r in data["removed"]]
    removed += [f"upload {i[:12]}" for i in data["removed_uploads"]]
    if not removed:
        return "nothing to remove"
    return f"removed {', '.join(removed)}; freed {size(data['freed_bytes'])}"
