"""Parameter markers: ``Query``, ``Body``, ``Path`` decide where a parameter comes from
(issue 9, point 2).

The same Protocol is written twice, once with stackflask's own markers (served
under ``/v1/sf``, its ``Body()`` model a dataclass) and once with FastAPI's
(under ``/v1/fa``, a pydantic model); every behaviour test runs against both. The provider answers each parameter's ``repr``, so
``{"x": "3"}`` means it received the int 3 and ``{"x": "'3'"}`` the string.
"""

from __future__ import annotations

import pytest

from stackflask import StartupError, create_app

API = '''
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from pydantic import BaseModel

from {module} import Body, Path, Query

from stackflask import webmethod

{filter_class}


class Marked(Protocol):
    @webmethod(route="/{prefix}/query-on-post", method="POST")
    async def query_on_post(self, x: Annotated[int, Query()], note: str = "") -> dict[str, Any]: ...

    @webmethod(route="/{prefix}/body-on-get", method="GET")
    async def body_on_get(
        self, filt: Annotated[Filter, Body()], limit: Annotated[int, Body()] = 5
    ) -> dict[str, Any]: ...

    @webmethod(route="/{prefix}/items/{{item_id}}", method="GET")
    async def by_path(self, item_id: Annotated[str, Path()]) -> dict[str, Any]: ...

    @webmethod(route="/{prefix}/alias", method="GET")
    async def alias(self, page_size: Annotated[int, Query(alias="page-size")] = 20) -> dict[str, Any]: ...

    @webmethod(route="/{prefix}/defaults", method="GET")
    async def defaults(self, a: Annotated[int, Query()] = 6, b: int = Query(3)) -> dict[str, Any]: ...

    @webmethod(route="/{prefix}/described", method="GET")
    async def described(
        self, q: Annotated[str, Query(description="What to look for")] = ""
    ) -> dict[str, Any]: ...

    @webmethod(route="/{prefix}/constrained", method="GET")
    async def constrained(
        self,
        n: Annotated[int, Query(ge=1, le=10)] = 1,
        s: Annotated[str, Query(min_length=2, max_length=5)] = "ab",
        p: Annotated[str, Query(pattern=r"^a")] = "a",
    ) -> dict[str, Any]: ...
{extra}'''

#: stackflask's ``Query`` takes its default inside ``Annotated`` too (FastAPI's refuses to).
STACKFLASK_ONLY = '''
    @webmethod(route="/sf/default-in-marker", method="GET")
    async def default_in_marker(self, a: Annotated[int, Query(default=5)]) -> dict[str, Any]: ...
'''

IMPL = '''
class Echo:
    """Every webmethod answers the ``repr`` of each parameter it received."""

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)

        async def echo(**kwargs):
            return {key: repr(value) for key, value in kwargs.items()}

        return echo


def get_provider_impl(config, deps):
    return Echo()
'''

#: The body model is a dataclass for stackflask's markers, a pydantic model for
#: FastAPI's (class names differ: OpenAPI components are named after them).
DATACLASS_FILTER = "@dataclass\nclass DataFilter:\n    color: str\n\n\nFilter = DataFilter\n"
MODEL_FILTER = "class ModelFilter(BaseModel):\n    color: str\n\n\nFilter = ModelFilter\n"
FILTER_REPR = {"sf": "DataFilter(color='red')", "fa": "ModelFilter(color='red')"}

PREFIXES = ["sf", "fa"]


