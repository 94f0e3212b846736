"""Return annotations: whether a result streams, and the check of what is sent.

Startup turns a webmethod's return annotation into a :class:`ResultSpec`;
request time runs its checks. A result is checked in its JSON form, the exact
data the client will receive: the value is serialised, parsed back, and loaded
by a marshmallow schema whose one field comes from an exact
:class:`~stackflask.hints.FieldFactory` (for a type that involves pydantic,
pydantic validates the JSON text inside that field). ``AsyncIterator[T]`` (or
``AsyncGenerator``, ``AsyncIterable``) streams items of ``T``, each checked the
same way; ``X | AsyncIterator[T]`` is a plain ``X`` or a stream of ``T``,
whichever the provider returns. ``-> Response`` and ``-> bytes`` are raw (see
:mod:`stackflask.responses`), sent as they are.
"""

from __future__ import annotations

import collections.abc as abc
import json
import types
import typing
from dataclasses import dataclass
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError

from .errors import dumps
from .fields import UnsupportedType, flatten_errors
from .hints import FieldFactory
from .pydantic_fields import PydanticField, involves_pydantic
from .records import prepare
from .responses import is_raw_type

_STREAMS = (abc.AsyncIterator, abc.AsyncIterable, abc.AsyncGenerator)


class ResultMismatch(Exception):
    """A result that is not what its annotation promises; ``str()`` says where and why."""


class ResultCheck:
    """Serialises a result and checks its JSON form against an annotation."""

    def __init__(self, hint: Any, factory: FieldFactory) -> None:
        """Raises :class:`~stackflask.fields.UnsupportedType` for a type that
        cannot be sent as JSON."""
        self.hint = hint
        if hint is Any or hint is object:
            self.schema: Schema | None = None
            return
        try:
            field = factory.field(hint, required=True, allow_none=_allows_none(hint))
        except UnsupportedType as exc:
            raise UnsupportedType(
                f"{exc} (cannot be sent as JSON; annotate a JSON type, a dataclass, "
                "a pydantic model, Response or bytes)"
            ) from None
        self.as_text = isinstance(field, PydanticField)
        # EXCLUDE: the data loaded is always {"result": ...}; RAISE would look
        # for unknown keys on every load.
        self.schema = Schema.from_dict({"result": field}, name="Result")(unknown=EXCLUDE)
        prepare(self.schema.fields.values())

    def __call__(self, value: Any) -> str:
        """The JSON text to send. Raises :class:`ResultMismatch`."""
        try:
            text = dumps(value)
        except (TypeError, ValueError) as exc:
            raise ResultMismatch(f"cannot be sent as JSON: {exc}") from None
        if self.schema is None:
            return text
        data = text if self.as_text else json.loads(text)
        try:
            self.schema.load({"result": data})
        except ValidationError as exc:
            problem = flatten_errors(exc.messages, [])[0]
            where = ".".join(str(part) for part in problem["loc"][1:])
            raise ResultMismatch(f"{where}: {problem['msg']}" if where else problem["msg"]) from None
        return text


def _allows_none(hint: Any) -> bool:
    if hint is None or hint is type(None):
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return type(None) in typing.get_args(hint)
    return False


def _any(value: Any) -> str:
    return dumps(value)


@dataclass(frozen=True)
class ResultSpec:
    """How to send a webmethod's result: as a plain value, and as stream items.

    ``plain`` is the annotation of a plain result (``None`` when the method only
    streams); ``item`` that of a stream item (``None`` when it never streams);
    ``raw`` says the result is sent as it is, not as JSON. ``check`` and
    ``check_item`` give the JSON text to send, or raise :class:`ResultMismatch`.
    """

    check: typing.Callable[[Any], str] = _any
    check_item: typing.Callable[[Any], str] = _any
    plain: Any = Any
    item: Any = None
    raw: bool = False


def _expect_stream(value: Any) -> str:
    raise ResultMismatch(f"expected a stream, got {type(value).__name__}")


def result_spec(hint: Any, factory: FieldFactory) -> ResultSpec:
    """The :class:`ResultSpec` of a return annotation (``Any`` when absent).

    ``factory`` must be exact. Raises :class:`~stackflask.fields.UnsupportedType`.
    """
    origin = typing.get_origin(hint)
    if is_raw_type(hint):
        return ResultSpec(plain=hint, raw=True)
    if origin is typing.Annotated and not involves_pydantic(hint):
        return result_spec(typing.get_args(hint)[0], factory)
    if origin in _STREAMS:
        item = _first_arg(hint)
        return ResultSpec(
            check=_expect_stream, check_item=ResultCheck(item, factory), plain=None, item=item
        )
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        plain = [a for a in args if typing.get_origin(a) not in _STREAMS]
        streams = [a for a in args if typing.get_origin(a) in _STREAMS]
        if streams:
            items = [_first_arg(s) for s in streams]
            item_hint = items[0] if len(items) == 1 else typing.Union[tuple(items)]
            plain_hint = (
                plain[0] if len(plain) == 1 else typing.Union[tuple(plain)] if plain else None
            )
            return ResultSpec(
                check=ResultCheck(plain_hint, factory) if plain else _expect_stream,
                check_item=ResultCheck(item_hint, factory),
                plain=plain_hint,
                item=item_hint,
            )
    return ResultSpec(check=ResultCheck(hint, factory), plain=hint)


def _first_arg(hint: Any) -> Any:
    args = typing.get_args(hint)
    return args[0] if args else Any
