"""Watching a deployment: the place for metric sources, alarm evaluation, anomaly
detection and the watchers that turn them into engine events.

Metric sources are backends (one module each, behind one small interface, like ``lb/``
and ``transport/``); alarm evaluation and anomaly detection are pure functions of metric
series, tested without sockets. The rollout engine never imports this package: watchers
reach it as events through the runner.
"""
