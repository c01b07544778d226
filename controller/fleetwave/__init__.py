"""fleetwave's controller: plans and runs safe, hands-off deployments to fleets of VMs."""

__version__ = "0.1.0"
