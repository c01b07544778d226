"""Pipelines as code: load a pipeline file, follow its ``extends:`` chain, validate it
once into typed, frozen objects.

Merge rules for ``extends:`` (the parent path is relative to the child file; parents may
extend further parents): mappings merge key by key, recursively; lists and scalars in
the child replace the parent's; an explicit ``null`` resets a key to its default. Paths
(``topology``, ``deploy.ssh.identity``, ...) are relative to the file that wrote them,
except ``deploy.state_dir``, which is relative to the pipeline file being loaded (each
pipeline keeps its own journal). Every error names the file and line the offending key
came from, even after merging, plus the key path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetwave.config import alarm_expr
from fleetwave.config.alarms import (
    AlarmDef,
    OnInsufficient,
    WatchSettings,
    build_alarms,
    build_watch,
    check_references,
    unknown_alarm,
)
from fleetwave.config.anomaly import AnomalySettings, build_anomaly
from fleetwave.config.spec import PIPELINE_SPEC, OverrideTarget, Unit
from fleetwave_core.errors import ConfigError
from fleetwave_core.yamlsrc import join_path, load_yaml, require_mapping

__all__ = [
    "OneboxPolicy",
    "OverridePolicy",
    "OverrideTarget",
    "Pipeline",
    "PreprodSpec",
    "RollingPolicy",
    "Unit",
    "WaveSpec",
    "default_wave_bake_s",
    "load_pipeline",
    "pipeline_files",
]
from fleetwave.config.schema import (
    Locator,
    Quantity,
)
from fleetwave.config.settings import (
    MAX_LEASE_TTL_S,
    MIN_LEASE_TTL_S,
    DeploySettings,
    LoadBalancerSettings,
    SshSettings,
)
from fleetwave.config.topology import Topology, load_topology
from fleetwave.config.windows import (
    ALWAYS,
    DAY_MINUTES,
    Exclusion,
    MinuteRange,
    WindowPolicy,
    country_holidays,
    parse_days,
)


@dataclass(frozen=True)
class BakeRequirement:
    """A stage is baked once ``duration_s`` has passed AND, when ``metric`` is set,
    at least ``min_datapoints`` samples of it have been observed in the stage's scope,
    served by the new release. If ``max_bake_s`` passes first, ``on_insufficient``
    decides (hold: keep waiting and say so; rollback; proceed)."""

    duration_s: float = 0.0
    min_datapoints: int = 0
    metric: str | None = None
    max_bake_s: float | None = None  # None: wait for the data as long as it takes
    on_insufficient: OnInsufficient = OnInsufficient.HOLD


# Defaults follow "Automating safe, hands-off deployments" (one source of truth).
DEFAULT_ONEBOX_BAKE_S = 3600.0  # at least 1 h after each one-box
DEFAULT_STAGE_BAKE_S = 3600.0  # after each AZ or cell
DEFAULT_BATCH_ESTIMATE_S = 300.0  # plan-time guess for one batch: drain+install+checks
DEFAULT_MAX_BATCH = Quantity(10.0, percent=True)
DEFAULT_MIN_HEALTHY = Quantity(50.0, percent=True)
DEFAULT_ROLLBACK_BATCH = Quantity(33.0, percent=True)
DEFAULT_FAILURE_BUDGET = Quantity(0.0, percent=False)
REST = "*"  # in a wave's regions: every region no earlier wave names


def default_wave_bake_s(index: int) -> float:
    """Bake after wave ``index``: 12 h after wave 1, 4 h after wave 2, then 2 h."""
    if index <= 0:
        return 0.0
    return {1: 12 * 3600.0, 2: 4 * 3600.0}.get(index, 2 * 3600.0)


@dataclass(frozen=True)
class RollingPolicy:
    max_batch: Quantity = DEFAULT_MAX_BATCH  # most hosts of a stage out at once
    min_healthy: Quantity = DEFAULT_MIN_HEALTHY  # fewest hosts of a stage serving
    rollback_batch: Quantity = DEFAULT_ROLLBACK_BATCH
    failure_budget: Quantity = DEFAULT_FAILURE_BUDGET


@dataclass(frozen=True)
class OneboxPolicy:
    enabled: bool = True
    bake: BakeRequirement = field(
        default_factory=lambda: BakeRequirement(duration_s=DEFAULT_ONEBOX_BAKE_S)
    )
    failure_budget: Quantity = DEFAULT_FAILURE_BUDGET


@dataclass(frozen=True)
class WaveSpec:
    index: int  # 1-based
    name: str
    regions: tuple[str, ...]  # "*" already expanded
    bake: BakeRequirement  # after the whole wave
    stage_bake: BakeRequirement  # after each AZ or cell
    rolling: RollingPolicy
    onebox: OneboxPolicy


@dataclass(frozen=True)
class PreprodSpec:
    environment: str  # a topology environment (alpha, beta, gamma, ...)
    tests: tuple[str, ...]
    onebox: bool
    bake: BakeRequirement
    rolling: RollingPolicy


@dataclass(frozen=True)
class OverridePolicy:
    """What an emergency override may skip; a reason and an approver are required."""

    allow: frozenset[OverrideTarget] = frozenset()
    require_reason: bool = True
    require_approver: bool = True
    approvers: tuple[str, ...] = ()  # empty: anyone may approve

    def allows(self, target: OverrideTarget) -> bool:
        return target in self.allow


@dataclass(frozen=True)
class Pipeline:
    path: Path
    name: str
    service: str
    environment: str
    topology: Topology
    deploy: DeploySettings
    unit: Unit
    rolling: RollingPolicy
    onebox: OneboxPolicy
    waves: tuple[WaveSpec, ...]
    preprod: tuple[PreprodSpec, ...] = ()
    preprod_bake: BakeRequirement = field(default_factory=BakeRequirement)
    blockers: tuple[str, ...] = ()  # canonical alarm expressions, checked before stages
    override: OverridePolicy = field(default_factory=OverridePolicy)
    batch_estimate_s: float = DEFAULT_BATCH_ESTIMATE_S
    windows: Mapping[str, WindowPolicy] = field(default_factory=dict)  # region/env -> policy
    alarms: Mapping[str, AlarmDef] = field(default_factory=dict)  # by name
    rollback_alarm: str | None = None  # its ALARM rolls the deployment back
    onebox_alarm: str | None = None  # watched as well while a one-box stage runs
    post_deploy_watch_s: float = 0.0  # rollback alarm still watched after the last stage
    watch: WatchSettings = field(default_factory=WatchSettings)
    anomaly: AnomalySettings = field(default_factory=AnomalySettings)  # on by default

    def windows_for(self, region: str) -> WindowPolicy:
        """The time windows of a region or pre-production environment."""
        try:
            return self.windows[region]
        except KeyError:
            raise KeyError(f"no region or environment {region!r} in {self.name}") from None


# ---------------------------------------------------------------- loading and merging


def load_pipeline(path: Path | str) -> Pipeline:
    """Load, merge (``extends:``) and validate a pipeline and the topology it names.

    Raises ConfigError naming file:line and key path for the first problem found.
    """
    path = Path(path)
    data, loc = load_merged(path)
    checked = PIPELINE_SPEC.check(data, "", loc)
    return _build(path, checked, loc)


def load_merged(path: Path) -> tuple[dict[str, Any], Locator]:
    """The pipeline's data after following ``extends:``, with each key's source."""
    return _load_chain(path, [])


def pipeline_files(path: Path | str) -> tuple[Path, ...]:
    """The files a pipeline is made of: ``path``, then each parent of its ``extends:``
    chain, found exactly as :func:`load_pipeline` finds them (a saved plan digests them)."""
    files: list[Path] = []
    _load_chain(Path(path), [], files)
    return tuple(files)


def _load_chain(
    path: Path, chain: list[Path], files: list[Path] | None = None
) -> tuple[dict[str, Any], Locator]:
    if files is not None:
        files.append(path)
    doc = load_yaml(path)
    loc = Locator.of(doc)
    # A parent named by `extends:` is read like any pipeline file: a regular file under
    # the size limit, and if it is no pipeline at all, the error quotes none of it.
    data = require_mapping(doc, "pipeline", [f.name for f in PIPELINE_SPEC.fields])
    parent = data.get("extends")
    if parent is None:
        return {k: v for k, v in data.items() if k != "extends"}, loc
    if not isinstance(parent, str) or not parent:
        raise loc.error("extends", "expected the parent pipeline's file path")
    parent_path = Path(os.path.normpath(path.parent / parent))
    resolved = [p.resolve() for p in (*chain, path)]
    if parent_path.resolve() in resolved:
        names = " -> ".join(str(p) for p in (*chain, path, parent_path))
        raise loc.error("extends", f"extends loop: {names}")
    if not parent_path.exists():
        raise loc.error("extends", f"parent pipeline {parent_path} not found")
    base, base_loc = _load_chain(parent_path, [*chain, path], files)
    merged = _merge(base, {k: v for k, v in data.items() if k != "extends"}, base_loc, loc, "")
    base_loc.fallback = loc.fallback
    return merged, base_loc


def _merge(base: Any, over: Any, merged_loc: Locator, over_loc: Locator, path: str) -> Any:
    """Deep-merge ``over`` into ``base``; ``merged_loc`` follows each key to its file."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            child = join_path(path, key)
            if key in out:
                out[key] = _merge(out[key], value, merged_loc, over_loc, child)
                if child in over_loc.positions:
                    merged_loc.positions[child] = over_loc.positions[child]
            else:
                out[key] = value
                merged_loc.replace_subtree(child, over_loc)
        return out
    merged_loc.replace_subtree(path, over_loc)
    return over


