"""Declarative field definitions: one source of truth for validating config files and
for the JSON Schema that ``fleetwave schema`` prints.

A spec is a tree of small frozen nodes (:class:`Obj`, :class:`ListOf`, :class:`Str`,
...). ``spec.check(value, path, locator)`` validates and converts one value (durations
to seconds, ``25%`` to a :class:`Quantity`), raising a ConfigError that names the file,
the line and the key path; ``spec.json()`` renders the same node as JSON Schema
(draft 2020-12). Validators never duplicate a rule the schema states.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fleetwave_core.durations import parse_duration
from fleetwave_core.errors import ConfigError
from fleetwave_core.yamlsrc import YamlDocument, join_path, parent_path

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class Locator:
    """Where each key path of a (possibly merged) document came from: ``file:line``."""

    def __init__(self, positions: dict[str, str] | None = None, fallback: str = ""):
        self.positions: dict[str, str] = positions or {}
        self.fallback = fallback
        #: When a list (see :meth:`collect`), containers record their children's errors
        #: here and go on with the next key; otherwise the first error is raised.
        self.errors: list[ConfigError] | None = None
        self.max_errors = 0

    def collect(self, max_errors: int) -> list[ConfigError]:
        """Switch to collecting mode: ``check`` records errors instead of raising the
        first, until ``max_errors`` are recorded (then :class:`TooManyErrors`)."""
        self.errors = []
        self.max_errors = max_errors
        return self.errors

    def record(self, error: ConfigError) -> None:
        """Keep ``error`` in collecting mode; raise it otherwise."""
        if self.errors is None:
            raise error
        self.errors.append(error)
        if len(self.errors) >= self.max_errors:
            raise TooManyErrors(self.errors)

    @classmethod
    def of(cls, doc: YamlDocument) -> Locator:
        """A locator for one loaded YAML document."""
        return cls({k: f"{doc.path}:{line}" for k, line in doc.positions.items()}, str(doc.path))

    def where(self, key_path: str) -> str:
        """``file:line`` of ``key_path`` or of its nearest located ancestor."""
        probe = key_path
        while probe:
            if probe in self.positions:
                return self.positions[probe]
            probe = parent_path(probe)
        return self.fallback

    def file_of(self, key_path: str) -> str:
        """The file that defined ``key_path`` (``where`` without the line)."""
        return self.where(key_path).rsplit(":", 1)[0] if self.positions else self.fallback

    def error(self, key_path: str, message: str) -> ConfigError:
        """A ConfigError naming file:line and the key path."""
        return ConfigError(message, source=self.where(key_path), key_path=key_path or None)

    def replace_subtree(self, key_path: str, other: Locator) -> None:
        """Forget what was under ``key_path`` and take ``other``'s positions there."""
        if key_path:
            stale = [k for k in self.positions if _under(k, key_path)]
            for k in stale:
                del self.positions[k]
        for k, v in other.positions.items():
            if not key_path or _under(k, key_path):
                self.positions[k] = v


class TooManyErrors(Exception):
    """The collecting cap was reached. Not a ConfigError, so no container records it."""

    def __init__(self, errors: list[ConfigError]):
        super().__init__(f"{len(errors)} errors")
        self.errors = errors


def anchored(pattern: str) -> str:
    """``pattern`` as a JSON Schema ``pattern`` that matches exactly what
    ``re.fullmatch(pattern, ...)`` does: JSON Schema patterns search, so anchor both
    ends. ``(?!\\n)`` because Python's ``$`` (which the ``jsonschema`` library uses)
    also matches before a final newline; ECMA's ``$`` does not, so it is a no-op there."""
    return f"^(?:{pattern})$(?!\\n)"


def _under(candidate: str, key_path: str) -> bool:
    return candidate == key_path or candidate.startswith((key_path + ".", key_path + "["))


@dataclass(frozen=True)
class Quantity:
    """A count of hosts or a percentage of them (``5`` or ``"25%"``)."""

    value: float
    percent: bool

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{self.value:g}"

    def of(self, total: int, *, round_up: bool) -> int:
        """Resolve against ``total`` hosts; percentages round up or down as asked."""
        if not self.percent:
            return int(self.value)
        exact = total * self.value / 100.0
        whole = int(exact)
        # Guard against 0.1-style float noise deciding the rounding.
        if round_up and exact - whole > 1e-9:
            whole += 1
        return whole


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


