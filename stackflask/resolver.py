"""The resolver: from run-config entries to built, checked provider instances.

Startup (and shutdown) time, no Flask. Picks the one provider entry of each
served API, validates its ``config`` with the spec's config class, orders the
APIs by their dependencies, builds each provider with its module's
``get_adapter_impl`` or ``get_provider_impl`` on the event loop (an inline
factory that takes ``policy`` also gets the run config's access policy, as
Llama Stack passes it; a factory that takes ``protocol`` gets the API's
Protocol, as the built-in ``remote::stackflask`` does), and checks that it implements every webmethod of its
Protocol.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError

from . import compat, loop
from .access_policy import parse_rules
from .config import ProviderEntry, RunConfig
from .datatypes import Api, ProviderSpec, api_name
from .importing import ImportProblem, import_module, import_object
from .problems import Problems, StartupError, field_path, flatten_messages
from .registry import LoadedApi, Registry, builtin_provider, install_hint

log = logging.getLogger("stackflask.resolver")

SHUTDOWN_TIMEOUT = 10.0


@dataclass
class ResolvedProvider:
    """A built provider serving one API."""

    api: LoadedApi
    entry: ProviderEntry
    spec: ProviderSpec
    impl: Any

    @property
    def provider_id(self) -> str:
        return self.entry.provider_id

    @property
    def provider_type(self) -> str:
        return self.entry.provider_type


@dataclass
class _Plan:
    api: LoadedApi
    entry: ProviderEntry
    spec: ProviderSpec
    deps: list[str]
    where: str


def served_apis(config: RunConfig) -> list[str]:
    """The APIs to serve: ``apis``, or every API with a provider entry."""
    if config.apis:
        for name in config.providers:
            if name not in config.apis:
                log.warning(
                    "%s: providers.%s: API %r is not listed in apis; its providers are ignored",
                    config.source, name, name,
                )
        return list(dict.fromkeys(config.apis))
    return [name for name, entries in config.providers.items() if entries]


def resolve_providers(
    config: RunConfig, registry: Registry, problems: Problems
) -> list[ResolvedProvider]:
    """Build every served API's provider, in dependency order.

    Every problem found goes to ``problems``; providers are built only when
    there are none, and shut down again if building one of them fails.
    """
    plans = _plan(config, registry, problems)
    order = _order(plans, config.source, problems)
    policy = _access_policy(config, problems)
    configs: dict[str, Any] = {}
    for name in order:
        try:
            configs[name] = _build_config(plans[name])
        except StartupError as exc:
            problems += exc.problems
    if problems:
        return []
    built, failures = loop.run(_build_all([plans[n] for n in order], configs, policy))
    if failures:
        problems += failures
        stop_providers(built, config.server.shutdown_timeout)
        return []
    return built


def _plan(config: RunConfig, registry: Registry, problems: Problems) -> dict[str, _Plan]:
    plans: dict[str, _Plan] = {}
    src = config.source
    for name in served_apis(config):
        if name in problems.broken:
            continue
        loaded = registry.apis.get(name)
        if loaded is None:
            known = ", ".join(registry.apis) or "none"
            hint = (
                "add its spec to external_apis_dir"
                if config.external_apis_dir
                else "set external_apis_dir to the folder holding its spec"
            )
            problems.append(f"{src}: apis: API {name!r} is not defined ({hint}; known APIs: {known})")
            continue
        entries = config.providers.get(name, [])
        available = registry.providers.get(name, {})
        if not entries:
            known = ", ".join(available) or "none registered"
            problems.append(
                f"{src}: providers.{name}: API {name!r} has no provider; add one with "
                f"provider_id and provider_type (available: {known})"
            )
            continue
        if len(entries) > 1:
            ids = ", ".join(repr(e.provider_id) for e in entries)
            problems.append(
                f"{src}: providers.{name}: API {name!r} has {len(entries)} providers ({ids}); "
                "stackflask serves one provider per API, remove all but one"
            )
            continue
        entry = entries[0]
        where = f"{src}: {entry.where}"
        record = available.get(entry.provider_type) or builtin_provider(loaded, entry.provider_type)
        if record is None:
            known = ", ".join(available) or "none"
            problems.append(
                f"{where}.provider_type: {entry.provider_type!r} is not available; known: {known}"
            )
            continue
        spec = record.spec
        deps = [api_name(d) for d in spec.api_dependencies]
        deps += [d for d in loaded.spec.api_dependencies if d not in deps]
        plans[name] = _Plan(loaded, entry, spec, deps, where)
    for name, plan in plans.items():
        optional = [api_name(d) for d in plan.spec.optional_api_dependencies]
        plan.deps += [d for d in optional if d in plans and d not in plan.deps]
    return plans


def _order(plans: dict[str, _Plan], src: str, problems: Problems) -> list[str]:
    """Dependencies first; problems for missing dependencies and cycles."""
    order: list[str] = []
    found: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = chain[chain.index(name):] + [name]
            found.append(f"{src}: API dependency cycle: {' -> '.join(cycle)}")
            return
        state[name] = "visiting"
        for dep in plans[name].deps:
            if dep not in plans:
                if dep in problems.broken:
                    continue
                path = " -> ".join([*chain, name, dep])
                found.append(
                    f"{plans[name].where}: API {name!r} depends on API {dep!r}, which is not "
                    f"served (chain: {path}); add {dep!r} to apis with a provider"
                )
                continue
            visit(dep, [*chain, name])
        state[name] = "done"
        order.append(name)

    for name in plans:
        visit(name, [])
    problems += dict.fromkeys(found)
    return order


def _access_policy(config: RunConfig, problems: Problems) -> list[Any]:
    """``server.auth.access_policy``: empty by default, as in Llama Stack; an
    installed Llama Stack's ``AccessRule`` models, else stackflask's own."""
    rules = (config.server.auth or {}).get("access_policy") or []
    if not compat.llama_stack_installed():
        return list(parse_rules(rules))  # checked when the run config was loaded
    try:
        return compat.access_policy(rules, ["server", "auth", "access_policy"])
    except StartupError as exc:
        problems += [f"{config.source}: {line}" for line in exc.problems]
        return []


def _build_config(plan: _Plan) -> Any:
    # The index alone does not say which provider; the id is what the user wrote.
    where = f"{plan.where} ({plan.entry.provider_id}).config"
    data = plan.entry.config
    if not plan.spec.config_class:
        return data
    try:
        cls = import_object(plan.spec.config_class)
    except ImportProblem as exc:
        module = plan.spec.config_class.replace(":", ".").rpartition(".")[0]
        hint = install_hint(exc, module, plan.spec.pip_packages)
        raise StartupError(
            [f"{plan.where}: config_class {plan.spec.config_class!r} of provider "
             f"{plan.spec.provider_type!r}: {exc}{hint}"]
        ) from None
    try:
        return make_config(cls, data)
    except ValidationError as exc:
        raise StartupError(
            [f"{field_path([where, *path])}: {msg}" for path, msg in flatten_messages(exc.messages)]
        ) from None
    except Exception as exc:
        # pydantic's ValidationError lists its problems, each with a location.
        errors = getattr(exc, "errors", None)
        if callable(errors):
            raise StartupError([
                f"{field_path([where, *item.get('loc', ())])}: {item.get('msg', exc)}"
                for item in errors()
            ]) from None
        raise StartupError([f"{where}: {type(exc).__name__}: {exc}"]) from None


def make_config(cls: Any, data: dict[str, Any]) -> Any:
    """Validate ``data`` with a config class of any supported kind.

    pydantic models (``model_validate``), marshmallow schemas (``load``),
    dataclasses (unknown fields refused) and any class taking keyword arguments.
    """
    if hasattr(cls, "model_validate"):
        return cls.model_validate(data)
    if isinstance(cls, type) and issubclass(cls, Schema):
        return cls().load(data)
    if dataclasses.is_dataclass(cls):
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ValidationError({k: ["Unknown field."] for k in unknown})
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.init and f.name not in data
            and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ValidationError({k: ["Missing data for required field."] for k in missing})
    return cls(**data)


async def _build_all(
    plans: list[_Plan], configs: dict[str, Any], policy: list[Any]
) -> tuple[list[ResolvedProvider], list[str]]:
    built: dict[str, ResolvedProvider] = {}
    problems: list[str] = []
    for plan in plans:
        name = plan.api.spec.name
        if any(dep not in built for dep in plan.deps):
            continue  # a dependency failed and was reported
        deps = {Api(dep): built[dep].impl for dep in plan.deps}
        try:
            impl = await _instantiate(plan, configs[name], deps, policy)
        except StartupError as exc:
            problems += exc.problems
            continue
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            log.debug("provider %s failed to start", plan.entry.provider_id, exc_info=True)
            problems.append(
                f"{plan.where}: provider {plan.entry.provider_id!r} "
                f"({plan.spec.provider_type}) failed to start: {type(exc).__name__}: {exc}"
            )
            continue
        missing = missing_methods(plan.api, impl)
        if missing:
            problems.append(
                f"{plan.where}: provider {plan.entry.provider_id!r} ({plan.spec.provider_type}) "
                f"does not implement {', '.join(missing)} of {plan.api.spec.protocol} "
                f"(class {type(impl).__qualname__})"
            )
        for attr, value in shadowed_methods(plan.api, impl):
            problems.append(
                f"{plan.where}: provider {plan.entry.provider_id!r} ({plan.spec.provider_type}): "
                f"instance attribute {attr!r} ({type(value).__name__}) hides the webmethod "
                f"{plan.api.spec.protocol}.{attr} (class {type(impl).__qualname__}); "
                "rename the attribute"
            )
        built[name] = ResolvedProvider(plan.api, plan.entry, plan.spec, impl)
    return list(built.values()), problems


async def _instantiate(plan: _Plan, config: Any, deps: dict[Api, Any], policy: list[Any]) -> Any:
    factory_name = "get_adapter_impl" if plan.spec.kind == "remote" else "get_provider_impl"
    try:
        module = import_module(plan.spec.module)
    except ImportProblem as exc:
        hint = install_hint(exc, plan.spec.module, plan.spec.pip_packages)
        raise StartupError(
            [f"{plan.where}: provider {plan.spec.provider_type!r}: {exc}{hint}"]
        ) from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise StartupError(
            [f"{plan.where}: provider module {plan.spec.module!r} defines no "
             f"{factory_name}(config, deps)"]
        )
    extra: dict[str, Any] = {}
    if plan.spec.kind == "inline" and _takes(factory, "policy"):
        extra["policy"] = policy
    if _takes(factory, "protocol"):
        extra["protocol"] = plan.api.protocol
    impl = factory(config, deps, **extra)
    if inspect.isawaitable(impl):
        impl = await impl
    if impl is None:
        raise StartupError(
            [f"{plan.where}: {plan.spec.module}.{factory_name}() returned None"]
        )
    for attr, value in (
        ("__provider_spec__", plan.spec),
        ("__provider_id__", plan.entry.provider_id),
        ("__provider_config__", config),
    ):
        try:
            setattr(impl, attr, value)
        except (AttributeError, TypeError):
            pass
    return impl


def _takes(factory: Any, name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read: called as (config, deps)
        return False


def missing_methods(api: LoadedApi, impl: Any) -> list[str]:
    """Webmethods ``impl`` lacks; a Protocol's own stub does not count."""
    missing: dict[str, None] = {}
    for endpoint in api.endpoints:
        attr = getattr(type(impl), endpoint.name, None) or getattr(impl, endpoint.name, None)
        func = inspect.unwrap(attr) if callable(attr) else None
        if func is None or func is endpoint.func:
            missing[endpoint.name] = None
    return list(missing)


