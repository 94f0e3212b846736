"""Every webmethod record is served, with all its fields (issue 9, point 5).

Stacked ``@webmethod`` decorators and ``__webmethods__`` lists (the shape later
Llama Stack releases write: the list, plus ``__webmethod__`` naming its last
record) each give a route. ``public``, ``raw_bytes_request_body``, the examples,
``experimental`` and ``descriptive_name`` are read from each record.
"""

from __future__ import annotations

import hashlib

import pytest

from stackflask import StartupError, create_app

TOKEN = "records-token"

API = '''
from types import SimpleNamespace
from typing import Any, Protocol

from stackflask import WebMethod, webmethod


class Records(Protocol):
    @webmethod(route="/a/{x}", method="GET")
    @webmethod(route="/b/{x}", method="GET")
    async def stacked(self, x: str) -> dict[str, str]: ...

    async def listed(self, x: str) -> dict[str, str]: ...

    # Records of stackflask's own and of another maker (read by their fields);
    # __webmethod__ is the list's last record, as Llama Stack's decorator leaves it.
    listed.__webmethods__ = [
        WebMethod(route="/c/{x}", method="GET"),
        SimpleNamespace(route="/d/{x}", method="POST"),
    ]
    listed.__webmethod__ = listed.__webmethods__[-1]

    @webmethod(route="/open/{x}", method="GET", public=True)
    @webmethod(route="/closed/{x}", method="GET")
    async def half_public(self, x: str) -> dict[str, str]: ...

    @webmethod(route="/public", method="GET", public=True)
    async def public(self) -> str: ...

    @webmethod(route="/private", method="GET")
    async def private(self) -> str: ...

    @webmethod(route="/raw-body", method="POST", raw_bytes_request_body=True)
    async def raw_body(self, body: bytes) -> dict[str, Any]: ...

    @webmethod(
        route="/examples",
        method="POST",
        request_examples=[{"city": "Kyoto-request-example"}],
        response_examples=[{"forecast": "sunny-response-example"}],
    )
    async def examples(self, city: str) -> dict[str, str]: ...

    @webmethod(route="/experimental", method="GET", experimental=True)
    async def experimental(self) -> str: ...

    @webmethod(route="/named", method="GET", descriptive_name="a-descriptive-name")
    async def named(self) -> str: ...
'''

IMPL = '''
import hashlib


class Impl:
    async def stacked(self, x):
        return {"x": x}

    async def listed(self, x):
        return {"x": x}

    async def half_public(self, x):
        return {"x": x}

    async def public(self):
        return "public"

    async def private(self):
        return "private"

    async def raw_body(self, body):
        return {"type": type(body).__name__, "sha256": hashlib.sha256(body).hexdigest()}

    async def examples(self, city):
        return {"forecast": city}

    async def experimental(self):
        return "experimental"

    async def named(self):
        return "named"


def get_provider_impl(config, deps):
    return Impl()
'''


@pytest.fixture
def records_config(stack_files):
    """``records_config(server=None)``: the path of a run config serving ``Records``."""
    return stack_files.serve_api("records", "Records", API, IMPL)


@pytest.fixture
def app(records_config, make_app):
    return make_app(str(records_config()))


ROUTES = [("GET", "/v1/a/{x}"), ("GET", "/v1/b/{x}"), ("GET", "/v1/c/{x}"), ("POST", "/v1/d/{x}")]


@pytest.mark.parametrize(("method", "route"), ROUTES, ids=[r for _, r in ROUTES])
def test_every_record_is_served(client, method, route):
    response = client.open(route.replace("{x}", "v1"), method=method)
    assert response.status_code == 200, response.data
    assert response.json == {"x": "v1"}


def test_every_record_is_listed(client):
    listed = {(r["method"], r["route"]) for r in client.get("/v1/inspect/routes").json["data"]}
    assert listed >= set(ROUTES)
    paths = client.get("/openapi.json").json["paths"]
    for method, route in ROUTES:
        assert method.lower() in paths[route], route


