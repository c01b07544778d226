"""The few statistical tests the detector needs, in pure Python (``math`` only).

Why not scipy: importing ``scipy.stats`` costs ~0.3-0.5 s and pulls in numpy (tens of
MB of wheels on every controller) for four tests whose small-sample cases the
detector refuses anyway. Each test here is checked against scipy in
``tests/watch/anomaly/test_stats.py`` (scipy is a dev extra only).

* :func:`binom_sf`: the exact binomial upper tail ``P(X >= k)``, summed in log space
  from the tail's end that is small, so it stays exact (to ~1e-12 relative) from
  ``n = 1`` to millions and never underflows to a spurious 0 before 1e-300.
* :func:`mann_whitney`: Mann-Whitney U over *grouped* data (counts per ordered
  category, e.g. latency histogram buckets), with the tie correction of the variance
  and the normal approximation, optionally with a continuity correction. A histogram
  is one big tie per bucket, so grouping is both exact and O(buckets).
* :func:`mann_kendall`: the Mann-Kendall trend test (ties corrected) and
  :func:`theil_sen` slope: a trend robust to outliers and GC saw-teeth.
* :func:`holm`: Holm's step-down thresholds for a family of p-values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_SQRT2 = math.sqrt(2.0)
#: Stop summing a tail once a term adds less than this share of the sum.
_NEGLIGIBLE = 1e-17


def norm_sf(z: float) -> float:
    """``P(Z > z)`` for a standard normal Z (``erfc`` keeps the far tail exact)."""
    return 0.5 * math.erfc(z / _SQRT2)


def _log_pmf(k: int, n: int, p: float) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def _tail_sum(start: int, n: int, p: float, step: int) -> float:
    """``sum_{j=start, start+step, ...} pmf(j)`` (step +1 up to n, -1 down to 0), for a
    tail whose terms only shrink away from ``start``: log-space first term, then the
    pmf ratio recurrence, stopping once terms are negligible."""
    first = _log_pmf(start, n, p)
    odds = p / (1.0 - p)
    total = term = 1.0  # relative to the first term
    j = start
    # Bounded by the support (n + 1 terms at most); in practice a few standard deviations.
    while (j < n) if step > 0 else (j > 0):
        if step > 0:
            term *= (n - j) / (j + 1) * odds
        else:
            term *= j / (n - j + 1) / odds
        j += step
        total += term
        if term < _NEGLIGIBLE * total:
            break
    return math.exp(first + math.log(total))


def binom_sf(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``: scipy's ``binomtest(k, n, p,
    alternative="greater").pvalue``, exact."""
    if n < 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"bad binomial: n={n}, p={p}")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    mode = math.floor((n + 1) * p)
    if k > mode:  # terms fall from k upwards: sum the small upper tail directly
        return min(1.0, _tail_sum(k, n, p, +1))
    # k is at or below the mode: the upper tail is >= ~1/2, its complement is small
    # and falls from k-1 downwards.
    return max(0.0, 1.0 - _tail_sum(k - 1, n, p, -1))


