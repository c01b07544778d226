"""Synthetic stage samples: hosts whose traffic, errors, latency, restarts, RSS and CPU
follow a small model, with Poisson-like noise (normal approximations keep it fast)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from fleetwave.watch.anomaly import Buckets, HostWindow, Point

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)


@dataclass(frozen=True)
class Behaviour:
    rate: float = 20.0  # requests/s
    error_rate: float = 0.0
    median_s: float = 0.060  # lognormal latency
    sigma: float = 0.3  # jitter
    tail_share: float = 0.0  # share of requests in a slow tail ...
    tail_factor: float = 1.0  # ... this many times slower than the body
    restart_every_s: float = 0.0  # 0: never
    rss_start: float = 300e6
    rss_per_hour: float = 0.0
    cpu: float = 0.2
    cpu_per_hour: float = 0.0
    load_change_at: float | None = None  # seconds into the window: rate x2 after it


def _lognormal_cdf(x: float, median: float, sigma: float) -> float:
    if x <= 0:
        return 0.0
    if math.isinf(x):
        return 1.0
    return 0.5 * (1.0 + math.erf(math.log(x / median) / (sigma * math.sqrt(2.0))))


def bucket_probabilities(b: Behaviour) -> list[float]:
    def cdf(x: float) -> float:
        body = _lognormal_cdf(x, b.median_s, b.sigma)
        slow = _lognormal_cdf(x, b.median_s * b.tail_factor, b.sigma)
        return (1 - b.tail_share) * body + b.tail_share * slow

    out, below = [], 0.0
    for le in BOUNDS:
        c = cdf(le)
        out.append(c - below)
        below = c
    return out


def _noisy(rng: random.Random, mean: float) -> float:
    return max(0.0, round(rng.gauss(mean, math.sqrt(mean)))) if mean > 0 else 0.0


def window(
    rng: random.Random,
    host: str,
    b: Behaviour,
    *,
    seconds: float = 600.0,
    start: float = 0.0,
    period: float = 10.0,
) -> HostWindow:
    """``seconds`` of one host on behaviour ``b``, observed every ``period``."""
    busy = seconds
    if b.load_change_at is not None and b.load_change_at < seconds:
        busy = seconds + (seconds - b.load_change_at)  # twice the rate after the change
    requests = _noisy(rng, b.rate * busy)
    errors = _noisy(rng, requests * b.error_rate) if b.error_rate else 0.0
    probs = bucket_probabilities(b)
    counts = tuple(_noisy(rng, requests * p) for p in probs)
    restarts = int(seconds // b.restart_every_s) if b.restart_every_s else 0
    n = int(seconds // period)
    rss = tuple(
        Point(
            start + (i + 1) * period,
            b.rss_start + b.rss_per_hour * (i + 1) * period / 3600 + rng.gauss(0, 2e6),
        )
        for i in range(n)
    )
    cpu = tuple(
        Point(
            start + (i + 1) * period,
            max(0.0, b.cpu + b.cpu_per_hour * (i + 1) * period / 3600 + rng.gauss(0, 0.02)),
        )
        for i in range(n)
    )
    return HostWindow(
        host=host,
        seconds=seconds,
        requests=requests,
        errors=min(errors, requests),
        latency=Buckets(BOUNDS, counts) if requests else None,
        restarts=restarts,
        rss=rss,
        cpu=cpu,
    )


def hosts(
    rng: random.Random, prefix: str, count: int, b: Behaviour, **kw: float
) -> tuple[HostWindow, ...]:
    return tuple(window(rng, f"{prefix}{i}", b, **kw) for i in range(count))


def zero_traffic(w: HostWindow) -> HostWindow:
    return replace(w, requests=0.0, errors=0.0, latency=None)
