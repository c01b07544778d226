import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave_core.durations import format_duration, parse_duration

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("1h30m", 5400),
        ("2d", 172800),
        ("500ms", 0.5),
        ("1w", 604800),
        ("1.5h", 5400),
        (" 10 m ", 600),
        ("45", 45),
        (30, 30),
        (2.5, 2.5),
        ("1h 30m 15s", 5415),
    ],
)
def test_parse(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad", ["", "h", "1x", "-5s", "1h-30m", "ten", True, None, [], float("nan"), -1]
)
def test_reject(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=10**8))
def test_format_round_trips_whole_seconds(seconds):
    assert parse_duration(format_duration(seconds)) == seconds
