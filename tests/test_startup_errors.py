"""Startup errors: every broken setup stops ``create_app`` with one line per problem.

Each case writes real files with the ``stack_files`` fixture (API and provider
packages, ``apis.d``, ``providers.d``, ``run.yaml``) and asserts on the text of
:attr:`StartupError.problems`: the file, the field or provider, the key phrase.
The positive tests at the end pin down the behaviour those errors guard.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stackflask import Api, StartupError, create_app, webmethod

# -- helpers: a standard API package, its provider, its run config -----------

#: An API package's ``__init__``: ``available_providers()`` and the Protocol.
API = '''\
from typing import Protocol

from stackflask import AdapterSpec, Api, InlineProviderSpec, RemoteProviderSpec, webmethod


def available_providers():
    return [{providers}]


class Proto(Protocol):
{methods}

{extra}
'''

#: The standard Protocol method, served at ``GET /v1/<name>/items``.
ITEMS = '''\
    @webmethod(route="/{name}/items", method="GET")
    async def list_items(self) -> dict[str, list[str]]: ...
'''

#: The standard provider spec: ``inline::basic`` in the package's ``impl`` module.
INLINE = (
    'InlineProviderSpec(api=Api.{name}, provider_type="inline::basic", '
    'module="{pkg}.impl", config_class="{pkg}.impl.Config"{more})'
)

#: The standard provider module: a dataclass config and an implementation
#: that keeps its config and deps.
IMPL = '''\
from dataclasses import dataclass

MARK = "impl"


@dataclass
class Config:
    greeting: str = "hi"


class Impl:
    def __init__(self, config, deps):
        self.config = config
        self.deps = deps

    async def list_items(self):
        return {"items": [MARK]}


async def get_provider_impl(config, deps):
    return Impl(config, deps)
'''


def write_api(
    files: Any,
    tag: str,
    name: str = "weather",
    *,
    methods: str | None = None,
    providers: str | None = None,
    provider_extra: str = "",
    impl: str = IMPL,
    protocol: str = "Proto",
    extra: str = "",
    spec: dict[str, Any] | None = None,
    filename: str | None = None,
) -> str:
    """Write package ``<name>_api_<tag>`` (Protocol ``Proto``, provider module
    ``.impl`` of type ``inline::basic``) and ``apis.d/<name>.yaml``; return the
    package name."""
    pkg = f"{name}_api_{tag}"
    if providers is None:
        providers = INLINE.format(name=name, pkg=pkg, more=provider_extra)
    files.module(f"{pkg}.impl", impl)
    files.module(
        pkg,
        API.format(
            providers=providers,
            methods=ITEMS.format(name=name) if methods is None else methods,
            extra=extra,
        ),
    )
    files.api_spec(
        filename or f"{name}.yaml",
        {"module": pkg, "name": name, "protocol": protocol, **(spec or {})},
    )
    return pkg


def entry(pid: str = "basic", provider_type: str = "inline::basic", **more: Any) -> dict[str, Any]:
    """One run-config provider entry."""
    return {"provider_id": pid, "provider_type": provider_type, "config": {}, **more}


def run_config(files: Any, *names: str, **data: Any) -> Path:
    """``run.yaml`` serving ``names`` (default: weather), each with ``inline::basic``."""
    names = names or ("weather",)
    data.setdefault("apis", list(names))
    data.setdefault("providers", {name: [entry()] for name in names})
    return files.run_config(data)


def standard(files: Any, tag: str, **api: Any) -> Path:
    """The weather API with its basic provider; ``api`` goes to :func:`write_api`."""
    write_api(files, tag, **api)
    return run_config(files)


def impl_with(methods: str, factory: str = "get_provider_impl") -> str:
    """A provider module whose ``Impl`` class has exactly ``methods``."""
    return f'''\
class Impl:
    def __init__(self, config, deps):
        self.config = config
{methods}

def {factory}(config, deps):
    return Impl(config, deps)
'''


def problems_of(path: Path) -> list[str]:
    with pytest.raises(StartupError) as info:
        create_app(path)
    assert info.value.problems, "a StartupError must list its problems"
    assert str(info.value) == "\n".join(info.value.problems)
    assert not [line for line in info.value.problems if "\n" in line], "one line per problem"
    return info.value.problems


def assert_line(problems: list[str], *fragments: str) -> None:
    """One problem line contains every fragment."""
    assert any(all(f in line for f in fragments) for line in problems), (
        f"no problem line contains all of {fragments!r}; problems:\n" + "\n".join(problems)
    )


@pytest.fixture
def tag() -> str:
    """A suffix that makes this test's module names unique."""
    return uuid.uuid4().hex[:10]


# -- run config ---------------------------------------------------------------


def unset_env(files: Any, tag: str) -> Path:
    write_api(files, tag)
    return run_config(
        files,
        providers={"weather": [entry(config={"greeting": f"${{env.SF_UNSET_{tag}}}"})]},
    )


def apis_dir_is_a_file(files: Any, tag: str) -> Path:
    write_api(files, tag)
    (files.root / "notes.txt").write_text("")
    return run_config(files, external_apis_dir="notes.txt")


def bad_port(port: Any) -> Callable[[Any, str], Path]:
    return lambda files, tag: standard(files, tag) and run_config(files, server={"port": port})


