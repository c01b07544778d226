"""The namespace test fleet used by every e2e test: hosts with real sshd, a real
HAProxy and a real Prometheus. See :class:`Fleet` and :class:`LabConfig`."""

from ._proc import LabError, free_port, wait_until
from .fleet import AGENT_PATH, Fleet, LabConfig, ensure_user, lab_unavailable_reason
from .haproxy import Backend, LabHaproxy
from .host import LabHost
from .load import Failure, LoadReport, SteadyLoad
from .prometheus import LabPrometheus

__all__ = [
    "AGENT_PATH",
    "Backend",
    "Failure",
    "Fleet",
    "LabConfig",
    "LabError",
    "LabHaproxy",
    "LabHost",
    "LabPrometheus",
    "LoadReport",
    "SteadyLoad",
    "ensure_user",
    "free_port",
    "lab_unavailable_reason",
    "wait_until",
]
