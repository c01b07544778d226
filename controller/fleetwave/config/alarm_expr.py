"""Composite alarm expressions: ``ALARM("name")``, ``OK("name")``,
``INSUFFICIENT_DATA("name")``, ``AND``, ``OR``, ``NOT``, parentheses.

Keywords are case-insensitive; precedence is NOT > AND > OR. A small recursive-descent
parser turns text into frozen AST nodes; :func:`render` prints the canonical form, so
``parse(render(e)) == e``. Evaluation is pure: the caller supplies alarm states.

:func:`evaluate_states` is the three-valued (Kleene) evaluation used to watch a
deployment: ``ALARM("x")`` is unknown while ``x`` is INSUFFICIENT_DATA, ``NOT unknown`` is
unknown, ``FALSE AND unknown`` is false, ``TRUE OR unknown`` is true. A composite is in
ALARM when true, OK when false and INSUFFICIENT_DATA when unknown, so an unknown never
counts as OK. :func:`evaluate` is the older two-valued form over booleans.

Grammar::

    expr    := and_ ( OR and_ )*
    and_    := unary ( AND unary )*
    unary   := NOT unary | primary
    primary := STATE "(" STRING ")" | "(" expr ")"
    STATE   := ALARM | OK | INSUFFICIENT_DATA
    STRING  := '"' chars '"' | "'" chars "'"     (backslash escapes the quote)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from fleetwave.errors import AlarmSyntaxError


class AlarmState(enum.Enum):
    """The state of an alarm, metric or composite (CloudWatch's three)."""

    OK = "OK"
    ALARM = "ALARM"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"


class Truth(enum.Enum):
    """A three-valued truth: what a composite expression evaluates to."""

    TRUE = "true"
    FALSE = "false"
    UNKNOWN = "unknown"

    def state(self) -> AlarmState:
        """TRUE is ALARM, FALSE is OK, UNKNOWN is INSUFFICIENT_DATA."""
        return _TRUTH_STATE[self]


_TRUTH_STATE = {
    Truth.TRUE: AlarmState.ALARM,
    Truth.FALSE: AlarmState.OK,
    Truth.UNKNOWN: AlarmState.INSUFFICIENT_DATA,
}


@dataclass(frozen=True)
class Alarm:
    """``ALARM("name")`` (the default), ``OK("name")`` or ``INSUFFICIENT_DATA("name")``:
    true while the named alarm is in ``state``."""

    name: str
    state: AlarmState = AlarmState.ALARM


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class And:
    operands: tuple[Expr, ...]  # two or more


@dataclass(frozen=True)
class Or:
    operands: tuple[Expr, ...]  # two or more


Expr = Alarm | Not | And | Or

#: Deepest nesting of NOT and parentheses the parser accepts (bounded recursion).
MAX_DEPTH = 32

_STATE_WORDS = {s.value.lower(): s for s in AlarmState}
_KEYWORDS = (*_STATE_WORDS, "and", "or", "not")


@dataclass(frozen=True)
class _Token:
    kind: str  # "kw", "str", "(", ")", "end"
    value: str
    column: int  # 1-based


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            tokens.append(_Token(ch, ch, i + 1))
            i += 1
        elif ch in "\"'":
            start, i = i, i + 1
            chars: list[str] = []
            while i < len(text) and text[i] != ch:
                if text[i] == "\\" and i + 1 < len(text):
                    i += 1
                chars.append(text[i])
                i += 1
            if i >= len(text):
                raise AlarmSyntaxError("unterminated string", expression=text, column=start + 1)
            tokens.append(_Token("str", "".join(chars), start + 1))
            i += 1
        elif ch.isalpha():
            start = i
            while i < len(text) and (text[i].isalnum() or text[i] == "_"):
                i += 1
            word = text[start:i]
            if word.lower() not in _KEYWORDS:
                raise AlarmSyntaxError(
                    f"unknown word {word!r} (expected ALARM, OK, INSUFFICIENT_DATA, AND, OR, NOT)",
                    expression=text,
                    column=start + 1,
                )
            tokens.append(_Token("kw", word.lower(), start + 1))
        else:
            raise AlarmSyntaxError(f"unexpected character {ch!r}", expression=text, column=i + 1)
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0

    def nest(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH} levels", token)

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def fail(self, message: str, token: _Token) -> AlarmSyntaxError:
        return AlarmSyntaxError(message, expression=self.text, column=token.column)

    def expect(self, kind: str, what: str) -> _Token:
        token = self.peek()
        if token.kind != kind:
            found = "end of expression" if token.kind == "end" else repr(token.value)
            raise self.fail(f"expected {what}, found {found}", token)
        return self.take()

    def is_kw(self, word: str) -> bool:
        token = self.peek()
        return token.kind == "kw" and token.value == word

    def parse(self) -> Expr:
        expr = self.or_()
        token = self.peek()
        if token.kind != "end":
            raise self.fail(f"unexpected {token.value!r} after a complete expression", token)
        return expr

    def or_(self) -> Expr:
        operands = [self.and_()]
        while self.is_kw("or"):
            self.take()
            operands.append(self.and_())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_(self) -> Expr:
        operands = [self.unary()]
        while self.is_kw("and"):
            self.take()
            operands.append(self.unary())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def unary(self) -> Expr:
        if self.is_kw("not"):
            self.nest(self.take())
            operand = self.unary()
            self.depth -= 1
            return Not(operand)
        return self.primary()

    def primary(self) -> Expr:
        token = self.peek()
        if token.kind == "(":
            self.nest(self.take())
            expr = self.or_()
            self.expect(")", "')'")
            self.depth -= 1
            return expr
        if token.kind == "kw" and token.value in _STATE_WORDS:
            self.take()
            state = _STATE_WORDS[token.value]
            self.expect("(", f"'(' after {state.value}")
            name = self.expect("str", 'a quoted alarm name, e.g. ALARM("high-latency")')
            if not name.value.strip():
                raise self.fail("empty alarm name", name)
            self.expect(")", "')' after the alarm name")
            return Alarm(name.value, state)
        found = "end of expression" if token.kind == "end" else repr(token.value)
        raise self.fail(f"expected ALARM(\"name\"), OK(...), NOT or '(', found {found}", token)


def parse(text: str) -> Expr:
    """Parse ``text``; raise AlarmSyntaxError naming the column of the first problem."""
    return _Parser(text).parse()


def alarm_names(expr: Expr) -> frozenset[str]:
    """Every alarm name the expression refers to."""
    if isinstance(expr, Alarm):
        return frozenset((expr.name,))
    if isinstance(expr, Not):
        return alarm_names(expr.operand)
    return frozenset().union(*(alarm_names(op) for op in expr.operands))


def evaluate(expr: Expr, states: Mapping[str, bool]) -> bool:
    """True when the expression fires, given each alarm's state (True: in alarm).

    Raises KeyError naming an alarm missing from ``states``: an unknown state must not
    silently count as clear.
    """
    if isinstance(expr, Alarm):
        if expr.name not in states:
            raise KeyError(f"no state for alarm {expr.name!r}")
        firing = bool(states[expr.name])
        if expr.state is AlarmState.INSUFFICIENT_DATA:
            raise ValueError("INSUFFICIENT_DATA() needs evaluate_states, not booleans")
        return firing if expr.state is AlarmState.ALARM else not firing
    if isinstance(expr, Not):
        return not evaluate(expr.operand, states)
    if isinstance(expr, And):
        return all([evaluate(op, states) for op in expr.operands])
    return any([evaluate(op, states) for op in expr.operands])


def evaluate_states(expr: Expr, states: Mapping[str, AlarmState]) -> Truth:
    """Three-valued evaluation over alarm states (Kleene's logic, see the module doc).

    Raises KeyError naming an alarm missing from ``states``: an unknown name is a bug
    in the caller, not a clear alarm. Recursion is bounded by the parser's
    :data:`MAX_DEPTH`.
    """
    if isinstance(expr, Alarm):
        if expr.name not in states:
            raise KeyError(f"no state for alarm {expr.name!r}")
        state = states[expr.name]
        if expr.state is AlarmState.INSUFFICIENT_DATA:
            return Truth.TRUE if state is AlarmState.INSUFFICIENT_DATA else Truth.FALSE
        if state is AlarmState.INSUFFICIENT_DATA:
            return Truth.UNKNOWN
        return Truth.TRUE if state is expr.state else Truth.FALSE
    if isinstance(expr, Not):
        inner = evaluate_states(expr.operand, states)
        return {Truth.TRUE: Truth.FALSE, Truth.FALSE: Truth.TRUE}.get(inner, Truth.UNKNOWN)
    values = [evaluate_states(op, states) for op in expr.operands]
    dominant = Truth.FALSE if isinstance(expr, And) else Truth.TRUE
    if dominant in values:
        return dominant
    if Truth.UNKNOWN in values:
        return Truth.UNKNOWN
    return Truth.TRUE if dominant is Truth.FALSE else Truth.FALSE


def render(expr: Expr) -> str:
    """The canonical text of ``expr``; parentheses only where precedence needs them."""
    return _render(expr, 0)


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render(expr: Expr, parent: int) -> str:
    # Binding strength: OR 1, AND 2, NOT/ALARM 3.
    if isinstance(expr, Alarm):
        return f"{expr.state.value}({_quote(expr.name)})"
    if isinstance(expr, Not):
        return "NOT " + _render(expr.operand, 3)
    strength, word = (2, " AND ") if isinstance(expr, And) else (1, " OR ")
    # Nested same-kind operands are parenthesised so the n-ary shape round-trips.
    text = word.join(_render(op, strength + 1) for op in expr.operands)
    return f"({text})" if strength < parent else text
