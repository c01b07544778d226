"""``anomaly:`` in a pipeline: anomaly detection on the standard metrics, with no
thresholds to write. On by default; tunable or off per metric.

```yaml
anomaly:                      # or `anomaly: false` to turn it all off
  sensitivity: medium         # low | medium | high (default medium)
  alpha: 0.01                 # false-rollback budget per stage (default: by sensitivity)
  warmup: 2m                  # trends ignore the first minutes after activation
  metrics:
    errors: {relative_floor: 0.5, absolute_floor: 0.002}
    latency: {relative_floor: 0.1, absolute_floor: 5ms, tail_relative_floor: 0.25}
    traffic: {relative_floor: 0.5}
    restarts: {absolute_floor: 3}
    memory: false
    cpu: {relative_floor: 0.5, absolute_floor: 0.1}
```

:data:`DEFAULTS` is the one table of defaults (``docs/anomaly.md`` shows it, a test
checks the two agree). The spec node :data:`ANOMALY_SPEC` is what the loader validates
against and what ``fleetwave schema`` renders; :func:`build_anomaly` adds the checks
a schema cannot state. This module is pure data; it imports nothing above ``config``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fleetwave.config.schema import (
    DURATION_PATTERN,
    AnyOf,
    Bool,
    Duration,
    Field,
    Int,
    Locator,
    Obj,
    Spec,
    Str,
)
from fleetwave_core.yamlsrc import join_path


class Sensitivity(enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Check(enum.Enum):
    """The detector's checks, by the metric names ``anomaly.metrics`` uses."""

    ERRORS = "errors"  # 5xx ratio: conditional binomial, new vs reference
    LATENCY = "latency"  # Mann-Whitney U on the histogram (p50 floor) + p99 tail test
    TRAFFIC = "traffic"  # per-host request rate vs the reference hosts
    RESTARTS = "restarts"  # app restarts + health-check flaps: a crash loop
    MEMORY = "memory"  # app RSS trend over the bake: a leak
    CPU = "cpu"  # app CPU trend over the bake


@dataclass(frozen=True)
class MetricTuning:
    """One check's knobs. A check fails only when its test is significant AND its effect
    clears both floors (units: see :data:`UNITS`)."""

    enabled: bool = True
    relative_floor: float = 0.0  # share of the reference value (0.1: 10%)
    absolute_floor: float = 0.0  # in the metric's unit
    min_samples: int = 1  # per side; below it the check waits
    tail_relative_floor: float = 0.0  # latency only: the p99 tail test's floor

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "enabled": self.enabled,
            "relative_floor": self.relative_floor,
            "absolute_floor": self.absolute_floor,
            "min_samples": self.min_samples,
        }
        if self.tail_relative_floor:
            out["tail_relative_floor"] = self.tail_relative_floor
        return out


#: What each check's absolute floor and min_samples count.
UNITS: dict[Check, tuple[str, str]] = {
    Check.ERRORS: ("error ratio (0.002 = 0.2 points)", "requests"),
    Check.LATENCY: ("seconds (5ms)", "requests"),
    Check.TRAFFIC: ("requests/s below the reference", "expected requests on a host"),
    Check.RESTARTS: ("restarts + flaps on one host", "seconds observed"),
    Check.MEMORY: ("bytes per hour (64MiB)", "points after warm-up"),
    Check.CPU: ("cores per hour", "points after warm-up"),
}

#: Medium sensitivity; low doubles the floors, high halves them (min_samples: low x2,
#: high x1/2, never below the statistical minimum).
_MEDIUM: dict[Check, MetricTuning] = {
    Check.ERRORS: MetricTuning(relative_floor=0.5, absolute_floor=0.002, min_samples=100),
    Check.LATENCY: MetricTuning(
        relative_floor=0.1, absolute_floor=0.005, min_samples=100, tail_relative_floor=0.25
    ),
    Check.TRAFFIC: MetricTuning(relative_floor=0.5, absolute_floor=0.0, min_samples=30),
    Check.RESTARTS: MetricTuning(relative_floor=0.0, absolute_floor=3.0, min_samples=30),
    Check.MEMORY: MetricTuning(relative_floor=0.1, absolute_floor=64 * 2**20, min_samples=10),
    Check.CPU: MetricTuning(relative_floor=0.5, absolute_floor=0.1, min_samples=10),
}