RUN_CONFIG_CASES = [
    pytest.param(
        lambda files, tag: files.run_config("apis: [weather\nproviders: {}\n"),
        ["run.yaml: invalid YAML: line 2, column 10: expected ',' or ']'"],
        id="run-config-invalid-yaml",
    ),
    pytest.param(
        lambda files, tag: files.run_config("- weather\n- tools\n"),
        ["run.yaml: expected a mapping at the top level, got list"],
        id="top-level-list",
    ),
    pytest.param(
        lambda files, tag: files.run_config(""),
        ["run.yaml: the file is empty"],
        id="empty-file",
    ),
    pytest.param(
        unset_env,
        ["run.yaml", "providers.weather[0].config.greeting",
         "environment variable 'SF_UNSET_{tag}' is not set"],
        id="unset-env-variable",
    ),
    pytest.param(
        lambda files, tag: standard(files, tag) and run_config(
            files, providers={"weather": [{"provider_type": "inline::basic"}]}
        ),
        ["run.yaml: providers.weather[0].provider_id: Missing data for required field."],
        id="entry-missing-provider_id",
    ),
    pytest.param(
        lambda files, tag: standard(files, tag) and run_config(
            files, providers={"weather": [entry(provder_type="inline::basic")]}
        ),
        ["run.yaml: providers.weather[0].provder_type: Unknown field."],
        id="entry-unknown-key",
    ),
    pytest.param(
        bad_port(99999),
        ["run.yaml: server.port: Must be greater than or equal to 1 and less than or equal to 65535"],
        id="port-out-of-range",
    ),
    pytest.param(
        bad_port("eighty"),
        ["run.yaml: server.port: Not a valid integer."],
        id="port-not-a-number",
    ),
    pytest.param(
        lambda files, tag: standard(files, tag) and run_config(files, external_apis_dir="nowhere"),
        ["run.yaml: external_apis_dir: ", "nowhere' is not a directory"],
        id="external_apis_dir-missing",
    ),
    pytest.param(
        apis_dir_is_a_file,
        ["run.yaml: external_apis_dir: ", "notes.txt' is not a directory"],
        id="external_apis_dir-is-a-file",
    ),
    pytest.param(
        lambda files, tag: standard(files, tag) and run_config(
            files, external_providers_dir="nowhere"
        ),
        ["run.yaml: external_providers_dir: ", "nowhere' is not a directory"],
        id="external_providers_dir-missing",
    ),
]


# -- apis.d -------------------------------------------------------------------


def two_specs_one_name(files: Any, tag: str) -> Path:
    write_api(files, tag, filename="a_weather.yaml")
    files.api_spec("b_weather.yml", {"module": f"weather_api_{tag}", "name": "weather", "protocol": "Proto"})
    return run_config(files)


def spec_file(data: dict[str, Any] | str, filename: str = "weather.yaml") -> Callable[[Any, str], Path]:
    def setup(files: Any, tag: str) -> Path:
        files.api_spec(filename, data)
        return run_config(files)

    return setup


RAISING_MODULE = '''\
raise RuntimeError("boom at import")
'''

API_SPEC_CASES = [
    pytest.param(
        spec_file({"module": "m", "name": "weather"}),
        ["apis.d/weather.yaml: protocol: Missing data for required field."],
        id="missing-protocol",
    ),
    pytest.param(
        spec_file({"name": "weather", "protocol": "Proto"}),
        ["apis.d/weather.yaml: module: Missing data for required field."],
        id="missing-module",
    ),
    pytest.param(
        spec_file({"module": "m", "name": "weather", "protocl": "Proto"}),
        ["apis.d/weather.yaml: protocl: Unknown field."],
        id="unknown-key-protocl",
    ),
    pytest.param(
        spec_file("module: m\nname: [weather\n"),
        ["apis.d/weather.yaml: invalid YAML: line 3, column 1:"],
        id="api-spec-invalid-yaml",
    ),
    pytest.param(
        spec_file("- module: m\n"),
        ["apis.d/weather.yaml: expected a mapping"],
        id="not-a-mapping",
    ),
    pytest.param(
        two_specs_one_name,
        ["apis.d/b_weather.yml: name: API 'weather' is already defined by", "apis.d/a_weather.yaml",
         "remove one of the two files"],
        id="two-specs-one-name",
    ),
    pytest.param(
        spec_file({"module": "m", "name": "my.api", "protocol": "P"}, "my.yaml"),
        ["apis.d/my.yaml: name: 'my.api' is not a valid API name"],
        id="name-with-dot",
    ),
    pytest.param(
        spec_file({"module": "m", "name": "1abc", "protocol": "P"}, "one.yaml"),
        ["apis.d/one.yaml: name: '1abc' is not a valid API name",
         "not starting with a digit"],
        id="name-starting-with-digit",
    ),
    pytest.param(
        spec_file({"module": "m", "name": "class", "protocol": "P"}, "kw.yaml"),
        ["apis.d/kw.yaml: name: 'class' is reserved and cannot name an API"],
        id="name-is-keyword",
    ),
    pytest.param(
        spec_file({"module": "m", "name": "value", "protocol": "P"}, "value.yaml"),
        ["apis.d/value.yaml: name: 'value' is reserved and cannot name an API"],
        id="name-shadows-api-attribute",
    ),
    pytest.param(
        lambda files, tag: files.api_spec(
            "weather.yaml", {"module": f"nowhere_{tag}", "name": "weather", "protocol": "P"}
        ) and run_config(files),
        ["apis.d/weather.yaml: module: module 'nowhere_{tag}' is not installed or not on sys.path"],
        id="module-not-found",
    ),
    pytest.param(
        lambda files, tag: standard(files, tag, extra=f"import missing_dependency_{tag}"),
        ["apis.d/weather.yaml: module: importing module 'weather_api_{tag}' failed: "
         "ModuleNotFoundError: No module named 'missing_dependency_{tag}'"],
        id="module-imports-missing-module",
    ),
    pytest.param(
        lambda files, tag: files.module(f"raising_{tag}", RAISING_MODULE) and files.api_spec(
            "weather.yaml", {"module": f"raising_{tag}", "name": "weather", "protocol": "P"}
        ) and run_config(files),
        ["apis.d/weather.yaml: module: importing module 'raising_{tag}' failed: "
         "RuntimeError: boom at import"],
        id="module-raises-at-import",
    ),
    pytest.param(
        lambda files, tag: standard(files, tag, protocol="WeatherProvidr", extra="class Helper:\n    pass"),
        ["apis.d/weather.yaml: protocol: 'WeatherProvidr' is not defined in module "
         "'weather_api_{tag}' (classes defined: Helper, Proto)"],
        id="protocol-not-defined",
    ),
    pytest.param(
        lambda files, tag: standard(files, tag, protocol="make", extra="def make():\n    pass"),
        ["apis.d/weather.yaml: protocol: 'make' is not a class in module 'weather_api_{tag}'",
         "classes defined: Proto"],
        id="protocol-is-a-function",
    ),
    pytest.param(
        lambda files, tag: standard(files, tag, methods="    async def list_items(self): ...\n"),
        ["apis.d/weather.yaml: protocol: 'Proto' has no methods decorated with @webmethod"],
        id="protocol-without-webmethods",
    ),
    pytest.param(
        lambda files, tag: standard(
            files, tag,
            methods='    @webmethod(route="/weather/x", method="FETCH")\n    async def x(self): ...\n',
        ),
        ["apis.d/weather.yaml: module: importing module 'weather_api_{tag}' failed: "
         "ValueError: @webmethod at __init__.py:11: method 'FETCH' is not one of "
         "GET, POST, PUT, PATCH, DELETE"],
        id="webmethod-unknown-http-method",
    ),
    pytest.param(
        lambda files, tag: standard(
            files, tag,
            methods=(
                "    async def fetch(self): ...\n"
                "    fetch.__webmethod__ = type('Rec', (), {'route': '/weather/f', 'method': 'FETCH'})()\n"
            ),
        ),
        ["apis.d/weather.yaml: protocol: Proto.fetch: method 'FETCH' is not one of GET"],
        id="foreign-record-unknown-http-method",
    ),
    pytest.param(
        lambda files, tag: standard(
            files, tag,
            methods='    @webmethod(route="/weather/items/{item_id", method="GET")\n'
                    '    async def get(self, item_id: str): ...\n',
        ),
        ["apis.d/weather.yaml: module: importing module 'weather_api_{tag}' failed: ValueError: "
         "@webmethod at __init__.py:11: route '/weather/items/{{item_id' has a malformed placeholder"],
        id="webmethod-malformed-route",
    ),
]


