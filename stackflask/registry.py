"""The registry: ``apis.d`` specs, API modules and the provider specs for them.

Startup time, no Flask. Reads every API spec file, registers each name as an
:class:`~stackflask.datatypes.Api` member, imports each API module and collects
its Protocol's webmethods, then gathers provider specs from three sources, later
ones overriding earlier ones: the API module's ``available_providers()``, the
``providers.d`` files, and run-config entries that name a ``module``. The
built-in ``remote::stackflask`` passthrough serves any API when a run config
names it (:func:`builtin_provider`).
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields

from . import compat
from .config import RunConfig, read_yaml
from .datatypes import (
    AdapterSpec,
    Api,
    InlineProviderSpec,
    ProviderSpec,
    RemoteProviderSpec,
    api_name,
    check_api_name,
    register_api,
)
from .importing import ImportProblem, import_module
from .problems import Problems, StartupError, field_path, validation_problems
from .webmethod import Endpoint, collect_webmethods

log = logging.getLogger("stackflask.registry")


class ApiSpecSchema(Schema):
    class Meta:
        unknown = RAISE

    module = fields.String(required=True)
    name = fields.String(required=True)
    protocol = fields.String(required=True)
    api_dependencies = fields.List(fields.String(), load_default=list)
    pip_packages = fields.List(fields.String(), load_default=list)


class _ProviderFileSchema(Schema):
    class Meta:
        unknown = RAISE

    api_dependencies = fields.List(fields.String(), load_default=list)
    optional_api_dependencies = fields.List(fields.String(), load_default=list)
    provider_data_validator = fields.String(allow_none=True, load_default=None)
    deprecation_warning = fields.String(allow_none=True, load_default=None)
    description = fields.String(allow_none=True, load_default=None)


class AdapterSchema(Schema):
    class Meta:
        unknown = RAISE

    adapter_type = fields.String(load_default=None)
    module = fields.String(required=True)
    config_class = fields.String(load_default="")
    pip_packages = fields.List(fields.String(), load_default=list)
    provider_data_validator = fields.String(allow_none=True, load_default=None)
    description = fields.String(allow_none=True, load_default=None)


class RemoteProviderFileSchema(_ProviderFileSchema):
    adapter = fields.Nested(AdapterSchema, required=True)


class InlineProviderFileSchema(_ProviderFileSchema):
    module = fields.String(required=True)
    config_class = fields.String(load_default="")
    pip_packages = fields.List(fields.String(), load_default=list)
    container_image = fields.String(allow_none=True, load_default=None)


@dataclass(frozen=True)
class ApiSpec:
    """One ``apis.d`` file. ``source`` is the file as named in messages."""

    name: str
    module: str
    protocol: str
    api_dependencies: list[str]
    pip_packages: list[str]
    source: str


@dataclass
class LoadedApi:
    """An API whose module is imported and whose webmethods are collected."""

    spec: ApiSpec
    api: Api
    module: ModuleType
    protocol: type
    endpoints: list[Endpoint]


@dataclass
class ProviderRecord:
    """A provider type available for an API, and where its spec came from."""

    spec: ProviderSpec
    source: str

    @property
    def provider_type(self) -> str:
        return self.spec.provider_type


@dataclass
class Registry:
    """Every loaded API and every provider type known for each, by name."""

    apis: dict[str, LoadedApi] = field(default_factory=dict)
    providers: dict[str, dict[str, ProviderRecord]] = field(default_factory=dict)

    def add_provider(self, record: ProviderRecord) -> None:
        api = api_name(record.spec.api)
        known = self.providers.setdefault(api, {})
        previous = known.get(record.provider_type)
        if previous is not None and _identity(previous.spec) != _identity(record.spec):
            log.warning(
                "provider %s for API %r from %s overrides the one from %s",
                record.provider_type, api, record.source, previous.source,
            )
        known[record.provider_type] = record


def _identity(spec: ProviderSpec) -> tuple[str, str, str]:
    return spec.kind, spec.module, spec.config_class


def load_api_specs(directory: Path | None, source: str, problems: Problems) -> list[ApiSpec]:
    """Every valid ``*.yaml``/``*.yml`` file in ``directory``, in sorted order.

    ``source`` is the run config that named the directory, for messages; the
    problems of the other files go to ``problems``.
    """
    if directory is None:
        return []
    if not directory.is_dir():
        problems.append(f"{source}: external_apis_dir: {str(directory)!r} is not a directory")
        return []
    files = sorted(
        p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
    )
    specs: list[ApiSpec] = []
    seen: dict[str, str] = {}
    for path in files:
        shown = str(path)
        try:
            data = read_yaml(path)
        except StartupError as exc:
            problems += exc.problems
            continue
        if not isinstance(data, dict):
            problems.append(f"{shown}: expected a mapping with module, name and protocol")
            continue
        try:
            loaded = ApiSpecSchema().load(data)
        except ValidationError as exc:
            problems += validation_problems(exc.messages, shown)
            if isinstance(data.get("name"), str):
                problems.broken.add(data["name"])
            continue
        name = loaded["name"]
        reason = check_api_name(name)
        if reason:
            problems.append(f"{shown}: name: {reason}")
            continue
        if name in seen:
            problems.append(
                f"{shown}: name: API {name!r} is already defined by {seen[name]}; "
                "remove one of the two files"
            )
            problems.broken.add(name)
            continue
        seen[name] = shown
        specs.append(ApiSpec(source=shown, **loaded))
    return specs


def load_apis(specs: list[ApiSpec], problems: Problems) -> dict[str, LoadedApi]:
    """Register every API name, then import each module and read its Protocol.

    Names are registered first, with stackflask's :class:`Api` and with an
    installed Llama Stack's, so that any module can use ``Api.<name>`` of any
    API, its own included, when it is imported or its providers are read.
    """
    compat.install()
    members = {spec.name: register_api(spec.name) for spec in specs}
    problems += compat.register_llama_stack_apis(list(members))
    loaded: dict[str, LoadedApi] = {}
    for spec in specs:
        try:
            loaded[spec.name] = _load_api(spec, members[spec.name])
        except ImportProblem as exc:
            problems.append(
                f"{spec.source}: module: {exc}{install_hint(exc, spec.module, spec.pip_packages)}"
                f"{compat.explain_api_error(exc.__cause__)}"
            )
            problems.broken.add(spec.name)
        except StartupError as exc:
            problems += exc.problems
            problems.broken.add(spec.name)
    return loaded


def install_hint(exc: ImportProblem, module: str, pip_packages: list[str]) -> str:
    """``; install it: pip install PKG...`` when importing ``module`` failed because
    it is not installed and its spec names ``pip_packages``; else ``""``."""
    missing = exc.__cause__
    if not (pip_packages and isinstance(missing, ModuleNotFoundError) and missing.name):
        return ""
    if module != missing.name and not module.startswith(missing.name + "."):
        return ""  # a module it imports is missing, not the module itself
    packages = " ".join(shlex.quote(p) for p in pip_packages)
    return f"; install its spec's pip_packages: pip install {packages}"


def _load_api(spec: ApiSpec, api: Api) -> LoadedApi:
    module = import_module(spec.module)
    protocol = getattr(module, spec.protocol, None)
    if not isinstance(protocol, type):
        defined = sorted(
            name
            for name, value in vars(module).items()
            if isinstance(value, type) and value.__module__ == module.__name__
        )
        what = "is not defined" if protocol is None else "is not a class"
        raise StartupError(
            [
                f"{spec.source}: protocol: {spec.protocol!r} {what} in module "
                f"{spec.module!r} (classes defined: {', '.join(defined) or 'none'})"
            ]
        )
    try:
        endpoints = collect_webmethods(protocol)
    except ValueError as exc:
        raise StartupError([f"{spec.source}: protocol: {exc}"]) from None
    if not endpoints:
        raise StartupError(
            [
                f"{spec.source}: protocol: {spec.protocol!r} has no methods decorated "
                "with @webmethod(route=..., method=...)"
            ]
        )
    return LoadedApi(spec=spec, api=api, module=module, protocol=protocol, endpoints=endpoints)


def build_registry(config: RunConfig, apis: dict[str, LoadedApi], problems: Problems) -> Registry:
    """Gather provider specs from the three sources, in override order."""
    registry = Registry(apis=apis)
    for loaded in apis.values():
        problems += add_available_providers(registry, loaded)
    registry_files(config, set(apis) | problems.broken, registry, problems)
    for entries in config.providers.values():
        for entry in entries:
            if entry.module:
                problems += _from_entry_module(registry, config.source, entry)
    return registry


#: Provider types stackflask serves for any API, by type: used when a run config
#: names one that no registered spec provides.
BUILTIN_PROVIDER_TYPES = ("remote::stackflask",)


def builtin_provider(loaded: LoadedApi, provider_type: str) -> ProviderRecord | None:
    """The built-in provider ``provider_type`` for ``loaded``, or ``None``.

    ``remote::stackflask`` passes every call through to another stackflask
    server (:mod:`stackflask.passthrough`; its factory takes the API's
    ``protocol``). A spec of the same type from any other source wins, and
    built-in types are not listed among an API's available providers.
    """
    if provider_type not in BUILTIN_PROVIDER_TYPES:
        return None
    spec = RemoteProviderSpec(
        api=loaded.api,
        adapter=AdapterSpec(
            adapter_type="stackflask",
            module="stackflask.passthrough",
            config_class="stackflask.passthrough.PassthroughConfig",
            pip_packages=["stackflask[client]"],
            description="Serves the API by calling another stackflask server that serves it.",
        ),
    )
    return ProviderRecord(spec, "stackflask (built in)")


def registry_files(
    config: RunConfig, api_names: set[str], registry: Registry, problems: Problems
) -> None:
    """Add the ``providers.d`` files for ``api_names`` to ``registry``; no imports."""
    if config.external_providers_dir is not None:
        problems += _from_providers_dir(
            registry, config.external_providers_dir, config.source, api_names
        )


def add_available_providers(registry: Registry, loaded: LoadedApi) -> list[str]:
    """Add the specs of ``loaded``'s ``available_providers()``; return the problems."""
    source = f"{loaded.spec.module}.available_providers()"
    func = getattr(loaded.module, "available_providers", None)
    if func is None:
        return []
    try:
        specs = func()
    except Exception as exc:
        hint = compat.explain_api_error(exc)
        return [f"{loaded.spec.source}: module: {source} raised {line}{hint}" for line in _raised(exc)]
    return _add_specs(registry, specs, f"{loaded.spec.source}: module", source)


