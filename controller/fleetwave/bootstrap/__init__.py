"""Agent bootstrap: installing ``fleetwave-agent`` on hosts over SSH with Fabric.

- ``options``: what to install and where, how to log in, what each host reports;
- ``install``: the per-host plan (what each file should hold) and the Fabric shell
  that applies only what differs;
- ``deb``: the Debian-package path; ``resident``: resident mode (drop-in, socat relay);
- ``remote``: running one command on a host.

The command line (``fleetwave agent install``) uses only the names below.
"""

from fleetwave.bootstrap.install import install_agent
from fleetwave.bootstrap.options import (
    DEFAULT_AGENT_ROOT,
    DEFAULT_CONFIG,
    DEFAULT_DROPIN_PATH,
    DEFAULT_KEYS_DIR,
    DEFAULT_UNIT_PATH,
    DEFAULT_VENV,
    AdminAccess,
    BootstrapOptions,
    HostResult,
    HostStatus,
)

__all__ = [
    "DEFAULT_AGENT_ROOT",
    "DEFAULT_CONFIG",
    "DEFAULT_DROPIN_PATH",
    "DEFAULT_KEYS_DIR",
    "DEFAULT_UNIT_PATH",
    "DEFAULT_VENV",
    "AdminAccess",
    "BootstrapOptions",
    "HostResult",
    "HostStatus",
    "install_agent",
]
