"""The marshmallow fields request values are converted with, and their errors.

Pure (no Flask); request time runs them (``hints.FieldFactory`` builds them at
startup). Each field deserializes JSON (or query-string text) into a value of
its type, as the wire contract says: ``"3"`` and ``5.0`` are ints, ``1.5`` is
not. Every error a field raises is a :class:`Problem`, a message string that
also carries a short ``type`` code (and, from pydantic, a location) for the 400
envelope.

A request's cost is bounded by its size, not by its problems: while a
:class:`~stackflask.tally.ProblemCount` is active, lists and dicts stop checking
their items once it has more than the 400 lists; and their plain items (an
``int`` for an ``int``, anything for ``Any``) are taken without a field call.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Callable, Mapping
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, missing, utils

from .tally import current_count


class UnsupportedType(TypeError):
    """An annotation stackflask cannot bind; the message names the type."""


class Problem(str):
    """An error message with a short ``type`` code (``missing``, ``int_parsing``...).

    ``loc`` is where inside the field's value the problem is, for fields that
    validate a whole structure at once (pydantic's).
    """

    type: str
    loc: tuple[Any, ...]

    def __new__(cls, text: str, code: str, loc: tuple[Any, ...] = ()) -> Problem:
        self = super().__new__(cls, text)
        self.type = code
        self.loc = loc
        return self


#: Codes for messages marshmallow itself produces, outside our fields.
_PLAIN_TYPES = {
    "Invalid input type.": "model_type",
    "Missing data for required field.": "missing",
    "Field may not be null.": "null",
}


def problem_type(message: str) -> str:
    return getattr(message, "type", None) or _PLAIN_TYPES.get(message, "value_error")


#: What :meth:`quick` returns for a value the field must convert in full.
SLOW: Any = object()


def _quick(field: fields.Field) -> Callable[[Any], Any] | None:
    """``field``'s shortcut for plain values, when nothing else must run on them."""
    if field.validators or getattr(field, "pre_load", None) or getattr(field, "post_load", None):
        return None
    return getattr(field, "quick", None)


class _TypedField(typing.Protocol):
    """What :meth:`_Typed.make_error` needs of the field it is mixed into."""

    error_types: dict[str, str]

    @property
    def error_messages(self) -> Mapping[str, Any]: ...


class _Typed:
    """Mixin: errors are :class:`Problem` with the code from ``error_types``."""

    error_types: dict[str, str] = {}

    def make_error(self: _TypedField, key: str, **kwargs: Any) -> ValidationError:
        text = self.error_messages[key]
        if kwargs:
            text = text.format(**kwargs)
        code = self.error_types.get(key) or {"required": "missing", "null": "null"}.get(key, key)
        return ValidationError(Problem(text, code))


class Str(_Typed, fields.String):
    error_types = {"invalid": "string_type"}

    def quick(self, value: Any) -> Any:
        return value if type(value) is str else SLOW


class Int(_Typed, fields.Integer):
    """An int; also ``"3"``, ``5.0`` and ``"5.0"``. Never a bool or ``1.5``."""

    error_types = {"invalid": "int_parsing"}

    def quick(self, value: Any) -> Any:
        return value if type(value) is int else SLOW

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    raise self.make_error("invalid") from None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise self.make_error("invalid")


class Float(_Typed, fields.Float):
    error_types = {"invalid": "float_parsing", "special": "float_parsing"}

    def quick(self, value: Any) -> Any:
        kind = type(value)
        if kind is float and math.isfinite(value):
            return value
        if kind is int:
            try:
                return float(value)
            except OverflowError:
                return SLOW
        return SLOW

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, (int, float)):
            try:
                result = float(value)
            except OverflowError:  # an int of 309 digits or more
                raise self.make_error("special") from None
        elif isinstance(value, str):
            try:
                result = float(value.strip())
            except ValueError:
                raise self.make_error("invalid") from None
        else:
            raise self.make_error("invalid")
        if not math.isfinite(result):
            raise self.make_error("special")
        return result


class Bool(_Typed, fields.Boolean):
    """``true/1/yes/on`` and ``false/0/no/off`` in any case, or a JSON boolean."""

    error_types = {"invalid": "bool_parsing"}
    _TRUE = frozenset({"true", "1", "yes", "on"})
    _FALSE = frozenset({"false", "0", "no", "off"})

    def quick(self, value: Any) -> Any:
        return value if type(value) is bool else SLOW

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in self._TRUE:
                return True
            if lowered in self._FALSE:
                return False
        raise self.make_error("invalid")


class ExactInt(Int):
    """A JSON integer and nothing else: results are checked in their JSON form."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise self.make_error("invalid")


class ExactFloat(Float):
    """A finite JSON number and nothing else."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                result = float(value)
            except OverflowError:
                raise self.make_error("invalid") from None
            if math.isfinite(result):
                return result
        raise self.make_error("invalid")