# ---------------------------------------------------------------- building typed objects


def _bake(
    raw: Mapping[str, Any] | None, default: BakeRequirement, path: str, loc: Locator
) -> BakeRequirement:
    if raw is None:
        return default
    bake = BakeRequirement(
        duration_s=raw.get("time", default.duration_s),
        min_datapoints=raw.get(
            "min_datapoints", default.min_datapoints if "metric" not in raw else 0
        ),
        metric=raw.get("metric", default.metric),
        max_bake_s=raw.get("max_bake", default.max_bake_s),
        on_insufficient=OnInsufficient(raw.get("on_insufficient", default.on_insufficient.value)),
    )
    if bake.min_datapoints and not bake.metric:
        raise loc.error(join_path(path, "min_datapoints"), "min_datapoints needs a metric to count")
    if bake.max_bake_s is not None and bake.max_bake_s < bake.duration_s:
        raise loc.error(join_path(path, "max_bake"), "max_bake is shorter than the bake's own time")
    if ("max_bake" in raw or "on_insufficient" in raw) and not bake.min_datapoints:
        key = "max_bake" if "max_bake" in raw else "on_insufficient"
        raise loc.error(join_path(path, key), f"{key} needs min_datapoints to wait for")
    return bake


def _rolling(raw: Mapping[str, Any] | None, default: RollingPolicy) -> RollingPolicy:
    if raw is None:
        return default
    return RollingPolicy(
        max_batch=raw.get("max_batch", default.max_batch),
        min_healthy=raw.get("min_healthy", default.min_healthy),
        rollback_batch=raw.get("rollback_batch", default.rollback_batch),
        failure_budget=raw.get("failure_budget", default.failure_budget),
    )