# -- APIs and provider entries -------------------------------------------------


API_CASES = [
    pytest.param(
        lambda files, tag: write_api(files, tag) and files.run_config(
            {"apis": ["weather"], "providers": {}}
        ),
        ["run.yaml: providers.weather: API 'weather' has no provider; add one with provider_id "
         "and provider_type (available: inline::basic)"],
        id="spec-first-config-no-provider",
    ),
    pytest.param(
        lambda files, tag: standard(files, tag) and run_config(files, "weather", "ghost"),
        ["run.yaml: apis: API 'ghost' is not defined (add its spec to external_apis_dir;",
         "known APIs: weather"],
        id="api-not-defined",
    ),
    pytest.param(
        lambda files, tag: standard(files, tag) and run_config(
            files, providers={"weather": [entry("one"), entry("two")]}
        ),
        ["run.yaml: providers.weather: API 'weather' has 2 providers ('one', 'two');",
         "remove all but one"],
        id="two-providers-for-one-api",
    ),
    pytest.param(
        lambda files, tag: standard(files, tag) and run_config(
            files, providers={"weather": [entry(provider_type="remote::nope")]}
        ),
        ["run.yaml: providers.weather[0].provider_type: 'remote::nope' is not available; "
         "known: inline::basic"],
        id="unknown-provider-type",
    ),
    pytest.param(
        lambda files, tag: standard(files, tag) and run_config(
            files, providers={"weather": [entry(module=f"nowhere_{tag}")]}
        ),
        ["run.yaml: providers.weather[0].module: module 'nowhere_{tag}' is not installed"],
        id="entry-module-not-found",
    ),
    pytest.param(
        lambda files, tag: standard(
            files, tag, providers="", extra="def available_providers():\n    raise KeyError('region')"
        ),
        ["apis.d/weather.yaml: module: weather_api_{tag}.available_providers() raised KeyError: 'region'"],
        id="available_providers-raises",
    ),
    pytest.param(
        lambda files, tag: standard(
            files, tag, providers='InlineProviderSpec(api=Api.weather, provider_type="inline::basic")'
        ),
        ["apis.d/weather.yaml: module: weather_api_{tag}.available_providers(): "
         "provider 'inline::basic' has no module"],
        id="provider-spec-without-module",
    ),
    pytest.param(
        lambda files, tag: standard(files, tag) and files.module(f"nospec_{tag}", "X = 1\n")
        and run_config(files, providers={"weather": [entry(module=f"nospec_{tag}")]}),
        ["run.yaml: providers.weather[0].module: module 'nospec_{tag}' defines no get_provider_spec()"],
        id="entry-module-without-get_provider_spec",
    ),
]


# -- providers.d --------------------------------------------------------------


def provider_file(kind: str, data: dict[str, Any]) -> Callable[[Any, str], Path]:
    def setup(files: Any, tag: str) -> Path:
        write_api(files, tag)
        files.provider_file(kind, "weather", "extra", data)
        return run_config(files)

    return setup


PROVIDERS_DIR_CASES = [
    pytest.param(
        provider_file("remote", {"adapter": {"adapter_type": "extra", "config_class": "x.C"}}),
        ["providers.d/remote/weather/extra.yaml: adapter.module: Missing data for required field."],
        id="remote-missing-adapter-module",
    ),
    pytest.param(
        provider_file("remote", {"api_dependencies": []}),
        ["providers.d/remote/weather/extra.yaml: adapter: Missing data for required field."],
        id="remote-missing-adapter",
    ),
    pytest.param(
        provider_file("inline", {"module": "x", "modle": "x"}),
        ["providers.d/inline/weather/extra.yaml: modle: Unknown field."],
        id="inline-unknown-key",
    ),
    pytest.param(
        provider_file("remote", {"adapter": {"module": "x", "config_clas": "x.C"}}),
        ["providers.d/remote/weather/extra.yaml: adapter.config_clas: Unknown field."],
        id="remote-adapter-unknown-key",
    ),
    pytest.param(
        provider_file("inline", {"config_class": "x.C"}),
        ["providers.d/inline/weather/extra.yaml: module: Missing data for required field."],
        id="inline-missing-module",
    ),
]


