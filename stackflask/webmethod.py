"""``@webmethod``: the record an API author puts on a Protocol method.

Decoration time only. The decorator validates its arguments, adds one frozen
:class:`WebMethod` to the function's ``__webmethods__`` list (stacked decorators
give a method several routes), sets ``__webmethod__`` (the attribute Llama Stack
uses, so records made by a real ``llama_stack`` are read the same way) and
returns the function unchanged. :func:`collect_webmethods` reads them back.
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
    raw_bytes_request_body: bool = False
    request_examples: tuple[Any, ...] | None = None
    response_examples: tuple[Any, ...] | None = None
    experimental: bool = False

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
    raw_bytes_request_body: bool = False,
    request_examples: list[Any] | None = None,
    response_examples: list[Any] | None = None,
    experimental: bool = False,
    **_ignored: Any,
) -> Callable[[F], F]:
    """Mark a Protocol method as served at ``/v1`` + ``route`` with ``method``.

    ``method`` defaults to ``POST`` and may be given in any case. Stack several
    to serve one method at several routes. ``public`` routes need no token;
    ``raw_bytes_request_body`` hands the method's one body parameter the raw
    request body; the examples and ``experimental`` go into OpenAPI. Other
    keyword arguments that later Llama Stack releases take are accepted and
    ignored, so packages written for them load unchanged.
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
        public=bool(public),
        descriptive_name=descriptive_name,
        required_scope=required_scope,
        raw_bytes_request_body=bool(raw_bytes_request_body),
        request_examples=_examples(request_examples),
        response_examples=_examples(response_examples),
        experimental=bool(experimental),
    )

    def mark(func: F) -> F:
        # Decorators apply bottom-up; keep the list in reading order, top first.
        func.__webmethods__ = [record, *read_records(func)]  # type: ignore[attr-defined]
        func.__webmethod__ = record  # type: ignore[attr-defined]
        return func

    return mark


def _examples(value: Any) -> tuple[Any, ...] | None:
    return None if value is None else tuple(value)


def _convert(record: object) -> WebMethod:
    if isinstance(record, WebMethod):
        return record
    route, method = check_route(getattr(record, "route", None), getattr(record, "method", None))
    return WebMethod(
        route=route,
        method=method,
        public=bool(getattr(record, "public", False)),
        descriptive_name=getattr(record, "descriptive_name", None),
        required_scope=getattr(record, "required_scope", None),
        raw_bytes_request_body=bool(getattr(record, "raw_bytes_request_body", False)),
        request_examples=_examples(getattr(record, "request_examples", None)),
        response_examples=_examples(getattr(record, "response_examples", None)),
        experimental=bool(getattr(record, "experimental", False)),
    )


def read_records(func: object) -> list[WebMethod]:
    """Every :class:`WebMethod` on ``func``, whoever made them; empty if unmarked.

    Reads the ``__webmethods__`` list and the ``__webmethod__`` record (when it
    is not already in the list). Records from a real ``llama_stack`` are read by
    their attributes. Raises ``ValueError`` for a record with a bad route or method.
    """
    records = list(getattr(func, "__webmethods__", None) or ())
    single = getattr(func, "__webmethod__", None)
    if single is not None and not any(r is single for r in records):
        records.append(single)
    return [_convert(r) for r in records]


@dataclass(frozen=True)
class Endpoint:
    """One route of a Protocol method: the method's name, function and record.

    ``key`` tells apart the routes of one method (its name, then ``name__2``...),
    for Flask endpoint names and OpenAPI operation ids.
    """

    name: str
    func: Callable[..., Any]
    record: WebMethod
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.name)


def collect_webmethods(protocol: type) -> list[Endpoint]:
    """Every route of every webmethod of ``protocol`` and its bases, in
    definition order.

    Raises ``ValueError`` naming the method whose record is malformed.
    """
    found: dict[str, list[Endpoint]] = {}
    for klass in reversed(protocol.__mro__):
        if klass is object or klass.__module__ == "typing":
            continue
        for name, value in vars(klass).items():
            func = inspect.unwrap(value) if callable(value) else None
            if func is None:
                continue
            try:
                records = read_records(func)
            except ValueError as exc:
                raise ValueError(f"{klass.__name__}.{name}: {exc}") from None
            if records:
                found[name] = [
                    Endpoint(name, func, record, name if i == 0 else f"{name}__{i + 1}")
                    for i, record in enumerate(records)
                ]
            else:
                found.pop(name, None)
    return [endpoint for endpoints in found.values() for endpoint in endpoints]