@pytest.fixture
def app(stack_files, make_app):
    stack_files.module("marked_impl", IMPL)
    for prefix, module, filter_class, extra in [
        ("sf", "stackflask", DATACLASS_FILTER, STACKFLASK_ONLY),
        ("fa", "fastapi", MODEL_FILTER, ""),
    ]:
        stack_files.module(f"marked_{prefix}_api", API.format(
            module=module, prefix=prefix, filter_class=filter_class, extra=extra))
        stack_files.api_spec(f"marked_{prefix}.yaml", {
            "module": f"marked_{prefix}_api", "name": f"marked_{prefix}", "protocol": "Marked",
        })
        stack_files.provider_file("inline", f"marked_{prefix}", "echo", {"module": "marked_impl"})
    path = stack_files.run_config({
        "providers": {
            f"marked_{prefix}": [{"provider_id": f"echo_{prefix}", "provider_type": "inline::echo"}]
            for prefix in PREFIXES
        },
    })
    return make_app(str(path))


def ok(response):
    assert response.status_code == 200, (response.status_code, response.data)
    return response.json


def errors_of(response):
    assert response.status_code == 400, (response.status_code, response.data)
    return [(e["loc"], e["type"]) for e in response.json["error"]["detail"]["errors"]]


def test_stackflask_exports_every_marker():
    import stackflask

    for name in ("Query", "Body", "Path", "File", "Form"):
        assert name in stackflask.__all__ and callable(getattr(stackflask, name))


@pytest.mark.parametrize("prefix", PREFIXES)
def test_query_marker_on_post_reads_the_query_string(client, prefix):
    response = client.post(f"/v1/{prefix}/query-on-post?x=3", json={"x": 99, "note": "n"})
    assert ok(response) == {"x": "3", "note": "'n'"}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_query_marker_on_post_ignores_the_body(client, prefix):
    response = client.post(f"/v1/{prefix}/query-on-post", json={"x": 3})
    assert errors_of(response) == [(["query", "x"], "missing")]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_body_marker_on_get_reads_the_json_body(client, prefix):
    response = client.get(
        f"/v1/{prefix}/body-on-get?limit=9", json={"filt": {"color": "red"}, "limit": 7}
    )
    assert ok(response) == {"filt": FILTER_REPR[prefix], "limit": "7"}
    # A Body() scalar on a GET is not read from the query string.
    response = client.get(f"/v1/{prefix}/body-on-get?limit=9", json={"filt": {"color": "red"}})
    assert ok(response) == {"filt": FILTER_REPR[prefix], "limit": "5"}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_body_marker_on_get_without_body_is_400(client, prefix):
    assert (["body", "filt"], "missing") in errors_of(client.get(f"/v1/{prefix}/body-on-get"))


@pytest.mark.parametrize("prefix", PREFIXES)
def test_path_marker(client, prefix):
    assert ok(client.get(f"/v1/{prefix}/items/abc")) == {"item_id": "'abc'"}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_alias_is_the_query_key(client, prefix):
    assert ok(client.get(f"/v1/{prefix}/alias?page-size=7")) == {"page_size": "7"}
    assert ok(client.get(f"/v1/{prefix}/alias?page_size=7")) == {"page_size": "20"}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_defaults_from_signature_and_fastapi_style_marker(client, prefix):
    assert ok(client.get(f"/v1/{prefix}/defaults")) == {"a": "6", "b": "3"}
    assert ok(client.get(f"/v1/{prefix}/defaults?a=1&b=2")) == {"a": "1", "b": "2"}


def test_default_inside_stackflask_marker(client):
    assert ok(client.get("/v1/sf/default-in-marker")) == {"a": "5"}
    assert ok(client.get("/v1/sf/default-in-marker?a=8")) == {"a": "8"}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_description_reaches_openapi(client, prefix):
    operation = client.get("/openapi.json").json["paths"][f"/v1/{prefix}/described"]["get"]
    [param] = [p for p in operation["parameters"] if p["name"] == "q"]
    assert param["in"] == "query"
    assert param["description"] == "What to look for"


