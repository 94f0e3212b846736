"""One Flask Blueprint per external API: bind, call, respond or stream.

Startup builds, for each webmethod, a :class:`Binder` from the Protocol method's
signature and type hints and a view around the provider's method; request time
runs them. Parameters come from the path, the query string (GET and DELETE
scalars and lists of scalars) or the JSON body, as the wire contract says.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import enum
import inspect
import json
import logging
import types
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, g, request
from marshmallow import ValidationError, fields

from . import loop
from .context import PROVIDER_DATA_HEADER, request_context
from .errors import (
    INTERNAL_ERROR,
    bad_request,
    dumps,
    error_response,
    json_response,
    status_for,
)
from .fields import (
    MISSING,
    FieldFactory,
    UnsupportedType,
    flatten_errors,
    parameter_schema,
)
from .registry import LoadedApi
from .resolver import ResolvedProvider
from .results import Checker, Mismatch, ResultSpec, describe, result_spec
from .webmethod import PLACEHOLDER, Endpoint

log = logging.getLogger("stackflask.request")

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_SCALARS = (str, int, float, bool, dt.datetime, dt.date)


@dataclass(frozen=True)
class Route:
    """A served webmethod, for listings and the route table."""

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


def protocol_parameters(func: Callable[..., Any]) -> list[inspect.Parameter]:
    """The Protocol method's parameters, without ``self`` whether declared or not."""
    params = list(inspect.signature(func).parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    return [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _is_query_scalar(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _is_query_scalar(typing.get_args(tp)[0])
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return bool(args) and all(_is_query_scalar(a) for a in args)
    return isinstance(tp, type) and (issubclass(tp, _SCALARS) or issubclass(tp, enum.Enum))


def _is_query_list(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _is_query_list(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        return len(members) == 1 and _is_query_list(members[0])
    args = typing.get_args(tp)
    return origin is list and len(args) == 1 and _is_query_scalar(args[0])


def _field_kwargs(param: inspect.Parameter) -> dict[str, Any]:
    if param.default is inspect.Parameter.empty:
        return {"required": True}
    default = param.default
    if isinstance(default, (list, dict, set)):
        return {"load_default": lambda: type(default)(default)}
    return {"load_default": default}


@dataclass(frozen=True)
class MethodPlan:
    """What startup learned of one webmethod: how to bind it, how to check its result."""

    binder: Binder
    result: ResultSpec

    @classmethod
    def for_endpoint(cls, endpoint: Endpoint, factory: FieldFactory) -> MethodPlan:
        """Raises :class:`UnsupportedType` or ``NameError`` naming the parameter or type."""
        hints = typing.get_type_hints(endpoint.func, include_extras=True)
        try:
            result = result_spec(hints.get("return", Any))
        except UnsupportedType as exc:
            raise UnsupportedType(f"return: unsupported type {exc}") from None
        return cls(Binder(endpoint, hints, factory), result)


class Binder:
    """Turns one request into the keyword arguments of one webmethod."""

    def __init__(self, endpoint: Endpoint, hints: dict[str, Any], factory: FieldFactory) -> None:
        record = endpoint.record
        params = protocol_parameters(endpoint.func)
        names = {p.name for p in params}
        for placeholder in record.path_params:
            if placeholder not in names:
                raise UnsupportedType(
                    f"route {record.route!r} names {{{placeholder}}}, which is not a parameter"
                )
        self.path: list[tuple[str, fields.Field]] = []
        self.query: list[tuple[str, fields.Field, bool]] = []
        body: dict[str, fields.Field] = {}
        for param in params:
            hint = hints.get(param.name, Any)
            try:
                field = factory.field(hint, **_field_kwargs(param))
            except UnsupportedType as exc:
                raise UnsupportedType(f"parameter {param.name!r}: unsupported type {exc}") from None
            if param.name in record.path_params:
                self.path.append((param.name, field))
            elif record.method in BODY_METHODS:
                body[param.name] = field
            elif _is_query_scalar(hint):
                self.query.append((param.name, field, False))
            elif _is_query_list(hint):
                self.query.append((param.name, field, True))
            else:
                body[param.name] = field
        self.body = parameter_schema(body, f"{endpoint.name}Body") if body else None

    def bind(self, path_values: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Keyword arguments and every problem found; problems empty means valid."""
        kwargs: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        for name, field in self.path:
            try:
                kwargs[name] = field.deserialize(path_values[name])
            except ValidationError as exc:
                errors += flatten_errors(exc.messages, ["path", name])
        if self.query:
            args = request.args
            for name, field, many in self.query:
                values = args.getlist(name)
                raw: Any = values if many else values[-1] if values else MISSING
                if many and not values:
                    raw = MISSING
                try:
                    value = field.deserialize(raw)
                except ValidationError as exc:
                    errors += flatten_errors(exc.messages, ["query", name])
                    continue
                if value is not MISSING:
                    kwargs[name] = value
        if self.body is not None:
            data, problem = _read_body()
            if problem:
                errors.append(problem)
            else:
                try:
                    kwargs.update(self.body.load(data))
                except ValidationError as exc:
                    errors += flatten_errors(exc.messages, ["body"])
        return kwargs, errors


def _read_body() -> tuple[dict[str, Any], dict[str, Any] | None]:
    raw = request.get_data(cache=False)
    if not raw.strip():
        return {}, None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        reason = getattr(exc, "msg", None) or str(exc)
        return {}, {"loc": ["body"], "msg": f"Invalid JSON: {reason}.", "type": "json_invalid"}
    except RecursionError:
        return {}, {"loc": ["body"], "msg": "Invalid JSON: nested too deeply.", "type": "json_invalid"}
    if not isinstance(data, dict):
        return {}, {
            "loc": ["body"],
            "msg": "The body must be a JSON object keyed by parameter name.",
            "type": "model_attributes_type",
        }
    return data, None


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
    binder, check, check_item = plan.binder, plan.result.check, plan.result.check_item
    is_delete = endpoint.record.method == "DELETE"
    is_coroutine = inspect.iscoroutinefunction(method)
    is_asyncgen = inspect.isasyncgenfunction(method)

    def call(kwargs: dict[str, Any]) -> Any:
        if is_coroutine:
            return loop.run(method(**kwargs), timeout, where)
        result = method(**kwargs)
        if not is_asyncgen and inspect.isawaitable(result):
            return loop.run(result, timeout, where)
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
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return error_response(exc, where)
        if isinstance(result, AsyncIterator):
            return stream(result, where, check_item, context, timeout)
        mismatch = check(result)
        if mismatch is not None:
            return invalid_result(where, mismatch)
        if result is None and is_delete:
            return Response(status=204)
        try:
            return json_response(result)
        except (TypeError, ValueError) as exc:
            return error_response(RuntimeError(f"result cannot be sent as JSON: {exc}"), where)

    view.__name__ = endpoint.name
    view.__doc__ = endpoint.func.__doc__
    return view


def invalid_result(where: str, mismatch: Mismatch, item: str = "") -> Response:
    """The 500 for a result that does not match its annotation, logged with the field."""
    log.error(
        "%s returned a%s value that does not match its return type: %s",
        where, item, describe(mismatch),
    )
    return json_response({"detail": INTERNAL_ERROR}, 500)


def stream(
    iterator: AsyncIterator[Any],
    where: str,
    check_item: Checker,
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
        loop.close_iterator(iterator)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return error_response(exc, where)
    mismatch = check_item(first)
    if mismatch is not None:
        loop.close_iterator(iterator)
        return invalid_result(where, mismatch, " stream item")

    def events() -> Iterator[bytes]:
        try:
            item = first
            while True:
                yield f"data: {dumps(item)}\n\n".encode()
                try:
                    item = context.run(loop.next_item, iterator, timeout, where)
                except StopAsyncIteration:
                    return
                mismatch = check_item(item)
                if mismatch is not None:
                    invalid_result(where, mismatch, " stream item")
                    yield _error_event(500, INTERNAL_ERROR)
                    return
        except GeneratorExit:
            raise
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            status, detail = status_for(exc)
            if status == 500:
                log.error("%s failed mid-stream", where, exc_info=exc)
            yield _error_event(status, detail)
        finally:
            loop.close_iterator(iterator)

    return Response(
        events(),
        200,
        {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        mimetype="text/event-stream",
    )


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
            loaded.spec.name, endpoint, plans[endpoint.name], method,
            provider.spec.provider_data_validator, timeout,
        )
        bp.add_url_rule(rule, endpoint.name, view, methods=[endpoint.record.method])
        routes.append(
            Route(
                api=loaded.spec.name,
                name=endpoint.name,
                method=endpoint.record.method,
                path="/v1" + endpoint.record.route,
                provider_type=provider.provider_type,
                endpoint=endpoint,
                plan=plans[endpoint.name],
            )
        )
    return bp, routes
