"""The pure-Python tests against scipy.stats (a dev extra only), over many cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave.watch.anomaly import stats

scipy_stats = pytest.importorskip("scipy.stats")

pytestmark = pytest.mark.unit

REL = 1e-9


def close(a: float, b: float, rel: float = REL, abs_: float = 1e-12) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


@settings(max_examples=400, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=3000),
    frac=st.floats(min_value=0.0, max_value=1.0),
    p=st.floats(min_value=1e-6, max_value=1 - 1e-6),
)
def test_binomial_tail_matches_binomtest(n: int, frac: float, p: float) -> None:
    k = round(frac * n)
    ours = stats.binom_sf(k, n, p)
    if n == 0:
        assert ours == 1.0
        return
    theirs = scipy_stats.binomtest(k, n, p, alternative="greater").pvalue
    assert close(ours, theirs), (k, n, p, ours, theirs)
    lower = scipy_stats.binomtest(k, n, p, alternative="less").pvalue
    assert close(stats.binom_cdf(k, n, p), lower), (k, n, p)


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [
        (20, 20, 1 / 11),  # 20 new errors, none on 10 reference hosts
        (1, 1_000_000, 1e-7),
        (600, 10_000, 0.05),
        (5_000, 2_000_000, 0.002),  # large n: still exact, and fast
        (0, 10, 0.3),
        (11, 10, 0.3),
    ],
)
def test_binomial_tail_edges(k: int, n: int, p: float) -> None:
    assert close(stats.binom_sf(k, n, p), float(scipy_stats.binom.sf(k - 1, n, p)), rel=1e-8)


def test_binomial_degenerate_p() -> None:
    assert stats.binom_sf(1, 10, 0.0) == 0.0
    assert stats.binom_sf(10, 10, 1.0) == 1.0
    with pytest.raises(ValueError, match="bad binomial"):
        stats.binom_sf(1, 10, 1.5)


# Histogram-like samples: few distinct values, so ties are heavy.
_SAMPLES = st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=60)


@settings(max_examples=400, deadline=None)
@given(x=_SAMPLES, y=_SAMPLES, continuity=st.booleans())
def test_mann_whitney_matches_scipy(x: list[int], y: list[int], continuity: bool) -> None:
    cx, cy = stats.group([float(v) for v in x], [float(v) for v in y])
    ours = stats.mann_whitney(cx, cy, continuity=continuity)
    theirs = scipy_stats.mannwhitneyu(
        x, y, alternative="greater", method="asymptotic", use_continuity=continuity
    )
    assert close(ours.u, float(theirs.statistic))
    if len(set(x) | set(y)) == 1:
        assert ours.p == 1.0  # every observation tied: no evidence (scipy: nan)
    else:
        assert close(ours.p, float(theirs.pvalue)), (x, y, ours, theirs)


@settings(max_examples=100, deadline=None)
@given(
    x=st.lists(st.floats(min_value=-1e3, max_value=1e3), min_size=2, max_size=40),
    y=st.lists(st.floats(min_value=-1e3, max_value=1e3), min_size=2, max_size=40),
)
def test_mann_whitney_continuous_matches_scipy(x: list[float], y: list[float]) -> None:
    cx, cy = stats.group(x, y)
    ours = stats.mann_whitney(cx, cy)
    theirs = scipy_stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic")
    if len(set(x) | set(y)) > 1:
        assert close(ours.p, float(theirs.pvalue))


def test_mann_whitney_grouped_large_counts() -> None:
    """A histogram of 10^5 observations costs O(buckets), and agrees with expansion."""
    cx = [50.0, 300.0, 400.0, 200.0, 40.0, 10.0]
    cy = [60.0, 330.0, 390.0, 180.0, 30.0, 10.0]
    x = [i for i, c in enumerate(cx) for _ in range(int(c))]
    y = [i for i, c in enumerate(cy) for _ in range(int(c))]
    theirs = scipy_stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic")
    assert close(stats.mann_whitney(cx, cy).p, float(theirs.pvalue))
    big = stats.mann_whitney([c * 100 for c in cx], [c * 100 for c in cy])
    assert big.n_x == 100_000.0
    assert big.p < stats.mann_whitney(cx, cy).p  # same shift, more data: stronger


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(min_value=0, max_value=20), min_size=3, max_size=50))
def test_theil_sen_matches_scipy(values: list[int]) -> None:
    times = [10.0 * i for i in range(len(values))]
    theirs = scipy_stats.theilslopes([float(v) for v in values], times)
    assert close(stats.theil_sen(times, [float(v) for v in values]), float(theirs.slope))


def test_mann_kendall_sees_a_trend_and_not_noise() -> None:
    times = [float(i) for i in range(60)]
    rising = [100.0 + 0.5 * i + (3.0 if i % 7 == 0 else 0.0) for i in range(60)]
    flat = [100.0 + (3.0 if i % 7 == 0 else 0.0) - (2.0 if i % 5 == 0 else 0.0) for i in range(60)]
    assert stats.mann_kendall(times, rising).p < 1e-10
    assert stats.mann_kendall(times, flat).p > 0.01
    # Its S and tie-corrected variance agree with Kendall's tau-b against time.
    tau = scipy_stats.kendalltau(times, flat, method="asymptotic")
    mk = stats.mann_kendall(times, flat)
    assert (mk.s > 0) == (tau.statistic > 0)


def test_holm_step_down() -> None:
    split = stats.holm({"a": 0.001, "b": 0.02, "c": 0.013, "d": 0.5}, 0.05)
    assert split["a"] == (0.0125, True)
    assert split["c"] == (0.05 / 3, True)
    assert split["b"] == (0.025, True)
    assert split["d"] == (0.05, False)
    # The first non-rejection stops the ones after it, even under their own threshold.
    stopped = stats.holm({"a": 0.04, "b": 0.045}, 0.05)
    assert stopped == {"a": (0.025, False), "b": (0.05, False)}
