"""One Flask Blueprint per external API: bind, call, respond or stream.

Startup builds, for each webmethod route, a :class:`MethodPlan` (a
:class:`~stackflask.binding.Binder` and the result's checks) and a view around
the provider's method; request time runs them: bind the request, call the
provider on the loop, then send JSON, server-sent events or a raw response.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, g, request

from . import loop
from .binding import Binder
from .blocking import call_blocking
from .context import PROVIDER_DATA_HEADER, request_context
from .errors import bad_request, error_response
from .fields import UnsupportedType
from .hints import FieldFactory
from .registry import LoadedApi
from .resolver import ResolvedProvider
from .responses import send_raw
from .results import ResultMismatch, ResultSpec, result_spec
from .streaming import OpenStreams, invalid_result, stream
from .webmethod import PLACEHOLDER, Endpoint

if TYPE_CHECKING:
    from .metrics import Metrics
    from .tracing import Tracing

log = logging.getLogger("stackflask.request")

#: The provider data header's key in the WSGI environ (``request.headers``
#: finds the same value, at twice the cost).
_PROVIDER_DATA_KEY = "HTTP_" + PROVIDER_DATA_HEADER.upper().replace("-", "_")


@dataclass(frozen=True)
class Route:
    """A served webmethod route, for listings and the route table.

    ``name`` is the endpoint's key: the method's name, or ``name__2``... for
    the further routes of a method with stacked ``@webmethod`` records.
    """

    api: str
    name: str
    method: str
    path: str
    provider_type: str
    endpoint: Endpoint
    plan: MethodPlan


def flask_rule(route: str) -> str:
    """``/items/{id}/{rest:path}`` -> ``/items/<id>/<path:rest>``."""
    return PLACEHOLDER.sub(
        lambda m: f"<path:{m.group(1)}>" if m.group(2) else f"<{m.group(1)}>", route
    )


@dataclass(frozen=True)
class MethodPlan:
    """What startup learned of one webmethod: how to bind it, how to check its result."""

    binder: Binder
    result: ResultSpec

    @classmethod
    def for_endpoint(
        cls, endpoint: Endpoint, factory: FieldFactory, exact: FieldFactory
    ) -> MethodPlan:
        """Raises :class:`UnsupportedType` or ``NameError`` naming the parameter or type.

        ``factory`` builds the parameters' fields, ``exact`` the result's.
        """
        hints = typing.get_type_hints(endpoint.func, include_extras=True)
        try:
            result = result_spec(hints.get("return", Any), exact)
        except UnsupportedType as exc:
            raise UnsupportedType(f"return: unsupported type {exc}") from None
        return cls(Binder(endpoint, hints, factory), result)


def make_view(
    api: str,
    endpoint: Endpoint,
    plan: MethodPlan,
    provider: ResolvedProvider,
    streams: OpenStreams,
    timeout: float | None = None,
    tracing: Tracing | None = None,
    metrics: Metrics | None = None,
) -> Callable[..., Response]:
    """The Flask view for one webmethod served by one provider.

    The provider's method is looked up on each call, so a provider rebuilt
    after a fork serves at once. ``timeout`` bounds each wait for the provider
    (a result, or a stream item), plain ``def`` methods included. With
    ``tracing``, each call runs in a span of its own; with ``metrics``, its
    duration is observed.
    """
    where = f"{api}.{endpoint.name}"
    name = endpoint.name
    task_name = endpoint.record.descriptive_name or where
    validator = provider.spec.provider_data_validator
    binder, check, check_item = plan.binder, plan.result.check, plan.result.check_item
    raw = plan.result.raw
    is_delete = endpoint.record.method == "DELETE"
    sample = getattr(provider.impl, name)
    is_coroutine = inspect.iscoroutinefunction(sample)
    is_asyncgen = inspect.isasyncgenfunction(sample)

    def call(kwargs: dict[str, Any]) -> Any:
        method = getattr(provider.impl, name)
        if is_coroutine:
            return loop.run(method(**kwargs), timeout, task_name)
        if is_asyncgen:
            return method(**kwargs)
        result = call_blocking(partial(method, **kwargs), timeout)
        if inspect.isawaitable(result):
            return loop.run(result, timeout, task_name)
        return result

    if metrics is not None and not is_asyncgen:  # a stream's time is the stream's
        call = metrics.timed_call(call, api, name)

    if tracing is not None:
        call = tracing.traced_call(call, task_name, {
            "stackflask.api": api, "stackflask.method": name,
            "stackflask.provider_id": provider.provider_id,
            "stackflask.provider_type": provider.provider_type,
        })

    def view(**path_values: str) -> Response:
        kwargs, errors = binder.bind(path_values)
        if errors:
            return bad_request(errors)
        context = request_context(
            request.environ.get(_PROVIDER_DATA_KEY), validator, g.get("stackflask_principal")
        )
        try:
            result = context.run(call, kwargs)
        except BaseException as exc:  # SystemExit from a provider too: the server goes on
            return error_response(exc, where)
        if raw:
            response = send_raw(result, where, context, timeout)
            if response is None:
                return invalid_result(where, f"expected a response, got {type(result).__name__}")
            return response
        if isinstance(result, AsyncIterator):
            return stream(result, where, check_item, context, streams, timeout)
        try:
            text = check(result)
        except ResultMismatch as exc:
            return invalid_result(where, str(exc))
        if result is None and is_delete:
            return Response(status=204)
        return Response(text, 200, mimetype="application/json")

    view.__name__ = endpoint.key
    view.__doc__ = endpoint.func.__doc__
    return view


def build_blueprint(
    loaded: LoadedApi,
    provider: ResolvedProvider,
    plans: dict[str, MethodPlan],
    streams: OpenStreams,
    timeout: float | None = None,
    tracing: Tracing | None = None,
    metrics: Metrics | None = None,
) -> tuple[Blueprint, list[Route]]:
    """The Blueprint serving ``loaded``'s webmethods with ``provider``'s methods."""
    bp = Blueprint(loaded.spec.name, loaded.module.__name__, url_prefix="/v1")
    routes: list[Route] = []
    for endpoint in loaded.endpoints:
        rule = flask_rule(endpoint.record.route)
        view = make_view(
            loaded.spec.name, endpoint, plans[endpoint.key], provider, streams, timeout,
            tracing, metrics,
        )
        bp.add_url_rule(rule, endpoint.key, view, methods=[endpoint.record.method])
        routes.append(
            Route(
                api=loaded.spec.name,
                name=endpoint.key,
                method=endpoint.record.method,
                path="/v1" + endpoint.record.route,
                provider_type=provider.provider_type,
                endpoint=endpoint,
                plan=plans[endpoint.key],
            )
        )
    return bp, routes