@dataclass(frozen=True)
class Spec:
    description: str = field(default="", kw_only=True)

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has a Python type this node handles (for :class:`AnyOf`)."""
        raise NotImplementedError

    def check(self, value: Any, path: str, loc: Locator) -> Any:
        """Validate ``value`` at ``path``; return the converted value."""
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        """This node's own JSON Schema keywords."""
        raise NotImplementedError

    def json(self) -> dict[str, Any]:
        """JSON Schema of this node, with its description."""
        out = self.schema()
        if self.description:
            out = {"description": self.description, **out}
        return out

    def expected(self) -> str:
        return "a value"

    def json_as_option(self) -> dict[str, Any]:
        """JSON Schema of this node as an :class:`AnyOf` option: only the values whose
        Python type :meth:`accepts` (AnyOf dispatches on it before checking)."""
        return self.json()


@dataclass(frozen=True)
class Str(Spec):
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    #: Extra conversion/validation; a ValueError becomes a positioned ConfigError.
    convert: Callable[[str], Any] | None = None

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str)

    def expected(self) -> str:
        return "one of " + ", ".join(self.choices) if self.choices else "a string"

    def check(self, value: Any, path: str, loc: Locator) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool) and not self.choices:
            value = str(value)  # YAML reads `name: 2024` as a number; names are text
        if not isinstance(value, str) or not value:
            raise loc.error(path, f"expected {self.expected()}, got {_type_name(value)}")
        if self.choices and value not in self.choices:
            hint = _did_you_mean(value, self.choices)
            raise loc.error(path, f"invalid value {value!r}: expected {self.expected()}{hint}")
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise loc.error(path, f"invalid value {value!r}: must match {self.pattern}")
        if self.convert is not None:
            try:
                return self.convert(value)
            except ValueError as exc:
                raise loc.error(path, str(exc)) from None
        return value

    def schema(self) -> dict[str, Any]:
        if self.choices:
            return {"enum": list(self.choices)}
        text: dict[str, Any] = {"type": "string", "minLength": 1}
        if self.pattern:
            text["pattern"] = anchored(self.pattern)
        numbers = _numbers_as_text(self.pattern)
        return {"anyOf": [text, numbers]} if numbers else text

    def json_as_option(self) -> dict[str, Any]:
        out = self.json()
        if "anyOf" in out and not self.choices:  # accepts() takes strings only
            out = {**out, **out.pop("anyOf")[0]}
        return out


def _numbers_as_text(pattern: str | None) -> dict[str, Any] | None:
    """The schema of the numbers :meth:`Str.check` accepts: it turns them into ``str(n)``,
    which must then match ``pattern``. Decided by probing the pattern with the shapes
    ``str()`` gives, so a pattern that rejects some shape excludes it here too."""
    if pattern is None:
        return {"type": "number"}
    ok = [re.fullmatch(pattern, s) is not None for s in ("10", "-1", "1.5", "1e-05", "1e+16")]
    if ok == [True, True, True, True, True]:
        return {"type": "number"}
    if ok == [True, False, True, True, False]:
        # Non-negative: integers print as digits; floats print as 1.5 or 1e-05 below
        # 1e16 and with a '+' from there on.
        return {
            "type": "number",
            "minimum": 0,
            "anyOf": [{"type": "integer"}, {"exclusiveMaximum": 1e16}],
        }
    if ok[0] and not ok[1]:
        return {"type": "integer", "minimum": 0}
    return None


