import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave.config.alarm_expr import (
    Alarm,
    And,
    Expr,
    Not,
    Or,
    alarm_names,
    evaluate,
    parse,
    render,
)
from fleetwave.errors import AlarmSyntaxError, ConfigError

pytestmark = pytest.mark.unit

CASES = json.loads((Path(__file__).parent / "cases" / "alarm_expr.json").read_text())


@pytest.mark.parametrize("case", CASES["valid"], ids=lambda c: c["text"])
def test_valid_expressions_render_canonically(case):
    expr = parse(case["text"])
    assert render(expr) == case["canonical"]
    assert parse(render(expr)) == expr


@pytest.mark.parametrize("case", CASES["invalid"], ids=lambda c: c["text"] or "<empty>")
def test_invalid_expressions_name_the_column(case):
    with pytest.raises(AlarmSyntaxError) as info:
        parse(case["text"])
    assert info.value.column == case["column"]
    assert case["message"] in str(info.value)
    assert f"column {case['column']}" in str(info.value)
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize("case", CASES["evaluate"], ids=lambda c: c["text"])
def test_evaluate_follows_precedence(case):
    assert evaluate(parse(case["text"]), case["states"]) is case["fires"]


def test_precedence_not_over_and_over_or():
    assert parse('ALARM("a") OR ALARM("b") AND NOT ALARM("c")') == Or(
        (Alarm("a"), And((Alarm("b"), Not(Alarm("c")))))
    )


def test_unknown_alarm_state_is_an_error_not_clear():
    with pytest.raises(KeyError, match="nope"):
        evaluate(parse('ALARM("nope")'), {})


names = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8).filter(
    lambda s: s.strip() != ""
)
exprs = st.recursive(
    st.builds(Alarm, names),
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.builds(And, st.lists(inner, min_size=2, max_size=3).map(tuple)),
        st.builds(Or, st.lists(inner, min_size=2, max_size=3).map(tuple)),
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(exprs)
def test_render_then_parse_round_trips(expr):
    assert parse(render(expr)) == expr


@settings(max_examples=100, deadline=None)
@given(exprs, st.data())
def test_evaluate_matches_boolean_semantics(expr, data):
    states: dict[str, bool] = {n: data.draw(st.booleans()) for n in sorted(alarm_names(expr))}

    def reference(e: Expr) -> bool:
        if isinstance(e, Alarm):
            return states[e.name]
        if isinstance(e, Not):
            return not reference(e.operand)
        results = [reference(o) for o in e.operands]
        return all(results) if isinstance(e, And) else any(results)

    assert evaluate(expr, states) is reference(expr)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ALRMNDOT()\"' anot", max_size=30))
def test_parser_never_raises_anything_but_syntax_errors(text):
    column = 1
    try:
        parse(text)
    except AlarmSyntaxError as exc:
        column = exc.column
    assert 1 <= column <= len(text) + 1
