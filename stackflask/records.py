"""The field for a dataclass or TypedDict: a nested schema with a quick path.

Pure (no Flask); request time. marshmallow's ``Schema.load`` costs some 18 µs
an object, so a 10 MiB list of small records would take seconds. A
:class:`Record` first tries each member's own quick conversion (an ``int`` for
an ``int``...) and builds the record directly; anything that needs more (a
wrong type, a missing member, a validator) goes through the schema, which
converts it the same way and says what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from marshmallow import ValidationError, fields

from .fields import SLOW, Dict, List, Nested, Union, _quick
from .tally import current_count

#: One member of a record: name, field, its quick conversion, required.
_Member = tuple[str, fields.Field, Callable[[Any], Any] | None, bool]


class Record(Nested):
    """A dataclass or TypedDict member; ``make`` builds the value from its members
    (the dataclass, or ``dict`` for a TypedDict and for a result's check)."""

    def __init__(self, schema: Callable[[], Any], make: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(schema, **kwargs)
        self.make = make
        self._members: list[_Member] | None = None

    def members(self) -> list[_Member]:
        if self._members is None:  # built on first use: a recursive type's schema is ready then
            self._members = [
                (name, field, _quick(field), field.required)
                for name, field in self.schema.load_fields.items()
            ]
        return self._members

    def quick(self, value: Any) -> Any:
        """``value`` as the record, or :data:`SLOW` when the schema must convert it."""
        if type(value) is not dict:
            return SLOW
        data: dict[str, Any] = {}
        for name, field, quick, required in self.members():
            if name not in value:
                if required:
                    return SLOW
                continue
            item = value[name]
            if item is None and field.allow_none and not getattr(field, "pre_load", None):
                data[name] = None  # as marshmallow's deserialize: no conversion, no validators
                continue
            if quick is not None:
                out = quick(item)
                if out is SLOW:
                    return SLOW
            else:
                out = _full(field, item)
                if out is SLOW:
                    return SLOW
            data[name] = out
        return self.make(**data)

    def _deserialize(
        self, value: Any, attr: Any, data: Any, partial: Any = None, **kwargs: Any
    ) -> Any:
        out = self.quick(value) if not partial else SLOW
        if out is not SLOW:
            return out
        return super()._deserialize(value, attr, data, partial, **kwargs)


def _full(field: fields.Field, value: Any) -> Any:
    """``value`` through ``field`` in full; :data:`SLOW` (problems not counted) if
    it is not valid, for the schema to find again and report."""
    count = current_count()
    before = (count.found, count.stopped) if count is not None else (0, False)
    try:
        return field.deserialize(value)
    except ValidationError:
        if count is not None:
            count.found, count.stopped = before
        return SLOW


def prepare(members: Iterable[fields.Field]) -> None:
    """Build now, at startup, what marshmallow and :class:`Record` build on a
    field's first use (a nested schema, a record's members).

    Built during a route's first request instead, and that request a large
    one, these lasting objects would be scattered among its short-lived ones
    and keep their pymalloc arenas resident after it. A recursive type is
    built one level deep; its deeper levels are built as they are first used.
    """
    seen: set[type] = set()
    pending = list(members)
    while pending:
        field = pending.pop()
        if isinstance(field, Nested):
            schema = field.schema
            if isinstance(field, Record):
                field.members()
            if type(schema) not in seen:
                seen.add(type(schema))
                pending.extend(schema.fields.values())
        elif isinstance(field, List):
            pending.append(field.inner)
        elif isinstance(field, Dict):
            pending.extend(f for f in (field.key_field, field.value_field) if f is not None)
        elif isinstance(field, Union):
            pending.extend(field.candidates)
