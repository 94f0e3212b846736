"""The typed client: a Protocol's webmethods called on a stackflask server over HTTP.

Request time, on the caller's side; needs ``httpx`` (the ``client`` extra). A
client class is built once per Protocol from its webmethods, binding each
parameter the way the server does (:class:`~stackflask.binding.Binder`'s path,
query, body and form lists), so the request is the mirror image of what the server
reads. Answers are decoded into the annotated return type with the server's
request-side :class:`~stackflask.hints.FieldFactory`, streams item by item.
Error answers raise the exception the wire contract maps from (a
:class:`~stackflask.remote_errors.RemoteError` subclass carrying the status,
detail and request id).

The calls themselves (requests, answers, events) are
:mod:`stackflask.remote_calls`'s. The sync wrapper runs each call on the
process's one event loop (:mod:`stackflask.loop`), as the house keeps async in
one home.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from functools import cache
from types import TracebackType
from typing import Any, TypeVar

from . import loop
from .remote_calls import Connection, EventStream, RemoteMethod, call_remote
from .remote_errors import (
    RemoteError,
    RemoteNotFoundError,
    RemoteNotImplementedError,
    RemotePermissionError,
    RemoteTimeoutError,
    RemoteUnavailableError,
    RemoteValueError,
    ResponseMismatch,
    error_for,
)
from .webmethod import collect_webmethods

__all__ = [
    "AsyncClient",
    "Connection",
    "EventStream",
    "RemoteError",
    "RemoteNotFoundError",
    "RemoteNotImplementedError",
    "RemotePermissionError",
    "RemoteTimeoutError",
    "RemoteUnavailableError",
    "RemoteValueError",
    "ResponseMismatch",
    "SyncClient",
    "SyncStream",
    "client_class",
    "connect",
    "connect_sync",
    "error_for",
]

P = TypeVar("P")



# -- client classes, one per Protocol ----------------------------------------


class AsyncClient:
    """An object implementing a Protocol by calling a server over HTTP.

    ``AsyncClient(WeatherProvider, "http://127.0.0.1:8321")`` is an instance of
    a class built (once) for the Protocol, with an ``async def`` for each
    webmethod; use it as an async context manager, or ``await aclose()``, to
    close its connection pool. Options: ``token`` (sent as a bearer token),
    ``provider_data`` (the ``X-LlamaStack-Provider-Data`` header), ``headers``,
    ``timeout`` (seconds for a connection, an answer or the next stream event).
    """

    _protocol: type
    _methods: tuple[RemoteMethod, ...] = ()

    def __new__(cls, protocol: type, *args: Any, **kwargs: Any) -> AsyncClient:
        if cls is AsyncClient:
            cls = client_class(protocol)
        return object.__new__(cls)

    def __init__(
        self,
        protocol: type,
        base_url: str | None = None,
        *,
        connection: Connection | None = None,
        **options: Any,
    ) -> None:
        if connection is None:
            if base_url is None:
                raise TypeError("AsyncClient needs a base_url or a connection")
            connection = Connection(base_url, **options)
        self._connection = connection

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._connection.address}>"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._connection.aclose()

    async def __aenter__(self: P) -> P:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _method_function(remote: RemoteMethod) -> Callable[..., Any]:
    if remote.asyncgen:

        async def stream_method(self: AsyncClient, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            result = await call_remote(self._connection, remote, remote.arguments(args, kwargs))
            if not isinstance(result, EventStream):
                raise self._connection.failure(
                    ResponseMismatch(502, f"{remote.where}: the server sent no stream")
                )
            try:
                async for item in result:
                    yield item
            finally:
                await result.aclose()

        function: Callable[..., Any] = stream_method
    else:

        async def method(self: AsyncClient, *args: Any, **kwargs: Any) -> Any:
            return await call_remote(self._connection, remote, remote.arguments(args, kwargs))

        function = method
    function.__name__ = remote.name
    function.__doc__ = remote.doc
    return function


@cache
def client_class(protocol: type) -> type[AsyncClient]:
    """The :class:`AsyncClient` subclass for ``protocol``: one method per webmethod
    (its first route). Raises ``TypeError`` for a type that cannot be sent."""
    methods: dict[str, RemoteMethod] = {}
    for endpoint in collect_webmethods(protocol):
        if endpoint.name not in methods:
            methods[endpoint.name] = RemoteMethod(protocol, endpoint)
    taken = [name for name in methods if hasattr(AsyncClient, name)]
    if taken:
        raise TypeError(f"{protocol.__name__}: webmethod names {', '.join(taken)} are the client's own")
    namespace: dict[str, Any] = {name: _method_function(m) for name, m in methods.items()}
    namespace.update(_protocol=protocol, _methods=tuple(methods.values()), __module__=__name__)
    name = f"{protocol.__name__}Client"
    for function in namespace.values():
        if inspect.isfunction(function):
            function.__qualname__ = f"{name}.{function.__name__}"
    return type(name, (AsyncClient,), namespace)


def connect(protocol: type[P], base_url: str, **options: Any) -> P:
    """An :class:`AsyncClient` for ``protocol`` at ``base_url``, typed as the Protocol."""
    return typing.cast(P, AsyncClient(protocol, base_url, **options))


# -- the sync wrapper --------------------------------------------------------


class SyncClient:
    """A client for scripts: each webmethod a plain function, run on the
    process's event loop; a stream is a plain iterator (``close()`` it to stop
    early). Use as a context manager, or call :meth:`close`."""

    def __init__(self, protocol: type, base_url: str, **options: Any) -> None:
        self._async = AsyncClient(protocol, base_url, **options)
        self._names = {m.name for m in self._async._methods}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._names:
            raise AttributeError(name)
        method = getattr(self._async, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if not inspect.isawaitable(result):
                return SyncStream(result)
            value = loop.run(result)
            return SyncStream(value) if isinstance(value, AsyncIterator) else value

        call.__name__ = name
        call.__doc__ = method.__doc__
        return call

    def close(self) -> None:
        loop.run(self._async.aclose())

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SyncStream(Iterator[Any]):
    """An async stream read from a plain thread, item by item, on the process's loop."""

    def __init__(self, stream: AsyncIterator[Any]) -> None:
        self._stream = stream

    def __next__(self) -> Any:
        try:
            return loop.next_item(self._stream)
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        loop.close_iterator(self._stream)

    def __enter__(self) -> SyncStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect_sync(protocol: type, base_url: str, **options: Any) -> SyncClient:
    """A :class:`SyncClient` for ``protocol`` at ``base_url`` (options as :class:`AsyncClient`)."""
    return SyncClient(protocol, base_url, **options)