# -- provider config classes ----------------------------------------------------


def config_case(config_source: str, config: dict[str, Any]) -> Callable[[Any, str], Path]:
    """A provider module with ``config_source`` as its ``Config`` class."""
    impl = config_source + "\n\n" + impl_with(
        "    async def list_items(self):\n        return {}\n", "get_provider_impl"
    )

    def setup(files: Any, tag: str) -> Path:
        write_api(files, tag, impl=impl)
        return run_config(files, providers={"weather": [entry("main", config=config)]})

    return setup


PYDANTIC_CONFIG = '''\
from pydantic import BaseModel

class Config(BaseModel):
    url: str
    timeout: int = 5
'''

MARSHMALLOW_CONFIG = '''\
from marshmallow import Schema, fields

class Config(Schema):
    url = fields.String(required=True)
    timeout = fields.Integer()
'''

DATACLASS_CONFIG = '''\
from dataclasses import dataclass

@dataclass
class Config:
    url: str
    timeout: int = 5
'''

PLAIN_CONFIG = '''\
class Config:
    def __init__(self, *, url, timeout=5):
        self.url = url
        self.timeout = timeout
'''

CONFIG_CASES = [
    pytest.param(
        config_case(PYDANTIC_CONFIG, {"url": "http://x", "timeout": "soon"}),
        ["run.yaml: providers.weather[0] (main).config.timeout: Input should be a valid integer"],
        id="pydantic-wrong-type",
    ),
    pytest.param(
        config_case(PYDANTIC_CONFIG, {}),
        ["run.yaml: providers.weather[0] (main).config.url: Field required"],
        id="pydantic-missing-field",
    ),
    pytest.param(
        config_case(MARSHMALLOW_CONFIG, {"url": "http://x", "colour": "red"}),
        ["run.yaml: providers.weather[0] (main).config.colour: Unknown field."],
        id="marshmallow-unknown-field",
    ),
    pytest.param(
        config_case(MARSHMALLOW_CONFIG, {"timeout": 3}),
        ["run.yaml: providers.weather[0] (main).config.url: Missing data for required field."],
        id="marshmallow-missing-field",
    ),
    pytest.param(
        config_case(DATACLASS_CONFIG, {"url": "http://x", "colour": "red"}),
        ["run.yaml: providers.weather[0] (main).config.colour: Unknown field."],
        id="dataclass-unknown-field",
    ),
    pytest.param(
        config_case(DATACLASS_CONFIG, {"timeout": 3}),
        ["run.yaml: providers.weather[0] (main).config.url: Missing data for required field."],
        id="dataclass-missing-field",
    ),
    pytest.param(
        config_case(PLAIN_CONFIG, {"url": "http://x", "colour": "red"}),
        ["run.yaml: providers.weather[0] (main).config", "unexpected keyword argument 'colour'"],
        id="plain-class-unknown-field",
    ),
    pytest.param(
        config_case(PLAIN_CONFIG, {}),
        ["run.yaml: providers.weather[0] (main).config", "missing 1 required keyword-only argument: 'url'"],
        id="plain-class-missing-field",
    ),
    pytest.param(
        lambda files, tag: standard(
            files, tag,
            providers=(
                f'InlineProviderSpec(api=Api.weather, provider_type="inline::basic", '
                f'module="weather_api_{tag}.impl", config_class="weather_api_{tag}.impl.Nope")'
            ),
        ),
        ["run.yaml: providers.weather[0]: config_class 'weather_api_{tag}.impl.Nope' of provider "
         "'inline::basic'", "'Nope' is not defined in module 'weather_api_{tag}.impl'"],
        id="config-class-not-defined",
    ),
]


# -- provider modules and implementations ----------------------------------------


REMOTE = (
    'RemoteProviderSpec(api=Api.weather, adapter=AdapterSpec(adapter_type="far", '
    'module="weather_api_{tag}.impl"))'
)

