"""Transports: how the controller reaches the agent on a host. One module per transport."""
