"""The backoff schedule and the retry driver (pure logic, fake sleep)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwave.transport.retry import RetryPolicy, retry_async

pytestmark = pytest.mark.unit

policies = st.builds(
    lambda retries, base, extra: RetryPolicy(retries, base, base + extra),
    st.integers(min_value=0, max_value=30),
    st.floats(min_value=0.0, max_value=10.0),
    st.floats(min_value=0.0, max_value=100.0),
)
rands = st.lists(st.floats(min_value=0.0, max_value=1.0, exclude_max=True), min_size=1)


@given(policies, rands)
def test_schedule_is_bounded_and_jittered_under_monotone_caps(policy, values):
    stream = iter(values * 31)
    delays = policy.delays(lambda: next(stream))
    assert len(delays) == policy.retries
    ceilings = [policy.ceiling(i) for i in range(policy.retries)]
    assert ceilings == sorted(ceilings)
    assert all(c <= policy.max_delay_s for c in ceilings)
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert sum(delays) <= policy.max_total_delay_s() + 1e-9


def test_jitter_spreads_delays():
    policy = RetryPolicy(retries=3, base_delay_s=1.0, max_delay_s=10.0)
    assert policy.delays(lambda: 0.0) == [0.5, 1.0, 2.0]
    assert policy.delays(lambda: 0.999999) == pytest.approx([1.0, 2.0, 4.0], rel=1e-5)


def test_huge_attempt_numbers_stay_capped():
    assert RetryPolicy(retries=1, base_delay_s=0.1, max_delay_s=3.0).ceiling(10_000) == 3.0


@pytest.mark.parametrize(
    ("retries", "base", "cap"), [(-1, 0.1, 1.0), (1, -0.1, 1.0), (1, 2.0, 1.0)]
)
def test_invalid_policies_are_refused(retries, base, cap):
    with pytest.raises(ValueError, match=r"must be|need"):
        RetryPolicy(retries, base, cap)


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


def run_retry(
    failures: int, policy: RetryPolicy, errors: type[Exception] = Flaky
) -> tuple[str, int, list[float], list[int]]:
    calls: list[int] = []
    sleeps: list[float] = []
    retried: list[int] = []

    async def attempt():
        calls.append(1)
        if len(calls) <= failures:
            raise errors("boom")
        return "done"

    async def sleep(delay):
        sleeps.append(delay)

    result = asyncio.run(
        retry_async(
            attempt,
            policy,
            lambda exc: isinstance(exc, Flaky),
            sleep=sleep,
            rand=lambda: 0.0,
            on_retry=lambda n, exc, pause: retried.append(n),
        )
    )
    return result, len(calls), sleeps, retried


def test_retries_until_success():
    result, calls, sleeps, retried = run_retry(2, RetryPolicy(4, 0.2, 5.0))
    assert (result, calls, retried) == ("done", 3, [1, 2])
    assert sleeps == pytest.approx([0.1, 0.2])


def test_gives_up_after_the_bounded_retries():
    with pytest.raises(Flaky):
        run_retry(99, RetryPolicy(3, 0.2, 5.0))


def test_never_retries_what_is_not_retryable():
    calls = []

    async def attempt():
        calls.append(1)
        raise Fatal("no")

    async def sleep(_delay):
        raise AssertionError("must not sleep")

    with pytest.raises(Fatal):
        asyncio.run(
            retry_async(attempt, RetryPolicy(5), lambda e: isinstance(e, Flaky), sleep=sleep)
        )
    assert len(calls) == 1
