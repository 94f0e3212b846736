"""One remote call of the typed client: the request the wire contract describes,
the answer or the events decoded into the method's types, the error mapped back.

Request time, on the caller's side; needs ``httpx``. :class:`Connection` is one
connection pool and the headers every call sends; :class:`RemoteMethod` is one
webmethod's binding, mirrored from the server's
(:class:`~stackflask.binding.Binder`'s path, query and body lists), and its
decoders (the server's request-side :class:`~stackflask.hints.FieldFactory`),
with a form's file parts from :mod:`stackflask.remote_uploads`;
:class:`EventStream` reads a stream item by item. :mod:`stackflask.client`
builds the client classes from these.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

try:
    import httpx
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise ModuleNotFoundError(
        "stackflask.client needs httpx; install it: pip install 'stackflask[client]'",
        name=exc.name,
    ) from exc

from marshmallow import ValidationError, fields

from .binding import Bound
from .blueprint import MethodPlan
from .context import PROVIDER_DATA_HEADER
from .errors import dumps, jsonable
from .fields import UnsupportedType, flatten_errors
from .hints import FieldFactory
from .remote_errors import (
    RemoteError,
    RemoteTimeoutError,
    RemoteUnavailableError,
    ResponseMismatch,
    error_for,
    without_credentials,
)
from .remote_uploads import FilePart, file_parts
from .webmethod import PLACEHOLDER, Endpoint

#: Seconds to wait for a connection, an answer, or the next event of a stream.
DEFAULT_TIMEOUT = 60.0

REQUEST_ID_HEADER = "X-Request-ID"
_ERROR_EVENT = re.compile(r"(\d{3}): (.*)\Z", re.DOTALL)


# -- one connection pool -----------------------------------------------------


class Connection:
    """One ``httpx.AsyncClient`` connection pool to one server, and the options
    every request carries: a bearer token, provider data, extra headers.

    :meth:`call_headers` (headers for one call) and :meth:`failure` (the
    exception to raise for a :class:`RemoteError`) are the hooks a subclass
    changes; the passthrough provider does.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        provider_data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.address = without_credentials(self.base_url)
        self.timeout = timeout
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        if provider_data is not None:
            sent[PROVIDER_DATA_HEADER] = json.dumps(dict(provider_data), separators=(",", ":"))
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers=sent, timeout=timeout, transport=transport
        )

    def call_headers(self) -> dict[str, str]:
        """Headers for one call, on top of the connection's."""
        return {}

    def failure(self, error: RemoteError) -> BaseException:
        """The exception raised for ``error``: by default, itself."""
        return error

    async def send(
        self,
        method: str,
        path: str,
        params: list[tuple[str, str]] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        stream: bool = False,
        data: dict[str, list[str]] | None = None,
        files: list[tuple[str, FilePart]] | None = None,
    ) -> httpx.Response:
        """Send a request; an answer of status 400 and up raises (see :meth:`failure`).

        ``data`` and ``files`` are a form's fields and file parts: sent as
        ``multipart/form-data`` (a form without files as a urlencoded one).
        With ``stream``, the body is left unread: the caller must ``aclose()`` it.
        """
        headers = self.call_headers()
        if content_type is not None:
            headers["Content-Type"] = content_type
        request = self.http.build_request(
            method, path, params=tuple(params or ()), content=content, headers=headers,
            data=data or None, files=files or None,
        )
        url = without_credentials(str(request.url))
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self.failure(self.transport_error(exc, url)) from None
        try:
            if response.status_code >= 400 or not stream:
                await response.aread()
        except httpx.HTTPError as exc:
            await response.aclose()
            raise self.failure(self.transport_error(exc, url)) from None
        if response.status_code >= 400:
            await response.aclose()
            raise self.failure(self._answer_error(response, url))
        return response

    def transport_error(self, exc: httpx.HTTPError, url: str) -> RemoteError:
        if isinstance(exc, httpx.TimeoutException):
            return RemoteTimeoutError(
                504, f"Operation timed out: no answer from {self.address} within {self.timeout} s",
                None, url,
            )
        return RemoteUnavailableError(
            503, f"Service unavailable: cannot reach {self.address} ({type(exc).__name__}: "
            f"{without_credentials(str(exc)) or 'no detail'})", None, url,
        )

    def _answer_error(self, response: httpx.Response, url: str) -> RemoteError:
        try:
            body = response.json()
        except ValueError:
            body = None
        detail: Any = response.text or response.reason_phrase
        if isinstance(body, dict) and "detail" in body:
            detail = body["detail"]
        elif isinstance(body, dict) and isinstance(body.get("error"), dict) and "detail" in body["error"]:
            detail = body["error"]["detail"]
        return error_for(response.status_code, detail, response.headers.get(REQUEST_ID_HEADER), url)

    async def get_json(self, path: str) -> Any:
        """``GET path`` (a built-in route such as ``/v1/health``) as JSON."""
        response = await self.send("GET", path)
        return response.json()

    async def aclose(self) -> None:
        await self.http.aclose()


