"""The agent's read-only reports: ``status`` and ``list`` (CLI, RPC and ``--json``).

They read the root and write nothing in it: ``fleetwave-agent status`` and ``list``
run on a store opened with ``create=False``.
"""

from __future__ import annotations

from fleetwave_agent.release import release_summary
from fleetwave_core.timefmt import iso_utc

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from typing import Any

    from fleetwave_agent.operations import Agent


def status(agent: Agent, *, probe_health: bool = True) -> dict[str, Any]:
    """Current and previous (last good) release, kept and known-bad releases, last
    operation, health now."""
    current = agent.store.current()
    checks: list[dict[str, Any]] = []
    if probe_health and current is not None:
        from fleetwave_agent import health

        for spec in current.manifest.health_checks:
            outcome = health.probe(spec, cwd=current.path, env=agent.health_env(current))
            checks.append(
                {
                    "name": spec.name,
                    "kind": spec.kind,
                    "ok": outcome.ok,
                    "latency_s": round(outcome.latency_s, 4),
                    "detail": outcome.detail,
                }
            )
    releases = list_releases(agent)
    uploads = [{"package_id": i, "bytes": size} for i, _, size in agent.store.uploads()]
    return {
        "root": str(agent.root),
        "current": release_summary(current),
        "previous": release_summary(agent.store.previous()),
        "releases": releases,
        "uploads": uploads,
        "disk_bytes": {
            "releases": sum(r["bytes"] for r in releases),
            "uploads": sum(u["bytes"] for u in uploads),
        },
        "keep_releases": agent.store.keep,
        "bad_releases": [b.to_dict() for b in agent.store.known_bad.all()],
        "lease": agent.lease.status(),
        "last_operation": agent.oplog.last(),
        "health": checks,
        "healthy": all(c["ok"] for c in checks),
    }


def list_releases(agent: Agent) -> list[dict[str, Any]]:
    """Every installed release, oldest install first: its size, install time,
    signed expiry, and whether it is current, previous (what ``rollback`` would
    activate), pinned or known bad."""
    current, previous = agent.store.current(), agent.store.previous()
    pinned = set(agent.store.pins())
    bad = {b.package_id for b in agent.store.known_bad.all()}
    found = []
    for release in agent.store.releases():
        installed = agent.store.installed_at(release)
        expires = release.manifest.expires
        found.append(
            (release_summary(release) or {})
            | {
                "bytes": release.size_bytes,
                "installed_at": installed,
                "installed": iso_utc(installed) if installed is not None else None,
                "expires": iso_utc(expires) if expires is not None else None,
                "current": current is not None and release.path == current.path,
                "previous": previous is not None and release.path == previous.path,
                "pinned": release.package_id in pinned,
                "bad": release.package_id in bad,
            }
        )
    return found
