"""Type hints to marshmallow fields: how request values become Python values.

Pure (no Flask); startup time builds the fields, request time runs them.
:func:`field_for` turns an annotation into a field that deserializes JSON (or
query-string text) into a value of the annotated type: Enum members, dataclass
instances, pydantic models, datetimes, nested freely. Every error a field raises
is a :class:`Problem`, a message string that also carries a short ``type`` code
for the 400 envelope.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, missing, post_load


class UnsupportedType(TypeError):
    """An annotation stackflask cannot bind; the message names the type."""


class Problem(str):
    """An error message with a short ``type`` code (``missing``, ``int_parsing``...)."""

    type: str

    def __new__(cls, text: str, code: str) -> Problem:
        self = super().__new__(cls, text)
        self.type = code
        return self


#: Codes for messages marshmallow itself produces, outside our fields.
_PLAIN_TYPES = {
    "Invalid input type.": "model_type",
    "Missing data for required field.": "missing",
    "Field may not be null.": "null",
}


def problem_type(message: str) -> str:
    return getattr(message, "type", None) or _PLAIN_TYPES.get(message, "value_error")


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


class Int(_Typed, fields.Integer):
    """An int; also ``"3"``, ``5.0`` and ``"5.0"``. Never a bool or ``1.5``."""

    error_types = {"invalid": "int_parsing"}

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

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, (int, float)):
            result = float(value)
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


class DateTime(_Typed, fields.DateTime):
    error_types = {"invalid": "datetime_parsing"}


class Date(_Typed, fields.Date):
    error_types = {"invalid": "date_parsing"}


class Raw(fields.Raw):
    """``Any``: taken as it is."""


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

    def __init__(self, choices: Mapping[Any, Any], code: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.choices = dict(choices)
        self.by_text = {str(k): v for k, v in choices.items() if not isinstance(k, str)}
        self.error_types = {"invalid": code}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        try:
            if not isinstance(value, bool) or any(isinstance(k, bool) for k in self.choices):
                return self.choices[value]
        except (KeyError, TypeError):
            pass
        if isinstance(value, str) and value in self.by_text:
            return self.by_text[value]
        listed = ", ".join(repr(k) if isinstance(k, str) else str(k) for k in self.choices)
        raise self.make_error("invalid", choices=listed)


class List(_Typed, fields.List):
    error_types = {"invalid": "list_type"}


class Dict(_Typed, fields.Dict):
    """A mapping; errors are keyed by the entry's key alone, so ``loc`` reads
    ``["body", "points", "p", "x"]`` (marshmallow adds ``"key"``/``"value"``)."""

    error_types = {"invalid": "dict_type"}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        try:
            return super()._deserialize(value, attr, data, **kwargs)
        except ValidationError as exc:
            messages = exc.messages
            if isinstance(messages, dict):
                messages = {
                    key: _merge(inner.get("key"), inner.get("value"))
                    if isinstance(inner, dict) and set(inner) <= {"key", "value"}
                    else inner
                    for key, inner in messages.items()
                }
            raise ValidationError(messages, valid_data=exc.valid_data) from None


def _merge(first: Any, second: Any) -> Any:
    if first is None:
        return second
    if second is None:
        return first
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
        for candidate in self.candidates:
            try:
                return candidate.deserialize(value)
            except ValidationError:
                continue
        raise self.make_error("invalid", names=self.names)


class PydanticModel(fields.Field):
    """A pydantic model, validated by pydantic itself; errors keep its codes."""

    def __init__(self, model: type, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        try:
            return self.model.model_validate(value)  # type: ignore[attr-defined]
        except ValueError as exc:
            errors = getattr(exc, "errors", None)
            if not callable(errors):
                raise ValidationError(Problem(str(exc), "value_error")) from None
            nested: dict[Any, Any] = {}
            flat: list[Problem] = []
            for item in errors():
                problem = Problem(item.get("msg", "Invalid value."), item.get("type", "value_error"))
                loc = list(item.get("loc", ()))
                if not loc:
                    flat.append(problem)
                    continue
                node = nested
                for part in loc[:-1]:
                    node = node.setdefault(part, {})
                node.setdefault(loc[-1], []).append(problem)
            raise ValidationError(nested or flat) from None


def is_pydantic_model(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_validate") and hasattr(tp, "model_fields")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", None) or repr(tp)


class FieldFactory:
    """Builds fields for annotations, sharing one schema per dataclass or TypedDict.

    ``namespace`` is used to resolve string annotations of nested classes.
    """

    def __init__(self) -> None:
        self._schemas: dict[Any, type[Schema]] = {}
        self._names: set[str] = set()

    def field(self, tp: Any, **kwargs: Any) -> fields.Field:
        """A field for annotation ``tp``; ``kwargs`` go to the field (required, ...)."""
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            return self.field(args[0], **kwargs)
        if tp is Any or tp is object or tp is dataclasses.MISSING:
            return Raw(allow_none=True, **kwargs)
        if origin in (typing.Union, types.UnionType):
            members = [a for a in args if a is not type(None)]
            if len(members) < len(args):
                kwargs["allow_none"] = True
            if len(members) == 1:
                return self.field(members[0], **kwargs)
            names = ", ".join(_type_name(m) for m in members)
            return Union([self.field(m) for m in members], names, **kwargs)
        if tp is type(None) or tp is None:
            return NoneValue(allow_none=True, **kwargs)
        if origin is typing.Literal:
            return Choice({a: a for a in args}, "literal_error", **kwargs)
        if origin in (list, Sequence, tuple, set, frozenset) or tp in (list, tuple):
            if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
                if args:
                    raise UnsupportedType(f"{tp!r} (use tuple[T, ...] or list[T])")
            item = args[0] if args else Any
            return List(self.field(item), **kwargs)
        if origin in (dict, Mapping) or tp is dict:
            key, value = args if args else (str, Any)
            return Dict(keys=self.field(key), values=self.field(value), **kwargs)
        if isinstance(tp, type):
            return self._class_field(tp, **kwargs)
        raise UnsupportedType(repr(tp))

    def _class_field(self, tp: type, **kwargs: Any) -> fields.Field:
        if issubclass(tp, bool):
            return Bool(**kwargs)
        if issubclass(tp, enum.Enum):
            return Choice({m.value: m for m in tp}, "enum", **kwargs)
        simple: dict[type, Callable[..., fields.Field]] = {
            str: Str, int: Int, float: Float, dt.datetime: DateTime, dt.date: Date,
        }
        for base, factory in simple.items():
            if tp is base:
                return factory(**kwargs)
        if issubclass(tp, Schema):
            return Nested(tp(unknown=EXCLUDE), **kwargs)
        if is_pydantic_model(tp):
            return PydanticModel(tp, **kwargs)
        if dataclasses.is_dataclass(tp) or typing.is_typeddict(tp):
            return Nested(self._schema_factory(tp), **kwargs)
        if tp in (int, float, str) or issubclass(tp, (int, float, str)):
            return self._class_field(next(b for b in (int, float, str) if issubclass(tp, b)), **kwargs)
        raise UnsupportedType(_type_name(tp))

    def _schema_factory(self, tp: type) -> Callable[[], Schema]:
        if tp not in self._schemas:
            self._schemas[tp] = Schema  # placeholder while building, for recursive types
            self._schemas[tp] = self._build_schema(tp)
        return lambda: self._schemas[tp](unknown=EXCLUDE)

    def _build_schema(self, tp: type) -> type[Schema]:
        hints = typing.get_type_hints(tp, include_extras=True)
        attrs: dict[str, Any] = {}
        if dataclasses.is_dataclass(tp):
            for f in dataclasses.fields(tp):
                if not f.init:
                    continue
                required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                attrs[f.name] = self._member(tp, f.name, hints[f.name], required)

            def make(self: Schema, data: dict[str, Any], **_: Any) -> Any:
                return tp(**data)

            attrs["_make"] = post_load(make)
        else:
            required_keys = getattr(tp, "__required_keys__", frozenset(hints))
            for name, hint in hints.items():
                attrs[name] = self._member(tp, name, hint, name in required_keys)
        name = tp.__name__
        if name in self._names:
            name = f"{tp.__module__.replace('.', '_')}_{tp.__qualname__.replace('.', '_')}"
        self._names.add(name)
        return type(f"{name}Schema", (Schema,), attrs)

    def _member(self, owner: type, name: str, hint: Any, required: bool) -> fields.Field:
        try:
            return self.field(hint, required=required)
        except UnsupportedType as exc:
            raise UnsupportedType(f"{_type_name(owner)}.{name}: {exc}") from None


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
    return [{"loc": loc, "msg": str(messages), "type": problem_type(messages)}]


MISSING = missing