#: The false-rollback budget per stage, by sensitivity.
ALPHA: dict[Sensitivity, float] = {
    Sensitivity.LOW: 0.001,
    Sensitivity.MEDIUM: 0.01,
    Sensitivity.HIGH: 0.05,
}

#: The statistical minimum per side below which no sensitivity may go.
_MIN_SAMPLES_FLOOR: dict[Check, int] = {
    Check.ERRORS: 20,
    Check.LATENCY: 20,  # 10/(1-0.5): the p50 effect needs it
    Check.TRAFFIC: 10,
    Check.RESTARTS: 10,
    Check.MEMORY: 6,
    Check.CPU: 6,
}


_FACTOR = {Sensitivity.LOW: 2.0, Sensitivity.MEDIUM: 1.0, Sensitivity.HIGH: 0.5}
#: Restarts are counted events: low tolerates one more, high one fewer.
_RESTARTS = {Sensitivity.LOW: 4.0, Sensitivity.MEDIUM: 3.0, Sensitivity.HIGH: 2.0}


def _scaled(base: MetricTuning, check: Check, sensitivity: Sensitivity) -> MetricTuning:
    factor = _FACTOR[sensitivity]
    rel = base.relative_floor * factor
    if check is Check.TRAFFIC:
        rel = min(rel, 0.9)  # a drop of 100% or more cannot be asked for
    absolute = base.absolute_floor * factor
    if check is Check.RESTARTS:
        absolute = _RESTARTS[sensitivity]
    return replace(
        base,
        relative_floor=rel,
        absolute_floor=absolute,
        min_samples=max(_MIN_SAMPLES_FLOOR[check], round(base.min_samples * factor)),
        tail_relative_floor=base.tail_relative_floor * factor,
    )


#: Every default, by sensitivity and check: the one source of truth.
DEFAULTS: dict[Sensitivity, dict[Check, MetricTuning]] = {
    s: {c: _scaled(t, c, s) for c, t in _MEDIUM.items()} for s in Sensitivity
}

DEFAULT_WARMUP_S = 120.0


@dataclass(frozen=True)
class AnomalySettings:
    """The typed ``anomaly:`` section."""

    enabled: bool = True
    sensitivity: Sensitivity = Sensitivity.MEDIUM
    alpha: float = ALPHA[Sensitivity.MEDIUM]  # per stage
    warmup_s: float = DEFAULT_WARMUP_S
    metrics: Mapping[Check, MetricTuning] = field(
        default_factory=lambda: dict(DEFAULTS[Sensitivity.MEDIUM])
    )

    def tuning(self, check: Check) -> MetricTuning:
        """The knobs of ``check`` (disabled when the whole section is off)."""
        t = self.metrics[check]
        return t if self.enabled else replace(t, enabled=False)

    @property
    def enabled_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in Check if self.tuning(c).enabled)

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "sensitivity": self.sensitivity.value,
            "alpha": self.alpha,
            "warmup_s": self.warmup_s,
            "metrics": {c.value: self.metrics[c].to_json() for c in Check},
        }


