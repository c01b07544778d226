"""Observation of the controller itself: the events it emits (``events``), their
Prometheus metrics (``metrics``), and the terminal output (``progress`` picks it; the
live view is ``live_model`` + ``live_view``)."""
