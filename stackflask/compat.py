"""Llama Stack's module names and objects, for packages written against it.

Startup time (and request time for the ``request_headers`` helpers).
:func:`install` adds a meta path finder, *last* on ``sys.meta_path``, that
answers the modules in :data:`ANSWERED` with stackflask's own objects. Being
last, it only answers when no real ``llama_stack`` is installed; when one is,
its objects are used, read by their field names, and
:func:`register_llama_stack_apis` gives its ``Api`` the external APIs' names.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import sys
import types
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from typing import Any, TypeVar

from . import context, datatypes, webmethod
from .auth import Principal, get_principal
from .importing import ImportProblem, import_module
from .problems import StartupError, field_path

T = TypeVar("T")


def json_schema_type(
    cls: type[T] | None = None, *, schema: Any = None, examples: Any = None
) -> Any:
    """``@json_schema_type`` and ``@json_schema_type(schema=...)``: the class, unchanged.

    stackflask describes types from their annotations; the schema and examples
    Llama Stack attaches are not used.
    """
    if cls is None:
        return lambda inner: inner
    return cls


def register_schema(
    data_type: T, schema: Any = None, name: str | None = None, examples: Any = None
) -> T:
    """Llama Stack's ``register_schema``, same parameters: ``data_type``, unchanged."""
    return data_type


#: The classes ``@trace_protocol`` marked; weak, so a test's classes can go.
_TRACED: weakref.WeakSet[type] = weakref.WeakSet()


def trace_protocol(cls: type[T]) -> type[T]:
    """Llama Stack's ``@trace_protocol``: the class, unchanged, recorded.

    When tracing is on, every public method of a provider whose class, a base
    class or API protocol was recorded runs in a span of its own (see
    :mod:`stackflask.tracing`); when it is off, nothing is wrapped.
    """
    _TRACED.add(cls)
    return cls


def traced_by_protocol(impl: object, protocol: type) -> bool:
    """Whether ``@trace_protocol`` marked ``impl``'s class, a base of it, or ``protocol``."""
    return protocol in _TRACED or any(cls in _TRACED for cls in type(impl).__mro__)


class User(Principal):
    """A :class:`Principal` that also reads as Llama Stack's ``User``:
    ``user.principal`` is the name, ``user.attributes`` the attributes (with
    the scopes under ``scopes`` when there are any), so code written for Llama
    Stack runs unchanged.
    """

    @property
    def principal(self) -> str:
        return self.name


def get_authenticated_user() -> User | None:
    """The current request's principal, as a :class:`User`; ``None`` without auth."""
    principal = get_principal()
    if principal is None:
        return None
    attributes = {key: list(values) for key, values in principal.attributes.items()}
    if principal.scopes:
        attributes.setdefault("scopes", sorted(principal.scopes))
    return User(principal.name, principal.scopes, attributes)


@contextmanager
def request_provider_data_context(
    headers: Mapping[str, str], auth_attributes: Principal | None = None
) -> Iterator[None]:
    """Llama Stack's context manager: the provider data of ``headers`` (and the
    principal ``auth_attributes``, which Llama Stack passes its user in) for the
    duration of the block."""
    if auth_attributes is not None and not isinstance(auth_attributes, Principal):
        raise TypeError(
            "request_provider_data_context(): auth_attributes must be a "
            f"stackflask.Principal or None, got {type(auth_attributes).__name__}"
        )
    wanted = context.PROVIDER_DATA_HEADER.lower()
    header = next((v for k, v in headers.items() if k.lower() == wanted), None)
    with context.provider_data_context(header, auth_attributes):
        yield


_REQUEST_HEADERS: dict[str, object] = {
    "NeedsRequestProviderData": context.NeedsRequestProviderData,
    "get_authenticated_user": get_authenticated_user,
    "request_provider_data_context": request_provider_data_context,
}

#: Every module the finder answers, and the names each holds.
ANSWERED: dict[str, dict[str, object]] = {
    "llama_stack.providers.datatypes": {
        "Api": datatypes.Api,
        "AdapterSpec": datatypes.AdapterSpec,
        "InlineProviderSpec": datatypes.InlineProviderSpec,
        "ProviderSpec": datatypes.ProviderSpec,
        "RemoteProviderSpec": datatypes.RemoteProviderSpec,
        "remote_provider_spec": datatypes.remote_provider_spec,
    },
    "llama_stack.schema_utils": {
        "webmethod": webmethod.webmethod,
        "json_schema_type": json_schema_type,
        "register_schema": register_schema,
    },
    "llama_stack.providers.utils.telemetry.trace_protocol": {
        "trace_protocol": trace_protocol,
    },
    "llama_stack.distribution.request_headers": _REQUEST_HEADERS,
    "llama_stack.core.request_headers": _REQUEST_HEADERS,
}

