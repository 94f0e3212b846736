"""The wire contract (``http-contract.md``), row by row, through pytest-flask's ``client``.

The ``app`` fixture writes a "wide" test API to ``tmp_path``: one API module with
three Protocols (``wide_contract``, which has every binding rule, return type,
error row and streaming shape; ``pdata_contract``, whose provider reads validated
provider data and has no ``health()``; ``sick_contract``, whose ``health()``
raises), one provider package per API, their ``apis.d`` and ``providers.d`` files
and a ``run.yaml``. Providers echo what they received with the Python type names
(``{"values": ..., "types": ...}``) so a test can see the types they got.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from importlib import metadata
from typing import Any

import pytest

API_MODULE = '''
from __future__ import annotations

import datetime as dt
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Optional, Protocol

from pydantic import BaseModel

from stackflask import webmethod


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclass
class Inner:
    a: int
    b: str = "x"


@dataclass
class Point:
    x: int
    y: int


class Item(BaseModel):
    a: int
    note: str | None = None


class Filter(BaseModel):
    color: Color
    tags: list[str] = []


class WideApi(Protocol):
    """Every binding rule, return type, error row and streaming shape."""

    @webmethod(route="probe/x", method="GET")
    async def probe(self) -> str: ...

    @webmethod(route="/names/{name}", method="GET")
    async def by_name(self, name: str) -> str: ...

    @webmethod(route="/files/{rest:path}", method="GET")
    async def by_path(self, rest: str) -> str: ...

    @webmethod(route="/methods", method="GET")
    async def m_get(self) -> str: ...

    @webmethod(route="/methods", method="POST")
    async def m_post(self) -> str: ...

    @webmethod(route="/methods", method="DELETE")
    async def m_delete(self) -> str: ...

    @webmethod(route="/methods", method="put")
    async def m_put(self) -> str: ...

    @webmethod(route="/methods", method="patch")
    async def m_patch(self) -> str: ...

    @webmethod(route="/default")
    async def m_default(self) -> str: ...

    @webmethod(route="/items/{id}", method="GET")
    async def get_item(self, id: int) -> dict[str, Any]: ...

    @webmethod(route="/things/{id}", method="POST")
    async def update_thing(self, id: int, note: str) -> dict[str, Any]: ...

    @webmethod(route="/things/{id}", method="DELETE")
    async def remove_thing(self, id: int, force: bool = False) -> None: ...

    @webmethod(route="/single", method="POST")
    async def single(self, payload: Inner) -> dict[str, Any]: ...

    @webmethod(route="/optional", method="POST")
    async def optional(self, a: int = 1, b: str | None = None) -> dict[str, Any]: ...

    @webmethod(route="/query", method="GET")
    async def query(
        self,
        s: str = "dflt",
        i: int = 0,
        f: float = 0.5,
        b: bool = False,
        color: Color = Color.RED,
        lit: Literal["x", "y"] = "x",
        os: str | None = None,
        oi: Optional[int] = None,
        ob: bool | None = None,
        oc: Color | None = None,
        tags: list[str] = [],
        nums: list[int] | None = None,
    ) -> dict[str, Any]: ...

    @webmethod(route="/find", method="GET")
    async def find(self, filt: Filter, limit: int = 10) -> dict[str, Any]: ...

    @webmethod(route="/typed", method="POST")
    async def typed(
        self,
        count: int,
        name: str,
        color: Color,
        when: dt.datetime,
        point: Point,
        item: Item,
        colors: list[Color],
        points: dict[str, Point],
        items: list[Item],
        maybe: int | None = 7,
        label: str = "dflt",
    ) -> dict[str, Any]: ...

    @webmethod(route="/returns/{kind}", method="GET")
    async def returns(self, kind: str) -> Any: ...

    @webmethod(route="/returns/{kind}", method="DELETE")
    async def delete_returns(self, kind: str) -> Any: ...

    @webmethod(route="/wrong-return", method="GET")
    async def wrong_return(self) -> dict[str, int]: ...

    @webmethod(route="/fail/{kind}", method="POST")
    async def fail(self, kind: str) -> None: ...

    @webmethod(route="/provider-data", method="GET")
    async def provider_data(self) -> Any: ...

    @webmethod(route="/stream/count", method="GET")
    async def count(self, n: int) -> AsyncIterator[dict[str, int]]: ...

    @webmethod(route="/stream/fail/{when}/{kind}", method="GET")
    async def stream_fail(self, when: str, kind: str) -> AsyncIterator[dict[str, int]]: ...

    @webmethod(route="/stream/returned", method="GET")
    async def stream_returned(self, n: int) -> AsyncIterator[dict[str, int]]: ...

    @webmethod(route="/stream/returned-fail", method="GET")
    async def stream_returned_fail(self) -> AsyncIterator[dict[str, int]]: ...


class PdataApi(Protocol):
    @webmethod(route="/creds", method="GET")
    async def creds(self) -> Any: ...


class SickApi(Protocol):
    @webmethod(route="/sick/ping", method="GET")
    async def ping(self) -> str: ...


class SlowApi(Protocol):
    @webmethod(route="/slow/ping", method="GET")
    async def ping(self) -> str: ...
'''

WIDE_PROVIDER = '''
import asyncio
import datetime as dt

from flask import abort

import stackflask
from wide_api_contract import Color, Item, Point

WHEN = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)

RETURNS = {
    "dict": {"a": 1, "b": [2, 3]},
    "list": [1, "two", None, 3.5],
    "str": "hello",
    "int": 42,
    "float": 1.5,
    "bool": True,
    "enum": Color.GREEN,
    "datetime": WHEN,
    "dataclass": Point(1, 2),
    "model": Item(a=1),
    "nested": {
        "when": WHEN,
        "color": Color.GREEN,
        "point": Point(1, 2),
        "items": [Item(a=2, note="n"), Item(a=3)],
        "by_name": {"p": Point(3, 4)},
    },
    "none": None,
}


def shape(value):
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return type(value).__name__


def echo(**kwargs):
    return {"values": kwargs, "types": shape(kwargs)}


def raise_kind(kind, message):
    if kind == "value":
        raise ValueError(message)
    if kind == "pydantic":
        Item.model_validate({"a": "not a number"})
    if kind == "permission":
        raise PermissionError(message)
    if kind == "notimpl":
        raise NotImplementedError(message)
    if kind == "timeout":
        raise TimeoutError(message)
    if kind == "asyncio_timeout":
        raise asyncio.TimeoutError(message)
    if kind == "abort":
        abort(409, "taken")
    if kind == "cancelled":
        raise asyncio.CancelledError(message)
    if kind == "keyerror":
        raise KeyError(message)
    raise RuntimeError(message)


class WideImpl:
    def __init__(self, config):
        self.config = config

    async def health(self):
        return {"status": "OK", "message": "all good", "extra": [1, 2]}

    async def probe(self):
        return "probe"

    async def by_name(self, name):
        return name

    async def by_path(self, rest):
        return rest

    async def m_get(self):
        return "GET"

    async def m_post(self):
        return "POST"

    async def m_delete(self):
        return "DELETE"

    async def m_put(self):
        return "PUT"

    async def m_patch(self):
        return "PATCH"

    async def m_default(self):
        return "default"

    async def get_item(self, **kwargs):
        return echo(**kwargs)

    async def update_thing(self, **kwargs):
        return echo(**kwargs)

    async def remove_thing(self, id, force=False):
        return None

    async def single(self, **kwargs):
        return echo(**kwargs)

    async def optional(self, **kwargs):
        return echo(**kwargs)

    async def query(self, **kwargs):
        return echo(**kwargs)

    async def find(self, **kwargs):
        return echo(**kwargs)

    async def typed(self, **kwargs):
        return echo(**kwargs)

    async def returns(self, kind):
        return RETURNS[kind]

    async def delete_returns(self, kind):
        return RETURNS[kind]

    async def wrong_return(self):
        return {"ok": 1, "bad": "two"}

    async def fail(self, kind):
        raise_kind(kind, "boom " + kind)

    async def provider_data(self):
        return stackflask.get_provider_data()

    async def count(self, n):
        for i in range(n):
            yield {"i": i}

    async def stream_fail(self, when, kind):
        if when == "late":
            yield {"i": 0}
        raise_kind(kind, when + " " + kind)
        yield {"i": 1}

    async def stream_returned(self, n):
        async def items():
            for i in range(n):
                yield {"i": i}

        return items()

    async def stream_returned_fail(self):
        raise PermissionError("before the iterator")


def get_provider_impl(config, deps):
    return WideImpl(config)
'''

PDATA_PROVIDER = '''
from pydantic import BaseModel

from llama_stack.distribution.request_headers import NeedsRequestProviderData


class Creds(BaseModel):
    api_key: str


class PdataImpl(NeedsRequestProviderData):
    async def creds(self):
        data = self.get_request_provider_data()
        if data is None:
            return None
        return {"type": type(data).__name__, "api_key": data.api_key}


async def get_provider_impl(config, deps):
    return PdataImpl()
'''

SICK_PROVIDER = '''
class SickImpl:
    async def health(self):
        raise RuntimeError("disk on fire")

    async def ping(self):
        return "pong"


def get_provider_impl(config, deps):
    return SickImpl()
'''

SLOW_PROVIDER = '''
import asyncio


class SlowImpl:
    async def health(self):
        await asyncio.sleep(60)
        return {"status": "OK"}

    async def ping(self):
        return "pong"


def get_provider_impl(config, deps):
    return SlowImpl()
'''

WIDE_CONFIG = {
    "base_url": "http://upstream.invalid",
    "api_key": "k1",
    "apikey_hint": "visible",
    "retries": 3,
    "nested": {
        "Client_SECRET": "s1",
        "MY_API_TOKEN": "t1",
        "servers": [{"host": "h", "Password": "p1"}, {"db_password_file": "/x"}],
        "secrets": {"a": 1},
    },
}

WIDE_CONFIG_REDACTED = {
    "base_url": "http://upstream.invalid",
    "api_key": "********",
    "apikey_hint": "********",
    "retries": 3,
    "nested": {
        "Client_SECRET": "********",
        "MY_API_TOKEN": "********",
        "servers": [{"host": "h", "Password": "********"}, {"db_password_file": "********"}],
        "secrets": "********",
    },
}

#: (method, route as declared under /v1) of every wide_contract webmethod.
WIDE_ROUTES = [
    ("GET", "/v1/probe/x"),
    ("GET", "/v1/names/{name}"),
    ("GET", "/v1/files/{rest:path}"),
    ("GET", "/v1/methods"),
    ("POST", "/v1/methods"),
    ("DELETE", "/v1/methods"),
    ("PUT", "/v1/methods"),
    ("PATCH", "/v1/methods"),
    ("POST", "/v1/default"),
    ("GET", "/v1/items/{id}"),
    ("POST", "/v1/things/{id}"),
    ("DELETE", "/v1/things/{id}"),
    ("POST", "/v1/single"),
    ("POST", "/v1/optional"),
    ("GET", "/v1/query"),
    ("GET", "/v1/find"),
    ("POST", "/v1/typed"),
    ("GET", "/v1/returns/{kind}"),
    ("DELETE", "/v1/returns/{kind}"),
    ("GET", "/v1/wrong-return"),
    ("POST", "/v1/fail/{kind}"),
    ("GET", "/v1/provider-data"),
    ("GET", "/v1/stream/count"),
    ("GET", "/v1/stream/fail/{when}/{kind}"),
    ("GET", "/v1/stream/returned"),
    ("GET", "/v1/stream/returned-fail"),
]

BUILTIN_ROUTES = [
    ("GET", "/v1/health"),
    ("GET", "/v1/version"),
    ("GET", "/v1/inspect/routes"),
    ("GET", "/v1/providers"),
    ("GET", "/v1/providers/{provider_id}"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/{name}"),
]

INTERNAL = "Internal server error: An unexpected error occurred."
WHEN_TEXT = "2024-05-01T12:30:00+00:00"


@pytest.fixture
def app(stack_files: Any, make_app: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The wide test stack: four APIs, their providers, specs and run config.

    The health-check timeout is cut so the slow provider's check times out quickly.
    """
    monkeypatch.setattr("stackflask.builtin.HEALTH_TIMEOUT", 0.2)
    stack_files.module("wide_api_contract", API_MODULE)
    stack_files.module("wide_provider_contract", WIDE_PROVIDER)
    stack_files.module("pdata_provider_contract", PDATA_PROVIDER)
    stack_files.module("sick_provider_contract", SICK_PROVIDER)
    stack_files.module("slow_provider_contract", SLOW_PROVIDER)
    for name, protocol in (
        ("wide_contract", "WideApi"),
        ("pdata_contract", "PdataApi"),
        ("sick_contract", "SickApi"),
        ("slow_contract", "SlowApi"),
    ):
        stack_files.api_spec(
            f"{name}.yaml", {"module": "wide_api_contract", "name": name, "protocol": protocol}
        )
    stack_files.provider_file("inline", "wide_contract", "wide", {"module": "wide_provider_contract"})
    stack_files.provider_file(
        "inline",
        "pdata_contract",
        "pdata",
        {
            "module": "pdata_provider_contract",
            "provider_data_validator": "pdata_provider_contract.Creds",
        },
    )
    stack_files.provider_file("inline", "sick_contract", "sick", {"module": "sick_provider_contract"})
    stack_files.provider_file("inline", "slow_contract", "slow", {"module": "slow_provider_contract"})
    path = stack_files.run_config(
        {
            "version": "2",
            "image_name": "contract",
            "apis": ["wide_contract", "pdata_contract", "sick_contract", "slow_contract"],
            "providers": {
                "wide_contract": [
                    {"provider_id": "wide", "provider_type": "inline::wide", "config": WIDE_CONFIG}
                ],
                "pdata_contract": [
                    {"provider_id": "pdata", "provider_type": "inline::pdata", "config": {}}
                ],
                "sick_contract": [
                    {"provider_id": "sick", "provider_type": "inline::sick", "config": {}}
                ],
                "slow_contract": [
                    {"provider_id": "slow", "provider_type": "inline::slow", "config": {}}
                ],
            },
        }
    )
    return make_app(path)


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def body_of(response: Any) -> bytes:
    """The body without the trailing newline the contract allows."""
    return response.data[:-1] if response.data.endswith(b"\n") else response.data