def _onebox(
    raw: Mapping[str, Any] | None, default: OneboxPolicy, path: str, loc: Locator
) -> OneboxPolicy:
    if raw is None:
        return default
    return OneboxPolicy(
        enabled=raw.get("enabled", default.enabled),
        bake=_bake(raw.get("bake"), default.bake, join_path(path, "bake"), loc),
        failure_budget=raw.get("failure_budget", default.failure_budget),
    )


def _relative(value: str, key_path: str, loc: Locator) -> Path:
    """A path from the config, relative to the file that wrote ``key_path``."""
    candidate = Path(value).expanduser()
    if candidate.is_absolute():
        return candidate
    return Path(os.path.normpath(Path(loc.file_of(key_path)).parent / candidate))


resolve_path = _relative  # public: ``fleetwave validate`` resolves paths the same way


def _deploy(raw: Mapping[str, Any], path: Path, loc: Locator) -> DeploySettings:
    base = SshSettings()
    ssh = raw.get("ssh", {})
    settings = SshSettings(
        user=ssh.get("user", base.user),
        port=ssh.get("port", base.port),
        identity=_relative(ssh["identity"], "deploy.ssh.identity", loc)
        if "identity" in ssh
        else None,
        known_hosts=(
            _relative(ssh["known_hosts"], "deploy.ssh.known_hosts", loc)
            if "known_hosts" in ssh
            else None
        ),
        ca_keys=tuple(
            _relative(k, f"deploy.ssh.ca_keys[{i}]", loc)
            for i, k in enumerate(ssh.get("ca_keys", []))
        ),
        connect_timeout_s=ssh.get("connect_timeout", base.connect_timeout_s),
        command_timeout_s=ssh.get("command_timeout", base.command_timeout_s),
        idle_timeout_s=ssh.get("idle_timeout", base.idle_timeout_s),
        agent_start_timeout_s=ssh.get("agent_start_timeout", base.agent_start_timeout_s),
        concurrency=ssh.get("concurrency", base.concurrency),
        connect_retries=ssh.get("connect_retries", base.connect_retries),
        agent_command=ssh.get("agent_command", base.agent_command),
    )
    balancers: list[LoadBalancerSettings] = []
    for i, lb in enumerate(raw.get("load_balancers", [])):
        if any(b.name == lb["name"] for b in balancers):
            raise loc.error(
                f"deploy.load_balancers[{i}].name", f"duplicate balancer {lb['name']!r}"
            )
        balancers.append(
            LoadBalancerSettings(lb["name"], lb["driver"], dict(lb.get("options", {})))
        )
    defaults = DeploySettings()
    lease_ttl = raw.get("lease_ttl", defaults.lease_ttl_s)
    if not MIN_LEASE_TTL_S <= lease_ttl <= MAX_LEASE_TTL_S:
        raise loc.error(
            "deploy.lease_ttl",
            f"lease_ttl must be between {MIN_LEASE_TTL_S:g}s and {MAX_LEASE_TTL_S:g}s"
            f" (the agent's limit), got {lease_ttl:g}s",
        )
    state_dir = Path(raw["state_dir"]).expanduser() if "state_dir" in raw else defaults.state_dir
    if not state_dir.is_absolute():
        state_dir = path.parent / state_dir
    return DeploySettings(
        ssh=settings,
        load_balancers=tuple(balancers),
        drain_timeout_s=raw.get("drain_timeout", defaults.drain_timeout_s),
        state_dir=state_dir,
        trust=tuple(
            _relative(k, f"deploy.trust[{i}]", loc) for i, k in enumerate(raw.get("trust", []))
        ),
        lease_ttl_s=lease_ttl,
    )


