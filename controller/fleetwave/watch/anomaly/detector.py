"""The anomaly detector: one pure function from a :class:`StageSample` to a
:class:`Verdict`.

1. **New against reference, same window.** Errors, latency (rank test and p99 tail),
   traffic and restarts compare the new hosts with the reference hosts (the old
   release in the same stage or AZ, or the previous stage's hosts).
2. **Before against after, same hosts.** The same tests on the new hosts' own data
   from before the deployment. With a reference, this only *corroborates* (it is
   attached to the finding and never changes it: time of day confounds it). It
   decides alone where there is no reference, or the reference has too little data.
3. **Trends.** RSS and CPU slopes over the bake, beyond the reference's slope.
4. **False-rollback control.** ``alpha`` is the stage's budget for a false rollback
   over its whole bake: each of the ``planned_rounds`` evaluations gets
   ``alpha / planned_rounds`` (Bonferroni over rounds, which are sequential), and
   Holm splits that across the enabled checks of the round (a fixed family, so a
   threshold does not move with the data). A check fails only when p is at or below
   its threshold AND its effect clears both floors. A check short of data waits.
5. **Verdict.** FAIL if any check fails; else WAIT if any *required* check waits
   (errors, latency, traffic, restarts); else PASS. A bake never passes on nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from fleetwave.config.anomaly import AnomalySettings, Check, MetricTuning
from fleetwave.watch.anomaly import checks
from fleetwave.watch.anomaly.checks import Draft
from fleetwave.watch.anomaly.evidence import Finding, Outcome, Verdict
from fleetwave.watch.anomaly.inputs import HostWindow, Reference, StageSample
from fleetwave.watch.anomaly.stats import holm

Comparator = Callable[[Sequence[HostWindow], Sequence[HostWindow], str, MetricTuning], Draft]

#: The comparisons, in the order findings are listed, and the setting each obeys.
_COMPARED: tuple[tuple[str, Check, Comparator], ...] = (
    ("errors", Check.ERRORS, checks.errors),
    ("latency", Check.LATENCY, checks.latency),
    ("latency_tail", Check.LATENCY, checks.latency_tail),
    ("traffic", Check.TRAFFIC, checks.traffic),
    ("restarts", Check.RESTARTS, checks.restarts),
)
_TRENDS: tuple[tuple[Check, str], ...] = ((Check.MEMORY, "bytes"), (Check.CPU, "cores"))


def family(settings: AnomalySettings) -> tuple[str, ...]:
    """The names of the tests one round runs (what Holm splits the round's alpha over)."""
    names = [name for name, check, _ in _COMPARED if settings.tuning(check).enabled]
    names += [check.value for check, _ in _TRENDS if settings.tuning(check).enabled]
    return tuple(names)


def _compare(comparator: Comparator, sample: StageSample, t: MetricTuning) -> Draft:
    """New vs reference, with before/after attached; before/after decides when the
    reference is absent or short of data."""
    against_ref = (
        comparator(sample.new, sample.reference, sample.reference_kind.value, t)
        if sample.reference
        else None
    )
    against_before = comparator(sample.new, sample.before, "before", t) if sample.before else None
    if against_ref is not None and (against_ref.sufficient or against_before is None):
        deciding, other = against_ref, against_before
    elif against_before is not None:
        deciding, other = against_before, against_ref
    else:
        name = comparator.__name__
        why = "no reference hosts and no data from before the deployment"
        wait = Finding(name, Reference.NONE.value, Outcome.WAIT, why)
        if name == "latency_tail":
            wait = replace(wait, required=False)
        return Draft(wait, False, False)
    if other is not None:
        deciding = replace(deciding, finding=replace(deciding.finding, corroboration=other.finding))
    return deciding


def _decide(draft: Draft, threshold: float, rejected: bool) -> Finding:
    """The finding's outcome: Holm rejected it and its effect clears the floors."""
    f = replace(draft.finding, threshold=threshold)
    c = f.corroboration
    if c is not None:
        # Judged at the same threshold, for the reader; it never changes f's outcome.
        if c.p is None:
            c_out = Outcome.WAIT
        elif c.p <= threshold and _clears(c):
            c_out = Outcome.FAIL
        else:
            c_out = Outcome.PASS
        f = replace(f, corroboration=replace(c, threshold=threshold, outcome=c_out))
    if not draft.sufficient:
        return replace(f, outcome=Outcome.WAIT)
    if rejected and draft.clears:
        return replace(
            f, outcome=Outcome.FAIL, reason=f"{f.reason}; p {f.p:.3g} <= {threshold:.3g}"
        )
    return replace(f, outcome=Outcome.PASS)


def _clears(f: Finding) -> bool:
    effect, rel = f.effect, f.relative_effect
    if effect is None or rel is None:
        return False
    return effect > 0 and effect >= f.absolute_floor and rel >= f.relative_floor


def detect(sample: StageSample, settings: AnomalySettings) -> Verdict:
    """Judge one stage at one evaluation (see the module doc)."""
    round_alpha = settings.alpha / sample.planned_rounds

    def verdict(outcome: Outcome, reason: str, findings: tuple[Finding, ...] = ()) -> Verdict:
        return Verdict(
            stage=sample.stage,
            at=sample.at,
            outcome=outcome,
            reason=reason,
            reference=sample.reference_kind.value,
            sensitivity=settings.sensitivity.value,
            alpha=settings.alpha,
            round_alpha=round_alpha,
            planned_rounds=sample.planned_rounds,
            findings=findings,
        )

    names = family(settings)
    if not names:
        return verdict(Outcome.PASS, "anomaly detection is off")
    if not sample.new and sample.settled:
        # Every host was skipped (held by an operator) or failed within the budget.
        return verdict(Outcome.PASS, "no host of the stage serves the new release")
    if not sample.new:
        return verdict(Outcome.WAIT, "no host on the new release yet")
    drafts: dict[str, Draft] = {}
    for name, check, comparator in _COMPARED:
        if name in names:
            drafts[name] = _compare(comparator, sample, settings.tuning(check))
    for check, unit in _TRENDS:
        if check.value in names:
            t = settings.tuning(check)
            drafts[check.value] = checks.trend(
                check.value, sample.new, sample.reference, t, settings.warmup_s, unit
            )
    pvalues = {
        n: d.finding.p if d.sufficient and d.finding.p is not None else 1.0
        for n, d in drafts.items()
    }
    split = holm(pvalues, round_alpha)
    findings = tuple(_decide(drafts[n], *split[n]) for n in names)
    return verdict(_overall(findings), _summary(findings), findings)


def _overall(findings: Sequence[Finding]) -> Outcome:
    if any(f.outcome is Outcome.FAIL for f in findings):
        return Outcome.FAIL
    if any(f.outcome is Outcome.WAIT and f.required for f in findings):
        return Outcome.WAIT
    return Outcome.PASS


def _summary(findings: Sequence[Finding]) -> str:
    failed = [f for f in findings if f.outcome is Outcome.FAIL]
    if failed:
        return "; ".join(f"{f.check} ({f.basis}): {f.reason}" for f in failed)
    waiting = [f for f in findings if f.outcome is Outcome.WAIT and f.required]
    if waiting:
        return "waiting for data: " + "; ".join(f"{f.check}: {f.reason}" for f in waiting)
    return f"{len(findings)} checks pass"