def assert_json(response: Any, status: int, body: Any) -> None:
    """``response`` is ``status`` with exactly ``body`` as compact JSON."""
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    assert response.json == body
    assert body_of(response) == compact(response.json)


def error_locs(response: Any) -> list[list[Any]]:
    """The ``loc`` of every problem of a 400 envelope, after checking its shape."""
    assert response.status_code == 400, response.data
    assert response.mimetype == "application/json"
    body = response.json
    assert list(body) == ["error"]
    assert list(body["error"]) == ["detail"]
    assert list(body["error"]["detail"]) == ["errors"]
    errors = body["error"]["detail"]["errors"]
    for error in errors:
        assert set(error) == {"loc", "msg", "type"}
        assert isinstance(error["msg"], str) and error["msg"].strip()
        assert isinstance(error["type"], str) and error["type"].strip()
    return [e["loc"] for e in errors]


def sse(*items: Any) -> bytes:
    return b"".join(b"data: " + compact(item) + b"\n\n" for item in items)


# -- Routes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/probe/x", "probe"),
        ("/v1/names/plain", "plain"),
        ("/v1/names/a%20b", "a b"),
        ("/v1/names/h%C3%A9llo", "héllo"),
        ("/v1/files/a", "a"),
        ("/v1/files/a/b/c.txt", "a/b/c.txt"),
    ],
)
def test_route_matches(client: Any, path: str, expected: str) -> None:
    assert_json(client.get(path), 200, expected)


