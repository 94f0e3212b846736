"""Raw responses: methods annotated ``-> Response`` or ``-> bytes`` send what they return.

Startup recognises the raw return annotations (:func:`is_raw_type`); request
time turns the provider's value into a Flask response (:func:`send_raw`):
Starlette's (and so FastAPI's) ``Response``, ``JSONResponse``,
``PlainTextResponse``, ``StreamingResponse`` and ``FileResponse`` keep their
status, headers, media type and body, a streaming body is sent as it is
produced, and a background task runs after the response is sent; a Werkzeug
or Flask ``Response`` is sent as it is; ``bytes`` are
``application/octet-stream``.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Iterator
from typing import Any

from flask import Response, request
from werkzeug.wrappers import Response as WerkzeugResponse
from werkzeug.wsgi import wrap_file

from . import loop
from .log import log_raised

log = logging.getLogger("stackflask.request")

_RESPONSE_CLASSES = {
    ("starlette.responses", "Response"),
    ("werkzeug.sansio.response", "Response"),
}


def is_raw_type(tp: Any) -> bool:
    """Whether a return annotation asks for the value to be sent as it is."""
    if tp in (bytes, bytearray):
        return True
    return isinstance(tp, type) and any(
        (klass.__module__, klass.__qualname__) in _RESPONSE_CLASSES for klass in tp.__mro__
    )


def _is_starlette(value: Any) -> bool:
    return any(
        (klass.__module__, klass.__qualname__) == ("starlette.responses", "Response")
        for klass in type(value).__mro__
    )


def send_raw(
    value: Any, where: str, context: contextvars.Context, timeout: float | None
) -> Response | None:
    """The Flask response for a raw result; ``None`` if ``value`` is not one."""
    if isinstance(value, WerkzeugResponse):
        return value  # type: ignore[return-value]
    if isinstance(value, (bytes, bytearray)):
        return Response(bytes(value), 200, mimetype="application/octet-stream")
    if not _is_starlette(value):
        return None
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in value.raw_headers]
    path = getattr(value, "path", None)
    body_iterator = getattr(value, "body_iterator", None)
    if path is not None:
        body: Any = wrap_file(request.environ, open(path, "rb"))  # noqa: SIM115 (closed by the server)
        if not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("Content-Length", str(os.stat(path).st_size)))
        response = Response(body, value.status_code, headers, direct_passthrough=True)
    elif body_iterator is not None:
        response = Response(
            _chunks(body_iterator, getattr(value, "charset", "utf-8"), where, context, timeout),
            value.status_code,
            headers,
        )
    else:
        response = Response(value.body, value.status_code, headers)
    background = getattr(value, "background", None)
    if background is not None:
        response.call_on_close(lambda: context.run(_run_background, background, where, timeout))
    return response


def _run_background(background: Any, where: str, timeout: float | None) -> None:
    """Run a response's background task on the loop once the response is sent.

    Its failure is logged, not raised: the response was sent whole, so the
    connection stays open for the client's next request.
    """
    try:
        loop.run(background(), timeout, where)
    except Exception:
        log.exception("%s failed in its background task", where)


def _chunks(
    iterator: Any, charset: str, where: str, context: contextvars.Context, timeout: float | None
) -> Iterator[bytes]:
    """A streaming body's chunks, each produced on the loop as the server asks."""
    try:
        while True:
            try:
                chunk = context.run(loop.next_item, iterator, timeout, where)
                data = chunk.encode(charset) if isinstance(chunk, str) else bytes(chunk)
            except StopAsyncIteration:
                return
            except Exception as exc:
                # Raised on, so that the server aborts the connection and the
                # client sees a cut body, not one that looks complete.
                context.run(log_raised, log, exc, "%s failed mid-body", where)
                raise
            yield data
    finally:
        loop.close_iterator(iterator)
