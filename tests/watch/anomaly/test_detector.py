"""The detector on synthetic stages: the benchmark's scenarios, detected or not."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from fleetwave.config.anomaly import AnomalySettings, Check, Sensitivity, build_anomaly
from fleetwave.config.schema import Locator
from fleetwave.watch.anomaly import HostWindow, Outcome, Reference, StageSample, Verdict, detect
from tests.watch.anomaly.synth import Behaviour, hosts, zero_traffic

pytestmark = pytest.mark.unit

GOOD = Behaviour()
SETTINGS = AnomalySettings()


def stage(
    new_b: Behaviour,
    ref_b: Behaviour = GOOD,
    *,
    new: int = 1,
    ref: int = 9,
    before_b: Behaviour | None = GOOD,
    kind: Reference = Reference.OLD_RELEASE,
    seconds: float = 600.0,
    rounds: int = 60,
    seed: int = 7,
) -> StageSample:
    rng = random.Random(seed)
    return StageSample(
        stage="prod-a/az1",
        at=seconds,
        new=hosts(rng, "new-", new, new_b, seconds=seconds),
        reference=hosts(rng, "old-", ref, ref_b, seconds=seconds) if ref else (),
        reference_kind=kind if ref else Reference.NONE,
        before=hosts(rng, "new-", new, before_b, seconds=1800.0, start=-1800.0) if before_b else (),
        planned_rounds=rounds,
    )


def failed(v: Verdict) -> set[str]:
    return {f.check for f in v.failed}


NOISY = Behaviour(sigma=0.6, load_change_at=300.0)  # 2x jitter and a load change


@pytest.mark.parametrize(
    ("name", "sample", "expect"),
    [
        ("good release", stage(GOOD), set()),
        ("noisy but healthy", stage(NOISY, NOISY, new=3, ref=6), set()),
        ("errors 0 -> 2%", stage(Behaviour(error_rate=0.02)), {"errors"}),
        (
            "errors 1% -> 5%",
            stage(Behaviour(error_rate=0.05), Behaviour(error_rate=0.01)),
            {"errors"},
        ),
        # A whole-distribution shift moves the tail too.
        ("p50 +20%", stage(Behaviour(median_s=0.072)), {"latency", "latency_tail"}),
        ("requests to zero", stage(Behaviour(rate=0.0)), {"traffic"}),
        ("crash loop", stage(Behaviour(restart_every_s=30.0)), {"restarts"}),
        ("memory leak", stage(Behaviour(rss_per_hour=300e6)), {"memory"}),
        ("cpu creeping up", stage(Behaviour(cpu_per_hour=1.0)), {"cpu"}),
    ],
)
def test_benchmark_scenarios(name: str, sample: StageSample, expect: set[str]) -> None:
    v = detect(sample, SETTINGS)
    assert failed(v) == expect, (name, v.reason)
    assert v.outcome is (Outcome.FAIL if expect else Outcome.PASS), name
    json.dumps(v.to_json(), allow_nan=False)


def test_p99_plus_50_percent_is_caught_by_the_tail_test() -> None:
    """2% of requests 3x slower: the true p99 goes from ~121 ms to ~180 ms, inside the
    (100 ms, 250 ms] bucket, where the rank test sees little."""
    slow_tail = Behaviour(tail_share=0.02, tail_factor=3.0)
    v = detect(stage(slow_tail), SETTINGS)
    tail = next(f for f in v.findings if f.check == "latency_tail")
    assert tail.relative_effect is not None
    assert tail.relative_effect >= 0.3
    assert "latency_tail" in failed(v)
    assert v.outcome is Outcome.FAIL


def test_fault_in_one_az_only_against_the_previous_stage() -> None:
    """AZ 2 is all on the new release; its reference is AZ 1's (healthy, baked) hosts."""
    az2_bad = stage(
        Behaviour(error_rate=0.03), new=3, ref=3, kind=Reference.PREVIOUS_STAGE, before_b=None
    )
    v = detect(az2_bad, SETTINGS)
    assert failed(v) == {"errors"}
    assert v.reference == "previous_stage"
    assert next(f for f in v.findings if f.check == "errors").basis == "previous_stage"
    az1 = stage(GOOD, new=3, ref=3, kind=Reference.OLD_RELEASE)
    assert detect(az1, SETTINGS).outcome is Outcome.PASS