@pytest.mark.parametrize("path", ["/v1/names/a%2Fb", "/v1/nope", "/v1/probe", "/probe/x"])
def test_unknown_path_is_404(client: Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert body_of(response) == b'{"detail":"Not Found"}'


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PUT", "PATCH"])
def test_methods_served_as_declared(client: Any, method: str) -> None:
    assert_json(client.open("/v1/methods", method=method), 200, method)


def test_no_method_means_post(client: Any) -> None:
    assert_json(client.post("/v1/default"), 200, "default")
    response = client.get("/v1/default")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    ("method", "path", "allowed", "refused"),
    [
        ("POST", "/v1/probe/x", "GET", "POST"),
        ("PUT", "/v1/probe/x", "GET", "PUT"),
        ("GET", "/v1/default", "POST", "GET"),
        ("GET", "/v1/things/1", "POST", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(
    client: Any, method: str, path: str, allowed: str, refused: str
) -> None:
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert response.mimetype == "application/json"
    assert body_of(response) == b'{"detail":"Method Not Allowed"}'
    allow = {m.strip() for m in response.headers["Allow"].split(",")}
    assert allowed in allow
    assert refused not in allow


def test_head_answers_like_get_without_body(client: Any) -> None:
    get = client.get("/v1/probe/x")
    head = client.head("/v1/probe/x")
    assert head.status_code == get.status_code == 200
    assert head.mimetype == "application/json"
    assert head.data == b""


def test_options_answers_with_allow(client: Any) -> None:
    response = client.options("/v1/things/1")
    assert response.status_code in (200, 204)
    allow = {m.strip() for m in response.headers["Allow"].split(",")}
    assert {"POST", "DELETE"} <= allow


@pytest.mark.parametrize("path", ["/v1/probe/x/", "/v1//probe/x"])
def test_trailing_or_doubled_slash_is_404_or_redirect(client: Any, path: str) -> None:
    response = client.get(path)
    if response.status_code == 404:
        assert response.json == {"detail": "Not Found"}
    else:
        assert response.status_code in (301, 302, 307, 308)
        assert response.headers["Location"].endswith("/v1/probe/x")


@pytest.mark.parametrize("version", ["0.0.1", "0.2.16", "99.3.0", "garbage"])
def test_any_client_version_is_served(client: Any, version: str) -> None:
    response = client.get("/v1/probe/x", headers={"X-LlamaStack-Client-Version": version})
    assert_json(response, 200, "probe")


# -- Parameters: path and body --------------------------------------------------


@pytest.mark.parametrize("raw", ["5", "5.0", "+5"])
def test_path_param_converted_to_int(client: Any, raw: str) -> None:
    response = client.get(f"/v1/items/{raw}")
    assert_json(response, 200, {"values": {"id": 5}, "types": {"id": "int"}})


@pytest.mark.parametrize("raw", ["x", "1.5", "5x"])
def test_bad_path_param_is_400(client: Any, raw: str) -> None:
    assert error_locs(client.get(f"/v1/items/{raw}")) == [["path", "id"]]


def test_single_parameter_body_is_keyed_by_name(client: Any) -> None:
    response = client.post("/v1/single", json={"payload": {"a": 1}})
    assert_json(
        response, 200, {"values": {"payload": {"a": 1, "b": "x"}}, "types": {"payload": "Inner"}}
    )


def test_single_parameter_body_is_not_the_parameter_itself(client: Any) -> None:
    assert error_locs(client.post("/v1/single", json={"a": 1})) == [["body", "payload"]]


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/json; charset=utf-8", "Application/JSON",
     "application/vnd.api+json", "application/merge-patch+json; charset=utf-8"],
)
def test_body_is_json_without_a_type_or_with_a_json_one(
    client: Any, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/v1/optional", data=b'{"a": 2, "b": "x"}', headers=headers)
    assert_json(
        response, 200, {"values": {"a": 2, "b": "x"}, "types": {"a": "int", "b": "str"}}
    )


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [
        ("text/plain", "text/plain"),
        ("text/plain; charset=utf-8", "text/plain"),
        ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
        ("multipart/form-data; boundary=x", "multipart/form-data"),
        ("application/octet-stream", "application/octet-stream"),
        ("application/jsonx", "application/jsonx"),
        ("text/json", "text/json"),
    ],
)
def test_a_body_of_another_type_is_415(client: Any, content_type: str, shown: str) -> None:
    response = client.post(
        "/v1/optional", data=b'{"a": 2, "b": "x"}', headers={"Content-Type": content_type}
    )
    assert_json(response, 415, {"detail": (
        f"Unsupported Media Type: the body must be JSON, got {shown!r}; send application/json"
    )})


def test_an_empty_body_is_not_parsed_whatever_its_type(client: Any) -> None:
    response = client.post("/v1/optional", data=b"", headers={"Content-Type": "text/plain"})
    assert_json(
        response, 200, {"values": {"a": 1, "b": None}, "types": {"a": "int", "b": "NoneType"}}
    )


def test_a_method_without_body_parameters_ignores_the_body_and_its_type(client: Any) -> None:
    response = client.post("/v1/methods", data=b"a=1", headers={"Content-Type": "text/plain"})
    assert_json(response, 200, "POST")


@pytest.mark.parametrize("data", [b"", b"{}", b"  \n"])
def test_all_optional_accepts_empty_body(client: Any, data: bytes) -> None:
    response = client.post("/v1/optional", data=data)
    assert_json(
        response, 200, {"values": {"a": 1, "b": None}, "types": {"a": "int", "b": "NoneType"}}
    )


def test_post_ignores_query_string(client: Any) -> None:
    response = client.post("/v1/optional?a=9&b=q", json={})
    assert response.json["values"] == {"a": 1, "b": None}


def test_path_wins_over_body_field(client: Any) -> None:
    response = client.post("/v1/things/5", json={"id": 99, "note": "n"})
    assert_json(
        response,
        200,
        {"values": {"id": 5, "note": "n"}, "types": {"id": "int", "note": "str"}},
    )


# -- Parameters: query string ---------------------------------------------------

QUERY_DEFAULTS = {
    "s": "dflt", "i": 0, "f": 0.5, "b": False, "color": "red", "lit": "x",
    "os": None, "oi": None, "ob": None, "oc": None, "tags": [], "nums": None,
}
QUERY_DEFAULT_TYPES = {
    "s": "str", "i": "int", "f": "float", "b": "bool", "color": "Color", "lit": "str",
    "os": "NoneType", "oi": "NoneType", "ob": "NoneType", "oc": "NoneType", "tags": [],
    "nums": "NoneType",
}


def test_query_defaults_come_from_signature(client: Any) -> None:
    response = client.get("/v1/query")
    assert_json(response, 200, {"values": QUERY_DEFAULTS, "types": QUERY_DEFAULT_TYPES})


@pytest.mark.parametrize(
    ("query", "name", "value", "type_name"),
    [
        ("s=hello", "s", "hello", "str"),
        ("s=", "s", "", "str"),
        ("os=", "os", "", "str"),
        ("os=v", "os", "v", "str"),
        ("s=a&s=b", "s", "b", "str"),
        ("s=5", "s", "5", "str"),
        ("i=3", "i", 3, "int"),
        ("i=-3", "i", -3, "int"),
        ("i=5.0", "i", 5, "int"),
        ("i=1&i=2", "i", 2, "int"),
        ("oi=7", "oi", 7, "int"),
        ("f=1.5", "f", 1.5, "float"),
        ("f=2", "f", 2.0, "float"),
        ("color=green", "color", "green", "Color"),
        ("oc=green", "oc", "green", "Color"),
        ("lit=y", "lit", "y", "str"),
        ("tags=a&tags=b", "tags", ["a", "b"], ["str", "str"]),
        ("tags=a", "tags", ["a"], ["str"]),
        ("nums=1&nums=2", "nums", [1, 2], ["int", "int"]),
        ("ob=no", "ob", False, "bool"),
        ("unknown=1", "s", "dflt", "str"),
    ],
)
def test_query_scalar_and_list(
    client: Any, query: str, name: str, value: Any, type_name: Any
) -> None:
    response = client.get(f"/v1/query?{query}")
    assert response.status_code == 200, response.data
    assert response.json["values"][name] == value
    assert response.json["types"][name] == type_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [(t, True) for t in ("true", "1", "yes", "on", "TRUE", "Yes", "oN")]
    + [(t, False) for t in ("false", "0", "no", "off", "FALSE", "No", "OFF")],
)
def test_query_bool_words(client: Any, text: str, expected: bool) -> None:
    response = client.get(f"/v1/query?b={text}")
    assert response.status_code == 200, response.data
    assert response.json["values"]["b"] is expected
    assert response.json["types"]["b"] == "bool"


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("b=maybe", ["query", "b"]),
        ("b=2", ["query", "b"]),
        ("b=", ["query", "b"]),
        ("ob=y", ["query", "ob"]),
        ("i=1.5", ["query", "i"]),
        ("i=three", ["query", "i"]),
        ("oi=x", ["query", "oi"]),
        ("f=abc", ["query", "f"]),
        ("color=purple", ["query", "color"]),
        ("lit=z", ["query", "lit"]),
    ],
)
def test_bad_query_value_is_400(client: Any, query: str, loc: list[Any]) -> None:
    assert error_locs(client.get(f"/v1/query?{query}")) == [loc]