IMPLEMENTATION_CASES = [
    pytest.param(
        lambda files, tag: standard(files, tag, impl="class Config:\n    pass\n"),
        ["run.yaml: providers.weather[0]: provider module 'weather_api_{tag}.impl' defines no "
         "get_provider_impl(config, deps)"],
        id="no-get_provider_impl",
    ),
    pytest.param(
        lambda files, tag: write_api(
            files, tag, providers=REMOTE.format(tag=tag),
            impl=impl_with("    async def list_items(self):\n        return {}\n", "get_provider_impl"),
        ) and run_config(files, providers={"weather": [entry("far", "remote::far")]}),
        ["run.yaml: providers.weather[0]: provider module 'weather_api_{tag}.impl' defines no "
         "get_adapter_impl(config, deps)"],
        id="remote-without-get_adapter_impl",
    ),
    pytest.param(
        lambda files, tag: standard(
            files, tag,
            impl="class Config:\n    pass\n\nasync def get_provider_impl(config, deps):\n"
                 "    raise ConnectionError('cannot reach the weather service')\n",
        ),
        ["run.yaml: providers.weather[0]: provider 'basic' (inline::basic) failed to start: "
         "ConnectionError: cannot reach the weather service"],
        id="get_provider_impl-raises",
    ),
    pytest.param(
        lambda files, tag: standard(
            files, tag,
            impl="class Config:\n    pass\n\ndef get_provider_impl(config, deps):\n    return None\n",
        ),
        ["run.yaml: providers.weather[0]: weather_api_{tag}.impl.get_provider_impl() returned None"],
        id="get_provider_impl-returns-none",
    ),
    pytest.param(
        lambda files, tag: standard(
            files, tag,
            methods=ITEMS.format(name="weather")
            + '    @webmethod(route="/weather/items/{item_id}", method="GET")\n'
              "    async def get_item(self, item_id: str) -> dict: ...\n"
              '    @webmethod(route="/weather/items", method="POST")\n'
              "    async def add_item(self, name: str) -> dict: ...\n",
            impl="class Config:\n    pass\n\n"
            + impl_with("    async def add_item(self, name):\n        return {}\n"),
        ),
        ["run.yaml: providers.weather[0]: provider 'basic' (inline::basic) does not implement "
         "list_items, get_item of Proto (class Impl)"],
        id="missing-webmethods",
    ),
    pytest.param(
        lambda files, tag: standard(
            files, tag,
            methods=ITEMS.format(name="weather")
            + '    @webmethod(route="/weather/items", method="POST")\n'
              "    async def add_item(self, name: str) -> dict: ...\n",
            impl=f"from weather_api_{tag} import Proto\n\nclass Config:\n    pass\n\n"
            "class Impl(Proto):\n    async def add_item(self, name):\n        return {{}}\n\n"
            "def get_provider_impl(config, deps):\n    return Impl()\n",
        ),
        ["run.yaml: providers.weather[0]: provider 'basic' (inline::basic) does not implement "
         "list_items of Proto (class Impl)"],
        id="impl-inherits-protocol-stub",
    ),
    pytest.param(
        lambda files, tag: standard(
            files, tag,
            impl="class Config:\n    pass\n\n" + impl_with(
                "        self.list_items = ['a']\n\n"
                "    async def list_items(self):\n        return {'items': []}\n"
            ),
        ),
        ["run.yaml: providers.weather[0]: provider 'basic' (inline::basic): instance attribute "
         "'list_items' (list) hides the webmethod Proto.list_items (class Impl); "
         "rename the attribute"],
        id="instance-attribute-hides-webmethod",
    ),
]


# -- dependencies -----------------------------------------------------------------


def dependency_chain(files: Any, tag: str, via_api_spec: bool = False) -> Path:
    """alpha -> beta -> gamma, where gamma is defined but not served."""
    for name, dep in (("alpha", "beta"), ("beta", "gamma"), ("gamma", None)):
        deps = [dep] if dep else []
        if via_api_spec:
            write_api(files, tag, name, spec={"api_dependencies": deps})
        else:
            write_api(files, tag, name, provider_extra=f", api_dependencies={deps!r}")
    return run_config(files, "alpha", "beta")


def dependency_cycle(files: Any, tag: str) -> Path:
    write_api(files, tag, "alpha", provider_extra=", api_dependencies=[Api.beta]")
    write_api(files, tag, "beta", spec={"api_dependencies": ["alpha"]})
    return run_config(files, "alpha", "beta")


DEPENDENCY_CASES = [
    pytest.param(
        dependency_chain,
        ["run.yaml: providers.beta[0]: API 'beta' depends on API 'gamma', which is not served",
         "chain: alpha -> beta -> gamma", "add 'gamma' to apis with a provider"],
        id="missing-dependency-from-provider-spec",
    ),
    pytest.param(
        lambda files, tag: dependency_chain(files, tag, via_api_spec=True),
        ["run.yaml: providers.beta[0]: API 'beta' depends on API 'gamma', which is not served",
         "chain: alpha -> beta -> gamma"],
        id="missing-dependency-from-api-spec",
    ),
    pytest.param(
        dependency_cycle,
        ["run.yaml: API dependency cycle: alpha -> beta -> alpha"],
        id="dependency-cycle",
    ),
]


# -- routes and parameters ---------------------------------------------------------


def same_route(files: Any, tag: str) -> Path:
    shared = '    @webmethod(route="/shared/items", method="GET")\n    async def list_items(self) -> dict: ...\n'
    write_api(files, tag, "alpha", methods=shared)
    write_api(files, tag, "beta", methods=shared)
    return run_config(files, "alpha", "beta")


ROUTE_CASES = [
    pytest.param(
        same_route,
        ["route GET /v1/shared/items is declared by both", "alpha.list_items",
         "apis.d/alpha.yaml", "beta.list_items", "apis.d/beta.yaml"],
        id="two-apis-same-route",
    ),
    pytest.param(
        lambda files, tag: standard(
            files, tag,
            methods='    @webmethod(route="health", method="GET")\n    async def list_items(self) -> dict: ...\n',
        ),
        ["apis.d/weather.yaml: protocol: route GET /v1/health is declared by both "
         "stackflask's built-in endpoints and weather.list_items"],
        id="route-collides-with-builtin-health",
    ),
    pytest.param(
        lambda files, tag: standard(
            files, tag,
            methods='    @webmethod(route="/providers/{name}", method="GET")\n'
                    "    async def list_items(self, name: str) -> dict: ...\n",
        ),
        ["route GET /v1/providers/{{name}} is declared by both stackflask's built-in endpoints"],
        id="route-collides-with-builtin-placeholder",
    ),
    pytest.param(
        lambda files, tag: standard(
            files, tag,
            methods='    @webmethod(route="/weather/items", method="POST")\n'
                    "    async def list_items(self, z: complex) -> dict: ...\n",
        ),
        ["apis.d/weather.yaml: protocol: Proto.list_items: parameter 'z': unsupported type complex"],
        id="unsupported-parameter-type",
    ),
    pytest.param(
        lambda files, tag: standard(
            files, tag,
            methods='    @webmethod(route="/weather/items/{item_id}", method="GET")\n'
                    "    async def list_items(self) -> dict: ...\n",
        ),
        ["apis.d/weather.yaml: protocol: Proto.list_items: route '/weather/items/{{item_id}}' "
         "names {{item_id}}, which is not a parameter"],
        id="route-placeholder-not-a-parameter",
    ),
]