def binom_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)`` (the lower tail, by symmetry)."""
    return binom_sf(n - k, n, 1.0 - p)


@dataclass(frozen=True)
class RankTest:
    """A Mann-Whitney U test of "x tends to be larger than y"."""

    u: float  # U of x: pairs (x, y) with x > y, ties counted 1/2
    z: float
    p: float  # one-sided, "x greater"
    n_x: float
    n_y: float

    @property
    def superiority(self) -> float:
        """``P(X > Y) + P(X = Y)/2``, the common-language effect (0.5: none)."""
        return self.u / (self.n_x * self.n_y) if self.n_x and self.n_y else 0.5


def mann_whitney(
    x_counts: Sequence[float], y_counts: Sequence[float], *, continuity: bool = True
) -> RankTest:
    """Mann-Whitney U for grouped data: ``x_counts[i]`` and ``y_counts[i]`` observations
    fall in the i-th of ordered categories (a histogram bucket, or one distinct value).

    The same numbers as scipy's ``mannwhitneyu(x, y, alternative="greater",
    method="asymptotic", use_continuity=continuity)`` on the expanded samples: midranks
    for ties, the tie-corrected variance ``n1 n2 / 12 * ((N+1) - sum(t^3-t) / (N(N-1)))``.
    With no variance at all (every observation tied), p is 1: no evidence.
    """
    if len(x_counts) != len(y_counts):
        raise ValueError("x and y need the same categories")
    n_x = float(sum(x_counts))
    n_y = float(sum(y_counts))
    n = n_x + n_y
    rank_sum = 0.0
    below = 0.0
    ties = 0.0
    for cx, cy in zip(x_counts, y_counts, strict=True):
        t = cx + cy
        if t <= 0:
            continue
        rank_sum += cx * (below + (t + 1.0) / 2.0)  # the category's midrank
        ties += t * t * t - t
        below += t
    u = rank_sum - n_x * (n_x + 1.0) / 2.0
    if n_x == 0 or n_y == 0:
        return RankTest(u, 0.0, 1.0, n_x, n_y)
    variance = n_x * n_y / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)))
    if variance <= 0:
        return RankTest(u, 0.0, 1.0, n_x, n_y)
    numerator = u - n_x * n_y / 2.0 - (0.5 if continuity else 0.0)
    z = numerator / math.sqrt(variance)
    return RankTest(u, z, norm_sf(z), n_x, n_y)


def group(x: Sequence[float], y: Sequence[float]) -> tuple[list[float], list[float]]:
    """Raw samples as per-value counts over their sorted distinct values (for
    :func:`mann_whitney`)."""
    values = sorted(set(x) | set(y))
    index = {v: i for i, v in enumerate(values)}
    cx = [0.0] * len(values)
    cy = [0.0] * len(values)
    for v in x:
        cx[index[v]] += 1
    for v in y:
        cy[index[v]] += 1
    return cx, cy


@dataclass(frozen=True)
class TrendTest:
    """Mann-Kendall's S with its normal approximation, and the Theil-Sen slope."""

    s: float
    z: float
    p: float  # one-sided, "increasing"
    slope: float  # Theil-Sen, value units per time unit
    n: int


def _sign(v: float) -> int:
    return (v > 0) - (v < 0)


def theil_sen(times: Sequence[float], values: Sequence[float]) -> float:
    """The median of all pairwise slopes (pairs at equal times are skipped)."""
    slopes = sorted(
        (values[j] - values[i]) / (times[j] - times[i])
        for i in range(len(times))
        for j in range(i + 1, len(times))
        if times[j] != times[i]
    )
    if not slopes:
        return 0.0
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else (slopes[mid - 1] + slopes[mid]) / 2.0


def mann_kendall(times: Sequence[float], values: Sequence[float]) -> TrendTest:
    """Test for an increasing trend of ``values`` over ``times`` (ties in the values
    corrected, continuity-corrected normal approximation). O(n^2): the detector
    gives it at most a bake's worth of points per host (360 at 10 s for 1 h)."""
    if len(times) != len(values):
        raise ValueError("times and values differ in length")
    order = sorted(range(len(times)), key=lambda i: times[i])
    xs = [values[i] for i in order]
    n = len(xs)
    s = float(sum(_sign(xs[j] - xs[i]) for i in range(n) for j in range(i + 1, n)))
    counts: dict[float, int] = {}
    for v in xs:
        counts[v] = counts.get(v, 0) + 1
    tie_term = sum(t * (t - 1) * (2 * t + 5) for t in counts.values())
    variance = (n * (n - 1) * (2 * n + 5) - tie_term) / 18.0
    slope = theil_sen([times[i] for i in order], xs)
    if variance <= 0:
        return TrendTest(s, 0.0, 1.0, slope, n)
    z = (s - _sign(s)) / math.sqrt(variance)
    return TrendTest(s, z, norm_sf(z), slope, n)


def holm(pvalues: Mapping[str, float], alpha: float) -> dict[str, tuple[float, bool]]:
    """Holm's step-down procedure: for each test, the threshold its p was compared
    with and whether it is rejected. Sorted by p, the i-th (from 0) of m is compared
    with ``alpha / (m - i)``; the first one above its threshold stops the rejections
    (the ones after it report the threshold they would have faced)."""
    ordered = sorted(pvalues.items(), key=lambda kv: (kv[1], kv[0]))
    m = len(ordered)
    out: dict[str, tuple[float, bool]] = {}
    rejecting = True
    for i, (name, p) in enumerate(ordered):
        threshold = alpha / (m - i)
        rejecting = rejecting and p <= threshold
        out[name] = (threshold, rejecting)
    return out
