"""Type hints to fields: the field that converts and checks each parameter.

Pure (no Flask); startup time. :class:`FieldFactory` turns an annotation into a
marshmallow field that deserializes JSON (or query-string or form text) into a
value of the annotated type: Enum members, dataclass instances, datetimes,
uploads, nested freely. A type that involves pydantic gets a
:class:`~stackflask.pydantic_fields.PydanticField`, so pydantic validates it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from marshmallow import EXCLUDE, Schema, fields, post_load

from .fields import (
    Bool,
    Choice,
    Date,
    DateTime,
    Dict,
    ExactBool,
    ExactFloat,
    ExactInt,
    Float,
    Int,
    List,
    Nested,
    NoneValue,
    Raw,
    Str,
    Union,
    UnsupportedType,
)
from .pydantic_fields import PydanticField, involves_pydantic
from .records import Record
from .uploads import UploadField, is_upload_type


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", None) or repr(tp)


class FieldFactory:
    """Builds fields for annotations, sharing one schema per dataclass or TypedDict.

    An ``exact`` factory builds the fields results are checked with: they load
    a value's JSON form and take nothing a client would not expect (no ``"5"``
    or ``true`` for an ``int``, no ``NaN``), and a pydantic type is checked by
    pydantic in strict JSON mode.
    """

    def __init__(self, exact: bool = False) -> None:
        self.exact = exact
        self._schemas: dict[Any, type[Schema]] = {}
        self._names: set[str] = set()

    def field(self, tp: Any, **kwargs: Any) -> fields.Field:
        """A field for annotation ``tp``; ``kwargs`` go to the field (required, ...)."""
        if involves_pydantic(tp):
            return PydanticField(tp, json_text=self.exact, **kwargs)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            return self.field(args[0], **kwargs)
        if tp is Any or tp is object or tp is dataclasses.MISSING:
            return Raw(**{**kwargs, "allow_none": True})
        if origin in (typing.Union, types.UnionType):
            members = [a for a in args if a is not type(None)]
            if len(members) < len(args):
                kwargs["allow_none"] = True
            if len(members) == 1:
                return self.field(members[0], **kwargs)
            names = ", ".join(_type_name(m) for m in members)
            return Union([self.field(m) for m in members], names, **kwargs)
        if tp is type(None) or tp is None:
            return NoneValue(**{**kwargs, "allow_none": True})
        if origin is typing.Literal:
            return Choice({a: a for a in args}, "literal_error", exact=self.exact, **kwargs)
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
            return ExactBool(**kwargs) if self.exact else Bool(**kwargs)
        if issubclass(tp, enum.Enum):
            return Choice({m.value: m for m in tp}, "enum", exact=self.exact, **kwargs)
        simple: dict[type, Callable[..., fields.Field]] = {
            str: Str,
            int: ExactInt if self.exact else Int,
            float: ExactFloat if self.exact else Float,
            dt.datetime: DateTime,
            dt.date: Date,
        }
        for base, factory in simple.items():
            if tp is base:
                return factory(**kwargs)
        if issubclass(tp, Schema):
            return Nested(tp(unknown=EXCLUDE), **kwargs)
        if is_upload_type(tp) and not self.exact:
            return UploadField(tp, **kwargs)
        if dataclasses.is_dataclass(tp) or typing.is_typeddict(tp):
            make = tp if dataclasses.is_dataclass(tp) and not self.exact else dict
            return Record(self._schema_factory(tp), make, **kwargs)
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

            if not self.exact:  # a result's check needs no instance

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