@pytest.mark.parametrize(
    ("build", "expected"),
    RUN_CONFIG_CASES
    + API_SPEC_CASES
    + API_CASES
    + PROVIDERS_DIR_CASES
    + CONFIG_CASES
    + IMPLEMENTATION_CASES
    + DEPENDENCY_CASES
    + ROUTE_CASES,
)
def test_startup_error(
    stack_files: Any, tag: str, build: Callable[[Any, str], Path], expected: list[str]
) -> None:
    problems = problems_of(build(stack_files, tag))
    assert_line(problems, *(fragment.format(tag=tag) for fragment in expected))


# -- a module that is not installed: the pip packages its spec names ------------------


def missing_provider_module(spec: dict[str, Any], config_class: bool = True) -> Callable[[Any, str], Path]:
    """A remote provider in ``providers.d`` whose module ``kaze_{tag}`` is not installed."""

    def setup(files: Any, tag: str) -> Path:
        write_api(files, tag)
        adapter = {"adapter_type": "kaze", "module": f"kaze_{tag}", **spec}
        if config_class:
            adapter["config_class"] = f"kaze_{tag}.KazeConfig"
        files.provider_file("remote", "weather", "kaze", {"adapter": adapter})
        return run_config(files, providers={"weather": [entry("kaze", "remote::kaze")]})

    return setup


INSTALL_HINT_CASES = [
    pytest.param(
        lambda files, tag: files.api_spec("weather.yaml", {
            "module": f"nowhere_{tag}", "name": "weather", "protocol": "P",
            "pip_packages": ["weather-api", "extra>=2"],
        }) and run_config(files),
        "apis.d/weather.yaml: module: module 'nowhere_{tag}' is not installed or not on "
        "sys.path; install its spec's pip_packages: pip install weather-api 'extra>=2'",
        id="api-module-with-pip_packages",
    ),
    pytest.param(
        lambda files, tag: files.api_spec(
            "weather.yaml", {"module": f"nowhere_{tag}", "name": "weather", "protocol": "P"}
        ) and run_config(files),
        "apis.d/weather.yaml: module: module 'nowhere_{tag}' is not installed or not on sys.path",
        id="api-module-without-pip_packages",
    ),
    pytest.param(
        lambda files, tag: standard(files, tag, spec={"pip_packages": ["weather-api"]},
                                    extra=f"import missing_dependency_{tag}"),
        "apis.d/weather.yaml: module: importing module 'weather_api_{tag}' failed: "
        "ModuleNotFoundError: No module named 'missing_dependency_{tag}'",
        id="api-module-imports-a-missing-module",
    ),
    pytest.param(
        missing_provider_module({"pip_packages": ["weather-kaze"]}),
        "run.yaml: providers.weather[0]: config_class 'kaze_{tag}.KazeConfig' of provider "
        "'remote::kaze': module 'kaze_{tag}' is not installed or not on sys.path; "
        "install its spec's pip_packages: pip install weather-kaze",
        id="provider-config-class-module",
    ),
    pytest.param(
        missing_provider_module({"pip_packages": ["weather-kaze"]}, config_class=False),
        "run.yaml: providers.weather[0]: provider 'remote::kaze': module 'kaze_{tag}' is not "
        "installed or not on sys.path; install its spec's pip_packages: pip install weather-kaze",
        id="provider-module",
    ),
    pytest.param(
        missing_provider_module({}, config_class=False),
        "run.yaml: providers.weather[0]: provider 'remote::kaze': module 'kaze_{tag}' is not "
        "installed or not on sys.path",
        id="provider-module-without-pip_packages",
    ),
]


@pytest.mark.parametrize(("build", "expected"), INSTALL_HINT_CASES)
def test_module_not_installed_names_the_pip_packages(
    stack_files: Any, tag: str, build: Callable[[Any, str], Path], expected: str
) -> None:
    problems = problems_of(build(stack_files, tag))
    assert problems == [f"{stack_files.root}/{expected.format(tag=tag)}"]


# -- all problems together ------------------------------------------------------------


def test_two_broken_api_specs_are_reported_together(stack_files: Any) -> None:
    stack_files.api_spec("alpha.yaml", {"module": "m", "name": "alpha"})
    stack_files.api_spec("beta.yaml", {"module": "m", "name": "beta", "protocl": "P"})
    problems = problems_of(run_config(stack_files, "alpha", "beta"))
    assert_line(problems, "apis.d/alpha.yaml: protocol: Missing data for required field.")
    assert_line(problems, "apis.d/beta.yaml: protocl: Unknown field.")


def test_two_broken_api_modules_are_reported_together(stack_files: Any, tag: str) -> None:
    write_api(stack_files, tag, "alpha", protocol="Nope")
    stack_files.api_spec("beta.yaml", {"module": f"nowhere_{tag}", "name": "beta", "protocol": "P"})
    problems = problems_of(run_config(stack_files, "alpha", "beta"))
    assert_line(problems, "apis.d/alpha.yaml: protocol: 'Nope' is not defined")
    assert_line(problems, "apis.d/beta.yaml: module: module 'nowhere_" + tag)


def test_two_broken_provider_entries_are_reported_together(stack_files: Any, tag: str) -> None:
    write_api(stack_files, tag, "alpha")
    write_api(stack_files, tag, "beta")
    path = run_config(
        stack_files, "alpha", "beta", providers={"beta": [entry(provider_type="x::y")]}
    )
    problems = problems_of(path)
    assert_line(problems, "run.yaml: providers.alpha: API 'alpha' has no provider")
    assert_line(problems, "run.yaml: providers.beta[0].provider_type: 'x::y' is not available")