class ExactBool(Bool):
    """A JSON boolean and nothing else."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if isinstance(value, bool):
            return value
        raise self.make_error("invalid")


class DateTime(_Typed, fields.DateTime):
    error_types = {"invalid": "datetime_parsing"}


class Date(_Typed, fields.Date):
    error_types = {"invalid": "date_parsing"}


class Raw(fields.Raw):
    """``Any``: taken as it is."""

    def quick(self, value: Any) -> Any:
        return SLOW if value is None and not self.allow_none else value


class NoneValue(_Typed, fields.Field):
    default_error_messages = {"invalid": "Must be null."}
    error_types = {"invalid": "none_required"}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> None:
        raise self.make_error("invalid")


class Choice(_Typed, fields.Field):
    """One of a fixed set of values: an Enum (by value) or a ``Literal``.

    Query-string text matches a value by its string form, so ``?n=1`` selects
    ``Literal[1]`` or an int-valued Enum member.
    """

    default_error_messages = {"invalid": "Must be one of: {choices}."}

    def __init__(
        self, choices: Mapping[Any, Any], code: str, *, exact: bool = False, **kwargs: Any
    ) -> None:
        """``exact`` takes the values themselves only, with their JSON types."""
        super().__init__(**kwargs)
        self.choices = dict(choices)
        self.by_text = {} if exact else {
            str(k): v for k, v in choices.items() if not isinstance(k, str)
        }
        self.exact = exact
        self.error_types = {"invalid": code}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        try:
            if not isinstance(value, bool) or any(isinstance(k, bool) for k in self.choices):
                if not self.exact or any(type(k) is type(value) and k == value for k in self.choices):
                    return self.choices[value]
        except (KeyError, TypeError):
            pass
        if isinstance(value, str) and value in self.by_text:
            return self.by_text[value]
        listed = ", ".join(repr(k) if isinstance(k, str) else str(k) for k in self.choices)
        raise self.make_error("invalid", choices=listed)


class List(_Typed, fields.List):
    """A list; checking stops once the request has too many problems."""

    error_types = {"invalid": "list_type"}

    def quick(self, value: Any) -> Any:
        """A plain list, each item converted by its field's quick path; else :data:`SLOW`."""
        quick = _quick(self.inner)
        if quick is None or type(value) is not list:
            return SLOW
        result = []
        for item in value:
            out = quick(item)
            if out is SLOW:
                return SLOW
            result.append(out)
        return result

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[Any]:
        if not utils.is_collection(value):
            raise self.make_error("invalid")
        quick = _quick(self.inner)
        count = current_count()
        result: list[Any] = []
        errors: dict[int, Any] = {}
        for index, item in enumerate(value):
            if quick is not None:
                out = quick(item)
                if out is not SLOW:
                    result.append(out)
                    continue
            before = count.found if count is not None else 0
            try:
                result.append(self.inner.deserialize(item, **kwargs))
            except ValidationError as exc:
                errors[index] = exc.messages
                if count is not None and count.tally(before, exc.messages):
                    break
        if errors:
            raise ValidationError(errors, valid_data=result)
        return result


class Dict(_Typed, fields.Dict):
    """A mapping; errors are keyed by the entry's key alone, so ``loc`` reads
    ``["body", "points", "p", "x"]`` (marshmallow adds ``"key"``/``"value"``).
    Checking stops once the request has too many problems."""

    error_types = {"invalid": "dict_type"}

    def quick(self, value: Any) -> Any:
        """A plain dict, each key and value converted by its field's quick path;
        else :data:`SLOW`."""
        keys, values = self.key_field, self.value_field
        quick_key = _quick(keys) if keys is not None else None
        quick_value = _quick(values) if values is not None else None
        if (
            type(value) is not dict
            or (keys is not None and quick_key is None)
            or (values is not None and quick_value is None)
        ):
            return SLOW
        result = {}
        for key, item in value.items():
            if quick_key is not None:
                key = quick_key(key)
                if key is SLOW:
                    return SLOW
            if quick_value is not None:
                item = quick_value(item)
                if item is SLOW:
                    return SLOW
            result[key] = item
        return result

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, Mapping):
            raise self.make_error("invalid")
        keys, values = self.key_field, self.value_field
        quick_key = _quick(keys) if keys is not None else None
        quick_value = _quick(values) if values is not None else None
        count = current_count()
        result: dict[Any, Any] = {}
        errors: dict[Any, Any] = {}
        for key, item in value.items():
            before = count.found if count is not None else 0
            problems: list[Any] = []
            out_key = _convert(keys, quick_key, key, problems, kwargs)
            out = _convert(values, quick_value, item, problems, kwargs)
            if not problems:
                result[out_key] = out
                continue
            errors[key] = _merge(problems)
            if count is not None and count.tally(before, errors[key]):
                break
        if errors:
            raise ValidationError(errors, valid_data=result)
        return result


