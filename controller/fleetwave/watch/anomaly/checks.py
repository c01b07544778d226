"""One function per check: two groups of host windows in, one :class:`Draft` out.

A draft is a finding whose outcome is not decided yet: the detector first splits
alpha across all drafts (Holm), then a draft fails only when its p is at or below
its threshold AND its effect clears both floors (``clears``). A draft that is not
``sufficient`` waits, whatever its numbers say.

Each comparison is one-sided, towards "worse": more errors, slower, less traffic,
more restarts, a steeper RSS or CPU climb. Getting better never rolls back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from fleetwave.config.alarms import percentile_min_samples
from fleetwave.config.anomaly import MetricTuning
from fleetwave.watch.anomaly import stats
from fleetwave.watch.anomaly.evidence import Finding, Outcome
from fleetwave.watch.anomaly.inputs import Buckets, HostWindow, Point, merge_buckets, totals

TAIL_QUANTILE = 0.99
#: The tail check's absolute floor: the slow share grows by at least 0.5 points.
TAIL_ABSOLUTE_FLOOR = 0.005
#: Quantiles whose shift is the rank test's effect (the larger one counts).
EFFECT_QUANTILES = (0.5, 0.9)
HOUR_S = 3600.0


@dataclass(frozen=True)
class Draft:
    finding: Finding  # outcome still WAIT; the detector decides it
    sufficient: bool
    clears: bool  # the effect clears both floors


def _relative(effect: float, reference: float) -> float:
    if reference > 0:
        return effect / reference
    return math.inf if effect > 0 else 0.0


def _clears(effect: float, relative: float, absolute_floor: float, relative_floor: float) -> bool:
    """Worse by at least both floors (and worse at all: a zero floor is not "any")."""
    return effect > 0 and effect >= absolute_floor and relative >= relative_floor


def _base(
    check: str,
    basis: str,
    t: MetricTuning,
    test: str,
    unit: str,
    n: tuple[float, float] = (0.0, 0.0),
    *,
    required: bool = True,
) -> Finding:
    """A finding with what is known before any data: the test, the floors, the unit."""
    return Finding(
        check,
        basis,
        Outcome.WAIT,
        "",
        test=test,
        n=n,
        absolute_floor=t.absolute_floor,
        relative_floor=t.relative_floor,
        unit=unit,
        required=required,
    )


def _wait(base: Finding, reason: str) -> Draft:
    return Draft(replace(base, reason=reason), sufficient=False, clears=False)


def errors(
    new: Sequence[HostWindow], ref: Sequence[HostWindow], basis: str, t: MetricTuning
) -> Draft:
    """5xx ratio: given k_new + k_ref errors, is k_new ~ Binomial(k, n_new / (n_new +
    n_ref))? A reference with zero errors is no special case: every new error then
    counts against ``(n_new / N) ** k``."""
    n_new, k_new, _ = totals(new)
    n_ref, k_ref, _ = totals(ref)
    base = _base("errors", basis, t, "conditional binomial", "ratio", (n_new, n_ref))
    if n_new < t.min_samples or n_ref < t.min_samples:
        return _wait(
            base, f"{n_new:.0f} and {n_ref:.0f} requests, {t.min_samples} needed on each side"
        )
    kn, kr = round(k_new), round(k_ref)
    r_new, r_ref = k_new / n_new, k_ref / n_ref
    effect = r_new - r_ref
    rel = _relative(effect, r_ref)
    finding = replace(
        base,
        reason=f"{r_new:.3%} of {n_new:.0f} requests vs {r_ref:.3%} of {n_ref:.0f}",
        statistic=float(kn),
        p=stats.binom_sf(kn, kn + kr, n_new / (n_new + n_ref)),
        effect=effect,
        relative_effect=rel,
        new_value=r_new,
        reference_value=r_ref,
        hosts=_worst(new, lambda h: h.errors / h.requests if h.requests else 0.0),
    )
    return Draft(finding, True, _clears(effect, rel, t.absolute_floor, t.relative_floor))


def _worst(hosts: Sequence[HostWindow], key: Callable[[HostWindow], float]) -> tuple[str, ...]:
    """The (up to 3) new hosts that carry the most of an anomaly, for the trail."""
    return tuple(h.host for h in sorted(hosts, key=key, reverse=True)[:3])


def _aligned(a: Buckets, b: Buckets) -> tuple[list[float], list[float]]:
    union = merge_buckets([a, b])
    assert union is not None
    index = {le: i for i, le in enumerate(union.le)}
    ca = [0.0] * len(union.le)
    cb = [0.0] * len(union.le)
    for le, c in zip(a.le, a.counts, strict=True):
        ca[index[le]] += c
    for le, c in zip(b.le, b.counts, strict=True):
        cb[index[le]] += c
    return ca, cb


def _histograms(
    new: Sequence[HostWindow], ref: Sequence[HostWindow]
) -> tuple[Buckets | None, Buckets | None, float, float]:
    hn = merge_buckets(h.latency for h in new)
    hr = merge_buckets(h.latency for h in ref)
    return hn, hr, hn.total if hn else 0.0, hr.total if hr else 0.0


def latency(
    new: Sequence[HostWindow], ref: Sequence[HostWindow], basis: str, t: MetricTuning
) -> Draft:
    """Mann-Whitney U on the merged histograms (each bucket one tie group), with the
    effect the larger shift of p50 and p90, relative AND absolute."""
    hn, hr, n_new, n_ref = _histograms(new, ref)
    base = _base("latency", basis, t, "mann-whitney u (tie-corrected)", "s", (n_new, n_ref))
    if hn is None or hr is None or n_new < t.min_samples or n_ref < t.min_samples:
        return _wait(
            base,
            f"{n_new:.0f} and {n_ref:.0f} latency samples, {t.min_samples} needed on each side",
        )
    rank = stats.mann_whitney(*_aligned(hn, hr))
    shifts = []
    for q in EFFECT_QUANTILES:
        qn, qr = hn.quantile(q), hr.quantile(q)
        if qn is not None and qr is not None:
            rel = _relative(qn - qr, qr)
            clears = _clears(qn - qr, rel, t.absolute_floor, t.relative_floor)
            shifts.append((clears, rel, q, qn, qr))
    clears, rel, q, qn, qr = max(shifts)
    finding = replace(
        base,
        reason=(
            f"p{q * 100:.0f} {qn * 1000:.1f}ms vs {qr * 1000:.1f}ms, "
            f"P(new slower) {rank.superiority:.3f}"
        ),
        statistic=rank.u,
        p=rank.p,
        effect=qn - qr,
        relative_effect=rel,
        new_value=qn,
        reference_value=qr,
        hosts=_worst(new, lambda h: (h.latency.quantile(q) or 0.0) if h.latency else 0.0),
    )
    return Draft(finding, True, clears)


def latency_tail(
    new: Sequence[HostWindow], ref: Sequence[HostWindow], basis: str, t: MetricTuning
) -> Draft:
    """The p99 tail, which a rank test barely sees (1% of samples move). T is the lower
    bound of the bucket that holds the reference's p99, so at least 1% of the
    reference is slower than T: is the share of new requests slower than T larger
    (conditional binomial, as for errors)? The effect is that share's growth (an
    interpolated p99 cannot move inside one bucket 2.5x wide); its floors are
    ``tail_relative_floor`` and :data:`TAIL_ABSOLUTE_FLOOR` share points. Not
    required: it needs 10/(1-0.99) = 1000 samples a side, and until then the rank
    test speaks for latency."""
    hn, hr, n_new, n_ref = _histograms(new, ref)
    need = max(t.min_samples, percentile_min_samples(TAIL_QUANTILE))
    tail = replace(
        t,
        relative_floor=t.tail_relative_floor,
        absolute_floor=TAIL_ABSOLUTE_FLOOR,
        min_samples=need,
    )
    base = _base(
        "latency_tail",
        basis,
        tail,
        "p99 exceedance binomial",
        "share",
        (n_new, n_ref),
        required=False,
    )
    if hn is None or hr is None or n_new < need or n_ref < need:
        return _wait(
            base, f"{n_new:.0f} and {n_ref:.0f} latency samples, {need} needed on each side"
        )
    bound = _tail_bound(hr)
    if bound is None:
        return _wait(base, "the reference's p99 is in the first bucket: no tail to test")
    k_new, k_ref = round(hn.above(bound)), round(hr.above(bound))
    s_new, s_ref = k_new / n_new, k_ref / n_ref
    effect = s_new - s_ref
    rel = _relative(effect, s_ref)
    qn, qr = hn.quantile(TAIL_QUANTILE) or 0.0, hr.quantile(TAIL_QUANTILE) or 0.0
    finding = replace(
        base,
        reason=(
            f"slower than {bound * 1000:g}ms: {s_new:.2%} vs {s_ref:.2%} "
            f"(p99 ~{qn * 1000:.0f}ms vs ~{qr * 1000:.0f}ms)"
        ),
        statistic=float(k_new),
        p=stats.binom_sf(k_new, k_new + k_ref, n_new / (n_new + n_ref)),
        effect=effect,
        relative_effect=rel,
        new_value=s_new,
        reference_value=s_ref,
        hosts=_worst(new, lambda h: _share_above(h.latency, bound)),
    )
    return Draft(finding, True, _clears(effect, rel, tail.absolute_floor, tail.relative_floor))


def _share_above(h: Buckets | None, bound: float) -> float:
    return h.above(bound) / h.total if h is not None and h.total else 0.0


def _tail_bound(h: Buckets) -> float | None:
    """The lower bound of the bucket holding the p99 observation (None: the first)."""
    rank = TAIL_QUANTILE * h.total
    run, lower = 0.0, 0.0
    for le, c in zip(h.le, h.counts, strict=True):
        run += c
        if run >= rank:
            return lower if lower > 0 else None
        lower = le
    return None


def traffic(
    new: Sequence[HostWindow], ref: Sequence[HostWindow], basis: str, t: MetricTuning
) -> Draft:
    """Each new host's request rate against the reference's: is its count below what
    the reference rate predicts over the time it was seen (conditional binomial,
    lower tail, Bonferroni over the new hosts)? Zero requests is the clearest
    failure there is, never "no data"."""
    n_ref, _, s_ref = totals(ref)
    base = _base("traffic", basis, t, "conditional binomial (lower tail)", "requests/s")
    base = replace(base, n=(0.0, n_ref))
    seen = [h for h in new if h.seconds > 0]
    if not seen:
        return _wait(base, "no new host observed yet")
    if s_ref <= 0 or n_ref <= 0:
        return _wait(base, "no reference traffic to compare with")
    rate_ref = n_ref / s_ref
    rows = []
    for h in seen:
        expected = rate_ref * h.seconds
        if expected < t.min_samples:
            continue
        k = round(h.requests)
        p = stats.binom_cdf(k, k + round(n_ref), h.seconds / (h.seconds + s_ref))
        rate = h.requests / h.seconds
        drop = rate_ref - rate
        clears = _clears(drop, drop / rate_ref, t.absolute_floor, t.relative_floor)
        rows.append((not clears, min(1.0, p * len(seen)), drop, rate, expected, h))
    if not rows:
        return _wait(base, f"fewer than {t.min_samples} requests expected on any new host yet")
    failing, p, drop, rate, expected, host = min(rows, key=lambda r: (r[0], r[1]))
    finding = replace(
        base,
        reason=(
            f"{host.host}: {rate:.2f}/s vs {rate_ref:.2f}/s "
            f"({host.requests:.0f} requests, ~{expected:.0f} expected)"
        ),
        n=(host.requests, n_ref),
        statistic=float(round(host.requests)),
        p=p,
        effect=drop,
        relative_effect=drop / rate_ref,
        new_value=rate,
        reference_value=rate_ref,
        hosts=tuple(r[5].host for r in rows if not r[0]) or (host.host,),
    )
    return Draft(finding, True, not failing)


def restarts(
    new: Sequence[HostWindow], ref: Sequence[HostWindow], basis: str, t: MetricTuning
) -> Draft:
    """Restarts and health flaps: events per host-second, new against reference
    (conditional binomial over exposure). Effect: the worst new host's events beyond
    what the reference rate predicts for it; its floor counts events."""
    _, _, s_new = totals(new)
    _, _, s_ref = totals(ref)
    base = _base(
        "restarts",
        basis,
        t,
        "conditional binomial (events per host-second)",
        "events",
        (s_new, s_ref),
    )
    if not new or s_new < t.min_samples or s_ref < t.min_samples:
        return _wait(
            base, f"{s_new:.0f}s and {s_ref:.0f}s observed, {t.min_samples}s needed on each side"
        )
    k_new = sum(h.events for h in new)
    k_ref = sum(h.events for h in ref)
    rate_ref = k_ref / s_ref
    worst = max(new, key=lambda h: h.events - rate_ref * h.seconds)
    expected = rate_ref * worst.seconds
    effect = worst.events - expected
    rel = _relative(effect, expected)
    finding = replace(
        base,
        reason=(
            f"{worst.host}: {worst.restarts} restart(s), {worst.flaps} flap(s), "
            f"{expected:.1f} expected"
        ),
        statistic=float(k_new),
        p=stats.binom_sf(k_new, k_new + k_ref, s_new / (s_new + s_ref)),
        effect=effect,
        relative_effect=rel,
        new_value=float(worst.events),
        reference_value=expected,
        hosts=tuple(
            h.host for h in new if h.events - rate_ref * h.seconds >= max(t.absolute_floor, 1)
        )
        or (worst.host,),
    )
    return Draft(finding, True, _clears(effect, rel, t.absolute_floor, t.relative_floor))


def _after(points: Sequence[Point], cut: float) -> list[Point]:
    return [p for p in points if p.at >= cut]


def trend(
    check: str,
    new: Sequence[HostWindow],
    ref: Sequence[HostWindow],
    t: MetricTuning,
    warmup_s: float,
    unit: str,
) -> Draft:
    """A leak: each new host's Theil-Sen slope over the bake after ``warmup_s``, tested
    with Mann-Kendall (Bonferroni over hosts). The effect is the slope beyond the
    reference hosts' median slope over the same time (a load change lifts both), per
    hour; relative to the host's starting level. Not required: a short bake may never
    have enough points, and the other checks still decide."""

    def pick(h: HostWindow) -> tuple[Point, ...]:
        return h.rss if check == "memory" else h.cpu

    base = _base(check, "trend", t, "mann-kendall + theil-sen", f"{unit}/h", required=False)
    starts = [pick(h)[0].at for h in new if pick(h)]
    if not starts:
        return _wait(base, "no points on the new hosts yet")
    cut = min(starts) + warmup_s
    series = {h.host: _after(pick(h), cut) for h in new}
    ready = {k: v for k, v in series.items() if len(v) >= t.min_samples}
    if not ready:
        most = max(len(v) for v in series.values())
        why = f"{most} point(s) after the {warmup_s:g}s warm-up, {t.min_samples} needed"
        return _wait(replace(base, n=(float(most), 0.0)), why)
    ref_slopes = [
        stats.theil_sen([p.at for p in pts], [p.value for p in pts])
        for pts in (_after(pick(h), cut) for h in ref)
        if len(pts) >= 2
    ]
    ref_slope = _median(ref_slopes) if ref_slopes else 0.0
    rows = []
    for host, pts in sorted(ready.items()):
        mk = stats.mann_kendall([p.at for p in pts], [p.value for p in pts])
        level = _median([p.value for p in pts[: max(3, len(pts) // 10)]])
        effect = (mk.slope - ref_slope) * HOUR_S
        rel = _relative(effect, level)
        clears = _clears(effect, rel, t.absolute_floor, t.relative_floor)
        rows.append((not clears, min(1.0, mk.p * len(ready)), effect, rel, mk, len(pts), host))
    failing, p, effect, rel, mk, count, host = min(rows, key=lambda r: (r[0], r[1]))
    finding = replace(
        base,
        reason=f"{host}: {effect:+.4g} {unit}/h beyond the reference's {ref_slope * HOUR_S:+.4g}",
        n=(float(count), float(len(ref_slopes))),
        statistic=mk.s,
        p=p,
        effect=effect,
        relative_effect=rel,
        new_value=mk.slope * HOUR_S,
        reference_value=ref_slope * HOUR_S,
        hosts=tuple(r[6] for r in rows if not r[0]) or (host,),
    )
    return Draft(finding, True, not failing)


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2.0
