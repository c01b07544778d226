"""Load-balancer drivers: one module per balancer (``haproxy``, ``command``, ``none``)
behind :class:`LoadBalancer`, whose base owns the drain loop; ``registry`` builds the
one a pipeline names. The rollout uses only the names below."""

from fleetwave.lb.base import DrainTiming, LoadBalancer, ServerRef, ServerState, ServerStatus
from fleetwave.lb.registry import create_load_balancer

__all__ = [
    "DrainTiming",
    "LoadBalancer",
    "ServerRef",
    "ServerState",
    "ServerStatus",
    "create_load_balancer",
]