def test_bad_list_item_in_query(client: Any) -> None:
    locs = error_locs(client.get("/v1/query?nums=1&nums=x"))
    assert locs in ([["query", "nums", 1]], [["query", "nums"]])


@pytest.mark.parametrize(
    "data", [b"{not json", b'{"s": "from body"}', b"[1, 2]"]
)
def test_get_with_scalar_params_ignores_body(client: Any, data: bytes) -> None:
    response = client.get("/v1/query?s=q", data=data, content_type="application/json")
    assert response.status_code == 200, response.data
    assert response.json["values"]["s"] == "q"


def test_get_object_param_from_json_body(client: Any) -> None:
    response = client.get(
        "/v1/find?limit=3", json={"filt": {"color": "green", "tags": ["t"], "extra": 1}}
    )
    assert_json(
        response,
        200,
        {
            "values": {"filt": {"color": "green", "tags": ["t"]}, "limit": 3},
            "types": {"filt": "Filter", "limit": "int"},
        },
    )


def test_delete_with_scalar_params_ignores_body(client: Any) -> None:
    response = client.delete("/v1/things/1?force=yes", data=b"{not json")
    assert response.status_code == 204
    assert response.data == b""


# -- Parameters: typed body -----------------------------------------------------

BASE_BODY: dict[str, Any] = {
    "count": 1,
    "name": "n",
    "color": "red",
    "when": WHEN_TEXT,
    "point": {"x": 1, "y": 2},
    "item": {"a": 1},
    "colors": ["red", "green"],
    "points": {"p": {"x": 3, "y": 4}},
    "items": [{"a": 2}],
}

