"""Low-level pieces both fleetwave packages use: the root error and the exit-code table,
YAML with positions, durations, durable file writes, and the CLI error path.

The agent installs this package on every host, so it stays small and imports nothing
from the controller (``fleetwave``) or its dependencies.
"""