@pytest.mark.parametrize("prefix", PREFIXES)
def test_constraints_within_bounds(client, prefix):
    response = client.get(f"/v1/{prefix}/constrained?n=10&s=abcde&p=abc")
    assert ok(response) == {"n": "10", "s": "'abcde'", "p": "'abc'"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("n=0", [(["query", "n"], "greater_than_equal")]),
        ("n=11", [(["query", "n"], "less_than_equal")]),
        ("s=x", [(["query", "s"], "string_too_short")]),
        ("s=abcdef", [(["query", "s"], "string_too_long")]),
        ("p=b", [(["query", "p"], "string_pattern_mismatch")]),
        ("n=0&s=x&p=b", [(["query", "n"], "greater_than_equal"),
                         (["query", "s"], "string_too_short"),
                         (["query", "p"], "string_pattern_mismatch")]),
        ("page-size=x", None),
    ],
    ids=["ge", "le", "min-length", "max-length", "pattern", "all-three", "alias"],
)
@pytest.mark.parametrize("prefix", PREFIXES)
def test_marker_refusals(client, prefix, query, expected):
    if expected is None:
        response = client.get(f"/v1/{prefix}/alias?{query}")
        expected = [(["query", "page-size"], "int_parsing")]
    else:
        response = client.get(f"/v1/{prefix}/constrained?{query}")
    assert sorted(errors_of(response)) == sorted(expected)


# -- markers stackflask does not understand: startup errors -------------------

BAD_API = '''
from typing import Annotated, Any, Protocol

import fastapi

import stackflask
from stackflask import webmethod


def dependency():
    return 1


class Proto(Protocol):
{methods}'''

BAD_IMPL = '''
class Impl:
    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)

        async def method(**kwargs):
            return None

        return method


def get_provider_impl(config, deps):
    return Impl()
'''


def bad_method(name, parameter, route=None):
    route = route or f"/bad/{name}"
    return (f'    @webmethod(route="{route}", method="GET")\n'
            f"    async def {name}(self, {parameter}) -> Any: ...\n\n")


def problems_for(stack_files, methods):
    stack_files.module("bad_markers_api", BAD_API.format(methods=methods))
    stack_files.module("bad_markers_impl", BAD_IMPL)
    stack_files.api_spec("bad.yaml", {"module": "bad_markers_api", "name": "bad",
                                      "protocol": "Proto"})
    stack_files.provider_file("inline", "bad", "impl", {"module": "bad_markers_impl"})
    path = stack_files.run_config({
        "providers": {"bad": [{"provider_id": "impl", "provider_type": "inline::impl"}]},
    })
    with pytest.raises(StartupError) as info:
        create_app(str(path))
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


NAMED = ("Proto.method: parameter 'x'",)


@pytest.mark.parametrize(
    ("parameter", "route", "fragments"),
    [
        ("x: Annotated[int, fastapi.Header()]", None, NAMED),
        ("x: Annotated[str, fastapi.Cookie()]", None, NAMED),
        ("x: Annotated[int, fastapi.Depends(dependency)]", None, NAMED),
        ("x: Annotated[int, object()]", None, NAMED),
        ("x: str = fastapi.Header()", None, NAMED),
        ("x: Annotated[str, stackflask.Path()]", "/bad/things", ("Proto.method", "'x'")),
        ("x: Annotated[str, fastapi.Path()]", "/bad/things", ("Proto.method", "'x'")),
    ],
    ids=["header", "cookie", "depends", "arbitrary-object", "header-as-default",
         "stackflask-path-not-in-route", "fastapi-path-not-in-route"],
)
def test_marker_not_understood_is_a_startup_error(stack_files, parameter, route, fragments):
    problems = problems_for(stack_files, bad_method("method", parameter, route))
    assert any(all(f in line for f in fragments) for line in problems), problems


def test_every_bad_marker_is_listed(stack_files):
    methods = (bad_method("first", "x: Annotated[int, fastapi.Header()]")
               + bad_method("second", "y: Annotated[int, fastapi.Depends(dependency)]"))
    problems = problems_for(stack_files, methods)
    assert any("Proto.first: parameter 'x'" in line for line in problems), problems
    assert any("Proto.second: parameter 'y'" in line for line in problems), problems