def shadowed_methods(api: LoadedApi, impl: Any) -> list[tuple[str, Any]]:
    """Webmethods hidden by a non-callable instance attribute (``self.q = 1``
    where ``q`` is one), with the attribute's value."""
    own = getattr(impl, "__dict__", {})
    names = dict.fromkeys(e.name for e in api.endpoints)
    return [(name, own[name]) for name in names if name in own and not callable(own[name])]


async def shutdown_providers(
    providers: list[ResolvedProvider], timeout: float = SHUTDOWN_TIMEOUT
) -> None:
    """Await each provider's ``shutdown()``, in reverse build order, each with a timeout."""
    for provider in reversed(providers):
        shutdown = getattr(provider.impl, "shutdown", None)
        if not callable(shutdown):
            continue
        try:
            result = shutdown()
            if inspect.isawaitable(result):
                await asyncio.wait_for(result, timeout)
        except asyncio.TimeoutError:
            log.error("provider %r: shutdown() took longer than %s s", provider.provider_id, timeout)
        except Exception:
            log.exception("provider %r: shutdown() failed", provider.provider_id)


def stop_providers(
    providers: list[ResolvedProvider], timeout: float, deadline: float | None = None
) -> None:
    """Await each provider's ``shutdown()`` in reverse build order, from the
    calling thread, within ``timeout`` plus a second in all (or until
    ``deadline``, a ``time.monotonic()`` instant).

    Bounded even when a provider's ``shutdown()`` blocks the loop or ignores
    its cancellation: that provider is named, and the rest are skipped.
    """
    if deadline is None:
        deadline = time.monotonic() + timeout + 1
    for provider in reversed(providers):
        left = deadline - time.monotonic()
        if left <= 0 or not run_bounded(
            lambda: loop.run(shutdown_providers([provider], timeout)), left
        ):
            log.error(
                "provider %r did not stop within %g s (its shutdown() blocks the loop or "
                "ignores cancellation); going on without it",
                provider.provider_id, timeout + 1,
            )
            return


def run_bounded(call: Callable[[], Any], timeout: float) -> bool:
    """Run ``call`` in a daemon thread; whether it returned within ``timeout``.

    A call stuck past its time (on a loop that a provider blocks) is left
    behind; the process can exit all the same.
    """

    def run() -> None:
        try:
            call()
        except loop.LoopStopped:
            log.error("providers not shut down: the event loop has stopped")

    worker = threading.Thread(target=run, name="stackflask-shutdown", daemon=True)
    worker.start()
    worker.join(timeout)
    return not worker.is_alive()
