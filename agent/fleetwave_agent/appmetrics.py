"""The app's request metrics and log errors, read on scrape.

Sources (configured under ``app`` in the agent config):

* the app's own Prometheus endpoint, parsed with ``prometheus_client.parser``;
* its access log, tailed incrementally (rotation and truncation handled);
* its error log, counting lines that match a pattern.

Logs are read incrementally from where the last scrape stopped, at most
:data:`MAX_READ_BYTES` per scrape, so a scrape never re-reads a file and a huge
backlog is caught up over several scrapes instead of stalling one.
"""

from __future__ import annotations

import bisect
import os
import re
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families

from fleetwave_agent.config import AccessLogSource, LogErrorSource, PrometheusSource

MAX_READ_BYTES = 4 << 20
#: Latency buckets (seconds) for request durations derived from an access log.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LogTailer:
    """Returns the complete lines appended to a file since the last call.

    Starts at the end of the file that exists when first opened (history is not
    replayed); follows rotation (a new inode: the rest of the old file is read first,
    then the new one from its start) and truncation (reads again from the start).
    """

    def __init__(self, path: Path, *, from_start: bool = False) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None
        self._ino: int | None = None
        self._partial = b""
        self._from_start = from_start

    def read_lines(self) -> list[str]:
        lines: list[str] = []
        try:
            st = os.stat(self.path)
        except OSError:
            st = None
        if self._fh is not None and (st is None or st.st_ino != self._ino):
            lines += self._read(self._fh)  # rotated away: finish the old file first
            self._close()
        if st is None:
            return lines
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")  # noqa: SIM115 - held open across calls
            except OSError:
                return lines
            self._ino = os.fstat(self._fh.fileno()).st_ino
            if not self._from_start:
                self._fh.seek(0, os.SEEK_END)
            self._from_start = True  # a file that appears later is new: read it all
        elif st.st_size < self._fh.tell():
            self._fh.seek(0)  # truncated in place (copytruncate)
            self._partial = b""
        return lines + self._read(self._fh)

    def _read(self, fh: IO[bytes]) -> list[str]:
        data = self._partial + fh.read(MAX_READ_BYTES)
        *complete, self._partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete]

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh, self._ino, self._partial = None, None, b""

    def close(self) -> None:
        self._close()


class RequestStats:
    """Cumulative request count, error count and latency histogram."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.bucket_counts = [0] * (len(BUCKETS) + 1)  # last one is +Inf
        self.duration_sum = 0.0
        self.observed = 0

    def observe(self, status: int, duration_s: float | None) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1
        if duration_s is not None:
            self.bucket_counts[bisect.bisect_left(BUCKETS, duration_s)] += 1
            self.duration_sum += duration_s
            self.observed += 1

    def cumulative_buckets(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.bucket_counts, strict=True):
            total += count
            out.append((bound, float(total)))
        return out


def _request_families(
    requests: float, errors: float, buckets: list[tuple[str, float]] | None, dsum: float
) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "fleetwave_agent_app_requests", "Requests the app served.", value=requests
    )
    yield CounterMetricFamily(
        "fleetwave_agent_app_request_errors",
        "Requests the app answered with a 5xx status.",
        value=errors,
    )
    if buckets is not None:
        yield HistogramMetricFamily(
            "fleetwave_agent_app_request_duration_seconds",
            "Latency of the app's requests.",
            buckets=buckets,
            sum_value=dsum,
        )


class AccessLogCollector:
    """Request metrics derived from an access log."""

    def __init__(self, source: AccessLogSource) -> None:
        self.source = source
        self.tailer = LogTailer(source.path)
        self.stats = RequestStats()
        self._scale = 0.001 if source.duration_unit == "ms" else 1.0
        self._has_duration = "duration" in source.format.groupindex

    def collect(self) -> Iterable[Metric]:
        for line in self.tailer.read_lines():
            match = self.source.format.search(line)
            if match is None:
                continue
            try:
                status = int(match.group("status"))
                raw = match.group("duration") if self._has_duration else None
                duration = float(raw) * self._scale if raw else None
            except (TypeError, ValueError):
                continue
            self.stats.observe(status, duration)
        s = self.stats
        buckets = s.cumulative_buckets() if self._has_duration else None
        yield from _request_families(s.requests, s.errors, buckets, s.duration_sum)


class PrometheusAppCollector:
    """Request metrics re-exported from the app's own ``/metrics`` endpoint.

    ``requests_metric`` samples are summed (errors: those whose ``status_label`` is
    5xx); ``duration_metric`` histogram buckets are summed per ``le``.
    """

    def __init__(self, source: PrometheusSource) -> None:
        self.source = source
        self.requests_name = source.requests_metric.removesuffix("_total")

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "fleetwave_agent_app_metrics_up",
            "1 if the app's metrics source could be read on this scrape.",
        )
        try:
            with _OPENER.open(self.source.url, timeout=self.source.timeout_s) as response:
                text = response.read(MAX_READ_BYTES).decode("utf-8", "replace")
            families = list(text_string_to_metric_families(text))
        except (OSError, ValueError):
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        requests = errors = 0.0
        buckets: dict[str, float] = {}
        dsum = 0.0
        found_histogram = False
        for family in families:
            if family.name in (self.requests_name, self.source.requests_metric):
                for sample in family.samples:
                    if sample.name != self.source.requests_metric:
                        continue  # e.g. the _created samples
                    requests += sample.value
                    if sample.labels.get(self.source.status_label, "").startswith("5"):
                        errors += sample.value
            elif family.name == self.source.duration_metric and family.type == "histogram":
                found_histogram = True
                for sample in family.samples:
                    if sample.name.endswith("_bucket"):
                        le = sample.labels.get("le", "+Inf")
                        buckets[le] = buckets.get(le, 0.0) + sample.value
                    elif sample.name.endswith("_sum"):
                        dsum += sample.value
        ordered = sorted(buckets.items(), key=lambda kv: float(kv[0])) if found_histogram else None
        if ordered and ordered[-1][0] != "+Inf":
            ordered = None  # malformed histogram: do not export half of it
        yield from _request_families(requests, errors, ordered, dsum)


class LogErrorCollector:
    """Counts lines of the app's log that match ``error_pattern``."""

    def __init__(self, source: LogErrorSource) -> None:
        self.pattern: re.Pattern[str] = source.error_pattern
        self.tailer = LogTailer(source.path)
        self.count = 0

    def collect(self) -> Iterable[Metric]:
        self.count += sum(1 for line in self.tailer.read_lines() if self.pattern.search(line))
        yield CounterMetricFamily(
            "fleetwave_agent_app_log_errors",
            "Lines of the app's log that matched the configured error pattern.",
            value=self.count,
        )
