"""Dataclass and TypedDict members: the quick path agrees with the schema.

:class:`stackflask.records.Record` builds a record straight from its members'
quick conversions and leaves anything else to marshmallow's schema. Whatever
path a value takes, the result, or the problems, are the schema's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any, TypedDict

import pytest
from marshmallow import ValidationError

from stackflask.fields import SLOW, flatten_errors, parameter_schema
from stackflask.hints import FieldFactory
from stackflask.records import Record
from stackflask.tally import MAX_PROBLEMS, ProblemCount


@dataclasses.dataclass
class Point:
    x: int
    y: int
    label: str = "origin"
    seen: dt.datetime | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    area: float = dataclasses.field(default=0.0, init=False)


@dataclasses.dataclass
class Node:
    name: str
    children: list[Node] = dataclasses.field(default_factory=list)


class Pair(TypedDict, total=False):
    left: int
    right: Point


VALUES = {
    "plain": {"x": 1, "y": 2},
    "every-member": {"x": 1, "y": 2, "label": "a", "seen": "2026-01-02T03:04:05",
                     "tags": ["p", "q"]},
    "unknown-keys-ignored": {"x": 1, "y": 2, "z": 3, "area": 9.5},
    "text-for-int": {"x": "3", "y": 4.0},
    "null-optional": {"x": 1, "y": 2, "seen": None},
    "missing-required": {"x": 1},
    "null-for-int": {"x": None, "y": 2},
    "bool-for-int": {"x": True, "y": 2},
    "bad-datetime": {"x": 1, "y": 2, "seen": "yesterday"},
    "bad-tag": {"x": 1, "y": 2, "tags": ["p", 5]},
    "not-an-object": [1, 2],
    "a-string": "point",
}


def schema_only(field: Record, value: Any) -> Any:
    """What marshmallow's schema alone makes of ``value``."""
    return field.schema.load(value)


def outcome(convert: Any, value: Any) -> Any:
    try:
        return "ok", convert(value)
    except ValidationError as exc:
        return "error", flatten_errors(exc.messages, [])


@pytest.mark.parametrize("exact", [False, True], ids=["request", "result"])
@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_the_quick_path_agrees_with_the_schema(value, exact):
    field = FieldFactory(exact=exact).field(Point, required=True)
    assert isinstance(field, Record)
    assert outcome(field.deserialize, value) == outcome(lambda v: schema_only(field, v), value)


def test_a_plain_record_takes_the_quick_path():
    field = FieldFactory().field(Point)
    assert field.quick({"x": 1, "y": 2}) == Point(1, 2)
    assert field.quick({"x": "1", "y": 2}) is SLOW
    assert field.quick({"y": 2}) is SLOW
    result = FieldFactory(exact=True).field(Point)
    assert result.quick({"x": 1, "y": 2, "z": 0}) == {"x": 1, "y": 2}


@pytest.mark.parametrize("exact", [False, True], ids=["request", "result"])
def test_null_for_an_optional_member_takes_the_quick_path(exact):
    field = FieldFactory(exact=exact).field(Point)
    made = field.quick({"x": 1, "y": 2, "seen": None})
    assert made == (Point(1, 2) if not exact else {"x": 1, "y": 2, "seen": None})
    assert field.quick({"x": None, "y": 2}) is SLOW  # not optional: the schema says why


def test_recursive_dataclasses_and_typeddicts():
    factory = FieldFactory()
    tree = {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}
    assert factory.field(Node).deserialize(tree) == Node("a", [Node("b", [Node("c")])])
    pair = factory.field(Pair)
    assert pair.deserialize({"right": {"x": 1, "y": 2}}) == {"right": Point(1, 2)}
    assert pair.deserialize({}) == {}
    with pytest.raises(ValidationError) as caught:
        factory.field(Node).deserialize({"name": "a", "children": [{"name": 5}]})
    assert flatten_errors(caught.value.messages, []) == [
        {"loc": ["children", 0, "name"], "msg": "Not a valid string.", "type": "string_type"}
    ]


def test_problems_inside_records_are_counted_once():
    schema = parameter_schema({"items": FieldFactory().field(list[Point], required=True)})
    bad = {"x": 1, "y": 2, "tags": [1, 2]}  # two problems, found by the quick path's try first
    with ProblemCount() as count, pytest.raises(ValidationError) as caught:
        schema.load({"items": [bad] * 10})
    assert count.found == 20
    assert len(flatten_errors(caught.value.messages, [])) == 20
    with ProblemCount() as count, pytest.raises(ValidationError):
        schema.load({"items": [bad] * 1000})
    assert count.stopped and MAX_PROBLEMS < count.found <= MAX_PROBLEMS + 2


def test_a_large_list_of_records_is_fast():
    schema = parameter_schema({"items": FieldFactory().field(list[Point], required=True)})
    items = [{"x": i, "y": i, "tags": ["a"]} for i in range(100_000)]
    started = time.process_time()
    loaded = schema.load({"items": items})["items"]
    elapsed = time.process_time() - started
    assert loaded[99_999] == Point(99_999, 99_999, tags=["a"])
    assert elapsed < 2  # the schema alone takes some 3 s (28 µs an object)