BASE_VALUES: dict[str, Any] = {
    **BASE_BODY,
    "item": {"a": 1, "note": None},
    "items": [{"a": 2, "note": None}],
    "maybe": 7,
    "label": "dflt",
}

BASE_TYPES = {
    "count": "int",
    "name": "str",
    "color": "Color",
    "when": "datetime",
    "point": "Point",
    "item": "Item",
    "colors": ["Color", "Color"],
    "points": {"p": "Point"},
    "items": ["Item"],
    "maybe": "int",
    "label": "str",
}


def test_provider_receives_annotated_types(client: Any) -> None:
    response = client.post("/v1/typed", json=BASE_BODY)
    assert response.status_code == 200, response.data
    assert response.json["types"] == BASE_TYPES
    values = response.json["values"]
    assert dt.datetime.fromisoformat(values.pop("when")) == dt.datetime.fromisoformat(WHEN_TEXT)
    assert values == {k: v for k, v in BASE_VALUES.items() if k != "when"}


@pytest.mark.parametrize(
    ("field", "sent", "received", "type_name"),
    [
        ("count", "3", 3, "int"),
        ("count", 5.0, 5, "int"),
        ("count", "5.0", 5, "int"),
        ("maybe", None, None, "NoneType"),
        ("maybe", 2, 2, "int"),
        ("label", "given", "given", "str"),
    ],
)
def test_body_value_coercion(
    client: Any, field: str, sent: Any, received: Any, type_name: str
) -> None:
    response = client.post("/v1/typed", json={**BASE_BODY, field: sent})
    assert response.status_code == 200, response.data
    assert response.json["values"][field] == received
    assert response.json["types"][field] == type_name


