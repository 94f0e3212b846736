"""One Flask Blueprint per external API: bind, call, respond or stream.

Startup builds, for each webmethod route, a :class:`MethodPlan` (a
:class:`~stackflask.binding.Binder` and the result's checks) and a view around
the provider's method; request time runs them: bind the request, call the
provider on the loop, then send JSON, server-sent events or a raw response.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, g, request

from . import loop
from .binding import Binder
from .context import PROVIDER_DATA_HEADER, request_context
from .errors import (
    INTERNAL_ERROR,
    bad_request,
    dumps,
    error_response,
    json_response,
    status_for,
)
from .fields import UnsupportedType
from .hints import FieldFactory
from .registry import LoadedApi
from .resolver import ResolvedProvider
from .responses import send_raw
from .results import ResultMismatch, ResultSpec, result_spec
from .webmethod import PLACEHOLDER, Endpoint

log = logging.getLogger("stackflask.request")


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
    method: Callable[..., Any],
    validator: str | None = None,
    timeout: float | None = None,
) -> Callable[..., Response]:
    """The Flask view for one webmethod served by one provider method.

    ``validator`` is the provider's ``provider_data_validator``, if any;
    ``timeout`` bounds each wait for the provider (a result, or a stream item).
    """
    where = f"{api}.{endpoint.name}"
    task_name = endpoint.record.descriptive_name or where
    binder, check, check_item = plan.binder, plan.result.check, plan.result.check_item
    raw = plan.result.raw
    is_delete = endpoint.record.method == "DELETE"
    is_coroutine = inspect.iscoroutinefunction(method)
    is_asyncgen = inspect.isasyncgenfunction(method)

    def call(kwargs: dict[str, Any]) -> Any:
        if is_coroutine:
            return loop.run(method(**kwargs), timeout, task_name)
        result = method(**kwargs)
        if not is_asyncgen and inspect.isawaitable(result):
            return loop.run(result, timeout, task_name)
        return result

    def view(**path_values: str) -> Response:
        kwargs, errors = binder.bind(path_values)
        if errors:
            return bad_request(errors)
        context = request_context(
            request.headers.get(PROVIDER_DATA_HEADER), validator, g.get("stackflask_principal")
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
            return stream(result, where, check_item, context, timeout)
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


def invalid_result(where: str, mismatch: str, item: str = "") -> Response:
    """The 500 for a result that does not match its annotation, logged with the field."""
    log.error(
        "%s returned a%s value that does not match its return type: %s", where, item, mismatch
    )
    return json_response({"detail": INTERNAL_ERROR}, 500)


def stream(
    iterator: AsyncIterator[Any],
    where: str,
    check_item: Callable[[Any], str],
    context: contextvars.Context,
    timeout: float | None = None,
) -> Response:
    """Server-sent events, one ``data:`` line per item, written as produced.

    An error before the first item is a plain error response; after it, one last
    ``{"error": ...}`` event ends the stream. The async generator is always
    closed on the loop, so its ``finally`` blocks run when a client leaves.
    Each item is computed in the request's ``context``.
    """
    try:
        first = context.run(loop.next_item, iterator, timeout, where)
    except StopAsyncIteration:
        loop.close_iterator(iterator)
        return Response(b"", 200, mimetype="text/event-stream")
    except BaseException as exc:
        _close_quietly(iterator)
        return error_response(exc, where)
    try:
        first_text = check_item(first)
    except ResultMismatch as exc:
        loop.close_iterator(iterator)
        return invalid_result(where, str(exc), " stream item")

    def events() -> Iterator[bytes]:
        try:
            text = first_text
            while True:
                yield f"data: {text}\n\n".encode()
                try:
                    item = context.run(loop.next_item, iterator, timeout, where)
                except StopAsyncIteration:
                    return
                try:
                    text = check_item(item)
                except ResultMismatch as exc:
                    invalid_result(where, str(exc), " stream item")
                    yield _error_event(500, INTERNAL_ERROR)
                    return
        except GeneratorExit:
            raise
        except BaseException as exc:
            status, detail = status_for(exc)
            if status == 500:
                log.error("%s failed mid-stream", where, exc_info=exc)
            yield _error_event(status, detail)
        finally:
            _close_quietly(iterator)

    return Response(
        events(),
        200,
        {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        mimetype="text/event-stream",
    )


def _close_quietly(iterator: AsyncIterator[Any]) -> None:
    """Close a stream's generator on the loop; a generator that fails to close
    (or a loop that is gone) is logged, never raised into the response."""
    try:
        loop.close_iterator(iterator)
    except BaseException:
        log.warning("closing a stream's generator failed", exc_info=True)


def _error_event(status: int, detail: str) -> bytes:
    return f"data: {dumps({'error': {'message': f'{status}: {detail}'}})}\n\n".encode()


def build_blueprint(
    loaded: LoadedApi,
    provider: ResolvedProvider,
    plans: dict[str, MethodPlan],
    timeout: float | None = None,
) -> tuple[Blueprint, list[Route]]:
    """The Blueprint serving ``loaded``'s webmethods with ``provider``'s methods."""
    bp = Blueprint(loaded.spec.name, loaded.module.__name__, url_prefix="/v1")
    routes: list[Route] = []
    for endpoint in loaded.endpoints:
        rule = flask_rule(endpoint.record.route)
        method = getattr(provider.impl, endpoint.name)
        view = make_view(
            loaded.spec.name, endpoint, plans[endpoint.key], method,
            provider.spec.provider_data_validator, timeout,
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
