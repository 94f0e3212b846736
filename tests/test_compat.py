"""Packages written against Llama Stack: the modules stackflask answers, and an
installed Llama Stack's ``Api`` and factories.

Without a real ``llama_stack`` (the test venv has none), the compatibility
finder answers its documented modules; the first tests serve an API package
written that way. The later ones put a small stand-in ``llama_stack`` package,
with a distribution version, on ``sys.path``, where it wins over the finder as
a real install does; ``tests/test_llama_stack.py`` does the same with the real
Llama Stack 0.2.16 on Python 3.12.
"""

from __future__ import annotations

import enum
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stackflask import NeedsRequestProviderData, Principal, StartupError, compat, loop
from stackflask.context import get_provider_data

REPO = Path(__file__).resolve().parent.parent

#: An API package written as Llama Stack writes its own APIs.
NOTES_API = '''
from dataclasses import dataclass
from typing import Any, Protocol

from llama_stack.providers.datatypes import Api, InlineProviderSpec
from llama_stack.providers.utils.telemetry.trace_protocol import trace_protocol
from llama_stack.schema_utils import json_schema_type, register_schema, webmethod


@json_schema_type
@dataclass
class Note:
    text: str


@json_schema_type(schema={"type": "object", "description": "a tag"})
@dataclass
class Tag:
    name: str


Tags = register_schema(list[str], name="Tags")


def available_providers():
    return [
        InlineProviderSpec(
            api=Api.notes, provider_type="inline::mem", module="compat_notes_impl",
        ),
    ]


@trace_protocol
class Notes(Protocol):
    @webmethod(route="/notes/{note_id}", method="GET")
    async def get_note(self, note_id: str) -> Note: ...

    @webmethod(route="/notes/tags", method="POST")
    async def tag(self, tag: Tag, tags: Tags) -> dict[str, Any]: ...

    @webmethod(route="/notes/whoami", method="GET")
    async def whoami(self) -> dict[str, Any]: ...
'''

NOTES_IMPL = '''
from {headers} import get_authenticated_user

from compat_notes_api import Note


class Mem:
    async def get_note(self, note_id):
        return Note(text=f"note {{note_id}}")

    async def tag(self, tag, tags):
        return {{"tag": tag.name, "tags": tags}}

    async def whoami(self):
        user = get_authenticated_user()
        if user is None:
            return {{"user": None}}
        return {{"user": {{"principal": user.principal, "attributes": user.attributes}}}}


def get_provider_impl(config, deps):
    return Mem()
'''

TOKEN = "compat-token"


def notes_config(files: Any, headers: str, **server: Any) -> Path:
    files.module("compat_notes_api", NOTES_API)
    files.module("compat_notes_impl", NOTES_IMPL.format(headers=headers))
    files.api_spec("notes.yaml", {"module": "compat_notes_api", "name": "notes", "protocol": "Notes"})
    return files.run_config({
        "apis": ["notes"],
        "providers": {"notes": [{"provider_id": "mem", "provider_type": "inline::mem"}]},
        **({"server": server} if server else {}),
    })


def test_an_api_written_against_llama_stack_serves(stack_files, make_app):
    client = make_app(str(notes_config(stack_files, "llama_stack.distribution.request_headers"))).test_client()

    response = client.get("/v1/notes/n1")
    assert response.status_code == 200, response.json
    assert response.json == {"text": "note n1"}
    response = client.post("/v1/notes/tags", json={"tag": {"name": "red"}, "tags": ["a", "b"]})
    assert response.status_code == 200, response.json
    assert response.json == {"tag": "red", "tags": ["a", "b"]}
    problems = client.post("/v1/notes/tags", json={"tag": {"name": "red"}, "tags": "ab"})
    assert problems.status_code == 400, "register_schema must not hide the type"


