"""``@webmethod``: the record an API author puts on a Protocol method.

Decoration time only. The decorator validates its arguments, stores one frozen
:class:`WebMethod` on the function as ``__webmethod__`` (the attribute Llama Stack
uses, so records made by a real ``llama_stack`` are read the same way) and returns
the function unchanged. :func:`collect_webmethods` reads them back from a Protocol.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

#: ``{name}`` or ``{name:path}`` in a route.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(path))?\}")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class WebMethod:
    """How one Protocol method is served: its route under ``/v1`` and HTTP method."""

    route: str
    method: str = "POST"
    public: bool = False
    descriptive_name: str | None = None
    required_scope: str | None = None

    @property
    def path_params(self) -> tuple[str, ...]:
        """Names of the route's ``{placeholders}``, in order."""
        return tuple(m.group(1) for m in PLACEHOLDER.finditer(self.route))


def normalize_route(route: str) -> str:
    """Give a route its leading slash, as the server serves it under ``/v1``."""
    return route if route.startswith("/") else "/" + route


def check_route(route: object, method: object) -> tuple[str, str]:
    """Validate a route and method; return them normalized. Raises ``ValueError``."""
    if not isinstance(route, str) or not route.strip("/"):
        raise ValueError(f"route must be a non-empty string, got {route!r}")
    if method is None:
        method = "POST"
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        raise ValueError(
            f"method {method!r} is not one of {', '.join(HTTP_METHODS)}"
        )
    route = normalize_route(route)
    leftover = PLACEHOLDER.sub("", route)
    if "{" in leftover or "}" in leftover:
        raise ValueError(
            f"route {route!r} has a malformed placeholder; use {{name}} or {{name:path}}"
        )
    names = [m.group(1) for m in PLACEHOLDER.finditer(route)]
    if len(names) != len(set(names)):
        raise ValueError(f"route {route!r} names a placeholder twice")
    return route, method.upper()


def webmethod(
    route: str | None = None,
    method: str | None = None,
    *,
    public: bool = False,
    descriptive_name: str | None = None,
    required_scope: str | None = None,
    **_ignored: Any,
) -> Callable[[F], F]:
    """Mark a Protocol method as served at ``/v1`` + ``route`` with ``method``.

    ``method`` defaults to ``POST`` and may be given in any case. Other keyword
    arguments that Llama Stack's decorator takes (``request_examples``,
    ``experimental``, ...) are accepted and ignored, so packages written for it
    load unchanged.
    """
    try:
        norm_route, norm_method = check_route(route, method)
    except ValueError as exc:
        # The function is not known yet: name the decorator's line instead.
        caller = sys._getframe(1)
        where = f"{os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}"
        raise ValueError(f"@webmethod at {where}: {exc}") from None
    record = WebMethod(
        route=norm_route,
        method=norm_method,
        public=public,
        descriptive_name=descriptive_name,
        required_scope=required_scope,
    )

    def mark(func: F) -> F:
        func.__webmethod__ = record  # type: ignore[attr-defined]
        return func

    return mark


def read_record(func: object) -> WebMethod | None:
    """The :class:`WebMethod` of ``func``, whoever made it; ``None`` if unmarked.

    Records from a real ``llama_stack`` are read by their ``route`` and ``method``
    attributes. Raises ``ValueError`` for a record with a bad route or method.
    """
    record = getattr(func, "__webmethod__", None)
    if record is None:
        records = getattr(func, "__webmethods__", None)
        if not records:
            return None
        record = records[0]
    if isinstance(record, WebMethod):
        return record
    route, method = check_route(getattr(record, "route", None), getattr(record, "method", None))
    return WebMethod(
        route=route,
        method=method,
        public=bool(getattr(record, "public", False)),
        descriptive_name=getattr(record, "descriptive_name", None),
        required_scope=getattr(record, "required_scope", None),
    )


@dataclass(frozen=True)
class Endpoint:
    """One webmethod of a Protocol: its name, the Protocol's function and record."""

    name: str
    func: Callable[..., Any]
    record: WebMethod


def collect_webmethods(protocol: type) -> list[Endpoint]:
    """Every webmethod of ``protocol`` and its bases, in definition order.

    Raises ``ValueError`` naming the method whose record is malformed.
    """
    found: dict[str, Endpoint] = {}
    for klass in reversed(protocol.__mro__):
        if klass is object or klass.__module__ == "typing":
            continue
        for name, value in vars(klass).items():
            func = inspect.unwrap(value) if callable(value) else None
            if func is None:
                continue
            try:
                record = read_record(func)
            except ValueError as exc:
                raise ValueError(f"{klass.__name__}.{name}: {exc}") from None
            if record is not None:
                found[name] = Endpoint(name, func, record)
            else:
                found.pop(name, None)
    return list(found.values())
