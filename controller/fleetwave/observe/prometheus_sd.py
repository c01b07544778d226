"""Prometheus ``file_sd`` targets for the agents' exporters, from a topology.

One target group per host, so each carries its own ``host`` label (the label the
``prometheus`` metric source matches on, ``watch.prometheus.host_label``) next to
``region``, ``az`` and, when the host has one, ``cell``. Pre-production hosts carry
``environment`` instead of an AZ of their own region.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

from fleetwave.config.topology import HostRef, Topology
from fleetwave_agent.config import ExporterConfig
from fleetwave_core.fsutil import atomic_write

#: The agent exporter's port when the agent config does not set one.
DEFAULT_EXPORTER_PORT = ExporterConfig().port


def _target(address: str, port: int) -> str:
    try:
        if ipaddress.ip_address(address).version == 6:
            return f"[{address}]:{port}"
    except ValueError:
        pass  # a DNS name
    return f"{address}:{port}"


def _group(host: HostRef, port: int, extra: dict[str, str]) -> dict[str, Any]:
    labels = {"host": host.name, "region": host.region}
    if host.az:
        labels["az"] = host.az
    if host.cell:
        labels["cell"] = host.cell
    labels.update(extra)
    return {"targets": [_target(host.address, port)], "labels": labels}


def prometheus_sd_targets(
    topology: Topology, port: int = DEFAULT_EXPORTER_PORT
) -> list[dict[str, Any]]:
    """The ``file_sd`` document: production hosts in topology order, then each
    pre-production environment's hosts."""
    groups = [_group(h, port, {}) for h in topology.hosts()]
    for env in topology.environments:
        groups.extend(
            _group(h, port, {"environment": env.name, "region": env.region}) for h in env.hosts
        )
    return groups


def write_prometheus_sd(topology: Topology, path: Path, port: int = DEFAULT_EXPORTER_PORT) -> int:
    """Write the targets to ``path`` atomically (Prometheus re-reads the file when it
    changes and must never see half of it); returns the number of targets."""
    groups = prometheus_sd_targets(topology, port)
    atomic_write(path, json.dumps(groups, indent=2) + "\n")
    return len(groups)
