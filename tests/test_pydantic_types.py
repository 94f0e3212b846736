"""pydantic semantics wherever a type involves pydantic (issue 9, point 1).

The ``app`` fixture serves an API written the way Llama Stack writes its own:
``Field`` constraints in ``Annotated``, a discriminated union of message
models, a ``field_validator``, a model with an alias and defaults, a
constrained query parameter, and results checked against pydantic types. Its
provider echoes what it received, with Python type names, so a test sees both
the wire answer and what the provider got.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from conftest import REPO, server_env

API = '''
from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, Field, field_validator

from stackflask import webmethod


class UserMessage(BaseModel):
    role: Literal["user"] = "user"
    content: str


class SystemMessage(BaseModel):
    role: Literal["system"] = "system"
    content: str


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


Message = Annotated[UserMessage | SystemMessage | AssistantMessage, Field(discriminator="role")]


class Tag(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def no_spaces(cls, value: str) -> str:
        if " " in value:
            raise ValueError("a tag name has no spaces")
        return value


class Aliased(BaseModel):
    camel_name: str = Field(alias="camelName")
    count: int = 3


class Point(BaseModel):
    x: int
    y: int = 0


class Pyd(Protocol):
    @webmethod(route="/pyd/embed", method="POST")
    async def embed(
        self,
        output_dimension: Annotated[int, Field(ge=1, le=4096)] | None = None,
        text: str = "",
    ) -> dict[str, Any]: ...

    @webmethod(route="/pyd/chat", method="POST")
    async def chat(self, messages: list[Message]) -> dict[str, Any]: ...

    @webmethod(route="/pyd/tag", method="POST")
    async def tag(self, tag: Tag) -> dict[str, Any]: ...

    @webmethod(route="/pyd/tag-groups", method="POST")
    async def tag_groups(self, groups: dict[str, list[Tag]]) -> dict[str, Any]: ...

    @webmethod(route="/pyd/aliased", method="POST")
    async def aliased(self, item: Aliased) -> Aliased: ...

    @webmethod(route="/pyd/page", method="GET")
    async def page(self, limit: Annotated[int, Field(ge=1)] = 10) -> dict[str, Any]: ...

    @webmethod(route="/pyd/non-negative", method="GET")
    async def non_negative(self, value: int) -> Annotated[int, Field(ge=0)]: ...

    @webmethod(route="/pyd/point", method="GET")
    async def point(self, kind: str) -> Point: ...
'''

IMPL = '''
POINTS = {
    "defaults": {"x": 1},
    "extra-keys": {"x": 1, "y": 2, "secret": "s"},
    "invalid": {"x": "not a number"},
}


class Impl:
    async def embed(self, output_dimension=None, text=""):
        return {"output_dimension": output_dimension, "type": type(output_dimension).__name__}

    async def chat(self, messages):
        return {
            "types": [type(m).__name__ for m in messages],
            "contents": [m.content for m in messages],
        }

    async def tag(self, tag):
        return {"type": type(tag).__name__, "name": tag.name}

    async def tag_groups(self, groups):
        return {key: [type(t).__name__ for t in tags] for key, tags in groups.items()}

    async def aliased(self, item):
        assert type(item).__name__ == "Aliased", type(item)
        return item

    async def page(self, limit=10):
        return {"limit": limit, "type": type(limit).__name__}

    async def non_negative(self, value):
        return value

    async def point(self, kind):
        return POINTS[kind]


def get_provider_impl(config, deps):
    return Impl()
'''


@pytest.fixture
def app(stack_files, make_app):
    return make_app(stack_files.serve_api("pyd", "Pyd", API, IMPL)())


def errors_of(response):
    assert response.status_code == 400, (response.status_code, response.data)
    errors = response.json["error"]["detail"]["errors"]
    for error in errors:
        assert set(error) >= {"loc", "msg", "type"}, error
    return errors


def one_error(response, loc_prefix):
    """The single error of a 400, whose loc starts with ``loc_prefix``."""
    [error] = errors_of(response)
    assert error["loc"][: len(loc_prefix)] == loc_prefix, error
    return error


# -- Field constraints -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [({"output_dimension": 5}, 5), ({"output_dimension": 4096}, 4096),
     ({"output_dimension": 1}, 1), ({"output_dimension": None}, None), ({}, None)],
    ids=["inside", "upper-bound", "lower-bound", "null", "omitted"],
)
def test_constrained_optional_int_accepts(client, body, expected):
    response = client.post("/v1/pyd/embed", json=body)
    assert response.status_code == 200, response.json
    assert response.json["output_dimension"] == expected
    assert response.json["type"] == type(expected).__name__


@pytest.mark.parametrize(
    ("value", "error_type"),
    [(0, "greater_than_equal"), (-3, "greater_than_equal"), (99999, "less_than_equal"),
     (4097, "less_than_equal")],
)
def test_constraint_violation_is_pydantic_error(client, value, error_type):
    response = client.post("/v1/pyd/embed", json={"output_dimension": value})
    error = one_error(response, ["body", "output_dimension"])
    assert error["type"] == error_type


def test_pydantic_and_plain_problems_are_listed_together(client):
    response = client.post("/v1/pyd/embed", json={"output_dimension": 0, "text": 5})
    locs = sorted(tuple(e["loc"][:2]) for e in errors_of(response))
    assert locs == [("body", "output_dimension"), ("body", "text")]


def test_constrained_query_parameter(client):
    assert client.get("/v1/pyd/page").json == {"limit": 10, "type": "int"}
    assert client.get("/v1/pyd/page?limit=3").json == {"limit": 3, "type": "int"}


@pytest.mark.parametrize(
    ("query", "error_type"),
    [("limit=0", "greater_than_equal"), ("limit=-1", "greater_than_equal"),
     ("limit=abc", "int_parsing")],
)
def test_constrained_query_parameter_refusals(client, query, error_type):
    [error] = errors_of(client.get(f"/v1/pyd/page?{query}"))
    assert error["loc"] == ["query", "limit"]
    assert error["type"] == error_type


# -- discriminated unions ----------------------------------------------------


def test_discriminated_union_picks_the_model_by_tag(client):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    response = client.post("/v1/pyd/chat", json={"messages": messages})
    assert response.status_code == 200, response.json
    assert response.json == {
        "types": ["SystemMessage", "UserMessage", "AssistantMessage"],
        "contents": ["be brief", "hi", "hello"],
    }


def test_bad_tag_names_the_tag_and_the_expected_ones(client):
    response = client.post(
        "/v1/pyd/chat", json={"messages": [{"role": "bogus", "content": "x"}]}
    )
    error = one_error(response, ["body", "messages", 0])
    assert error["type"] == "union_tag_invalid"
    assert "'bogus'" in error["msg"]
    assert "'user', 'system', 'assistant'" in error["msg"]


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([{"content": "no role"}],
         [(["body", "messages", 0], "union_tag_not_found")]),
        ([{"role": "user"}],
         [(["body", "messages", 0], "missing")]),
        ([{"role": "bogus", "content": "x"}, {"role": "user", "content": "ok"},
          {"role": "user"}],
         [(["body", "messages", 0], "union_tag_invalid"),
          (["body", "messages", 2], "missing")]),
        ([{"role": "bogus", "content": "x"}, {"role": "worse", "content": "y"}],
         [(["body", "messages", 0], "union_tag_invalid"),
          (["body", "messages", 1], "union_tag_invalid")]),
        ("not a list", [(["body", "messages"], "list_type")]),
    ],
    ids=["no-tag", "missing-field", "bad-tag-and-missing-field", "two-bad-tags", "not-a-list"],
)
def test_every_problem_in_a_union_list_is_listed(client, messages, expected):
    errors = errors_of(client.post("/v1/pyd/chat", json={"messages": messages}))
    assert len(errors) == len(expected), errors
    for loc, error_type in expected:
        assert any(e["loc"][: len(loc)] == loc and e["type"] == error_type for e in errors), (
            loc, error_type, errors)


# -- validators, aliases, defaults -------------------------------------------


def test_field_validator_runs(client):
    ok = client.post("/v1/pyd/tag", json={"tag": {"name": "blue"}})
    assert ok.status_code == 200 and ok.json == {"type": "Tag", "name": "blue"}
    error = one_error(client.post("/v1/pyd/tag", json={"tag": {"name": "two words"}}),
                      ["body", "tag", "name"])
    assert error["type"] == "value_error"
    assert "a tag name has no spaces" in error["msg"]


def test_model_deep_inside_a_plain_type(client):
    groups = {"warm": [{"name": "red"}], "cold": [{"name": "blue"}, {"name": "teal"}]}
    ok = client.post("/v1/pyd/tag-groups", json={"groups": groups})
    assert ok.status_code == 200, ok.json
    assert ok.json == {"warm": ["Tag"], "cold": ["Tag", "Tag"]}
    bad = {"warm": [{"name": "dark red"}], "cold": [{"name": "blue"}, {}]}
    errors = errors_of(client.post("/v1/pyd/tag-groups", json={"groups": bad}))
    assert sorted((e["loc"], e["type"]) for e in errors) == [
        (["body", "groups", "cold", 1, "name"], "missing"),
        (["body", "groups", "warm", 0, "name"], "value_error"),
    ]


def test_alias_on_input_and_output_and_defaults_filled(client):
    response = client.post("/v1/pyd/aliased", json={"item": {"camelName": "x"}})
    assert response.status_code == 200, response.json
    assert response.json == {"camelName": "x", "count": 3}


def test_field_name_is_not_the_alias(client):
    response = client.post("/v1/pyd/aliased", json={"item": {"camel_name": "x"}})
    error = one_error(response, ["body", "item", "camelName"])
    assert error["type"] == "missing"


# -- results -----------------------------------------------------------------


def test_constrained_result(client, caplog):
    assert client.get("/v1/pyd/non-negative?value=2").json == 2
    caplog.set_level(logging.ERROR, logger="stackflask.request")
    response = client.get("/v1/pyd/non-negative?value=-1")
    assert response.status_code == 500
    assert response.json == {"detail": "Internal server error: An unexpected error occurred."}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("defaults", {"x": 1}), ("extra-keys", {"x": 1, "y": 2, "secret": "s"})],
)
def test_model_result_from_a_dict_is_sent_as_returned(client, kind, expected):
    # Checked against the model, then sent as the provider returned it: Llama
    # Stack's server registers its routes with response_model=None, so FastAPI
    # sends the provider's dict unchanged, and a client sees the same here.
    response = client.get(f"/v1/pyd/point?kind={kind}")
    assert response.status_code == 200, response.json
    assert response.json == expected


def test_model_result_that_does_not_validate_is_500(client, caplog):
    caplog.set_level(logging.ERROR, logger="stackflask.request")
    response = client.get("/v1/pyd/point?kind=invalid")
    assert response.status_code == 500
    assert response.json == {"detail": "Internal server error: An unexpected error occurred."}


# -- pydantic stays optional -------------------------------------------------

WITHOUT_PYDANTIC = """
import sys
from stackflask import create_app
app = create_app()
response = app.test_client().get("/v1/weather/locations")
assert response.status_code == 200, response.data
app.extensions["stackflask"].shutdown()
print(sorted(name for name in sys.modules if name.split(".")[0] == "pydantic"))
"""


def test_default_config_never_imports_pydantic():
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYDANTIC],
        cwd=REPO, env=server_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
