"""Anomaly detection on the standard metrics: no thresholds to write.

Pure code: :func:`detect` takes a :class:`StageSample` (per-host windows of the
stage's new hosts, its reference hosts over the same window, and the new hosts
before the deployment) and returns a :class:`Verdict` (pass, fail, wait) whose
findings carry n, the statistic, p, the threshold, the effect and its floors.

- ``stats``: Mann-Whitney U, the exact binomial tail, Mann-Kendall/Theil-Sen, Holm;
- ``inputs``: the input records; ``collect``: builds them from agent snapshots;
- ``checks``: one function per check; ``detector``: alpha split and the verdict;
- ``evidence``: the frozen, JSON-ready records.

Settings live in ``fleetwave.config.anomaly``; ``docs/anomaly.md`` is the guide.
"""

from fleetwave.watch.anomaly.collect import host_window
from fleetwave.watch.anomaly.detector import detect, family
from fleetwave.watch.anomaly.evidence import Finding, Outcome, Verdict
from fleetwave.watch.anomaly.inputs import (
    Buckets,
    HostWindow,
    Point,
    Reference,
    StageSample,
    merge_buckets,
)

__all__ = [
    "Buckets",
    "Finding",
    "HostWindow",
    "Outcome",
    "Point",
    "Reference",
    "StageSample",
    "Verdict",
    "detect",
    "family",
    "host_window",
    "merge_buckets",
]