def _window(raw: Mapping[str, Any], timezone: str, path: str, loc: Locator) -> WindowPolicy:
    def hours(value: Any) -> tuple[MinuteRange, ...]:
        return (value,) if isinstance(value, MinuteRange) else tuple(value)

    exclusions: list[Exclusion] = []
    for i, ex in enumerate(raw.get("exclude", [])):
        where = join_path(join_path(path, "exclude"), i)
        if "hours" in ex and "after" in ex:
            raise loc.error(where, "give either hours or after, not both")
        cut = hours(ex["hours"]) if "hours" in ex else ALWAYS
        if "after" in ex:
            cut = (MinuteRange(ex["after"], DAY_MINUTES),)
        exclusions.append(
            Exclusion(_days(ex.get("days", ["all"]), join_path(where, "days"), loc), cut)
        )
    holidays = raw.get("holidays", {})
    country = holidays.get("country")
    subdivision = holidays.get("subdivision")
    if subdivision and not country:
        raise loc.error(join_path(path, "holidays.subdivision"), "a subdivision needs a country")
    if country:
        try:
            country_holidays(country, subdivision, 2025)
        except ValueError as exc:
            raise loc.error(
                join_path(path, "holidays"), f"unknown holiday calendar: {exc}"
            ) from None
    return WindowPolicy(
        timezone=timezone,
        days=_days(raw.get("days", ["all"]), join_path(path, "days"), loc),
        hours=hours(raw.get("hours", ALWAYS)),
        exclusions=tuple(exclusions),
        holiday_dates=frozenset(holidays.get("dates", [])),
        holiday_country=country,
        holiday_subdivision=subdivision,
    )