def test_unknown_fields_ignored_at_any_depth(client: Any) -> None:
    body = {
        **BASE_BODY,
        "newer_field": {"x": 1},
        "point": {"x": 1, "y": 2, "z": 3},
        "item": {"a": 1, "zzz": [1]},
        "points": {"p": {"x": 3, "y": 4, "w": 0}},
        "items": [{"a": 2, "q": {"deep": 1}}],
    }
    response = client.post("/v1/typed", json=body)
    assert response.status_code == 200, response.data
    assert response.json["types"] == BASE_TYPES
    assert response.json["values"]["point"] == {"x": 1, "y": 2}
    assert response.json["values"]["points"] == {"p": {"x": 3, "y": 4}}
    assert response.json["values"]["items"] == [{"a": 2, "note": None}]


@pytest.mark.parametrize(
    ("changes", "locs"),
    [
        ({"count": 1.5}, [["body", "count"]]),
        ({"count": "three"}, [["body", "count"]]),
        ({"count": None}, [["body", "count"]]),
        ({"name": 5}, [["body", "name"]]),
        ({"name": None}, [["body", "name"]]),
        ({"color": "purple"}, [["body", "color"]]),
        ({"when": "yesterday"}, [["body", "when"]]),
        ({"point": {"x": "bad", "y": 1}}, [["body", "point", "x"]]),
        ({"point": {"x": 1}}, [["body", "point", "y"]]),
        ({"item": None}, [["body", "item"]]),
        ({"items": [{"a": 1}, {"a": "bad"}]}, [["body", "items", 1, "a"]]),
        ({"items": [{"a": "bad"}]}, [["body", "items", 0, "a"]]),
        ({"colors": ["red", "purple"]}, [["body", "colors", 1]]),
        ({"points": {"p": {"x": "bad", "y": 1}}}, [["body", "points", "p", "x"]]),
        (
            {"count": "three", "name": 5, "items": [{"a": "bad"}]},
            [["body", "count"], ["body", "name"], ["body", "items", 0, "a"]],
        ),
    ],
    ids=lambda v: ".".join(map(str, v[0])) if isinstance(v, list) else None,
)
def test_bad_body_value_is_400_at_its_loc(
    client: Any, changes: dict[str, Any], locs: list[list[Any]]
) -> None:
    response = client.post("/v1/typed", json={**BASE_BODY, **changes})
    assert sorted(map(str, error_locs(response))) == sorted(map(str, locs))


def test_every_missing_field_listed(client: Any) -> None:
    body = {k: v for k, v in BASE_BODY.items() if k not in ("color", "when")}
    locs = error_locs(client.post("/v1/typed", json={**body, "count": "three"}))
    assert sorted(map(str, locs)) == sorted(
        map(str, [["body", "color"], ["body", "when"], ["body", "count"]])
    )
    missing = [
        e for e in client.post("/v1/typed", json=body).json["error"]["detail"]["errors"]
    ]
    assert {e["type"] for e in missing} == {"missing"}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "locs"),
    [
        ("GET", "/v1/find?limit=abc", {}, [["query", "limit"], ["body", "filt"]]),
        ("GET", "/v1/find?limit=abc", {"json": {"filt": {"color": "no"}}},
         [["query", "limit"], ["body", "filt", "color"]]),
        ("DELETE", "/v1/things/x?force=maybe", {}, [["path", "id"], ["query", "force"]]),
        ("POST", "/v1/things/x", {"json": {"note": 5}}, [["path", "id"], ["body", "note"]]),
        ("POST", "/v1/things/x", {"json": {}}, [["path", "id"], ["body", "note"]]),
    ],
)
def test_every_problem_listed_at_once(
    client: Any, method: str, path: str, kwargs: dict[str, Any], locs: list[list[Any]]
) -> None:
    response = client.open(path, method=method, **kwargs)
    assert sorted(map(str, error_locs(response))) == sorted(map(str, locs))


@pytest.mark.parametrize(
    "data",
    [b'{"count": ', b"{'count': 1}", b"[1, 2]", b'"text"', b"3", b"null", b"\xff\xfe"],
)
def test_malformed_or_non_object_body_is_400_at_body(client: Any, data: bytes) -> None:
    response = client.post("/v1/typed", data=data, content_type="application/json")
    assert error_locs(response) == [["body"]]


def test_malformed_body_on_all_optional_method(client: Any) -> None:
    response = client.post("/v1/optional", data=b"[]", content_type="application/json")
    assert error_locs(response) == [["body"]]


# -- Successful responses -------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("dict", b'{"a":1,"b":[2,3]}'),
        ("list", b'[1,"two",null,3.5]'),
        ("str", b'"hello"'),
        ("int", b"42"),
        ("float", b"1.5"),
        ("bool", b"true"),
        ("enum", b'"green"'),
        ("dataclass", b'{"x":1,"y":2}'),
        ("model", b'{"a":1,"note":null}'),
        ("none", b"null"),
    ],
)
def test_returned_value_is_compact_json(client: Any, kind: str, expected: bytes) -> None:
    response = client.get(f"/v1/returns/{kind}")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert body_of(response) == expected


def test_returned_datetime_is_iso_8601(client: Any) -> None:
    response = client.get("/v1/returns/datetime")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert dt.datetime.fromisoformat(response.json) == dt.datetime.fromisoformat(WHEN_TEXT)


