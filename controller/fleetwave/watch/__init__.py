"""Watching a deployment: metric sources, alarm evaluation, and (next) the watchers
that turn them into engine events.

- ``source``: the seam (:class:`MetricSource`, :class:`MetricQuery`, :class:`Window`,
  :class:`Series`; missing is never 0);
- ``agent_source``: the embedded default, polling each agent's ``snapshot`` RPC;
- ``prometheus_source``: PromQL over Prometheus' HTTP API, and its alerting rules;
- ``alarms``: pure evaluation (CloudWatch's M-of-N and missing-data rules, three-valued
  composites) returning :class:`alarms.Evidence` records for the decision trail.

Alarm *definitions* live in ``fleetwave.config.alarms`` (config is the bottom layer).
The rollout engine never imports this package: watchers reach it as events through
the runner. ``docs/alarms.md`` is the user's guide.
"""
