"""fleetwave's host agent: verifies, installs and rolls back signed release packages.

The agent is self-contained (it never imports the controller), so the pieces both
sides share, the package format and the root error, live here.
"""

__version__ = "0.1.0"