@dataclass(frozen=True)
class Int(Spec):
    minimum: int | None = None
    maximum: int | None = None

    def accepts(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def expected(self) -> str:
        return "an integer"

    def check(self, value: Any, path: str, loc: Locator) -> Any:
        if not self.accepts(value):
            raise loc.error(path, f"expected an integer, got {_type_name(value)}")
        if not -(2**63) <= value < 2**63:  # no count or port is this large; nor print it
            raise loc.error(path, f"integer of {len(str(abs(value)))} digits is out of range")
        if self.minimum is not None and value < self.minimum:
            raise loc.error(path, f"{value} is below the minimum {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise loc.error(path, f"{value} is above the maximum {self.maximum}")
        return value

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


@dataclass(frozen=True)
class Bool(Spec):
    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def expected(self) -> str:
        return "true or false"

    def check(self, value: Any, path: str, loc: Locator) -> Any:
        if not isinstance(value, bool):
            raise loc.error(path, f"expected true or false, got {_type_name(value)}")
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


_UNIT = "([mM][sS]|[sSmMhHdDwW])"  # parse_duration lower-cases its input
DURATION_PATTERN = rf"^\s*[0-9]+(\.[0-9]+)?\s*({_UNIT}(\s*[0-9]+(\.[0-9]+)?\s*{_UNIT})*)?\s*$(?!\n)"


@dataclass(frozen=True)
class Duration(Spec):
    """``"90s"``, ``"1h30m"``, ``"500ms"`` or a number of seconds -> float seconds."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str | int | float) and not isinstance(value, bool)

    def expected(self) -> str:
        return "a duration"

    def check(self, value: Any, path: str, loc: Locator) -> Any:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise loc.error(path, str(exc)) from None

    def schema(self) -> dict[str, Any]:
        return {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "minimum": 0},
            ]
        }


@dataclass(frozen=True)
class Amount(Spec):
    """A host count (``3``) or a percentage (``"25%"``) -> :class:`Quantity`."""

    minimum: int = 0
    max_percent: float = 100.0

    def accepts(self, value: Any) -> bool:
        return isinstance(value, int | str) and not isinstance(value, bool)

    def expected(self) -> str:
        return "a host count or a percentage like '25%'"

    def check(self, value: Any, path: str, loc: Locator) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < self.minimum:
                raise loc.error(path, f"{value} is below the minimum {self.minimum}")
            return Quantity(float(value), percent=False)
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
            if match:
                pct = float(match.group(1))
                if pct > self.max_percent or (self.minimum > 0 and pct <= 0):
                    bound = "above 0% and " if self.minimum > 0 else ""
                    raise loc.error(
                        path,
                        f"{value!r} out of range: must be {bound}at most {self.max_percent:g}%",
                    )
                return Quantity(pct, percent=True)
        raise loc.error(path, f"expected {self.expected()}, got {value!r}")

    def schema(self) -> dict[str, Any]:
        if self.max_percent != 100.0:
            raise NotImplementedError("only percentages up to 100% have a schema pattern")
        percent: dict[str, Any] = {"type": "string", "pattern": _PERCENT_UP_TO_100}
        if self.minimum > 0:
            percent["not"] = {"pattern": _PERCENT_ZERO}
        return {"anyOf": [{"type": "integer", "minimum": self.minimum}, percent]}


# What Amount.check's regex and range test accept, as patterns: 0-100 (leading zeros
# and decimals allowed, 100.000 too), and the zero percentages a positive amount refuses.
_PERCENT_UP_TO_100 = r"^\s*0*(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)\s*%\s*$(?!\n)"
_PERCENT_ZERO = r"^\s*0+(\.0+)?\s*%\s*$(?!\n)"


@dataclass(frozen=True)
class Day(Spec):
    """A calendar date, ``2025-12-25`` (YAML reads it as a date already)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, date | str)

    def check(self, value: Any, path: str, loc: Locator) -> Any:
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        raise loc.error(path, f"expected a date YYYY-MM-DD, got {value!r}")

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "date"}


@dataclass(frozen=True)
class ListOf(Spec):
    item: Spec = field(default_factory=Str)
    min_items: int = 0

    def accepts(self, value: Any) -> bool:
        return isinstance(value, list)

    def expected(self) -> str:
        return "a list"

    def check(self, value: Any, path: str, loc: Locator) -> Any:
        if not isinstance(value, list):
            raise loc.error(path, f"expected a list, got {_type_name(value)}")
        if len(value) < self.min_items:
            raise loc.error(path, f"needs at least {self.min_items} item(s)")
        out: list[Any] = []
        for i, v in enumerate(value):
            try:
                out.append(self.item.check(v, join_path(path, i), loc))
            except ConfigError as exc:
                loc.record(exc)
        return out

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "items": self.item.json()}
        if self.min_items:
            out["minItems"] = self.min_items
        return out