def test_returned_nested_value(client: Any) -> None:
    response = client.get("/v1/returns/nested")
    assert response.status_code == 200
    assert body_of(response) == compact(response.json)
    body = response.json
    assert dt.datetime.fromisoformat(body.pop("when")) == dt.datetime.fromisoformat(WHEN_TEXT)
    assert body == {
        "color": "green",
        "point": {"x": 1, "y": 2},
        "items": [{"a": 2, "note": "n"}, {"a": 3, "note": None}],
        "by_name": {"p": {"x": 3, "y": 4}},
    }


def test_none_on_delete_is_204_without_body(client: Any) -> None:
    response = client.delete("/v1/returns/none")
    assert response.status_code == 204
    assert response.data == b""
    assert client.delete("/v1/things/3").status_code == 204


def test_value_on_delete_is_200(client: Any) -> None:
    response = client.delete("/v1/returns/dict")
    assert response.status_code == 200
    assert body_of(response) == b'{"a":1,"b":[2,3]}'


def test_return_not_matching_annotation_is_500_and_logged(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = client.get("/v1/wrong-return")
    assert_json(response, 500, {"detail": INTERNAL})
    text = "\n".join(r.getMessage() + str(r.exc_info and r.exc_info[1]) for r in caplog.records)
    assert "wide_contract" in text
    assert "wrong_return" in text
    assert "bad" in text


# -- Errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "detail"),
    [
        ("value", 400, "Invalid value: boom value"),
        ("permission", 403, "Permission denied: boom permission"),
        ("notimpl", 501, "Not implemented: boom notimpl"),
        ("timeout", 504, "Operation timed out: boom timeout"),
        ("asyncio_timeout", 504, "Operation timed out: boom asyncio_timeout"),
        ("abort", 409, "taken"),
        ("runtime", 500, INTERNAL),
        ("keyerror", 500, INTERNAL),
        ("cancelled", 500, INTERNAL),
    ],
)
def test_provider_exception_status_and_detail(
    client: Any, kind: str, status: int, detail: str
) -> None:
    response = client.post(f"/v1/fail/{kind}")
    assert_json(response, status, {"detail": detail})


def test_pydantic_validation_error_is_400(client: Any) -> None:
    response = client.post("/v1/fail/pydantic")
    assert response.status_code == 400
    assert response.mimetype == "application/json"
    assert list(response.json) == ["detail"]
    assert response.json["detail"].startswith("Invalid value: 1 validation error for Item")


@pytest.mark.parametrize("kind", ["runtime", "keyerror", "cancelled"])
def test_500_traceback_logged_never_sent(
    client: Any, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    with caplog.at_level(logging.ERROR):
        response = client.post(f"/v1/fail/{kind}")
    assert response.status_code == 500
    assert b"boom" not in response.data
    assert b"Traceback" not in response.data
    logged = [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert logged
    assert f"boom {kind}" in caplog.text
    assert "Traceback" in caplog.text


# -- Built-in endpoints ---------------------------------------------------------


def test_health(client: Any) -> None:
    response = client.get("/v1/health")
    assert response.status_code == 200
    assert body_of(response) == b'{"status":"OK"}'


def test_version(client: Any) -> None:
    assert_json(client.get("/v1/version"), 200, {"version": metadata.version("stackflask")})


def test_inspect_routes(client: Any) -> None:
    response = client.get("/v1/inspect/routes")
    assert response.status_code == 200
    data = response.json["data"]
    assert all(set(entry) == {"route", "method", "provider_types"} for entry in data)
    seen = [(e["method"], e["route"]) for e in data]
    assert len(seen) == len(set(seen))
    expected = (
        [(m, r, ("inline::wide",)) for m, r in WIDE_ROUTES]
        + [
            ("GET", "/v1/creds", ("inline::pdata",)),
            ("GET", "/v1/sick/ping", ("inline::sick",)),
            ("GET", "/v1/slow/ping", ("inline::slow",)),
        ]
        + [(m, r, ()) for m, r in BUILTIN_ROUTES]
    )
    got = [(e["method"], e["route"], tuple(e["provider_types"])) for e in data]
    assert sorted(got) == sorted(expected)


WIDE_ENTRY = {
    "api": "wide_contract",
    "provider_id": "wide",
    "provider_type": "inline::wide",
    "config": WIDE_CONFIG_REDACTED,
    "health": {"status": "OK", "message": "all good", "extra": [1, 2]},
}
PDATA_ENTRY = {
    "api": "pdata_contract",
    "provider_id": "pdata",
    "provider_type": "inline::pdata",
    "config": {},
    "health": {"status": "Not Implemented", "message": "Provider does not implement health check"},
}


def test_providers_list(client: Any) -> None:
    response = client.get("/v1/providers")
    assert response.status_code == 200
    assert list(response.json) == ["data"]
    data = {entry["provider_id"]: entry for entry in response.json["data"]}
    assert len(data) == len(response.json["data"]) == 4
    for entry in data.values():
        assert set(entry) == {"api", "provider_id", "provider_type", "config", "health"}
    assert data["wide"] == WIDE_ENTRY
    assert data["pdata"] == PDATA_ENTRY
    sick = data["sick"]
    assert {k: v for k, v in sick.items() if k != "health"} == {
        "api": "sick_contract", "provider_id": "sick", "provider_type": "inline::sick", "config": {},
    }
    assert set(sick["health"]) == {"status", "message"}
    assert sick["health"]["status"] == "Error"
    assert "disk on fire" in sick["health"]["message"]


@pytest.mark.parametrize(("provider_id", "why"), [("sick", "disk on fire"), ("slow", "time")])
def test_failing_health_check_is_error(client: Any, provider_id: str, why: str) -> None:
    response = client.get(f"/v1/providers/{provider_id}")
    assert response.status_code == 200
    health = response.json["health"]
    assert set(health) == {"status", "message"}
    assert health["status"] == "Error"
    assert why in health["message"]


@pytest.mark.parametrize(("provider_id", "entry"), [("wide", WIDE_ENTRY), ("pdata", PDATA_ENTRY)])
def test_one_provider(client: Any, provider_id: str, entry: dict[str, Any]) -> None:
    assert_json(client.get(f"/v1/providers/{provider_id}"), 200, entry)


def test_unknown_provider_is_404(client: Any) -> None:
    assert_json(client.get("/v1/providers/nope"), 404, {"detail": "Provider nope not found"})


def test_secrets_not_sent_anywhere(client: Any) -> None:
    for path in ("/v1/providers", "/v1/providers/wide"):
        data = client.get(path).data
        for secret in (b"k1", b"s1", b"t1", b"p1", b'"/x"'):
            assert secret not in data


# -- Request context: request id and provider data ------------------------------

RESPONSES = [
    ("GET", "/v1/probe/x"),
    ("GET", "/v1/nope"),
    ("POST", "/v1/probe/x"),
    ("GET", "/v1/items/x"),
    ("POST", "/v1/fail/runtime"),
    ("POST", "/v1/fail/abort"),
    ("GET", "/v1/health"),
    ("GET", "/v1/stream/count?n=2"),
    ("DELETE", "/v1/things/1"),
]


@pytest.mark.parametrize(("method", "path"), RESPONSES)
def test_request_id_echoed(client: Any, method: str, path: str) -> None:
    response = client.open(path, method=method, headers={"X-Request-ID": "req-42.a_b:c"})
    assert response.headers["X-Request-ID"] == "req-42.a_b:c"


@pytest.mark.parametrize(("method", "path"), RESPONSES)
def test_request_id_made_when_absent(client: Any, method: str, path: str) -> None:
    first = client.open(path, method=method).headers.get("X-Request-ID")
    second = client.open(path, method=method).headers.get("X-Request-ID")
    assert first and second
    assert first != second


@pytest.mark.parametrize("sent", ["bad\x01id", "bad\x7fid", "x" * 1000, ""])
def test_unreasonable_request_id_not_echoed(client: Any, sent: str) -> None:
    response = client.get("/v1/probe/x", headers={"X-Request-ID": sent})
    assert response.status_code == 200
    rid = response.headers["X-Request-ID"]
    assert rid and rid != sent
    assert rid.isprintable() and len(rid) <= 128


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('{"token": "t", "n": {"deep": [1]}}', {"token": "t", "n": {"deep": [1]}}),
        ("{}", {}),
        (None, None),
        ("{not json", None),
        ("[1, 2]", None),
        ('"text"', None),
        ("null", None),
    ],
)
def test_provider_data_header(client: Any, header: str | None, expected: Any) -> None:
    headers = {"X-LlamaStack-Provider-Data": header} if header is not None else {}
    assert_json(client.get("/v1/provider-data", headers=headers), 200, expected)