# ---------------------------------------------------------------- the spec


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*", re.IGNORECASE)
#: ``_SIZE`` for JSON Schema (no inline flags there: both cases spelled out).
SIZE_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*([bB]|[kKmMgG][bB]|[kKmMgG][iI][bB])?\s*$(?!\n)"
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def parse_size(text: str) -> float:
    """``"64MiB"``, ``"50MB"``, ``"1024"`` -> bytes."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"invalid size {text!r}: expected e.g. 64MiB, 50MB, 1024")
    return float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]


@dataclass(frozen=True)
class Floor(Spec):
    """A non-negative number, or (``unit``) a duration / a byte size string."""

    unit: str = "number"  # "number", "duration", "size"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, int | float | str) and not isinstance(value, bool)

    def expected(self) -> str:
        return {"duration": "a duration like 5ms", "size": "a size like 64MiB"}.get(
            self.unit, "a number"
        )

    def check(self, value: Any, path: str, loc: Locator) -> Any:
        if isinstance(value, str) and self.unit == "duration":
            out = Duration().check(value, path, loc)
        elif isinstance(value, str) and self.unit == "size":
            out = Str(convert=parse_size).check(value, path, loc)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out = float(value)
        else:
            raise loc.error(path, f"expected {self.expected()}, got {value!r}")
        if not math.isfinite(out) or out < 0:
            raise loc.error(path, f"a floor must be a finite number >= 0, got {value!r}")
        return out

    def schema(self) -> dict[str, Any]:
        number = {"type": "number", "minimum": 0}
        if self.unit == "number":
            return number
        # The same text the loader parses, so editors refuse what the loader refuses.
        pattern = DURATION_PATTERN if self.unit == "duration" else SIZE_PATTERN
        return {"anyOf": [number, {"type": "string", "pattern": pattern}]}


def _metric_spec(check: Check) -> Spec:
    unit = {Check.LATENCY: "duration", Check.MEMORY: "size"}.get(check, "number")
    absolute, samples = UNITS[check]
    fields = [
        Field("enabled", Bool()),
        Field("relative_floor", Floor(description="share of the reference value, e.g. 0.1")),
        Field("absolute_floor", Floor(unit=unit, description=absolute)),
        Field("min_samples", Int(minimum=1, description=f"per side, in {samples}")),
    ]
    if check is Check.LATENCY:
        fields.append(Field("tail_relative_floor", Floor(description="p99 tail test's floor")))
    return AnyOf(
        description=f"true, false, or the {check.value} check's knobs",
        options=(Bool(), Obj(fields=tuple(fields))),
    )


ANOMALY_SPEC = AnyOf(
    description="Anomaly detection on the standard metrics (default: on). false turns it off.",
    options=(
        Bool(),
        Obj(
            fields=(
                Field("enabled", Bool()),
                Field(
                    "sensitivity",
                    Str(choices=tuple(s.value for s in Sensitivity), description="default medium"),
                ),
                Field("alpha", Floor(description="false-rollback budget per stage (0-0.5)")),
                Field("warmup", Duration(description="trends skip this after activation")),
                Field(
                    "metrics",
                    Obj(fields=tuple(Field(c.value, _metric_spec(c)) for c in Check)),
                ),
            )
        ),
    ),
)


def build_anomaly(raw: Any, loc: Locator, path: str = "anomaly") -> AnomalySettings:
    """The typed section from data already checked against :data:`ANOMALY_SPEC`
    (``None``: the defaults). Raises a positioned ConfigError for what the spec cannot
    say: alpha in (0, 0.5], min_samples below the statistical minimum, a traffic floor
    of 100% or more, an error floor above 1."""
    if raw is None:
        return AnomalySettings()
    if isinstance(raw, bool):
        return AnomalySettings(enabled=raw)
    sensitivity = Sensitivity(raw.get("sensitivity", Sensitivity.MEDIUM.value))
    alpha = raw.get("alpha", ALPHA[sensitivity])
    if not 0.0 < alpha <= 0.5:
        raise loc.error(join_path(path, "alpha"), f"alpha must be in (0, 0.5], got {alpha:g}")
    metrics: dict[Check, MetricTuning] = {}
    given = raw.get("metrics", {})
    for check in Check:
        base = DEFAULTS[sensitivity][check]
        item = given.get(check.value)
        where = join_path(join_path(path, "metrics"), check.value)
        if item is None:
            metrics[check] = base
        elif isinstance(item, bool):
            metrics[check] = replace(base, enabled=item)
        else:
            metrics[check] = _tuning(check, base, item, where, loc)
    return AnomalySettings(
        enabled=raw.get("enabled", True),
        sensitivity=sensitivity,
        alpha=alpha,
        warmup_s=raw.get("warmup", DEFAULT_WARMUP_S),
        metrics=metrics,
    )


def _tuning(
    check: Check, base: MetricTuning, item: Mapping[str, Any], where: str, loc: Locator
) -> MetricTuning:
    out = replace(
        base,
        enabled=item.get("enabled", base.enabled),
        relative_floor=item.get("relative_floor", base.relative_floor),
        absolute_floor=item.get("absolute_floor", base.absolute_floor),
        min_samples=item.get("min_samples", base.min_samples),
        tail_relative_floor=item.get("tail_relative_floor", base.tail_relative_floor),
    )
    minimum = _MIN_SAMPLES_FLOOR[check]
    if out.min_samples < minimum:
        raise loc.error(
            join_path(where, "min_samples"),
            f"{check.value} needs at least {minimum} samples per side; "
            f"{out.min_samples} would judge noise",
        )
    if check is Check.TRAFFIC and out.relative_floor >= 1.0:
        raise loc.error(
            join_path(where, "relative_floor"),
            "a traffic drop is a share of the reference rate: it must be below 1",
        )
    if check is Check.ERRORS and out.absolute_floor > 1.0:
        raise loc.error(join_path(where, "absolute_floor"), "an error-ratio floor cannot exceed 1")
    return out


def defaults_table() -> str:
    """The Markdown table of :data:`DEFAULTS` that ``docs/anomaly.md`` carries (a test
    checks the two are the same)."""
    order = (Sensitivity.LOW, Sensitivity.MEDIUM, Sensitivity.HIGH)
    rows = [
        "| check | knob | low | medium | high |",
        "|---|---|---|---|---|",
        "| all | alpha per stage | " + " | ".join(f"{ALPHA[s]:g}" for s in order) + " |",
    ]
    for check in Check:
        for knob in ("relative_floor", "absolute_floor", "min_samples", "tail_relative_floor"):
            values = [getattr(DEFAULTS[s][check], knob) for s in order]
            if knob == "tail_relative_floor" and not any(values):
                continue
            cells = " | ".join(_cell(check, knob, v) for v in values)
            rows.append(f"| `{check.value}` | {knob} | {cells} |")
    return "\n".join(rows)


def _cell(check: Check, knob: str, value: float) -> str:
    if knob == "absolute_floor" and check is Check.MEMORY:
        return f"{value / 2**20:g}MiB"
    if knob == "absolute_floor" and check is Check.LATENCY:
        return f"{value * 1000:g}ms"
    return f"{value:g}"


def describe(settings: AnomalySettings) -> str:
    """One line for ``fleetwave plan``."""
    if not settings.enabled or not settings.enabled_checks:
        return "anomaly detection: off"
    parts = []
    for check in settings.enabled_checks:
        t = settings.tuning(check)
        if check is Check.LATENCY:
            parts.append(
                f"latency (>= {t.relative_floor:.0%} and >= {t.absolute_floor * 1000:g}ms)"
            )
        elif check is Check.ERRORS:
            parts.append(f"errors (>= +{t.absolute_floor:.2%})")
        elif check is Check.TRAFFIC:
            parts.append(f"traffic (drop >= {t.relative_floor:.0%})")
        else:
            parts.append(check.value)
    off = [c.value for c in Check if c not in settings.enabled_checks]
    tail = f"; off: {', '.join(off)}" if off else ""
    return (
        f"anomaly detection: {settings.sensitivity.value}, alpha {settings.alpha:g} per stage: "
        f"{', '.join(parts)}{tail}"
    )