def test_errors_from_activation_are_caught_within_a_few_intervals() -> None:
    """0 -> 2% on a one-box at 20 req/s: failed after 3 intervals of 10 s, with the
    alpha of a 1 h bake (360 planned rounds)."""
    v = detect(stage(Behaviour(error_rate=0.02), seconds=30.0, rounds=360), SETTINGS)
    assert failed(v) == {"errors"}


def test_zero_traffic_never_passes_even_with_no_reference() -> None:
    sample = stage(GOOD, ref=0)
    dead = replace(sample, new=tuple(zero_traffic(h) for h in sample.new))
    v = detect(dead, SETTINGS)
    assert v.outcome is Outcome.FAIL
    assert "traffic" in failed(v)
    assert next(f for f in v.findings if f.check == "traffic").basis == "before"


def test_before_after_decides_alone_without_reference() -> None:
    v = detect(stage(Behaviour(error_rate=0.02), ref=0), SETTINGS)
    assert failed(v) == {"errors"}
    errors = next(f for f in v.findings if f.check == "errors")
    assert errors.basis == "before"
    assert v.reference == "none"


def test_before_after_only_corroborates_with_a_reference() -> None:
    """Noisy hours: both sides got slower than before the deployment (time of day);
    before/after sees it, the verdict does not follow it."""
    v = detect(stage(NOISY, NOISY, new=3, ref=6, before_b=GOOD), SETTINGS)
    assert v.outcome is Outcome.PASS
    lat = next(f for f in v.findings if f.check == "latency_tail")
    assert lat.corroboration is not None
    assert lat.corroboration.basis == "before"
    assert lat.corroboration.outcome is Outcome.FAIL  # it would have, alone
    assert lat.outcome is Outcome.PASS


def test_no_reference_and_no_before_waits() -> None:
    v = detect(stage(GOOD, ref=0, before_b=None), SETTINGS)
    assert v.outcome is Outcome.WAIT
    assert "no reference hosts" in v.reason


def test_insufficient_data_waits_never_passes_never_fails() -> None:
    for b in (GOOD, Behaviour(error_rate=0.5)):
        v = detect(stage(b, seconds=2.0), SETTINGS)  # ~40 requests on the one box
        assert v.outcome is Outcome.WAIT, v.reason
        assert "waiting for data" in v.reason


def test_no_new_host_waits() -> None:
    v = detect(replace(stage(GOOD), new=()), SETTINGS)
    assert v.outcome is Outcome.WAIT


def test_a_settled_stage_with_no_new_host_has_nothing_to_judge() -> None:
    # Every host skipped (operator's MAINT) or failed within the budget: waiting for a
    # new host would wait forever.
    v = detect(replace(stage(GOOD), new=(), settled=True), SETTINGS)
    assert v.outcome is Outcome.PASS
    assert "no host of the stage serves the new release" in v.reason


def test_noise_on_a_fast_endpoint_never_rolls_back() -> None:
    """2 ms -> 2.4 ms is significant on 12k requests, but under the 5 ms floor."""
    fast = Behaviour(median_s=0.002)
    v = detect(stage(replace(fast, median_s=0.0024), fast), SETTINGS)
    lat = next(f for f in v.findings if f.check == "latency")
    assert lat.significant
    assert lat.outcome is Outcome.PASS
    assert v.outcome is Outcome.PASS


def test_a_zero_error_baseline_is_no_blind_spot_and_no_false_alarm() -> None:
    v = detect(stage(GOOD, GOOD, new=3, ref=6), SETTINGS)
    errors = next(f for f in v.findings if f.check == "errors")
    assert errors.outcome is Outcome.PASS
    assert errors.p == 1.0


