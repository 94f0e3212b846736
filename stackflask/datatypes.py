"""API names and provider specs: the vocabulary API and provider packages use.

Pure data, no Flask. :class:`Api` is an open enumeration: each API registered
from an ``apis.d`` spec becomes a member, reachable as ``Api.<name>`` and
``Api("<name>")``. Members are interned names only; everything loaded for an
API lives on the app that loaded it.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

API_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _ApiType(type):
    _members: dict[str, Api]

    def __getattr__(cls, name: str) -> Api:
        try:
            return cls._members[name]
        except KeyError:
            known = ", ".join(cls._members) or "none"
            raise AttributeError(
                f"Api has no member {name!r} (registered: {known})"
            ) from None

    def __call__(cls, value: object) -> Api:
        name = getattr(value, "value", value)
        try:
            return cls._members[name]  # type: ignore[index]
        except (KeyError, TypeError):
            raise ValueError(f"{value!r} is not a registered Api") from None

    def __iter__(cls) -> Iterator[Api]:
        return iter(list(cls._members.values()))

    def __len__(cls) -> int:
        return len(cls._members)

    def __contains__(cls, value: object) -> bool:
        return getattr(value, "value", value) in cls._members


class Api(metaclass=_ApiType):
    """The name of an API, behaving like an Enum member.

    ``Api.weather.name == Api.weather.value == "weather"``, members compare equal
    to their name string and hash like it, so ``deps[Api.weather]`` and
    ``deps["weather"]`` find the same entry.
    """

    __slots__ = ("_name",)
    _name: str
    _members: ClassVar[dict[str, Api]] = {}

    if TYPE_CHECKING:
        # Api("<name>") is _ApiType.__call__, a lookup of a registered member.
        def __init__(self, value: object) -> None: ...

    @property
    def name(self) -> str:
        return self._name

    @property
    def value(self) -> str:
        return self._name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Api):
            return other._name == self._name
        return getattr(other, "value", other) == self._name

    def __hash__(self) -> int:
        return hash(self._name)

    def __repr__(self) -> str:
        return f"<Api.{self._name}: {self._name!r}>"

    def __str__(self) -> str:
        return self._name

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Api, (self._name,))


def check_api_name(name: object) -> str | None:
    """Why ``name`` cannot name an API (and a Blueprint), or ``None`` if it can."""
    if not isinstance(name, str) or not API_NAME.match(name):
        return (
            f"{name!r} is not a valid API name "
            "(use letters, digits and underscores, not starting with a digit)"
        )
    if keyword.iskeyword(name) or name.startswith("_") or hasattr(Api, name):
        if name not in Api._members:
            return f"{name!r} is reserved and cannot name an API"
    return None


def register_api(name: str) -> Api:
    """The member for ``name``, created on first registration."""
    problem = check_api_name(name)
    if problem:
        raise ValueError(problem)
    member = Api._members.get(name)
    if member is None:
        member = object.__new__(Api)
        member._name = name
        Api._members[name] = member
    return member


def api_name(value: object) -> str:
    """The name of an API given as an :class:`Api`, a foreign Enum member or a str."""
    return str(getattr(value, "value", value))


@dataclass(kw_only=True)
class AdapterSpec:
    """The adapter of a remote provider: where its code and config class live."""

    adapter_type: str
    module: str = ""
    pip_packages: list[str] = field(default_factory=list)
    config_class: str = ""
    provider_data_validator: str | None = None
    description: str | None = None


@dataclass(kw_only=True)
class ProviderSpec:
    """What a provider type is: its API, module, config class and dependencies."""

    api: Any
    provider_type: str = ""
    config_class: str = ""
    module: str = ""
    pip_packages: list[str] = field(default_factory=list)
    api_dependencies: list[Any] = field(default_factory=list)
    optional_api_dependencies: list[Any] = field(default_factory=list)
    provider_data_validator: str | None = None
    deprecation_warning: str | None = None
    deprecation_error: str | None = None
    description: str | None = None

    #: ``"inline"`` or ``"remote"``: which factory the provider module exposes.
    kind: ClassVar[str] = "inline"


@dataclass(kw_only=True)
class InlineProviderSpec(ProviderSpec):
    """A provider that runs in the server process; built by ``get_provider_impl``."""

    container_image: str | None = None


@dataclass(kw_only=True)
class RemoteProviderSpec(ProviderSpec):
    """A provider that adapts a remote service; built by ``get_adapter_impl``.

    ``provider_type`` defaults to ``remote::<adapter_type>``; ``module``,
    ``config_class``, ``pip_packages`` and ``provider_data_validator`` fall back to
    the adapter's.
    """

    adapter: AdapterSpec | None = None
    kind: ClassVar[str] = "remote"

    def __post_init__(self) -> None:
        adapter = self.adapter
        if adapter is None:
            return
        if not self.provider_type:
            self.provider_type = f"remote::{adapter.adapter_type}"
        self.module = self.module or adapter.module
        self.config_class = self.config_class or adapter.config_class
        self.pip_packages = self.pip_packages or list(adapter.pip_packages)
        self.provider_data_validator = (
            self.provider_data_validator or adapter.provider_data_validator
        )


def remote_provider_spec(api: Any, adapter: AdapterSpec, **kwargs: Any) -> RemoteProviderSpec:
    """Llama Stack's shorthand for a :class:`RemoteProviderSpec`."""
    return RemoteProviderSpec(api=api, adapter=adapter, **kwargs)