def test_operation_ids_of_one_method_differ(client):
    paths = client.get("/openapi.json").json["paths"]
    ids = [paths[route][method.lower()]["operationId"] for method, route in ROUTES]
    assert len(set(ids)) == len(ids), ids


# -- collisions --------------------------------------------------------------

COLLIDING_API = '''
from typing import Protocol

from stackflask import webmethod


class Proto(Protocol):
    @webmethod(route="/a/{x}", method="GET")
    @webmethod(route="/b/{x}", method="GET")
    async def first(self, x: str) -> str: ...

    @webmethod(route="/b/{y}", method="GET")
    async def second(self, y: str) -> str: ...
'''

COLLIDING_IMPL = '''
class Impl:
    async def first(self, x):
        return x

    async def second(self, y):
        return y


def get_provider_impl(config, deps):
    return Impl()
'''


def test_a_stacked_record_colliding_with_another_method_is_a_startup_error(stack_files):
    stack_files.module("colliding_api_wm", COLLIDING_API)
    stack_files.module("colliding_impl_wm", COLLIDING_IMPL)
    stack_files.api_spec("colliding.yaml", {
        "module": "colliding_api_wm", "name": "colliding", "protocol": "Proto"})
    stack_files.provider_file("inline", "colliding", "impl", {"module": "colliding_impl_wm"})
    path = stack_files.run_config({
        "providers": {"colliding": [{"provider_id": "impl", "provider_type": "inline::impl"}]},
    })
    with pytest.raises(StartupError) as info:
        create_app(str(path))
    assert any(
        "route GET /v1/b/" in line and "declared by both" in line
        and "colliding.first" in line and "colliding.second" in line
        for line in info.value.problems
    ), info.value.problems


# -- public ------------------------------------------------------------------


@pytest.fixture
def auth_client(records_config, make_app):
    auth = {"tokens": [{"token": TOKEN, "principal": "alice"}]}
    return make_app(str(records_config({"auth": auth}))).test_client()


@pytest.mark.parametrize(
    ("path", "status"),
    [("/v1/public", 200), ("/v1/open/1", 200), ("/v1/private", 401), ("/v1/closed/1", 401),
     ("/v1/a/1", 401)],
)
def test_public_records_need_no_token(auth_client, path, status):
    response = auth_client.get(path)
    assert response.status_code == status, response.data
    authorized = auth_client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert authorized.status_code == 200


# -- raw_bytes_request_body --------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"body": "not this"}', "application/json"),
        (b"\x00\xff not json at all", "application/json"),
        (b"plain text", "text/plain"),
        (bytes(range(256)), "application/octet-stream"),
        (b"a=1&b=2", "application/x-www-form-urlencoded"),
        (b"no content type", None),
        (b"", "application/octet-stream"),
    ],
    ids=["json", "invalid-json", "text", "binary", "form-urlencoded", "no-content-type", "empty"],
)
def test_raw_body_reaches_the_provider_as_bytes(client, body, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/v1/raw-body", data=body, headers=headers)
    assert response.status_code == 200, response.data
    assert response.json == {"type": "bytes", "sha256": hashlib.sha256(body).hexdigest()}


# -- OpenAPI: examples, experimental -----------------------------------------


def contains(document, value):
    """Whether ``value`` is ``document`` or anywhere inside it."""
    if document == value:
        return True
    if isinstance(document, dict):
        return any(contains(v, value) for v in document.values())
    if isinstance(document, list):
        return any(contains(v, value) for v in document)
    return False


def test_examples_reach_openapi(client):
    operation = client.get("/openapi.json").json["paths"]["/v1/examples"]["post"]
    assert contains(operation["requestBody"], {"city": "Kyoto-request-example"}), operation
    assert contains(operation["responses"], {"forecast": "sunny-response-example"}), operation


def test_experimental_reaches_openapi(client):
    paths = client.get("/openapi.json").json["paths"]
    assert paths["/v1/experimental"]["get"]["x-experimental"] is True
    assert paths["/v1/named"]["get"].get("x-experimental") is not True


def test_descriptive_name_is_accepted(client):
    assert client.get("/v1/named").json == "named"