def _raised(exc: Exception) -> list[str]:
    """``Type: message`` lines for ``exc``; one per error of a pydantic ValidationError
    (a provider spec from Llama Stack is a pydantic model), whose message spans lines."""
    errors, title = getattr(exc, "errors", None), getattr(exc, "title", None)
    if callable(errors) and isinstance(title, str):
        return [
            f"{type(exc).__name__}: {title}.{field_path(item['loc'])}: {item['msg']}"
            for item in errors()
        ]
    return [f"{type(exc).__name__}: {exc}"]


def _from_entry_module(registry: Registry, shown: str, entry: Any) -> list[str]:
    where = f"{shown}: {entry.where}.module"
    try:
        module = import_module(entry.module)
    except ImportProblem as exc:
        return [f"{where}: {exc}"]
    func = getattr(module, "get_provider_spec", None)
    if func is None:
        return [f"{where}: module {entry.module!r} defines no get_provider_spec()"]
    try:
        specs = func()
    except Exception as exc:
        return [f"{where}: {entry.module}.get_provider_spec() raised {line}" for line in _raised(exc)]
    if not isinstance(specs, (list, tuple)):
        specs = [specs]
    return _add_specs(registry, specs, where, f"{entry.module}.get_provider_spec()")


def _add_specs(registry: Registry, specs: Any, where: str, source: str) -> list[str]:
    if not isinstance(specs, (list, tuple)):
        return [f"{where}: {source} must return a list of provider specs, got {type(specs).__name__}"]
    problems = []
    for spec in specs:
        try:
            registry.add_provider(ProviderRecord(normalize_spec(spec), source))
        except ValueError as exc:
            problems.append(f"{where}: {source}: {exc}")
    return problems