def _convert(
    field: fields.Field | None,
    quick: Callable[[Any], Any] | None,
    value: Any,
    problems: list[Any],
    kwargs: dict[str, Any],
) -> Any:
    """``value`` through ``field`` (its ``quick`` first); problems go to ``problems``."""
    if field is None:
        return value
    if quick is not None:
        out = quick(value)
        if out is not SLOW:
            return out
    try:
        return field.deserialize(value, **kwargs)
    except ValidationError as exc:
        problems.append(exc.messages)
        return SLOW


def _merge(messages: list[Any]) -> Any:
    """One entry's key and value messages as one."""
    if len(messages) == 1:
        return messages[0]
    first, second = messages
    if isinstance(first, dict) and isinstance(second, dict):
        return {**first, **second}
    return [*_as_list(first), *_as_list(second)]


def _as_list(messages: Any) -> list[Any]:
    return messages if isinstance(messages, list) else [messages]


class Nested(_Typed, fields.Nested):
    error_types = {"type": "model_type"}


class Union(_Typed, fields.Field):
    """The first of several fields that accepts the value."""

    default_error_messages = {"invalid": "Not a valid value for any of: {names}."}
    error_types = {"invalid": "union_error"}

    def __init__(self, candidates: list[fields.Field], names: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.candidates = candidates
        self.names = names

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        count = current_count()
        before = (count.found, count.stopped) if count is not None else (0, False)
        try:
            for candidate in self.candidates:
                try:
                    return candidate.deserialize(value)
                except ValidationError:
                    continue
        finally:
            if count is not None:  # a rejected candidate's problems are not the request's
                count.found, count.stopped = before
        raise self.make_error("invalid", names=self.names)


class Limit:
    """A marker's constraint (``ge=1``, ``max_length=5``...), checked after
    conversion with pydantic's message and code for the same constraint."""

    _NUMBER = {
        "ge": (lambda v, n: v >= n, "greater than or equal to", "greater_than_equal"),
        "gt": (lambda v, n: v > n, "greater than", "greater_than"),
        "le": (lambda v, n: v <= n, "less than or equal to", "less_than_equal"),
        "lt": (lambda v, n: v < n, "less than", "less_than"),
    }

    def __init__(self, name: str, bound: Any) -> None:
        self.name = name
        self.bound = bound
        self.pattern = re.compile(bound) if name == "pattern" else None

    def __call__(self, value: Any) -> None:
        if self.name in self._NUMBER:
            test, words, code = self._NUMBER[self.name]
            if not test(value, self.bound):
                raise ValidationError(Problem(f"Input should be {words} {self.bound}", code))
        elif self.pattern is not None:
            if isinstance(value, str) and not self.pattern.search(value):
                raise ValidationError(Problem(
                    f"String should match pattern '{self.bound}'", "string_pattern_mismatch"
                ))
        else:
            self._length(value)

    def _length(self, value: Any) -> None:
        text = isinstance(value, str)
        what, unit = ("String", "character") if text else ("List", "item")
        size = len(value)
        if self.name == "min_length" and size < self.bound:
            code, words = ("string_too_short" if text else "too_short"), "at least"
        elif self.name == "max_length" and size > self.bound:
            code, words = ("string_too_long" if text else "too_long"), "at most"
        else:
            return
        plural = "" if self.bound == 1 else "s"
        raise ValidationError(Problem(f"{what} should have {words} {self.bound} {unit}{plural}", code))


def limits(constraints: Mapping[str, Any]) -> list[Limit]:
    """The validators for a marker's constraints."""
    return [Limit(name, bound) for name, bound in constraints.items()]


def parameter_schema(
    members: dict[str, fields.Field], name: str = "Parameters"
) -> Schema:
    """A schema over named fields that ignores unknown keys."""
    return Schema.from_dict(dict(members), name=name)(unknown=EXCLUDE)


def flatten_errors(messages: Any, loc: list[Any]) -> list[dict[str, Any]]:
    """marshmallow's nested messages as the envelope's ``{"loc","msg","type"}`` items."""
    if isinstance(messages, Mapping):
        out: list[dict[str, Any]] = []
        for key, value in messages.items():
            out += flatten_errors(value, loc if key == "_schema" else [*loc, key])
        return out
    if isinstance(messages, list):
        out = []
        for item in messages:
            out += flatten_errors(item, loc)
        return out
    inner = getattr(messages, "loc", ())
    return [{"loc": [*loc, *inner], "msg": str(messages), "type": problem_type(messages)}]


MISSING = missing