def test_two_broken_configs_are_reported_together(stack_files: Any, tag: str) -> None:
    write_api(stack_files, tag, "alpha")
    write_api(stack_files, tag, "beta")
    path = run_config(
        stack_files,
        "alpha", "beta",
        providers={
            "alpha": [entry("north", config={"colour": "red"})],
            "beta": [entry("south", config={"shade": "blue"})],
        },
    )
    problems = problems_of(path)
    assert_line(problems, "run.yaml: providers.alpha[0] (north).config.colour: Unknown field.")
    assert_line(problems, "run.yaml: providers.beta[0] (south).config.shade: Unknown field.")


def test_webmethod_refuses_unknown_http_method_at_decoration() -> None:
    with pytest.raises(ValueError, match=r"method 'FETCH' is not one of GET, POST, PUT, PATCH, DELETE"):
        webmethod(route="/x", method="FETCH")


def test_webmethod_accepts_method_in_any_case() -> None:
    def func() -> None: ...

    assert webmethod(route="x", method="patch")(func).__webmethod__.method == "PATCH"


# -- what the errors guard: setups that must start ---------------------------------------


def test_yml_spec_file_is_read(stack_files: Any, tag: str, make_app: Any) -> None:
    write_api(stack_files, tag, filename="weather.yml")
    app = make_app(run_config(stack_files))
    assert app.test_client().get("/v1/weather/items").json == {"items": ["impl"]}


def test_providers_file_for_unregistered_api_only_warns(
    stack_files: Any, tag: str, make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    write_api(stack_files, tag)
    stack_files.provider_file("remote", "ghost", "far", {"adapter": {"module": "x"}})
    with caplog.at_level(logging.WARNING, logger="stackflask"):
        app = make_app(run_config(stack_files))
    assert any(
        "providers.d/remote/ghost/far.yaml" in r.getMessage()
        and "API 'ghost' is not registered" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    ), caplog.text
    assert app.test_client().get("/v1/weather/items").status_code == 200


API_BY_NAME = '''\
from typing import Protocol

from stackflask import Api, InlineProviderSpec, webmethod

SEEN = {{}}


def available_providers():
    SEEN["attr"] = Api.{name}
    SEEN["call"] = Api("{name}")
    return [
        InlineProviderSpec(api=Api.{name}, provider_type="inline::attr", module="{pkg}.impl"),
        InlineProviderSpec(api=Api("{name}"), provider_type="inline::call", module="{pkg}.impl"),
    ]


class Proto(Protocol):
    @webmethod(route="/{name}/items", method="GET")
    async def list_items(self) -> dict: ...
'''


def test_api_members_inside_available_providers(stack_files: Any, tag: str, make_app: Any) -> None:
    name = f"named_{tag}"
    pkg = write_api(stack_files, tag, name)
    stack_files.module(pkg, API_BY_NAME.format(name=name, pkg=pkg))
    app = make_app(run_config(stack_files, name, providers={name: [entry("c", "inline::call")]}))
    seen = sys.modules[pkg].SEEN
    assert seen["attr"] is seen["call"] is Api(name) is getattr(Api, name)
    member = seen["attr"]
    assert member == name and name == member
    assert member.name == member.value == name
    assert {member: 1}[name] == 1 and {name: 2}[member] == 2
    assert Api(member) is member
    assert set(app.extensions["stackflask"].registry.providers[name]) == {"inline::attr", "inline::call"}


def test_unknown_api_member_is_a_clear_error() -> None:
    with pytest.raises(AttributeError, match=r"Api has no member 'not_registered_anywhere'"):
        Api.not_registered_anywhere  # noqa: B018
    with pytest.raises(ValueError, match=r"'not_registered_anywhere' is not a registered Api"):
        Api("not_registered_anywhere")


def deps_of(app: Any) -> dict[str, Any]:
    return {p.api.spec.name: p.impl for p in app.extensions["stackflask"].providers}


@pytest.mark.parametrize("via_api_spec", [False, True], ids=["provider-spec", "api-spec"])
def test_deps_hold_dependency_impl_keyed_by_api(
    stack_files: Any, tag: str, make_app: Any, via_api_spec: bool
) -> None:
    if via_api_spec:
        write_api(stack_files, tag, "alpha", spec={"api_dependencies": ["beta"]})
    else:
        write_api(stack_files, tag, "alpha", provider_extra=", api_dependencies=[Api.beta]")
    write_api(stack_files, tag, "beta")
    impls = deps_of(make_app(run_config(stack_files, "alpha", "beta")))
    deps = impls["alpha"].deps
    assert list(deps) == [Api.beta]
    assert isinstance(next(iter(deps)), Api)
    assert deps[Api.beta] is impls["beta"]
    assert impls["beta"].deps == {}


def test_optional_dependencies_only_when_served(stack_files: Any, tag: str, make_app: Any) -> None:
    write_api(
        stack_files, tag, "alpha",
        provider_extra=', optional_api_dependencies=["beta", "gamma"]',
    )
    write_api(stack_files, tag, "beta")
    write_api(stack_files, tag, "gamma")
    impls = deps_of(make_app(run_config(stack_files, "alpha", "beta")))
    assert impls["alpha"].deps == {Api.beta: impls["beta"]}
    assert Api.gamma not in impls["alpha"].deps


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("${env.SF_T_NAME:=fallback}", {"SF_T_NAME": "given"}, "given"),
        ("${env.SF_T_NAME:=fallback}", {}, "fallback"),
        ("${env.SF_T_NAME:=fallback}", {"SF_T_NAME": ""}, "fallback"),
        ("${env.SF_T_NAME:+present}", {"SF_T_NAME": "x"}, "present"),
        ("${env.SF_T_NAME:+present}", {}, None),
        ("${env.SF_T_NAME}", {"SF_T_NAME": ""}, None),
        ("${env.SF_T_NAME}", {"SF_T_NAME": "true"}, True),
        ("${env.SF_T_NAME}", {"SF_T_NAME": "False"}, False),
        ("${env.SF_T_NAME}", {"SF_T_NAME": "8"}, 8),
        ("${env.SF_T_NAME}", {"SF_T_NAME": "1.5"}, 1.5),
        ("${env.SF_T_NAME:=8}", {}, 8),
        ("http://${env.SF_T_NAME}:80/", {"SF_T_NAME": "host"}, "http://host:80/"),
        ("plain 8", {}, "plain 8"),
    ],
)
def test_env_substitution_and_typing(
    stack_files: Any,
    tag: str,
    make_app: Any,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    environ: dict[str, str],
    expected: Any,
) -> None:
    monkeypatch.delenv("SF_T_NAME", raising=False)
    for key, val in environ.items():
        monkeypatch.setenv(key, val)
    write_api(
        stack_files, tag,
        impl="Config = dict\n\n" + impl_with("    async def list_items(self):\n        return {}\n"),
    )
    app = make_app(
        run_config(stack_files, providers={"weather": [entry(config={"value": value})]})
    )
    config = deps_of(app)["weather"].config
    assert config == {"value": expected}
    assert type(config["value"]) is type(expected)


