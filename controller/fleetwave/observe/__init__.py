"""Observation of the controller itself: the events it emits (``events``), their
Prometheus metrics (``metrics``) and the terminal progress view (``progress``)."""