_PACKAGES = {
    prefix
    for name in ANSWERED
    for prefix in (".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1))
}


class CompatFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the compatibility modules when nothing earlier on the path does."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in ANSWERED and fullname not in _PACKAGES:
            return None
        return importlib.machinery.ModuleSpec(
            fullname, self, is_package=fullname in _PACKAGES
        )

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__dict__.update(ANSWERED.get(module.__name__, {}))
        module.__doc__ = "stackflask compatibility module (no Llama Stack installed)."


def install() -> None:
    """Add the finder at the end of ``sys.meta_path``, once."""
    if not any(isinstance(f, CompatFinder) for f in sys.meta_path):
        sys.meta_path.append(CompatFinder())


# -- a real Llama Stack ---------------------------------------------------------


def llama_stack_installed() -> bool:
    """Whether a real ``llama_stack``, not the finder, answers its imports."""
    try:
        spec = importlib.util.find_spec("llama_stack")
    except (ImportError, ValueError):
        return False
    return spec is not None and not isinstance(spec.loader, CompatFinder)


def _installed() -> str:
    try:
        version = metadata.version("llama-stack")
    except metadata.PackageNotFoundError:
        version = "(version unknown)"
    spec = importlib.util.find_spec("llama_stack")
    return f"llama-stack {version} ({spec.origin if spec else 'llama_stack'})"


def llama_stack_api() -> Any:
    """The installed Llama Stack's ``Api`` enum, or ``None`` without one."""
    if not llama_stack_installed():
        return None
    return import_module("llama_stack.providers.datatypes").Api


def register_llama_stack_apis(names: list[str]) -> list[str]:
    """Give an installed Llama Stack's ``Api`` a member for each name; the problems.

    Llama Stack 0.2.16's ``Api.add`` puts the member in the Enum's member map
    only; since Python 3.12 ``Api.<name>`` no longer looks there, so the member
    is also set as a class attribute (``type.__setattr__``: Enum refuses to
    assign a name it already holds as a member).
    """
    if not names:
        return []
    try:
        api = llama_stack_api()
    except ImportProblem as exc:
        return [
            f"{_installed()}: {exc}; repair that install, or uninstall it "
            "(pip uninstall llama-stack) and stackflask answers its imports"
        ]
    if api is None:
        return []
    add = getattr(api, "add", None)
    if not callable(add):
        return [
            f"{_installed()}: its Api cannot register external APIs (it has no Api.add): "
            "upgrade it (pip install 'llama-stack>=0.2.16'), or uninstall it "
            "(pip uninstall llama-stack) and stackflask answers its imports"
        ]
    problems = []
    for name in names:
        member = add(name)
        current = inspect.getattr_static(api, member.name, None)
        if current is None:
            type.__setattr__(api, member.name, member)
        elif current is not member:
            problems.append(
                f"API {name!r} cannot be registered with Llama Stack's Api: "
                f"Api.{member.name} is already {current!r}; rename the API"
            )
    return problems


def explain_api_error(exc: BaseException | None) -> str:
    """Why ``Api.<name>`` failed on an installed Llama Stack's ``Api``, or ``""``."""
    if not isinstance(exc, AttributeError) or not llama_stack_installed():
        return ""
    try:
        api = llama_stack_api()
    except ImportProblem:
        return ""
    name = _missing_member(exc, api)
    if name is None:
        return ""
    known = ", ".join(dict.fromkeys(member.name for member in api))
    return (
        f" (Llama Stack's Api has no member {name!r}; it has: {known}. "
        "Api.<name> exists for each API that an apis.d spec names)"
    )


def _missing_member(exc: AttributeError, api: Any) -> str | None:
    """The name looked up on ``api`` that raised ``exc``; ``None`` if not ``api``'s."""
    if getattr(exc, "obj", None) is api:  # Python 3.12 and later: type's own lookup
        return exc.name
    # Before 3.12, Enum's metaclass raises from __getattr__(cls, name), without ``obj``.
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or tb.tb_frame.f_locals.get("cls") is not api:
        return None
    return str(tb.tb_frame.f_locals.get("name"))


def access_policy(rules: list[Any], where: list[Any]) -> list[Any]:
    """The access rules for providers that take ``policy``: as given, or as an
    installed Llama Stack's ``AccessRule`` models.

    ``where`` is the rules' path in the run config; an invalid rule is a
    :class:`StartupError` whose lines start with that path.
    """
    if not rules or not llama_stack_installed():
        return list(rules)
    try:
        rules_module = import_module("llama_stack.distribution.access_control.datatypes")
    except ImportProblem as exc:
        raise StartupError([f"{field_path(where)}: {exc}"]) from None
    problems: list[str] = []
    parsed: list[Any] = []
    for i, rule in enumerate(rules):
        try:
            parsed.append(rules_module.AccessRule.model_validate(rule))
        except ValueError as exc:  # pydantic's ValidationError lists each problem
            errors = getattr(exc, "errors", None)
            details = errors() if callable(errors) else [{"loc": (), "msg": str(exc)}]
            problems += [
                f"{field_path([*where, i, *item.get('loc', ())])}: {item.get('msg', exc)}"
                for item in details
            ]
    if problems:
        raise StartupError(problems)
    return parsed
