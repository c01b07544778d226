"""What the detector answers: a :class:`Verdict` made of :class:`Finding` records.

Every finding carries what the decision trail needs to be read and re-checked by
hand: the test, the sample sizes (new, reference), the statistic, p, the threshold p
was compared with (alpha after the split), the effect, and the floors it had to
clear. ``to_json()`` gives plain JSON (no NaN or infinity: a relative effect over a
zero reference is ``null`` with ``"reference_zero": true``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any


class Outcome(enum.Enum):
    PASS = "pass"
    FAIL = "fail"  # roll back
    WAIT = "wait"  # insufficient data: never passes, never rolls back


def _num(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class Finding:
    """One check's result."""

    check: str  # errors, latency, latency_tail, traffic, restarts, memory, cpu
    basis: str  # old_release, previous_stage, before, trend
    outcome: Outcome
    reason: str
    test: str = ""  # e.g. "conditional binomial"
    n: tuple[float, float] = (0.0, 0.0)  # (new, reference) samples
    statistic: float | None = None
    p: float | None = None
    threshold: float | None = None  # alpha share p was compared with
    effect: float | None = None  # new - reference, in the metric's unit
    relative_effect: float | None = None  # effect / reference (inf: reference 0)
    absolute_floor: float = 0.0
    relative_floor: float = 0.0
    new_value: float | None = None
    reference_value: float | None = None
    unit: str = ""
    hosts: tuple[str, ...] = ()  # the hosts that carry the anomaly
    required: bool = True  # a WAIT here holds the verdict at WAIT
    corroboration: Finding | None = None  # before/after on the same hosts

    @property
    def significant(self) -> bool:
        return self.p is not None and self.threshold is not None and self.p <= self.threshold

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "check": self.check,
            "basis": self.basis,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "test": self.test,
            "n": list(self.n),
            "statistic": _num(self.statistic),
            "p": self.p,
            "threshold": self.threshold,
            "effect": _num(self.effect),
            "relative_effect": _num(self.relative_effect),
            "floor": {"absolute": self.absolute_floor, "relative": self.relative_floor},
            "new": _num(self.new_value),
            "reference": _num(self.reference_value),
            "unit": self.unit,
            "required": self.required,
        }
        if self.relative_effect is not None and math.isinf(self.relative_effect):
            out["reference_zero"] = True
        if self.hosts:
            out["hosts"] = list(self.hosts)
        if self.corroboration is not None:
            out["corroboration"] = self.corroboration.to_json()
        return out


@dataclass(frozen=True)
class Verdict:
    """The detector's answer for one stage at one evaluation."""

    stage: str
    at: float
    outcome: Outcome
    reason: str
    reference: str  # old_release, previous_stage, none
    sensitivity: str
    alpha: float  # per stage
    round_alpha: float  # alpha / planned rounds: what Holm splits across the checks
    planned_rounds: int
    findings: tuple[Finding, ...] = ()

    @property
    def failed(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.outcome is Outcome.FAIL)

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``events.jsonl`` and ``explain --json``."""
        return {
            "kind": "anomaly",
            "stage": self.stage,
            "at": self.at,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "reference": self.reference,
            "sensitivity": self.sensitivity,
            "alpha": self.alpha,
            "round_alpha": self.round_alpha,
            "planned_rounds": self.planned_rounds,
            "findings": [f.to_json() for f in self.findings],
        }
