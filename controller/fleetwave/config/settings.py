"""Deployment settings a pipeline carries besides its plan: how to reach hosts, which
load balancers front them, and the engine's timeouts. Plain frozen data; the pipeline
loader (``pipeline.py``) builds it, the transport and the engine read it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Bounds of ``deploy.lease_ttl``; the agent refuses leases longer than an hour.
MIN_LEASE_TTL_S = 3.0
MAX_LEASE_TTL_S = 3600.0


@dataclass(frozen=True)
class SshSettings:
    user: str = "fleetwave"
    port: int = 22
    identity: Path | None = None  # private key; None: the SSH agent or default keys
    known_hosts: Path | None = None  # strict checking always; None: ~/.ssh/known_hosts
    ca_keys: tuple[Path, ...] = ()  # host certificate authorities (@cert-authority)
    connect_timeout_s: float = 10.0
    # From starting the agent to its hello: Python start-up on a busy host, not the network.
    agent_start_timeout_s: float = 30.0
    command_timeout_s: float = 900.0  # one agent call (install includes hooks + health)
    idle_timeout_s: float = 300.0
    concurrency: int = 100  # hosts connected to at once
    connect_retries: int = 4  # sshd drops handshakes past MaxStartups; retried with backoff
    agent_command: str = "fleetwave-agent rpc"


@dataclass(frozen=True)
class LoadBalancerSettings:
    """One named balancer. ``driver`` picks the module under ``fleetwave.lb``; the
    driver validates its own ``options`` (e.g. haproxy: ``socket`` path or ``tcp``)."""

    name: str
    driver: str  # "haproxy" | "command" | "none"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeploySettings:
    ssh: SshSettings = field(default_factory=SshSettings)
    load_balancers: tuple[LoadBalancerSettings, ...] = ()
    drain_timeout_s: float = 60.0  # wait for sessions to reach 0, then force maint
    state_dir: Path = Path(
        ".fleetwave"
    )  # journal, locks, event log (relative: to the pipeline file)
    # Public keys a package must be signed by (the agent's keyring format); ``deploy``
    # refuses to start without them. Relative paths: to the file that names them.
    trust: tuple[Path, ...] = ()
    # The host lease (``rollout/lease.py``): how long a host stays fenced for this
    # deployment after the controller's last renewal (renewed every third of it).
    lease_ttl_s: float = 120.0
