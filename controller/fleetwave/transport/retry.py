"""Bounded exponential backoff with jitter, for connects that sshd drops under load.

Pure schedule computation plus one small async driver. sshd refuses handshakes past
``MaxStartups`` by closing the socket, which the client sees as a reset or a lost
connection; many controllers retrying in lockstep would hit the same limit again, so
each delay is jittered ("equal jitter": half fixed, half random) under a ceiling
that doubles per attempt up to ``max_delay_s``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` extra attempts after the first; delay ``i`` lies in
    ``[ceiling(i) / 2, ceiling(i)]`` where ``ceiling(i) = min(max_delay_s, base_delay_s * 2**i)``.
    """

    retries: int = 4
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, not {self.retries}")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError(
                f"need 0 <= base_delay_s <= max_delay_s, got {self.base_delay_s}, "
                f"{self.max_delay_s}"
            )

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the delay before retry number ``attempt`` (0-based)."""
        # Cap the exponent so huge attempt numbers cannot overflow the float.
        return min(self.max_delay_s, self.base_delay_s * 2.0 ** min(attempt, 60))

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The jittered delay before retry ``attempt``; ``rand`` returns a float in [0, 1)."""
        top = self.ceiling(attempt)
        return top / 2 + (top / 2) * rand()

    def delays(self, rand: Callable[[], float] = random.random) -> list[float]:
        """The whole schedule: one delay per retry, ``retries`` entries."""
        return [self.delay(i, rand) for i in range(self.retries)]

    def max_total_delay_s(self) -> float:
        """The most time the schedule can spend sleeping."""
        return sum(self.ceiling(i) for i in range(self.retries))


async def retry_async(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    is_retryable: Callable[[BaseException], bool],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Run ``attempt`` until it succeeds, a non-retryable error escapes, or the
    policy's retries are spent (then the last error is raised)."""
    for number in range(policy.retries + 1):
        try:
            return await attempt()
        except Exception as exc:
            if number >= policy.retries or not is_retryable(exc):
                raise
            pause = policy.delay(number, rand)
            if on_retry is not None:
                on_retry(number + 1, exc, pause)
            await sleep(pause)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
