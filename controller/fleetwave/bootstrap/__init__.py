"""Agent bootstrap: installing ``fleetwave-agent`` on hosts over SSH with Fabric."""
