"""The ``prometheus`` metric source: PromQL over Prometheus' HTTP API.

Instant queries (``/api/v1/query``) and range queries (``/api/v1/query_range``, one
step per alarm period) with the standard library only (urllib in a worker thread).
The API's error envelope becomes typed errors: ``bad_data`` and ``execution`` are
:class:`MetricQueryError` (the query is wrong), ``unavailable``, timeouts, 5xx and
refused connections :class:`MetricSourceUnavailableError`, anything not shaped as
documented :class:`MetricResponseError`. NaN, +/-Inf and empty results are missing.

Agent metrics (``metric: errors``) are translated to PromQL over the exporter's own
sample names, so the same alarm means the same on both sources; ``$scope`` in a
``promql:`` alarm expands to the scope's label matcher, e.g. ``host=~"a|b"``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, NoReturn

from fleetwave.config.alarms import AGENT_METRICS, MetricKind, Statistic
from fleetwave.errors import (
    MetricQueryError,
    MetricResponseError,
    MetricSourceUnavailableError,
)
from fleetwave.watch.source import Datapoint, MetricQuery, Series, Window, clean

NAME = "prometheus"
MAX_RESPONSE_BYTES = 16 << 20
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _duration(seconds: float) -> str:
    """A PromQL range duration (whole milliseconds)."""
    return f"{max(1, round(seconds * 1000))}ms"


def _regex_escape(name: str) -> str:
    """``name`` as a literal inside a PromQL regex inside a double-quoted string."""
    regex = re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", name)
    return regex.replace("\\", "\\\\").replace('"', '\\"')


class PromQL:
    """Translates a :class:`MetricQuery` into PromQL (pure; see the module doc)."""

    def __init__(self, host_label: str = "host") -> None:
        self.host_label = host_label

    def matcher(self, query: MetricQuery) -> str:
        """The label matcher text of the query's scope ('' for every host)."""
        if not query.hosts:
            return ""
        names = "|".join(_regex_escape(h) for h in sorted(query.hosts))
        return f'{self.host_label}=~"{names}"'

    def _release(self, query: MetricQuery, expr: str) -> str:
        if query.release is None:
            return expr
        version = query.release.replace("\\", "\\\\").replace('"', '\\"')
        return (
            f"({expr} and on({self.host_label}) "
            f'fleetwave_agent_release_info{{version="{version}"}})'
        )

    def value(self, query: MetricQuery, period_s: float) -> tuple[str, str | None]:
        """``(value expression, samples expression or None)`` for one period."""
        spec = query.metric
        sel = "{" + self.matcher(query) + "}"
        r = _duration(period_s)
        if spec.promql:
            text = spec.metric.replace("$scope", self.matcher(query))
            if spec.denominator:
                den = spec.denominator.replace("$scope", self.matcher(query))
                return f"({text}) / ({den})", den
            return text, None
        metric = AGENT_METRICS[spec.metric]
        name, stat = metric.sample, spec.statistic

        def inc(sample: str) -> str:
            return "sum(" + self._release(query, f"increase({sample}{sel}[{r}])") + ")"

        if metric.kind is MetricKind.COUNTER:
            if stat is Statistic.RATIO:
                assert spec.denominator is not None
                den = inc(AGENT_METRICS[spec.denominator].sample)
                return f"{inc(name)} / {den}", den
            if stat is Statistic.COUNT:
                return inc(name), None
            return "sum(" + self._release(query, f"rate({name}{sel}[{r}])") + ")", None
        if metric.kind is MetricKind.GAUGE:
            samples = "sum(" + self._release(query, f"count_over_time({name}{sel}[{r}])") + ")"
            if stat is Statistic.MAX:
                return "max(" + self._release(
                    query, f"max_over_time({name}{sel}[{r}])"
                ) + ")", samples
            total = "sum(" + self._release(query, f"sum_over_time({name}{sel}[{r}])") + ")"
            return f"{total} / {samples}", samples
        bucket_sel = "{" + ",".join(x for x in (self.matcher(query), 'le="+Inf"') if x) + "}"
        count = "sum(" + self._release(query, f"increase({name}_bucket{bucket_sel}[{r}])") + ")"
        if stat is Statistic.MEAN:
            return f"{inc(name + '_sum')} / {count}", count
        if stat is None or stat.quantile is None:
            raise MetricQueryError(NAME, f"{stat} does not apply to histogram {metric.name}")
        buckets = self._release(query, f"increase({name}_bucket{sel}[{r}])")
        return f"histogram_quantile({stat.quantile:g}, sum by (le) ({buckets}))", count


