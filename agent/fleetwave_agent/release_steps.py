"""One step of an operation on a release: a hook, or the health checks, each run and
recorded in the operation's record (see :mod:`operations` for their order).

The hook runner and the health checks are imported where they are used (agent
start-up cost).
"""

from __future__ import annotations

from pathlib import Path

from fleetwave_agent.config import AgentConfig
from fleetwave_agent.oplog import OperationLog, OperationRecord
from fleetwave_agent.release import Release

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from fleetwave_agent import health, hooks


def run_hook(
    oplog: OperationLog,
    config: AgentConfig,
    root: Path,
    record: OperationRecord,
    name: str,
    release: Release,
    other: Release | None,
    *,
    raise_on_failure: bool,
    fenced: bool = False,
) -> hooks.HookResult | None:
    """Run ``release``'s hook ``name`` (None if it has none) and record it.

    ``other`` is the release on the other side of the switch; ``fenced`` time-boxes
    the hook with ``stop_timeout_s``. Raises HookError on failure if ``raise_on_failure``.
    """
    spec = release.manifest.hooks.get(name)
    if spec is None:
        return None
    from fleetwave_agent import hooks

    ctx = hooks.HookContext(
        operation=record.op,
        operation_id=record.id,
        root=root,
        name=release.name,
        version=release.version,
        package_id=release.package_id,
        release_dir=release.path,
        previous_version=other.version if other else "",
    )
    log = oplog.hook_log(record, len(record.hooks), name, release.version)
    result = hooks.run_hook(
        name,
        spec,
        ctx,
        log,
        max_output_bytes=config.hook_output_max_bytes,
        timeout_s=config.stop_timeout_s if fenced else None,
    )
    record.hooks.append(result.to_dict())
    if raise_on_failure:
        hooks.raise_for(result)
    return result


def run_health(
    record: OperationRecord, release: Release, env: dict[str, str], *, raise_on_failure: bool
) -> list[health.CheckResult]:
    """Run ``release``'s health checks with ``env`` and record them; raise on failure
    if ``raise_on_failure``."""
    from fleetwave_agent import health

    results = health.run_checks(release.manifest.health_checks, cwd=release.path, env=env)
    record.health = [r.to_dict() for r in results]
    if raise_on_failure:
        health.raise_for(results)
    return results
