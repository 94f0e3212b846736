"""Every supported type, as a parameter and as a return value.

One webmethod per type echoes its parameter back: the test checks what the
provider received (its Python type), what the client gets, the 400 for a bad
value, and the 500 for a provider returning a value of the wrong type.
"""

from __future__ import annotations

import logging

import pytest

HEADER = '''
from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any, Literal, Optional, Protocol, TypedDict

from marshmallow import Schema, fields
from pydantic import BaseModel

from stackflask import webmethod


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclass
class Point:
    x: int
    y: int


class Pair(TypedDict):
    a: int
    b: str


class Item(BaseModel):
    a: int
    note: Optional[str] = None


class PetSchema(Schema):
    name = fields.String(required=True)


class Types(Protocol):
'''

METHOD = '''
    @webmethod(route="/echo/{name}", method="POST")
    async def echo_{name}(self, v: {annotation}) -> {annotation}: ...

    @webmethod(route="/bad/{name}", method="POST")
    async def bad_{name}(self) -> {annotation}: ...
'''

IMPL = '''
import datetime as dt

seen = {{}}
BAD = {bad}


class Impl:
    def __getattr__(self, name):
        kind, _, type_name = name.partition("_")
        if kind == "echo":
            async def echo(v):
                seen["type"] = type(v).__name__
                return v
            return echo
        if kind == "bad":
            async def bad():
                return BAD[type_name]
            return bad
        raise AttributeError(name)

    async def last(self):
        return seen


def get_provider_impl(config, deps):
    return Impl()
'''

# name, annotation, input, received type, response body, bad input, its loc, bad return
TYPES = [
    ("str", "str", "x", "str", "x", 5, [], "5"),
    ("int", "int", "3", "int", 3, 1.5, [], "'3'"),
    ("float", "float", 2, "float", 2.0, "two", [], "'2'"),
    ("bool", "bool", "yes", "bool", True, "maybe", [], "1"),
    ("none", "None", None, "NoneType", None, 1, [], "1"),
    ("optional", "int | None", None, "NoneType", None, "x", [], "'x'"),
    ("optional_typing", "Optional[int]", "4", "int", 4, "x", [], "'x'"),
    ("union", "int | str", "7", "int", 7, [1], [], "1.5"),
    ("union_second", "int | str", "seven", "str", "seven", None, [], "None"),
    ("list", "list[int]", ["1", 2], "list", [1, 2], [1, "a"], [1], "[1, 'a']"),
    ("dict", "dict[str, float]", {"a": 1}, "dict", {"a": 1.0}, {"a": "x"}, ["a"], "{'a': 'x'}"),
    ("literal", 'Literal["a", "b"]', "a", "str", "a", "c", [], "'c'"),
    ("enum", "Color", "red", "Color", "red", "blue", [], "'blue'"),
    ("datetime", "dt.datetime", "2024-01-02T03:04:05", "datetime", "2024-01-02T03:04:05",
     "yesterday", [], "'yesterday'"),
    ("date", "dt.date", "2024-01-02", "date", "2024-01-02", "x", [],
     "dt.datetime(2024, 1, 2, 3, 4)"),
    ("any", "Any", {"x": [1, None]}, "dict", {"x": [1, None]}, None, None, None),
    ("dataclass", "Point", {"x": 1, "y": "2", "z": 0}, "Point", {"x": 1, "y": 2},
     {"x": 1}, ["y"], "{'x': 1}"),
    ("typeddict", "Pair", {"a": "1", "b": "x"}, "dict", {"a": 1, "b": "x"},
     {"a": "x", "b": "y"}, ["a"], "{'a': 'x', 'b': 'y'}"),
    ("pydantic", "Item", {"a": "1"}, "Item", {"a": 1, "note": None}, {"a": "x"}, ["a"],
     "{'a': 'x'}"),
    ("schema", "PetSchema", {"name": "rex", "age": 3}, "dict", {"name": "rex"}, {}, ["name"],
     "{'name': 5}"),
    ("nested", "dict[str, list[Point]]", {"k": [{"x": 1, "y": 2}]}, "dict",
     {"k": [{"x": 1, "y": 2}]}, {"k": [{"x": 1, "y": "q"}]}, ["k", 0, "y"],
     "{'k': [{'x': 1}]}"),
]
NAMES = [t[0] for t in TYPES]


@pytest.fixture
def app(stack_files, make_app):
    methods = "".join(
        METHOD.format(name=name, annotation=annotation) for name, annotation, *_ in TYPES
    )
    methods += '''
    @webmethod(route="/last", method="GET")
    async def last(self) -> dict[str, str]: ...
'''
    bad = "{" + ", ".join(
        f"{name!r}: {value}" for name, *_, value in TYPES if value is not None
    ) + "}"
    stack_files.module("types_api_wide", HEADER + methods)
    stack_files.module("types_impl_wide", IMPL.format(bad=bad))
    stack_files.api_spec("types.yaml", {
        "module": "types_api_wide", "name": "types", "protocol": "Types",
    })
    stack_files.provider_file("inline", "types", "echo", {"module": "types_impl_wide"})
    path = stack_files.run_config({
        "providers": {"types": [{"provider_id": "echo", "provider_type": "inline::echo"}]},
    })
    return make_app(str(path))


@pytest.mark.parametrize(
    ("name", "value", "received", "body"),
    [(t[0], t[2], t[3], t[4]) for t in TYPES],
    ids=NAMES,
)
def test_parameter_and_result(client, name, value, received, body):
    response = client.post(f"/v1/echo/{name}", json={"v": value})
    assert response.status_code == 200, response.json
    assert response.json == body
    assert client.get("/v1/last").json == {"type": received}


@pytest.mark.parametrize(
    ("name", "value", "loc"),
    [(t[0], t[5], t[6]) for t in TYPES if t[6] is not None],
    ids=[t[0] for t in TYPES if t[6] is not None],
)
def test_bad_parameter_is_400(client, name, value, loc):
    response = client.post(f"/v1/echo/{name}", json={"v": value})
    assert response.status_code == 400
    errors = response.json["error"]["detail"]["errors"]
    assert [e["loc"] for e in errors] == [["body", "v", *loc]]
    assert all(e["msg"] and e["type"] for e in errors)


@pytest.mark.parametrize(
    "name", [t[0] for t in TYPES if t[7] is not None], ids=[t[0] for t in TYPES if t[7] is not None]
)
def test_wrong_result_is_500_and_logged(client, caplog, name):
    caplog.set_level(logging.ERROR, logger="stackflask.request")
    response = client.post(f"/v1/bad/{name}")
    assert response.status_code == 500
    assert response.json == {"detail": "Internal server error: An unexpected error occurred."}
    [record] = [r for r in caplog.records if "does not match its return type" in r.getMessage()]
    assert f"types.bad_{name}" in record.getMessage()


def test_result_mismatch_names_the_field(client, caplog):
    caplog.set_level(logging.ERROR, logger="stackflask.request")
    client.post("/v1/bad/nested")
    assert any("k.0.y: Missing data for required field." in r.getMessage()
               for r in caplog.records)
