"""What a server's error answers raise on the client's side.

Request time, on the caller's side; pure (no Flask, no httpx). Each status maps
to a :class:`RemoteError` subclass that is also the built-in exception the wire
contract maps to that status (``ValueError`` for 400...), so code written
against a provider catches the same exceptions when it calls a server.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class RemoteError(Exception):
    """An error answer of the server (or no answer at all).

    ``status`` is the HTTP status, ``detail`` the answer's ``detail`` (a string,
    or for a request the server could not bind, its ``{"errors": [...]}``),
    ``request_id`` the answer's ``X-Request-ID``, ``url`` the request's URL
    without credentials. ``str()`` is the detail text.
    """

    def __init__(self, status: int, detail: Any, request_id: str | None = None, url: str = "") -> None:
        super().__init__(detail if isinstance(detail, str) else _describe(detail))
        self.status = status
        self.detail = detail
        self.request_id = request_id
        self.url = url


class RemoteValueError(RemoteError, ValueError):
    """400: the server refused a value (``ValueError`` there, or a bad request)."""


class RemotePermissionError(RemoteError, PermissionError):
    """401 or 403: the server refused the caller."""


class RemoteNotFoundError(RemoteError, LookupError):
    """404: no such route, or no such thing."""


class RemoteNotImplementedError(RemoteError, NotImplementedError):
    """501: the server's provider does not implement it."""


class RemoteUnavailableError(RemoteError, ConnectionError):
    """503, or the server could not be reached (``status`` 503, no request id)."""


class RemoteTimeoutError(RemoteError, TimeoutError):
    """504, or no answer (or next event) within the client's timeout."""


class ResponseMismatch(RemoteError):
    """502: the server answered with something its Protocol does not promise;
    ``str()`` names the method and the field."""


_BY_STATUS: dict[int, type[RemoteError]] = {
    400: RemoteValueError,
    401: RemotePermissionError,
    403: RemotePermissionError,
    404: RemoteNotFoundError,
    501: RemoteNotImplementedError,
    502: ResponseMismatch,
    503: RemoteUnavailableError,
    504: RemoteTimeoutError,
}


def error_for(status: int, detail: Any, request_id: str | None = None, url: str = "") -> RemoteError:
    """The :class:`RemoteError` subclass for ``status``."""
    return _BY_STATUS.get(status, RemoteError)(status, detail, request_id, url)


def _describe(detail: Any) -> str:
    errors = detail.get("errors") if isinstance(detail, dict) else None
    if isinstance(errors, list):
        parts = [
            f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}"
            for e in errors if isinstance(e, dict)
        ]
        return "Invalid request: " + "; ".join(parts)
    return json.dumps(detail)


def without_credentials(url: str) -> str:
    """``url`` without its user and password, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=host))