def test_the_decorators_return_what_they_are_given():
    compat.install()
    from llama_stack.providers.utils.telemetry.trace_protocol import trace_protocol
    from llama_stack.schema_utils import json_schema_type, register_schema

    class Model:
        pass

    before = dict(vars(Model))
    alias = dict[str, list[int]]
    assert json_schema_type(Model) is Model
    assert json_schema_type(schema={"type": "object"})(Model) is Model
    assert json_schema_type(schema={"type": "object"}, examples=[{}])(Model) is Model
    assert register_schema(alias, name="Alias") is alias
    assert register_schema(alias) is alias
    assert trace_protocol(Model) is Model
    assert dict(vars(Model)) == before
    with pytest.raises(TypeError):
        json_schema_type(Model, schmea={})


@pytest.mark.parametrize(
    "headers",
    ["llama_stack.distribution.request_headers", "llama_stack.core.request_headers"],
)
@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        (None, None),
        (
            {"tokens": [{"token": TOKEN, "principal": "alice", "scopes": ["notes.write", "notes.read"]}]},
            {"principal": "alice", "attributes": {"scopes": ["notes.read", "notes.write"]}},
        ),
    ],
    ids=["no-auth", "auth"],
)
def test_get_authenticated_user_is_the_requests_principal(stack_files, make_app, headers, auth, expected):
    server = {"auth": auth} if auth else {}
    client = make_app(str(notes_config(stack_files, headers, **server))).test_client()
    response = client.get("/v1/notes/whoami", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.json
    assert response.json == {"user": expected}


@dataclass
class Creds:
    api_key: str


class _Spec:
    provider_data_validator = Creds


class _NeedsData(NeedsRequestProviderData):
    __provider_spec__ = _Spec()

    async def read(self) -> Any:
        return self.get_request_provider_data(), compat.get_authenticated_user()


@pytest.mark.parametrize(
    "headers",
    [
        {"X-LlamaStack-Provider-Data": '{"api_key": "k1"}'},
        {"x-llamastack-provider-data": '{"api_key": "k1"}'},
    ],
    ids=["as-sent", "lower-case"],
)
def test_request_provider_data_context_sets_data_and_user_for_the_block(headers):
    compat.install()
    from llama_stack.distribution.request_headers import (
        get_authenticated_user,
        request_provider_data_context,
    )

    carol = Principal("carol", frozenset({"files.read"}))
    assert get_provider_data() is None
    with request_provider_data_context(headers, carol):
        assert get_provider_data() == {"api_key": "k1"}
        user = get_authenticated_user()
        assert (user.principal, user.attributes) == ("carol", {"scopes": ["files.read"]})
        assert isinstance(user, Principal) and user.name == "carol"
        # A provider called from here, on the event loop, sees the same.
        data, seen = loop.run(_NeedsData().read())
        assert data == Creds("k1")
        assert seen.principal == "carol"
        with request_provider_data_context({}):
            assert get_provider_data() is None
            assert get_authenticated_user() is None
        assert get_authenticated_user().principal == "carol"
    assert get_provider_data() is None
    assert get_authenticated_user() is None


def test_request_provider_data_context_refuses_other_users():
    with pytest.raises(TypeError, match=r"auth_attributes must be a stackflask\.Principal or None, got dict"):
        with compat.request_provider_data_context({}, {"roles": ["admin"]}):  # type: ignore[arg-type]
            pass


def _answered_in_docs() -> str:
    text = (REPO / "docs" / "writing-an-api.md").read_text()
    match = re.search(r"^## Modules for packages written against Llama Stack\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "docs/writing-an-api.md has no section 'Modules for packages written against Llama Stack'"
    return match.group(1)


@pytest.mark.parametrize(
    ("module", "name"),
    [(module, name) for module, names in compat.ANSWERED.items() for name in names],
)
def test_every_answered_name_imports_and_is_documented(module, name):
    compat.install()
    imported = __import__(module, fromlist=[name])
    assert getattr(imported, name) is compat.ANSWERED[module][name]
    section = _answered_in_docs()
    row = next((line for line in section.splitlines() if f"`{module}`" in line), None)
    assert row is not None, f"the docs do not list module {module}"
    assert f"`{name}`" in row, f"the docs do not list {name} for {module}"


# -- an installed Llama Stack ---------------------------------------------------

#: ``llama_stack.providers.datatypes`` of a stand-in Llama Stack whose ``Api`` is
#: 0.2.16's: an Enum whose metaclass's ``add`` puts members in the member map only.
DYNAMIC_API = '''
from enum import Enum, EnumMeta


class DynamicApiMeta(EnumMeta):
    def add(cls, value):
        member_name = value.lower().replace("-", "_")
        if member_name in cls._member_map_:
            return cls._member_map_[member_name]
        member = object.__new__(cls)
        member._name_ = member_name
        member._value_ = value
        cls._member_map_[member_name] = member
        cls._member_names_.append(member_name)
        cls._value2member_map_[value] = member
        return member


class Api(Enum, metaclass=DynamicApiMeta):
    providers = "providers"
    inference = "inference"
'''

#: The same module of a Llama Stack too old for external APIs.
STATIC_API = '''
from enum import Enum


class Api(Enum):
    providers = "providers"
    inference = "inference"
'''

#: An API package using the installed Llama Stack's ``Api``.
LS_API = '''
from typing import Any, Protocol

from llama_stack.providers.datatypes import Api

from stackflask import InlineProviderSpec, RemoteProviderSpec, AdapterSpec, webmethod

ACCESSED = Api.{attr}


def available_providers():
    return [
        InlineProviderSpec(api=Api.{attr}, provider_type="inline::guarded", module="ls_guarded_impl"),
        RemoteProviderSpec(api=Api("{name}"), adapter=AdapterSpec(adapter_type="far", module="ls_guarded_impl")),
    ]


class Guarded(Protocol):
    @webmethod(route="/guarded/policy", method="GET")
    async def policy(self) -> dict[str, Any]: ...
'''

LS_IMPL = '''
class Guarded:
    def __init__(self, policy):
        self.seen = policy

    async def policy(self):
        return {"policy": self.seen}


async def get_provider_impl(config, deps, policy):
    return Guarded(policy)


async def get_adapter_impl(config, deps, policy="not passed"):
    return Guarded(policy)
'''


@pytest.fixture
def installed_llama_stack(stack_files, monkeypatch):
    """``install(version, datatypes)``: a stand-in ``llama_stack`` distribution on
    ``sys.path``, found before the compatibility finder as a real one is."""
    for name in [n for n in sys.modules if n == "llama_stack" or n.startswith("llama_stack.")]:
        monkeypatch.delitem(sys.modules, name)

    def install(version: str, datatypes: str) -> None:
        stack_files.module("llama_stack.providers.datatypes", datatypes)
        info = stack_files.pkgs / f"llama_stack-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: llama-stack\nVersion: {version}\n")
        assert compat.llama_stack_installed()

    return install


def guarded_config(files: Any, provider_type: str = "inline::guarded", attr: str = "guarded", **server: Any) -> Path:
    files.module("ls_guarded_api", LS_API.format(attr=attr, name="guarded"))
    files.module("ls_guarded_impl", LS_IMPL)
    files.api_spec("guarded.yaml", {"module": "ls_guarded_api", "name": "guarded", "protocol": "Guarded"})
    return files.run_config({
        "apis": ["guarded"],
        "providers": {"guarded": [{"provider_id": "g", "provider_type": provider_type}]},
        **({"server": server} if server else {}),
    })


def test_external_apis_are_members_of_the_installed_api(installed_llama_stack, stack_files, make_app):
    installed_llama_stack("0.2.16", DYNAMIC_API)
    client = make_app(str(guarded_config(stack_files))).test_client()

    import ls_guarded_api
    from llama_stack.providers.datatypes import Api

    member = Api.guarded
    assert ls_guarded_api.ACCESSED is member
    assert isinstance(member, enum.Enum) and member.value == "guarded"
    # A class attribute, which is what Python 3.12's Enum needs for Api.guarded.
    assert inspect.getattr_static(Api, "guarded") is member
    assert Api("guarded") is member and Api["guarded"] is member
    assert Api.inference.value == "inference"
    assert client.get("/v1/guarded/policy").json == {"policy": []}


@pytest.mark.parametrize(
    ("provider_type", "auth", "expected"),
    [
        ("inline::guarded", None, []),
        ("remote::far", None, "not passed"),
        (
            "inline::guarded",
            {"tokens": [{"token": TOKEN, "principal": "alice"}],
             "access_policy": [{"permit": {"actions": ["read"]}, "when": "user in owners roles"}]},
            # stackflask's own rules (stackflask.access_policy), as JSON
            [{"permit": {"actions": ["read"], "principal": None, "resource": None}, "forbid": None,
              "when": [{"form": "user in owners <attribute>", "attribute": "roles", "value": None}],
              "unless": [], "description": None}],
        ),
    ],
    ids=["inline-default", "remote-not-given", "inline-configured"],
)
def test_inline_factories_that_take_policy_get_the_access_policy(
    stack_files, make_app, provider_type, auth, expected
):
    server = {"auth": auth} if auth else {}
    client = make_app(str(guarded_config(stack_files, provider_type, **server))).test_client()
    response = client.get("/v1/guarded/policy", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.json
    assert response.json == {"policy": expected}


def test_an_installed_llama_stack_without_api_add_is_a_startup_error(installed_llama_stack, stack_files):
    installed_llama_stack("0.2.3", STATIC_API)
    from stackflask import create_app

    with pytest.raises(StartupError) as info:
        create_app(str(guarded_config(stack_files)))
    first = info.value.problems[0]
    assert first.startswith("llama-stack 0.2.3 (")
    assert first.endswith(
        "): its Api cannot register external APIs (it has no Api.add): upgrade it "
        "(pip install 'llama-stack>=0.2.16'), or uninstall it (pip uninstall llama-stack) "
        "and stackflask answers its imports"
    )


def test_an_unknown_api_name_says_what_the_installed_api_has(installed_llama_stack, stack_files):
    installed_llama_stack("0.2.16", DYNAMIC_API)
    from stackflask import create_app

    with pytest.raises(StartupError) as info:
        create_app(str(guarded_config(stack_files, attr="gaurded")))
    [line] = info.value.problems
    # Python 3.12 words the AttributeError itself differently; the reason is stackflask's.
    assert line.startswith(
        f"{stack_files.apis_dir / 'guarded.yaml'}: module: importing module 'ls_guarded_api' "
        "failed: AttributeError: "
    )
    assert line.endswith(
        "gaurded (Llama Stack's Api has no member 'gaurded'; it has: providers, inference, "
        "guarded. Api.<name> exists for each API that an apis.d spec names)"
    )


#: ``llama_stack.distribution.access_control.datatypes``, as far as rules go.
ACCESS_RULES = '''
from pydantic import BaseModel


class Scope(BaseModel):
    actions: list[str]
    resource: str | None = None


class AccessRule(BaseModel):
    permit: Scope | None = None
    forbid: Scope | None = None
    when: str | list[str] | None = None
'''

POLICY_AT = ["server", "auth", "access_policy"]


def test_the_access_policy_becomes_the_installed_llama_stacks_rules(installed_llama_stack, stack_files):
    installed_llama_stack("0.2.16", DYNAMIC_API)
    stack_files.module("llama_stack.distribution.access_control.datatypes", ACCESS_RULES)
    from llama_stack.distribution.access_control.datatypes import AccessRule

    [rule] = compat.access_policy([{"permit": {"actions": ["read"]}, "when": "user in owners roles"}], POLICY_AT)
    assert isinstance(rule, AccessRule)
    assert (rule.permit.actions, rule.when) == (["read"], "user in owners roles")
    assert compat.access_policy([], POLICY_AT) == []
    with pytest.raises(StartupError) as info:
        compat.access_policy([{"permit": {"actions": "read"}}, {"forbid": {}}], POLICY_AT)
    assert info.value.problems == [
        "server.auth.access_policy[0].permit.actions: Input should be a valid list",
        "server.auth.access_policy[1].forbid.actions: Field required",
    ]


def test_without_llama_stack_the_access_policy_is_passed_as_written():
    rules = [{"permit": {"actions": ["read"]}}]
    assert compat.access_policy(rules, POLICY_AT) == rules