def test_home_and_relative_paths(
    stack_files: Any, tag: str, make_app: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_api(stack_files, tag)
    home = tmp_path / "home"
    (home / "conf").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    stack_files.apis_dir.rename(home / "apis.d")
    conf = home / "conf" / "run.yaml"
    conf.write_text(
        "apis: [weather]\n"
        "external_apis_dir: ~/apis.d\n"
        "external_providers_dir: ../providers\n"
        "providers:\n  weather:\n  - provider_id: basic\n    provider_type: inline::basic\n"
    )
    (home / "providers").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    app = make_app("~/conf/run.yaml")
    stack = app.extensions["stackflask"]
    assert stack.config.external_apis_dir.resolve() == (home / "apis.d").resolve()
    assert stack.config.external_providers_dir.resolve() == (home / "providers").resolve()
    assert app.test_client().get("/v1/weather/items").status_code == 200


def test_unknown_top_level_keys_warn(
    stack_files: Any, tag: str, make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    write_api(stack_files, tag)
    path = run_config(stack_files, metadata_store={"type": "sqlite"}, server={"port": 8400, "tls": 1})
    with caplog.at_level(logging.WARNING, logger="stackflask"):
        app = make_app(path)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("run.yaml: metadata_store: not used by stackflask; ignored" in m for m in messages), messages
    assert any("run.yaml: server.tls: not used by stackflask; ignored" in m for m in messages), messages
    assert app.extensions["stackflask"].config.server.port == 8400


def test_apis_absent_serves_every_api_with_a_provider(
    stack_files: Any, tag: str, make_app: Any
) -> None:
    write_api(stack_files, tag, "alpha")
    write_api(stack_files, tag, "beta")
    write_api(stack_files, tag, "gamma")
    path = stack_files.run_config({"providers": {"alpha": [entry()], "beta": [entry()]}})
    app = make_app(path)
    client = app.test_client()
    assert client.get("/v1/alpha/items").status_code == 200
    assert client.get("/v1/beta/items").status_code == 200
    assert client.get("/v1/gamma/items").status_code == 404


def marked_impl(mark: str) -> str:
    return IMPL.replace('MARK = "impl"', f"MARK = {mark!r}")


def test_provider_override_order(
    stack_files: Any, tag: str, make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pkg = write_api(stack_files, tag, impl=marked_impl("available"))
    client = make_app(run_config(stack_files)).test_client()
    assert client.get("/v1/weather/items").json == {"items": ["available"]}

    stack_files.module(f"{pkg}.from_dir", marked_impl("providers.d"))
    stack_files.provider_file("inline", "weather", "basic", {"module": f"{pkg}.from_dir"})
    with caplog.at_level(logging.WARNING, logger="stackflask"):
        client = make_app(run_config(stack_files)).test_client()
    assert client.get("/v1/weather/items").json == {"items": ["providers.d"]}
    assert any(
        "inline::basic" in r.getMessage()
        and "providers.d/inline/weather/basic.yaml" in r.getMessage()
        and "overrides" in r.getMessage()
        for r in caplog.records
    ), caplog.text
    caplog.clear()

    stack_files.module(f"{pkg}.from_entry", marked_impl("entry module").replace(
        "async def get_provider_impl",
        "def get_provider_spec():\n"
        "    from stackflask import Api, InlineProviderSpec\n"
        f"    return InlineProviderSpec(api=Api.weather, provider_type='inline::basic', "
        f"module='{pkg}.from_entry')\n\n\n"
        "async def get_provider_impl",
    ))
    path = run_config(stack_files, providers={"weather": [entry(module=f"{pkg}.from_entry")]})
    with caplog.at_level(logging.WARNING, logger="stackflask"):
        client = make_app(path).test_client()
    assert client.get("/v1/weather/items").json == {"items": ["entry module"]}
    assert any(
        "inline::basic" in r.getMessage()
        and f"{pkg}.from_entry.get_provider_spec()" in r.getMessage()
        and "providers.d/inline/weather/basic.yaml" in r.getMessage()
        for r in caplog.records
    ), caplog.text


def test_same_provider_from_two_sources_does_not_warn(
    stack_files: Any, tag: str, make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pkg = write_api(stack_files, tag)
    stack_files.provider_file(
        "inline", "weather", "basic", {"module": f"{pkg}.impl", "config_class": f"{pkg}.impl.Config"}
    )
    with caplog.at_level(logging.WARNING, logger="stackflask"):
        make_app(run_config(stack_files))
    assert not [r for r in caplog.records if "overrides" in r.getMessage()], caplog.text
