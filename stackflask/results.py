"""Return annotations: whether a result streams, and whether it matches its type.

Pure (no Flask). Startup turns a webmethod's return annotation into a
:class:`ResultSpec`; request time checks each raw value a provider returns (not
a dump of it) before it is sent. ``AsyncIterator[T]`` (or ``AsyncGenerator``,
``AsyncIterable``) streams items of ``T``; ``X | AsyncIterator[T]`` is a plain
``X`` or a stream of ``T``, whichever the provider returns. A type that involves
pydantic is checked by pydantic; ``-> Response`` and ``-> bytes`` are raw (see
:mod:`stackflask.responses`); any other class that cannot be sent as JSON is
refused at startup.
"""

from __future__ import annotations

import collections.abc as abc
import dataclasses
import datetime as dt
import enum
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema

from .fields import UnsupportedType
from .pydantic_fields import involves_pydantic, problems_of, type_adapter
from .responses import is_raw_type

#: A mismatch: where in the value (``("items", 0, "a")``) and what is wrong.
Mismatch = tuple[tuple[Any, ...], str]
Checker = Callable[[Any], "Mismatch | None"]

_STREAMS = (abc.AsyncIterator, abc.AsyncIterable, abc.AsyncGenerator)


def _accept(value: Any) -> Mismatch | None:
    return None


@dataclass(frozen=True)
class ResultSpec:
    """How to check a webmethod's result: as a plain value, and as stream items.

    ``plain`` is the annotation of a plain result (``None`` when the method only
    streams); ``item`` that of a stream item (``None`` when it never streams);
    ``raw`` says the result is sent as it is, not as JSON.
    """

    check: Checker = _accept
    check_item: Checker = _accept
    plain: Any = Any
    item: Any = None
    raw: bool = False


def result_spec(hint: Any) -> ResultSpec:
    """The :class:`ResultSpec` of a return annotation (``Any`` when absent)."""
    origin = typing.get_origin(hint)
    if is_raw_type(hint):
        return ResultSpec(plain=hint, raw=True)
    if origin is typing.Annotated and not involves_pydantic(hint):
        return result_spec(typing.get_args(hint)[0])
    if origin in _STREAMS:
        item = _first_arg(hint)
        return ResultSpec(
            check=_expect(lambda v: False, "a stream"),
            check_item=CheckerFactory().build(item),
            plain=None,
            item=item,
        )
    if origin in (typing.Union, types.UnionType):
        plain = [a for a in typing.get_args(hint) if typing.get_origin(a) not in _STREAMS]
        streams = [a for a in typing.get_args(hint) if typing.get_origin(a) in _STREAMS]
        if streams:
            factory = CheckerFactory()
            items = [_first_arg(s) for s in streams]
            item_hint = items[0] if len(items) == 1 else typing.Union[tuple(items)]
            plain_hint = (
                plain[0] if len(plain) == 1 else typing.Union[tuple(plain)] if plain else None
            )
            return ResultSpec(
                check=factory.build(plain_hint) if plain else _accept,
                check_item=factory.build(item_hint),
                plain=plain_hint,
                item=item_hint,
            )
    return ResultSpec(check=CheckerFactory().build(hint), plain=hint)


def _first_arg(hint: Any) -> Any:
    args = typing.get_args(hint)
    return args[0] if args else Any


def describe(mismatch: Mismatch) -> str:
    where, message = mismatch
    path = ".".join(str(p) for p in where)
    return f"{path}: {message}" if path else message