def _days(names: list[str], path: str, loc: Locator) -> frozenset[int]:
    try:
        return parse_days(names)
    except ValueError as exc:
        raise loc.error(path, str(exc)) from None


def _build(path: Path, raw: dict[str, Any], loc: Locator) -> Pipeline:
    topology_path = _relative(raw["topology"], "topology", loc)
    try:
        topology = load_topology(topology_path)
    except ConfigError as exc:
        if exc.message == "file not found":
            raise loc.error("topology", f"topology file {topology_path} not found") from None
        raise
    deploy = _deploy(raw.get("deploy", {}), path, loc)
    rolling = _rolling(raw.get("rolling"), RollingPolicy())
    onebox = _onebox(raw.get("onebox"), OneboxPolicy(), "onebox", loc)
    stage_bake = _bake(
        raw.get("stage_bake"), BakeRequirement(DEFAULT_STAGE_BAKE_S), "stage_bake", loc
    )
    waves = _waves(raw["waves"], topology, rolling, onebox, stage_bake, loc)
    preprod_raw = raw.get("preprod", {})
    preprod: list[PreprodSpec] = []
    env_names = [e.name for e in topology.environments]
    for i, stage in enumerate(preprod_raw.get("stages", [])):
        where = f"preprod.stages[{i}]"
        if stage["environment"] not in env_names:
            raise loc.error(
                f"{where}.environment",
                f"unknown environment {stage['environment']!r} (topology has: "
                f"{', '.join(env_names) or 'none'})",
            )
        if any(p.environment == stage["environment"] for p in preprod):
            raise loc.error(f"{where}.environment", "environment listed twice")
        preprod.append(
            PreprodSpec(
                environment=stage["environment"],
                tests=tuple(stage.get("tests", [])),
                onebox=stage.get("onebox", False),
                bake=_bake(stage.get("bake"), BakeRequirement(), f"{where}.bake", loc),
                rolling=_rolling(stage.get("rolling"), rolling),
            )
        )
    windows = _windows(raw.get("windows", {}), topology, loc)
    _check_balancers(topology, deploy)
    override = raw.get("override", {})
    watch = build_watch(raw.get("watch", {}), loc)
    alarms = build_alarms(raw.get("alarms", []), watch, loc)
    for i, expr in enumerate(raw.get("blockers", [])):
        check_references(expr, alarms, f"blockers[{i}]", loc)
    for key in ("rollback_alarm", "onebox_alarm"):
        if key in raw and raw[key] not in alarms:
            raise loc.error(key, unknown_alarm(raw[key], alarms))
    return Pipeline(
        path=path,
        name=raw["name"],
        service=raw["service"],
        environment=raw.get("environment", "production"),
        topology=topology,
        deploy=deploy,
        unit=Unit(raw.get("unit", "az")),
        rolling=rolling,
        onebox=onebox,
        waves=waves,
        preprod=tuple(preprod),
        preprod_bake=_bake(preprod_raw.get("bake"), BakeRequirement(), "preprod.bake", loc),
        blockers=tuple(alarm_expr.render(e) for e in raw.get("blockers", [])),
        override=OverridePolicy(
            allow=frozenset(OverrideTarget(t) for t in override.get("allow", [])),
            require_reason=override.get("require_reason", True),
            require_approver=override.get("require_approver", True),
            approvers=tuple(override.get("approvers", [])),
        ),
        batch_estimate_s=raw.get("batch_estimate", DEFAULT_BATCH_ESTIMATE_S),
        windows=windows,
        alarms=alarms,
        rollback_alarm=raw.get("rollback_alarm"),
        onebox_alarm=raw.get("onebox_alarm"),
        post_deploy_watch_s=raw.get("post_deploy_watch", 0.0),
        watch=watch,
        anomaly=build_anomaly(raw.get("anomaly"), loc),
    )