# -- one webmethod's request and answer ---------------------------------------


class RemoteMethod:
    """How one webmethod is called: its request's parts, and its answer's decoders."""

    def __init__(self, protocol: type, endpoint: Endpoint) -> None:
        """Raises ``TypeError`` naming the method whose types cannot be sent."""
        self.name = endpoint.name
        self.where = f"{protocol.__name__}.{endpoint.name}"
        record = endpoint.record
        self.http_method = record.method
        self.route = record.route
        self.signature = inspect.signature(endpoint.func)
        self.asyncgen = inspect.isasyncgenfunction(endpoint.func)
        self.doc = endpoint.func.__doc__
        factory = FieldFactory()
        try:
            plan = MethodPlan.for_endpoint(endpoint, factory, FieldFactory(exact=True))
            self.plain = None if plan.result.plain is None else _decoder(factory, plan.result.plain)
            self.item = None if plan.result.item is None else _decoder(factory, plan.result.item)
        except (UnsupportedType, NameError) as exc:
            raise TypeError(f"{self.where}: {exc}") from None
        binder = plan.binder
        self.raw = plan.result.raw
        self.path: list[Bound] = binder.path
        self.query: list[Bound] = binder.query
        self.body: list[Bound] = binder.body_params
        self.form: list[Bound] = binder.form
        self.raw_body = binder.raw_body
        self.whole_path = {m.group(1) for m in PLACEHOLDER.finditer(record.route) if m.group(2)}

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments the caller gave, by name (defaults are the server's)."""
        bound = self.signature.bind(None, *args, **kwargs)
        return dict(list(bound.arguments.items())[1:])

    def request(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The :meth:`Connection.send` arguments for a call with ``arguments``."""
        path = self.route
        for bound in self.path:
            text = _text(arguments[bound.name])
            safe = "/" if bound.name in self.whole_path else ""
            path = re.sub(r"\{%s(:path)?\}" % bound.name, lambda _: quote(text, safe=safe), path)
        params: list[tuple[str, str]] = []
        for bound in self.query:
            value = arguments.get(bound.name)
            values = value if bound.many and isinstance(value, (list, tuple)) else [value]
            params += [(bound.key, _text(v)) for v in values if v is not None]
        request: dict[str, Any] = {"method": self.http_method, "path": "/v1" + path, "params": params}
        if self.raw_body is not None and self.raw_body in arguments:
            request["content"] = bytes(arguments[self.raw_body])
            request["content_type"] = "application/octet-stream"
        body = {b.key: arguments[b.name] for b in self.body if b.name in arguments}
        if body or (self.body and self.http_method in ("POST", "PUT", "PATCH")):
            request["content"] = dumps(body).encode()
            request["content_type"] = "application/json"
        if self.form:
            request["data"], request["files"] = self._form(arguments)
        return request

    def _form(self, arguments: dict[str, Any]) -> tuple[dict[str, list[str]], list[tuple[str, FilePart]]]:
        """The form's fields and file parts, as the server's binder reads them:
        a list of scalars as repeated fields, other structured values as JSON text."""
        data: dict[str, list[str]] = {}
        files: list[tuple[str, FilePart]] = []
        for bound in self.form:
            if bound.name not in arguments:
                continue
            value = arguments[bound.name]
            if bound.source == "file":
                where = f"{self.where}: parameter {bound.name!r}"
                files += [(bound.key, part) for part in file_parts(value, bound.many, where)]
            elif bound.many:
                values = value if isinstance(value, (list, tuple)) else [value]
                data[bound.key] = [_text(v) for v in values if v is not None]
            elif bound.json or isinstance(value, (dict, list)):
                data[bound.key] = [dumps(value)]
            elif value is not None:
                data[bound.key] = [_text(value)]
        return data, files

    def decode(self, decoder: fields.Field | None, data: Any, what: str = "") -> Any:
        """``data`` as the annotated type. Raises :class:`ResponseMismatch`."""
        if decoder is None:
            raise ResponseMismatch(502, f"{self.where}: the server sent a stream where none is declared")
        try:
            return decoder.deserialize(data)
        except ValidationError as exc:
            problem = flatten_errors(exc.messages, [])[0]
            field = ".".join(str(p) for p in problem["loc"])
            raise ResponseMismatch(
                502,
                f"{self.where}: the server's {what or 'answer'} does not match the return type: "
                f"{field + ': ' if field else ''}{problem['msg']}",
            ) from None


def _decoder(factory: FieldFactory, hint: Any) -> fields.Field:
    origin = typing.get_origin(hint)
    nullable = hint in (None, type(None)) or (
        origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    )
    return factory.field(hint, required=True, allow_none=nullable)


def _text(value: Any) -> str:
    """A scalar as the server reads it from a path or query string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    converted = jsonable(value) if not isinstance(value, (int, float)) else value
    return str(converted)


class EventStream(AsyncIterator[Any]):
    """A server-sent event stream, decoded item by item.

    ``aclose()`` (or leaving ``async with``) closes the connection; so does
    reaching the end, or an error event, which raises the exception it maps to.
    """

    def __init__(self, response: httpx.Response, method: RemoteMethod, connection: Connection) -> None:
        self._response = response
        self._method = method
        self._connection = connection
        self._lines = response.aiter_lines()
        self._closed = False

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Any:
        if self._closed:
            raise StopAsyncIteration
        data: list[str] = []
        try:
            while True:
                try:
                    line = await self._lines.__anext__()
                except StopAsyncIteration:
                    if not data:
                        raise
                    line = ""
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif not line and data:
                    return self._item("\n".join(data))
        except StopAsyncIteration:
            await self.aclose()
            raise
        except httpx.HTTPError as exc:
            await self.aclose()
            raise self._connection.failure(
                self._connection.transport_error(exc, without_credentials(str(self._response.url)))
            ) from None
        except BaseException:
            await self.aclose()
            raise

    def _item(self, text: str) -> Any:
        try:
            value = json.loads(text)
        except ValueError:
            raise ResponseMismatch(502, f"{self._method.where}: a stream event is not JSON") from None
        error = value.get("error") if isinstance(value, dict) and len(value) == 1 else None
        match = _ERROR_EVENT.match(error.get("message", "")) if isinstance(error, dict) else None
        if match:
            request_id = self._response.headers.get(REQUEST_ID_HEADER)
            status, detail = int(match.group(1)), match.group(2)
            url = without_credentials(str(self._response.url))
            raise self._connection.failure(error_for(status, detail, request_id, url))
        try:
            return self._method.decode(self._method.item, value, "stream item")
        except ResponseMismatch as exc:
            raise self._connection.failure(exc) from None

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._response.aclose()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def call_remote(connection: Connection, method: RemoteMethod, arguments: dict[str, Any]) -> Any:
    """Call ``method`` on the server: its decoded answer, or an :class:`EventStream`."""
    request = method.request(arguments)
    response = await connection.send(**request, stream=True)
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return EventStream(response, method, connection)
    try:
        await response.aread()
    except httpx.HTTPError as exc:
        url = without_credentials(str(response.url))
        raise connection.failure(connection.transport_error(exc, url)) from None
    finally:
        await response.aclose()
    if method.raw:
        return response.content
    if response.status_code == 204 or not response.content:
        data = None
    else:
        try:
            data = response.json()
        except ValueError:
            raise connection.failure(ResponseMismatch(502, f"{method.where}: the answer is not JSON")) from None
    try:
        return method.decode(method.plain, data)
    except ResponseMismatch as exc:
        raise connection.failure(exc) from None