class CheckerFactory:
    """Builds checkers, one per class for dataclasses and TypedDicts (recursion-safe)."""

    def __init__(self) -> None:
        self._classes: dict[Any, Checker] = {}

    def build(self, tp: Any) -> Checker:
        if involves_pydantic(tp):
            return _pydantic(tp)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            return self.build(args[0])
        if tp is Any or tp is object:
            return _accept
        if tp is None or tp is type(None):
            return _expect(lambda v: v is None, "null")
        if origin in (typing.Union, types.UnionType):
            members = [self.build(a) for a in args]
            names = " | ".join(_name(a) for a in args)

            def check_union(value: Any) -> Mismatch | None:
                for member in members:
                    if member(value) is None:
                        return None
                return ((), f"expected {names}, got {_got(value)}")

            return check_union
        if origin is typing.Literal:
            allowed = list(args)
            return _expect(
                lambda v: any(v == a and type(v) is type(a) or v is a for a in allowed)
                or isinstance(v, enum.Enum) and v.value in allowed,
                " or ".join(repr(a) for a in allowed),
            )
        if origin in (list, abc.Sequence, tuple, set, frozenset) or tp in (list, tuple, set):
            item = self.build(args[0] if args else Any)
            kinds = (list, tuple, set, frozenset)
            return _each(item, kinds, "a list")
        if origin in (dict, abc.Mapping) or tp is dict:
            key, value = args if args else (Any, Any)
            return _mapping(self.build(key), self.build(value))
        if isinstance(tp, type):
            return self._class(tp)
        raise UnsupportedType(repr(tp))

    def _class(self, tp: type) -> Checker:
        if tp is bool:
            return _expect(lambda v: isinstance(v, bool), "a boolean")
        if tp is int:
            return _expect(lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
        if tp is float:
            return _expect(
                lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"
            )
        if tp is str:
            return _expect(lambda v: isinstance(v, str), "a string")
        if tp is dt.datetime:
            return _expect(lambda v: isinstance(v, dt.datetime), "a datetime")
        if tp is dt.date:
            return _expect(
                lambda v: isinstance(v, dt.date) and not isinstance(v, dt.datetime), "a date"
            )
        if issubclass(tp, enum.Enum):
            values = {m.value for m in tp}
            return _expect(
                lambda v: isinstance(v, tp) or (not isinstance(v, enum.Enum) and _hashable_in(v, values)),
                f"a {tp.__name__} value",
            )
        if issubclass(tp, Schema):
            schema = tp()

            def check_schema(value: Any) -> Mismatch | None:
                errors = schema.validate(value) if isinstance(value, Mapping) else {"_schema": ["not a mapping"]}
                return None if not errors else ((), f"does not match {tp.__name__}: {errors}")

            return check_schema
        if dataclasses.is_dataclass(tp) or typing.is_typeddict(tp):
            if tp not in self._classes:
                self._classes[tp] = _accept  # placeholder while building, for recursion
                self._classes[tp] = self._record(tp)
            return lambda value: self._classes[tp](value)
        if issubclass(tp, (int, float, str)):
            return _expect(lambda v: isinstance(v, tp), f"a {tp.__name__}")
        raise UnsupportedType(
            f"{tp.__name__} (cannot be sent as JSON; annotate a JSON type, a dataclass, "
            "a pydantic model, Response or bytes)"
        )

    def _record(self, tp: type) -> Checker:
        hints = typing.get_type_hints(tp)
        is_dataclass = dataclasses.is_dataclass(tp)
        if is_dataclass:
            members = {f.name: self.build(hints[f.name]) for f in dataclasses.fields(tp)}
            required = {
                f.name for f in dataclasses.fields(tp)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            }
        else:
            members = {name: self.build(hint) for name, hint in hints.items()}
            required = set(getattr(tp, "__required_keys__", members))

        def check_record(value: Any) -> Mismatch | None:
            if is_dataclass and isinstance(value, tp):
                items = {name: getattr(value, name) for name in members}
            elif isinstance(value, Mapping):
                missing = [name for name in required if name not in value]
                if missing:
                    return ((missing[0],), "missing")
                items = {name: value[name] for name in members if name in value}
            else:
                return ((), f"expected {tp.__name__}, got {_got(value)}")
            for name, item in items.items():
                problem = members[name](item)
                if problem is not None:
                    return ((name, *problem[0]), problem[1])
            return None

        return check_record


def _pydantic(tp: Any) -> Checker:
    adapter = type_adapter(tp)

    def check(value: Any) -> Mismatch | None:
        try:
            adapter.validate_python(value)
        except ValueError as exc:
            problem = problems_of(exc)[0]
            return (problem.loc, f"{problem} ({problem.type})")
        return None

    return check


def _hashable_in(value: Any, values: set[Any]) -> bool:
    try:
        return value in values
    except TypeError:
        return False


def _expect(test: Callable[[Any], bool], what: str) -> Checker:
    def check(value: Any) -> Mismatch | None:
        return None if test(value) else ((), f"expected {what}, got {_got(value)}")

    return check


def _each(item: Checker, kinds: tuple[type[abc.Iterable[Any]], ...], what: str) -> Checker:
    def check(value: Any) -> Mismatch | None:
        if not isinstance(value, kinds):
            return ((), f"expected {what}, got {_got(value)}")
        for i, element in enumerate(value):
            problem = item(element)
            if problem is not None:
                return ((i, *problem[0]), problem[1])
        return None

    return check


def _mapping(key: Checker, value_check: Checker) -> Checker:
    def check(value: Any) -> Mismatch | None:
        if not isinstance(value, Mapping):
            return ((), f"expected an object, got {_got(value)}")
        for k, v in value.items():
            problem = key(k)
            if problem is not None:
                return ((k,), f"key {problem[1]}")
            problem = value_check(v)
            if problem is not None:
                return ((k, *problem[0]), problem[1])
        return None

    return check


def _name(tp: Any) -> str:
    return "None" if tp is type(None) else getattr(tp, "__name__", None) or repr(tp)


def _got(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