def normalize_spec(spec: Any) -> ProviderSpec:
    """A stackflask provider spec for ``spec``, which may come from Llama Stack."""
    if isinstance(spec, ProviderSpec):
        result = spec
    else:
        common: dict[str, Any] = {
            name: getattr(spec, name, None)
            for name in (
                "api", "provider_type", "config_class", "module", "pip_packages",
                "api_dependencies", "optional_api_dependencies", "provider_data_validator",
                "deprecation_warning", "deprecation_error", "description",
            )
        }
        common = {k: v for k, v in common.items() if v is not None}
        adapter = getattr(spec, "adapter", None)
        if adapter is not None:
            result = RemoteProviderSpec(
                adapter=AdapterSpec(
                    adapter_type=getattr(adapter, "adapter_type", ""),
                    module=getattr(adapter, "module", "") or "",
                    pip_packages=list(getattr(adapter, "pip_packages", None) or []),
                    config_class=getattr(adapter, "config_class", "") or "",
                    provider_data_validator=getattr(adapter, "provider_data_validator", None),
                ),
                **common,
            )
        elif str(common.get("provider_type", "")).startswith("remote::"):
            result = RemoteProviderSpec(**common)
        else:
            result = InlineProviderSpec(**common)
    if not result.provider_type:
        raise ValueError(f"a provider spec for API {api_name(result.api)!r} has no provider_type")
    if not result.module:
        raise ValueError(
            f"provider {result.provider_type!r} has no module "
            "(set module=, or adapter=AdapterSpec(module=...))"
        )
    return result


