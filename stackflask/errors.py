"""Exceptions to HTTP statuses and JSON bodies, as the wire contract says.

Request time. A provider's exception becomes ``{"detail": "<text>"}`` with the
status of :func:`status_for`; a request that does not fit the parameters becomes
the 400 envelope of :func:`bad_request`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import json
import logging
from typing import Any

from flask import Response
from werkzeug.exceptions import HTTPException

from .loop import LoopStopped
from .redaction import mask_url_passwords

log = logging.getLogger("stackflask.request")

INTERNAL_ERROR = "Internal server error: An unexpected error occurred."


def status_for(exc: BaseException) -> tuple[int, str]:
    """The status and ``detail`` text for an exception a provider raised
    (with the password of any URL in it masked)."""
    if isinstance(exc, ValueError):
        return 400, f"Invalid value: {mask_url_passwords(str(exc))}"
    if isinstance(exc, PermissionError):
        return 403, f"Permission denied: {mask_url_passwords(str(exc))}"
    if isinstance(exc, NotImplementedError):
        return 501, f"Not implemented: {mask_url_passwords(str(exc))}"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return 504, f"Operation timed out: {mask_url_passwords(str(exc))}"
    if isinstance(exc, HTTPException) and exc.code is not None:
        return exc.code, mask_url_passwords(str(exc.description))
    if isinstance(exc, LoopStopped):
        return 503, "Service unavailable: the server is restarting."
    return 500, INTERNAL_ERROR


def json_response(body: Any, status: int = 200, headers: Any = None) -> Response:
    return Response(dumps(body), status, headers, mimetype="application/json")


def error_response(exc: BaseException, where: str) -> Response:
    """The response for ``exc``; a 500 logs its traceback, naming ``where``."""
    status, detail = status_for(exc)
    if status >= 500 and status not in (501, 503, 504):
        log.error("%s failed", where, exc_info=exc)
    headers = None
    if isinstance(exc, HTTPException):
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
    return json_response({"detail": detail}, status, headers)


def bad_request(errors: list[dict[str, Any]]) -> Response:
    """The 400 envelope listing every problem of a request."""
    return json_response({"error": {"detail": {"errors": errors}}}, 400)


def unsupported_media_type(received: str, what: str, expected: str) -> Response:
    """The 415 for a body of type ``received`` where ``what`` (``expected``) is taken."""
    return json_response(
        {"detail": f"Unsupported Media Type: the body must be {what}, got {received!r}; send {expected}"},
        415,
    )


def dumps(value: Any) -> str:
    """Compact JSON of a provider's value; ``jsonable`` handles what JSON lacks.

    ``NaN`` and the infinities raise ``ValueError``: JSON has none.
    """
    return _encoder.encode(value)


def jsonable(value: Any) -> Any:
    """JSON-ready form of Enums, datetimes, dataclasses, pydantic models, sets."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json", by_alias=True)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# One for every call (thread-safe: encode keeps no state between calls);
# json.dumps with these options builds a new encoder each time.
_encoder = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=jsonable
)
