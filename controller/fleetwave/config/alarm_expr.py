"""Composite alarm expressions: ``ALARM("name")``, ``AND``, ``OR``, ``NOT``, parentheses.

Keywords are case-insensitive; precedence is NOT > AND > OR. A small recursive-descent
parser turns text into frozen AST nodes; :func:`render` prints the canonical form, so
``parse(render(e)) == e``. :func:`evaluate` is pure: the caller supplies alarm states.

Grammar::

    expr    := and_ ( OR and_ )*
    and_    := unary ( AND unary )*
    unary   := NOT unary | primary
    primary := ALARM "(" STRING ")" | "(" expr ")"
    STRING  := '"' chars '"' | "'" chars "'"     (backslash escapes the quote)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fleetwave.errors import AlarmSyntaxError


@dataclass(frozen=True)
class Alarm:
    name: str


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

_KEYWORDS = ("alarm", "and", "or", "not")


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
                    f"unknown word {word!r} (expected ALARM, AND, OR, NOT)",
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
            self.take()
            return Not(self.unary())
        return self.primary()

    def primary(self) -> Expr:
        token = self.peek()
        if token.kind == "(":
            self.take()
            expr = self.or_()
            self.expect(")", "')'")
            return expr
        if self.is_kw("alarm"):
            self.take()
            self.expect("(", "'(' after ALARM")
            name = self.expect("str", 'a quoted alarm name, e.g. ALARM("high-latency")')
            if not name.value.strip():
                raise self.fail("empty alarm name", name)
            self.expect(")", "')' after the alarm name")
            return Alarm(name.value)
        found = "end of expression" if token.kind == "end" else repr(token.value)
        raise self.fail(f"expected ALARM(\"name\"), NOT or '(', found {found}", token)


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
        return bool(states[expr.name])
    if isinstance(expr, Not):
        return not evaluate(expr.operand, states)
    if isinstance(expr, And):
        return all([evaluate(op, states) for op in expr.operands])
    return any([evaluate(op, states) for op in expr.operands])


def render(expr: Expr) -> str:
    """The canonical text of ``expr``; parentheses only where precedence needs them."""
    return _render(expr, 0)


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render(expr: Expr, parent: int) -> str:
    # Binding strength: OR 1, AND 2, NOT/ALARM 3.
    if isinstance(expr, Alarm):
        return f"ALARM({_quote(expr.name)})"
    if isinstance(expr, Not):
        return "NOT " + _render(expr.operand, 3)
    strength, word = (2, " AND ") if isinstance(expr, And) else (1, " OR ")
    # Nested same-kind operands are parenthesised so the n-ary shape round-trips.
    text = word.join(_render(op, strength + 1) for op in expr.operands)
    return f"({text})" if strength < parent else text