class PrometheusSource:
    """The ``prometheus`` metric source (see the module doc)."""

    name = NAME

    def __init__(self, url: str, *, host_label: str = "host", timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.promql = PromQL(host_label)

    async def query(self, query: MetricQuery, window: Window) -> Series:
        value_expr, samples_expr = self.promql.value(query, window.period_s)
        ends = [end for _, end in window.bounds()]
        values = await self.range(value_expr, ends[0], ends[-1], window.period_s)
        samples = (
            await self.range(samples_expr, ends[0], ends[-1], window.period_s)
            if samples_expr
            else {}
        )
        points = []
        for end in ends:
            value = clean(values.get(_key(end)))
            if samples_expr is None:
                # A query with no sample count vouches for itself: present is enough.
                n = math.inf if value is not None else 0.0
            else:
                n = clean(samples.get(_key(end))) or 0.0
            points.append(Datapoint(end, value, n))
        return Series(tuple(points))

    async def instant(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """``/api/v1/query``: the result vector (each ``{"metric", "value"}``)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = await self._get("/api/v1/query", params)
        if data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
            raise MetricResponseError(NAME, f"expected a vector for {promql!r}")
        return list(data["result"])

    async def range(self, promql: str, start: float, end: float, step_s: float) -> dict[int, float]:
        """``/api/v1/query_range``, one series expected: value by timestamp (ms)."""
        data = await self._get(
            "/api/v1/query_range",
            {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"},
        )
        result = data.get("result")
        if data.get("resultType") != "matrix" or not isinstance(result, list):
            raise MetricResponseError(NAME, f"expected a matrix for {promql!r}")
        if len(result) > 1:
            raise MetricQueryError(
                NAME, f"{promql!r} returned {len(result)} series; aggregate it to one"
            )
        out: dict[int, float] = {}
        for series in result:
            for pair in series.get("values", []):
                try:
                    out[_key(float(pair[0]))] = float(pair[1])  # "NaN", "+Inf" parse too
                except (TypeError, ValueError, IndexError):
                    raise MetricResponseError(NAME, f"bad sample {pair!r}") from None
        return out

    async def alert_firing(self, alert: str) -> bool:
        """Whether the alerting rule ``alert`` fires now (pending is not firing)."""
        name = alert.replace("\\", "\\\\").replace('"', '\\"')
        result = await self.instant(f'ALERTS{{alertname="{name}", alertstate="firing"}}')
        return bool(result)

    async def _get(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        return await asyncio.to_thread(self._fetch, url)

    def _fetch(self, url: str) -> dict[str, Any]:
        try:
            with _OPENER.open(url, timeout=self.timeout_s) as resp:
                body = resp.read(MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as exc:
            body = exc.read(MAX_RESPONSE_BYTES)
            envelope = _decode(body, required=False)
            if envelope is not None and envelope.get("status") == "error":
                _raise_envelope(envelope, exc.code)
            if exc.code >= 500:
                raise MetricSourceUnavailableError(
                    NAME, f"HTTP {exc.code} from {self.url}"
                ) from None
            raise MetricResponseError(NAME, f"HTTP {exc.code} from {self.url}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MetricSourceUnavailableError(NAME, f"{self.url}: {reason}") from None
        envelope = _decode(body, required=True)
        assert envelope is not None
        if envelope.get("status") != "success":
            _raise_envelope(envelope, 200)
        data = envelope.get("data")
        if not isinstance(data, dict):
            raise MetricResponseError(NAME, "response without data")
        return data


def _key(t: float) -> int:
    return round(t * 1000)


def _decode(body: bytes, *, required: bool) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        if required:
            raise MetricResponseError(NAME, "response is not JSON") from None
        return None
    if not isinstance(value, dict):
        if required:
            raise MetricResponseError(NAME, "response is not a JSON object")
        return None
    return value


def _raise_envelope(envelope: Mapping[str, Any], status: int) -> NoReturn:
    kind = str(envelope.get("errorType", ""))
    message = str(envelope.get("error", "unknown error"))
    if kind in ("bad_data", "execution") or status in (400, 422):
        raise MetricQueryError(NAME, f"{kind}: {message}", error_type=kind)
    if kind in ("unavailable", "timeout", "canceled", "internal") or status >= 500:
        raise MetricSourceUnavailableError(NAME, f"{kind}: {message}")
    raise MetricResponseError(NAME, f"{kind}: {message}")