@dataclass(frozen=True)
class MapOf(Spec):
    """A mapping with free keys (names) and uniform values."""

    value: Spec = field(default_factory=Str)
    key_pattern: str | None = None
    min_items: int = 0

    def accepts(self, value: Any) -> bool:
        return isinstance(value, Mapping)

    def expected(self) -> str:
        return "a mapping"

    def check(self, value: Any, path: str, loc: Locator) -> Any:
        if not isinstance(value, Mapping):
            raise loc.error(path, f"expected a mapping, got {_type_name(value)}")
        if len(value) < self.min_items:
            raise loc.error(path, f"needs at least {self.min_items} entr(y/ies)")
        out: dict[str, Any] = {}
        for key, item in value.items():
            child = join_path(path, str(key))
            try:
                if self.key_pattern and not re.fullmatch(self.key_pattern, str(key)):
                    raise loc.error(child, f"invalid name {key!r}: must match {self.key_pattern}")
                out[str(key)] = self.value.check(item, child, loc)
            except ConfigError as exc:
                loc.record(exc)
        return out

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object", "additionalProperties": self.value.json()}
        if self.key_pattern:
            out["propertyNames"] = {"pattern": anchored(self.key_pattern)}
        if self.min_items:
            out["minProperties"] = self.min_items
        return out


@dataclass(frozen=True)
class Anything(Spec):
    """Free-form data passed through unchecked (e.g. a driver's own options, which the
    driver validates)."""

    def accepts(self, value: Any) -> bool:
        return True

    def check(self, value: Any, path: str, loc: Locator) -> Any:
        return value

    def schema(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Field:
    name: str
    spec: Spec
    required: bool = False


@dataclass(frozen=True)
class Obj(Spec):
    """A mapping with known keys; unknown keys are errors with a "did you mean"."""

    fields: tuple[Field, ...] = ()

    def accepts(self, value: Any) -> bool:
        return isinstance(value, Mapping)

    def expected(self) -> str:
        return "a mapping"

    def field_named(self, name: str) -> Field:
        """The field called ``name`` (KeyError when there is none)."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def check(self, value: Any, path: str, loc: Locator) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise loc.error(path, f"expected a mapping, got {_type_name(value)}")
        names = [f.name for f in self.fields]
        for key in value:
            if key not in names:
                hint = _did_you_mean(str(key), names)
                loc.record(loc.error(join_path(path, str(key)), f"unknown key {key!r}{hint}"))
        out: dict[str, Any] = {}
        for f in self.fields:
            try:
                if f.name in value:
                    out[f.name] = f.spec.check(value[f.name], join_path(path, f.name), loc)
                elif f.required:
                    raise loc.error(path, f"missing required key {f.name!r}")
            except ConfigError as exc:
                loc.record(exc)
        return out

    def schema(self, *, with_required: bool = True) -> dict[str, Any]:
        required = [f.name for f in self.fields if f.required] if with_required else []
        out: dict[str, Any] = {
            # check() reads an empty value (``onebox:``) as {}: null is valid unless a
            # key is required, which {} then lacks.
            "type": "object" if required else ["object", "null"],
            "properties": {f.name: f.spec.json() for f in self.fields},
            "additionalProperties": False,
        }
        if required:
            out["required"] = required
        return out

    def json_as_option(self) -> dict[str, Any]:
        return {**self.json(), "type": "object"}


@dataclass(frozen=True)
class AnyOf(Spec):
    """One of several shapes, told apart by Python type (e.g. a string or a mapping)."""

    options: tuple[Spec, ...] = ()

    def accepts(self, value: Any) -> bool:
        return any(o.accepts(value) for o in self.options)

    def expected(self) -> str:
        return " or ".join(o.expected() for o in self.options)

    def check(self, value: Any, path: str, loc: Locator) -> Any:
        for option in self.options:
            if option.accepts(value):
                return option.check(value, path, loc)
        raise loc.error(path, f"expected {self.expected()}, got {_type_name(value)}")

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [o.json_as_option() for o in self.options]}


def _did_you_mean(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def json_schema(root: Obj, *, title: str, schema_id: str, partial: bool) -> dict[str, Any]:
    """A complete draft 2020-12 document for ``root``.

    ``partial``: omit the root's required keys, because a parent file that children
    ``extends:`` is legitimately incomplete; the loader enforces them after merging.
    """
    body = root.schema(with_required=not partial)
    head: dict[str, Any] = {"$schema": JSON_SCHEMA_DIALECT, "$id": schema_id, "title": title}
    if root.description:
        head["description"] = root.description
    return {**head, **body}
