"""Durations as operators write them: ``"90s"``, ``"1h30m"``, ``"2d"``, ``"500ms"``.

A bare number means seconds. Units: ``ms``, ``s``, ``m``, ``h``, ``d``, ``w``; several
may be concatenated in any order of magnitude (``1h30m``). At most ten years
(:data:`MAX_SECONDS`). Parsing is pure and raises
``ValueError`` with the offending text; callers turn that into a positioned ConfigError.
"""

from __future__ import annotations

import math
import re

UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}

#: Longest duration accepted anywhere (bakes, windows, timeouts, expiries): ten years.
#: A deadline this far away is a typo, and ``datetime`` + a longer one can overflow.
MAX_SECONDS = 10 * 365 * 86400

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"^(?:\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w))+\s*$")


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``. Numbers are seconds; strings use the units above.

    Raises ValueError for negative, non-finite or malformed values.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '90s' or '1h30m', got {value!r}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int with hundreds of digits
            raise ValueError("invalid duration: too large a number") from None
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif _WHOLE.match(text):
            seconds = sum(float(n) * UNITS[u] for n, u in _PART.findall(text))
        else:
            raise ValueError(
                f"invalid duration {_short(value)}: use a number of seconds or units "
                "ms, s, m, h, d, w (e.g. '90s', '1h30m', '500ms')"
            )
    else:
        raise ValueError(f"expected a duration like '90s' or '1h30m', got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {_short(value)}: must be a finite, non-negative time")
    if seconds > MAX_SECONDS:
        raise ValueError(
            f"duration {_short(value)} is too long to schedule: at most "
            f"{format_duration(MAX_SECONDS)} (10 years)"
        )
    return seconds


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def format_duration(seconds: float) -> str:
    """A compact human form (``1h30m``, ``90s`` -> ``1m30s``, ``0.5`` -> ``500ms``)."""
    if seconds < 0:
        raise ValueError("negative duration")
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