def test_provider_data_is_per_request(client: Any) -> None:
    client.get("/v1/provider-data", headers={"X-LlamaStack-Provider-Data": '{"a": 1}'})
    assert_json(client.get("/v1/provider-data"), 200, None)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('{"api_key": "k", "other": 1}', {"type": "Creds", "api_key": "k"}),
        ("{}", None),
        ('{"api_key": ["no"]}', None),
        ("{not json", None),
        ("[1]", None),
        (None, None),
    ],
)
def test_provider_data_validator(client: Any, header: str | None, expected: Any) -> None:
    headers = {"X-LlamaStack-Provider-Data": header} if header is not None else {}
    assert_json(client.get("/v1/creds", headers=headers), 200, expected)


# -- Streaming ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/stream/count?n=3", "/v1/stream/returned?n=3"])
def test_stream_items_as_sse(client: Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.data == sse({"i": 0}, {"i": 1}, {"i": 2})


@pytest.mark.parametrize("path", ["/v1/stream/count?n=0", "/v1/stream/returned?n=0"])
def test_empty_stream_is_200_empty_body(client: Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.data == b""


@pytest.mark.parametrize(
    ("path", "status", "detail"),
    [
        ("/v1/stream/fail/early/value", 400, "Invalid value: early value"),
        ("/v1/stream/fail/early/permission", 403, "Permission denied: early permission"),
        ("/v1/stream/fail/early/timeout", 504, "Operation timed out: early timeout"),
        ("/v1/stream/fail/early/abort", 409, "taken"),
        ("/v1/stream/fail/early/runtime", 500, INTERNAL),
        ("/v1/stream/returned-fail", 403, "Permission denied: before the iterator"),
    ],
)
def test_stream_error_before_first_item_is_plain_error(
    client: Any, path: str, status: int, detail: str
) -> None:
    assert_json(client.get(path), status, {"detail": detail})


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("runtime", f"500: {INTERNAL}"),
        ("cancelled", f"500: {INTERNAL}"),
        ("value", "400: Invalid value: late value"),
        ("notimpl", "501: Not implemented: late notimpl"),
    ],
)
def test_stream_error_after_first_item_ends_with_error_event(
    client: Any, kind: str, message: str
) -> None:
    response = client.get(f"/v1/stream/fail/late/{kind}")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.data == sse({"i": 0}, {"error": {"message": message}})


def test_stream_error_traceback_logged_not_sent(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = client.get("/v1/stream/fail/late/runtime")
    assert b"late runtime" not in response.data
    assert "late runtime" in caplog.text
