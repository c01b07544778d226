"""Configuration: everything read from files, validated once into typed objects.

- ``schema``: the small DSL every loader validates with (positions in errors, JSON Schema);
- ``spec``: the pipeline file's fields; ``pipeline``: loading with ``extends:``;
- ``topology``: regions, AZs, cells and hosts, and how hosts map to balancer servers;
- ``inventory``: Ansible inventory import; ``windows``: deployment windows and holidays;
- ``alarm_expr``: the ``ALARM("x") OR ...`` expression language; ``settings``: deploy settings.

This package is the bottom layer of the controller: it imports nothing from planning,
the rollout or the backends.
"""

from fleetwave.config.pipeline import BakeRequirement, Pipeline, load_pipeline
from fleetwave.config.topology import HostRef, ServerRef, Topology, load_topology

__all__ = [
    "BakeRequirement",
    "HostRef",
    "Pipeline",
    "ServerRef",
    "Topology",
    "load_pipeline",
    "load_topology",
]