def _from_providers_dir(
    registry: Registry, directory: Path, source: str, api_names: set[str]
) -> list[str]:
    if not directory.is_dir():
        return [f"{source}: external_providers_dir: {str(directory)!r} is not a directory"]
    problems: list[str] = []
    for kind in ("remote", "inline"):
        kind_dir = directory / kind
        if not kind_dir.is_dir():
            continue
        for api_dir in sorted(p for p in kind_dir.iterdir() if p.is_dir()):
            files = sorted(
                p for p in api_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
            )
            if api_dir.name not in api_names:
                for path in files:
                    log.warning(
                        "%s: API %r is not registered (no apis.d spec loaded it); ignored",
                        path, api_dir.name,
                    )
                continue
            for path in files:
                try:
                    spec = _read_provider_file(path, kind, api_dir.name)
                except StartupError as exc:
                    problems += exc.problems
                    continue
                registry.add_provider(ProviderRecord(spec, str(path)))
    return problems


def _read_provider_file(path: Path, kind: str, api: str) -> ProviderSpec:
    shown = str(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise StartupError([f"{shown}: expected a mapping"])
    schema = RemoteProviderFileSchema() if kind == "remote" else InlineProviderFileSchema()
    try:
        loaded = schema.load(data)
    except ValidationError as exc:
        raise StartupError(validation_problems(exc.messages, shown)) from None
    name = path.stem
    if kind == "remote":
        adapter = loaded.pop("adapter")
        adapter["adapter_type"] = adapter["adapter_type"] or name
        return RemoteProviderSpec(
            api=api, provider_type=f"remote::{name}", adapter=AdapterSpec(**adapter), **loaded
        )
    return InlineProviderSpec(api=api, provider_type=f"inline::{name}", **loaded)