def test_getting_better_never_rolls_back() -> None:
    better = Behaviour(median_s=0.03, error_rate=0.0, rate=20.0)
    v = detect(stage(better, Behaviour(error_rate=0.02, median_s=0.06)), SETTINGS)
    assert v.outcome is Outcome.PASS


def test_evidence_carries_everything_the_trail_needs() -> None:
    v = detect(stage(Behaviour(error_rate=0.02)), SETTINGS)
    data = json.loads(json.dumps(v.to_json(), allow_nan=False))
    assert data["outcome"] == "fail"
    assert data["round_alpha"] == pytest.approx(0.01 / 60)
    errors = next(f for f in data["findings"] if f["check"] == "errors")
    for key in ("n", "statistic", "p", "effect", "floor", "threshold", "relative_effect"):
        assert key in errors
    assert errors["relative_effect"] is None
    assert errors["reference_zero"] is True
    assert errors["floor"] == {"absolute": 0.002, "relative": 0.5}
    assert errors["hosts"] == ["new-0"]
    assert errors["p"] <= errors["threshold"]


def test_settings_turn_checks_off() -> None:
    off = build_anomaly(False, Locator())
    assert detect(stage(Behaviour(error_rate=0.5)), off).outcome is Outcome.PASS
    no_memory = build_anomaly({"metrics": {"memory": False}}, Locator())
    v = detect(stage(Behaviour(rss_per_hour=300e6)), no_memory)
    assert "memory" not in {f.check for f in v.findings}
    assert v.outcome is Outcome.PASS


def test_low_sensitivity_tolerates_what_high_catches() -> None:
    small = stage(Behaviour(error_rate=0.004), Behaviour(error_rate=0.001))
    low = build_anomaly({"sensitivity": "low"}, Locator())
    high = build_anomaly({"sensitivity": "high"}, Locator())
    assert detect(small, low).outcome is Outcome.PASS
    assert detect(small, high).outcome is Outcome.FAIL


# ---------------------------------------------------------------- false-rollback control


def _zero_floors(alpha: float) -> AnomalySettings:
    base = AnomalySettings(sensitivity=Sensitivity.HIGH, alpha=alpha, warmup_s=0.0)
    metrics = {
        c: replace(t, relative_floor=0.0, absolute_floor=0.0, tail_relative_floor=0.0)
        for c, t in base.metrics.items()
    }
    return replace(base, metrics=metrics)


def _healthy_trial(rng: random.Random) -> StageSample:
    b = Behaviour(rate=2.0, error_rate=0.01, restart_every_s=0.0)

    def side(prefix: str, count: int) -> tuple[HostWindow, ...]:
        return hosts(rng, prefix, count, b, seconds=300.0, period=10.0)

    return StageSample(
        "s", 300.0, side("n", 2), side("o", 4), Reference.OLD_RELEASE, planned_rounds=1
    )


def _false_rollbacks(settings: AnomalySettings, trials: int, seed: int) -> int:
    rng = random.Random(seed)
    return sum(detect(_healthy_trial(rng), settings).outcome is Outcome.FAIL for _ in range(trials))


def test_healthy_releases_fail_at_most_at_alpha() -> None:
    """With every floor at 0 (the statistics alone), 300 healthy stages drawn from one
    distribution fail at most at alpha = 0.05: expected <= 15; 28 is the 99.9% bound."""
    count = _false_rollbacks(_zero_floors(0.05), 300, seed=11)
    assert count <= 28
    # The bound is not vacuous: an alpha of 0.5 makes the same trials fail far more.
    assert _false_rollbacks(_zero_floors(0.5), 300, seed=11) > 28


def test_the_alpha_split_covers_every_check() -> None:
    v = detect(stage(GOOD), SETTINGS)
    thresholds = sorted(f.threshold for f in v.findings if f.threshold is not None)
    assert len(thresholds) == len(Check) + 1  # latency has its tail test too
    assert thresholds[0] == pytest.approx(v.round_alpha / len(thresholds))
    assert thresholds[-1] <= v.round_alpha
