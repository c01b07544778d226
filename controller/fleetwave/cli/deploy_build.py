"""What a deployment is built from: its watcher, its gates, and the package check
that runs before any host is touched (used by ``fleetwave deploy | resume | rollback``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fleetwave.errors import ConfigError, PackageRefusedError
from fleetwave.rollout.gates import (
    DEFAULT_GATE_POLL_S,
    AlarmBlockerGate,
    AnomalyGate,
    BakeGate,
    Gates,
    PreprodTestsGate,
    WindowGate,
)
from fleetwave.rollout.watching import Watcher


def build_watcher(pipeline: Any, plan: Any, transport: Any) -> Watcher | None:
    """The watcher of ``pipeline.watch`` (None when the pipeline defines no alarms,
    counts no bake data and has anomaly detection off). Anomaly detection reads the
    agents' snapshots, so it polls them even when the alarms' source is Prometheus."""
    from fleetwave.rollout.anomaly_watch import AnomalyWatch
    from fleetwave.watch.agent_source import AgentSource
    from fleetwave.watch.prometheus_source import PrometheusSource

    detecting = pipeline.anomaly.enabled and bool(pipeline.anomaly.enabled_checks)
    if not pipeline.alarms and not _counts_data(plan) and not detecting:
        return None
    ws = pipeline.watch
    prom = None
    if ws.prometheus is not None:
        p = ws.prometheus
        prom = PrometheusSource(p.url, host_label=p.host_label, timeout_s=p.timeout_s)
    poller = None
    if ws.source != "prometheus" or detecting:
        keep, retention = agent_storage(pipeline, plan, detecting=detecting)
        poller = AgentSource(
            transport,
            plan.hosts(),
            clock=time.time,
            timeout_s=ws.interval_s,
            keep=keep,
            retention=retention,
        )
    if ws.source == "prometheus":
        assert prom is not None  # the loader requires the URL
        source: Any = prom
    else:
        source = poller
    anomaly = None
    if detecting:
        assert poller is not None
        anomaly = AnomalyWatch(plan, pipeline.anomaly, poller.ring, interval_s=ws.interval_s)
    return Watcher(
        plan,
        pipeline.alarms,
        source=source,
        interval_s=ws.interval_s,
        clock=time.time,
        rollback_alarm=pipeline.rollback_alarm,
        onebox_alarm=pipeline.onebox_alarm,
        promql=prom,
        alerts=prom,
        poller=poller,
        anomaly=anomaly,
    )


def agent_storage(pipeline: Any, plan: Any, *, detecting: bool) -> tuple[frozenset[str], Any]:
    """What the agent source stores, from the pipeline: the samples its metric alarms
    and counted bakes read (plus the anomaly detector's when ``detecting``), and a
    retention whose fine tier covers the longest alarm window and whose history covers
    twice the longest bake (``fleetwave.watch.ring.retention_for``)."""
    from fleetwave.config.alarms import AGENT_METRICS, MetricAlarm
    from fleetwave.watch.ring import ANOMALY_SAMPLES, retention_for

    names: set[str] = set()
    longest_alarm = 0.0
    for alarm in pipeline.alarms.values():
        if isinstance(alarm, MetricAlarm) and not alarm.source.promql:
            names.update(n for n in (alarm.source.metric, alarm.source.denominator) if n)
            longest_alarm = max(longest_alarm, alarm.period_s * alarm.evaluation_periods)
    bakes = _bakes(plan)
    names.update(b.metric for b in bakes if b.metric and b.min_datapoints)
    keep = {AGENT_METRICS[n].sample for n in names if n in AGENT_METRICS}
    if detecting:
        keep |= ANOMALY_SAMPLES
    longest_bake = max((max(b.duration_s, b.max_bake_s or 0.0) for b in bakes), default=0.0)
    return frozenset(keep), retention_for(longest_alarm, longest_bake, pipeline.watch.interval_s)


def _bakes(plan: Any) -> list[Any]:
    """Every bake of the plan: each stage's, then each wave's."""
    return [s.bake for s in plan.stages()] + [w.bake_after for w in plan.waves]


def _counts_data(plan: Any) -> bool:
    return any(b.metric and b.min_datapoints for b in _bakes(plan))


def build_gates(pipeline: Any, watcher: Watcher | None, release: str | None) -> Gates:
    """Blockers: the windows, then the alarms; bakes: time and data, the anomaly
    detector's pass, then tests."""
    blockers: list[Any] = [
        WindowGate(
            lambda region, t: pipeline.windows_for(region).is_open(t),
            lambda region, t: pipeline.windows_for(region).next_open(t),
        )
    ]
    if watcher is not None and (pipeline.blockers or pipeline.rollback_alarm):
        blockers.append(AlarmBlockerGate(watcher, pipeline.blockers, pipeline.rollback_alarm))
    poll = watcher.interval_s if watcher is not None else DEFAULT_GATE_POLL_S
    bakes: list[Any] = [BakeGate(watcher, release=release, poll_s=poll)]
    if watcher is not None and watcher.anomaly is not None:
        bakes.append(AnomalyGate(watcher.anomaly))
    bakes.append(PreprodTestsGate())
    return Gates(blockers=tuple(blockers), bake=tuple(bakes))


def release_of(package: Path) -> str | None:
    """The version of the package at ``package``; None when it cannot be read."""
    from fleetwave_agent.package import read_manifest

    try:
        return str(read_manifest(package).version)
    except Exception:  # resume without the package file: counts ignore the release
        return None


def verify_for_deploy(pipeline: Any, package: Path, *, now: float) -> Any:
    """The package's manifest once the agent's complete check passes against the
    pipeline's ``deploy.trust`` keys (signature, revocation, expiry, limits, checksums).

    Runs before anything is touched: a package every agent would refuse must not drain
    hosts one by one and spend the failure budget. Raises ConfigError without
    ``deploy.trust`` and PackageRefusedError (the agent's exit code) for a bad package.
    """
    from fleetwave_agent.errors import PackageError
    from fleetwave_agent.keys import Keyring
    from fleetwave_agent.package import verify_package

    trust = pipeline.deploy.trust
    if not trust:
        raise ConfigError(
            f"{pipeline.path}: deploy.trust names no key: add the public keys packages "
            "are signed with (e.g. `deploy: {trust: [keys/release.pub]}`); without them "
            "a bad package is only refused by each host after it was drained"
        )
    keyring = Keyring.from_paths(trust)
    try:
        return verify_package(package, keyring, now=now)
    except PackageError as exc:
        raise PackageRefusedError(
            f"package refused before touching any host: {exc}", exit_code=exc.exit_code
        ) from exc