def _waves(
    raw_waves: list[dict[str, Any]],
    topology: Topology,
    rolling: RollingPolicy,
    onebox: OneboxPolicy,
    stage_bake: BakeRequirement,
    loc: Locator,
) -> tuple[WaveSpec, ...]:
    known = topology.region_names()
    claimed: dict[str, str] = {}
    waves: list[WaveSpec] = []
    for i, wave in enumerate(raw_waves):
        where = f"waves[{i}]"
        regions: list[str] = []
        for j, name in enumerate(wave["regions"]):
            rpath = f"{where}.regions[{j}]"
            if name == REST:
                if i != len(raw_waves) - 1:
                    raise loc.error(
                        rpath, f"{REST!r} (every remaining region) only fits the last wave"
                    )
                regions.extend(r for r in known if r not in claimed and r not in regions)
                continue
            if name not in known:
                import difflib

                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise loc.error(rpath, f"unknown region {name!r}{hint}")
            if name in claimed or name in regions:
                raise loc.error(
                    rpath, f"region {name!r} already deployed by {claimed.get(name, where)}"
                )
            regions.append(name)
        if not regions:
            raise loc.error(f"{where}.regions", "no region left for this wave")
        label = wave.get("name", f"wave-{i + 1}")
        for r in regions:
            claimed[r] = label
        waves.append(
            WaveSpec(
                index=i + 1,
                name=label,
                regions=tuple(regions),
                bake=_bake(
                    wave.get("bake"),
                    BakeRequirement(default_wave_bake_s(i + 1)),
                    f"{where}.bake",
                    loc,
                ),
                stage_bake=_bake(wave.get("stage_bake"), stage_bake, f"{where}.stage_bake", loc),
                rolling=_rolling(wave.get("rolling"), rolling),
                onebox=_onebox(wave.get("onebox"), onebox, f"{where}.onebox", loc),
            )
        )
    missing = [r for r in known if r not in claimed]
    if missing:
        raise loc.error(
            "waves",
            f"regions in no wave: {', '.join(missing)} (list them, or end the last wave with '*')",
        )
    return tuple(waves)


def _windows(raw: Mapping[str, Any], topology: Topology, loc: Locator) -> dict[str, WindowPolicy]:
    default = raw.get("default", {})
    overrides = raw.get("regions", {})
    zones = {r.name: r.timezone for r in topology.regions}
    zones.update({e.name: e.timezone for e in topology.environments})
    for name in overrides:
        if name not in zones:
            raise loc.error(f"windows.regions.{name}", f"unknown region or environment {name!r}")
    out: dict[str, WindowPolicy] = {}
    for name, zone in zones.items():
        # A region's entry replaces the default's keys it names, and keeps the others.
        merged = {**default, **overrides.get(name, {})}
        where = f"windows.regions.{name}" if name in overrides else "windows.default"
        out[name] = _window(merged, zone, where, loc)
    return out


def _check_balancers(topology: Topology, deploy: DeploySettings) -> None:
    names = {b.name for b in deploy.load_balancers}
    hosts = topology.hosts() + [h for e in topology.environments for h in e.hosts]
    for host in hosts:
        if host.lb is not None and host.lb.lb not in names:
            raise ConfigError(
                f"host {host.name} is behind balancer {host.lb.lb!r}, which deploy.load_balancers "
                f"does not define (defined: {', '.join(sorted(names)) or 'none'})",
                source=topology.where(host.name),
            )
