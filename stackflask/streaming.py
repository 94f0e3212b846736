"""Server-sent events: a provider's async iterator sent item by item.

Request time. Each item is produced on the loop as the server asks for it,
checked and written at once as ``data: <compact JSON>``. Every open stream is
listed in its app's :class:`OpenStreams`, so that stopping the server closes
the generators (their ``finally`` blocks run on the loop) before providers
shut down.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from flask import Response, request

from . import loop
from .errors import INTERNAL_ERROR, dumps, error_response, json_response, status_for
from .log import ACCESS_RECORD, AccessRecord
from .results import ResultMismatch

log = logging.getLogger("stackflask.request")


class _Stream:
    """One open stream: its iterator, and the task pulling its next item, if any."""

    __slots__ = ("iterator", "task")

    def __init__(self, iterator: AsyncIterator[Any]) -> None:
        self.iterator = iterator
        self.task: asyncio.Task[Any] | None = None

    async def pull(self) -> Any:
        self.task = asyncio.current_task()
        try:
            return await self.iterator.__anext__()
        finally:
            self.task = None


class OpenStreams:
    """The streams an app is sending."""

    def __init__(self) -> None:
        self._open: set[_Stream] = set()
        self._lock = threading.Lock()
        #: Set once the server closes every stream as it stops.
        self.closing = False

    def add(self, iterator: AsyncIterator[Any]) -> _Stream:
        entry = _Stream(iterator)
        with self._lock:
            self._open.add(entry)
        return entry

    def discard(self, entry: _Stream) -> None:
        with self._lock:
            self._open.discard(entry)

    def __len__(self) -> int:
        return len(self._open)

    async def close_all(self, timeout: float) -> None:
        """Close every open stream's generator: cancel the pull in progress, or
        ``aclose()`` one that waits between items. Runs on the loop."""
        self.closing = True
        with self._lock:
            entries = list(self._open)
        pulling = []
        for entry in entries:
            if entry.task is not None:
                entry.task.cancel()
                pulling.append(entry.task)
                continue
            try:
                await asyncio.wait_for(entry.iterator.aclose(), timeout)  # type: ignore[attr-defined]
            except BaseException:
                log.warning("closing a stream's generator failed", exc_info=True)
        if pulling:
            await asyncio.wait(pulling, timeout=timeout)
        if entries:
            log.info("closed %d open stream(s)", len(entries))


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
    streams: OpenStreams,
    timeout: float | None = None,
) -> Response:
    """Server-sent events, one ``data:`` line per item, written as produced.

    An error before the first item is a plain error response; after it, one last
    ``{"error": ...}`` event ends the stream. The async generator is always
    closed on the loop, so its ``finally`` blocks run when a client leaves.
    Each item is computed in the request's ``context``; ``check_item`` gives
    its JSON text or raises :class:`~stackflask.results.ResultMismatch`.
    """
    entry = streams.add(iterator)
    record: AccessRecord | None = request.environ.get(ACCESS_RECORD)

    def close() -> None:
        streams.discard(entry)
        try:
            loop.close_iterator(iterator)
        except BaseException:  # a generator that fails to close, or a loop that is gone
            log.warning("closing a stream's generator failed", exc_info=True)

    try:
        first = context.run(loop.run, entry.pull(), timeout, where)
    except StopAsyncIteration:
        close()
        if record is not None:
            record.events = 0
        return Response(b"", 200, mimetype="text/event-stream")
    except BaseException as exc:
        close()
        return error_response(exc, where)
    try:
        first_text = check_item(first)
    except ResultMismatch as exc:
        close()
        return invalid_result(where, str(exc), " stream item")

    def next_event() -> tuple[bytes | None, bool]:
        """The next event and whether it is the last; ``None`` after the last."""
        try:
            item = loop.run(entry.pull(), timeout, where)
        except StopAsyncIteration:
            return None, True
        except BaseException as exc:
            if streams.closing and isinstance(exc, asyncio.CancelledError):
                log.info("%s: stream closed as the server stops", where)
                return _error_event(503, "Service unavailable: the server is stopping."), True
            status, detail = status_for(exc)
            if status == 500:
                log.error("%s failed mid-stream", where, exc_info=exc)
            return _error_event(status, detail), True
        try:
            return f"data: {check_item(item)}\n\n".encode(), False
        except ResultMismatch as exc:
            invalid_result(where, str(exc), " stream item")
            return _error_event(500, INTERNAL_ERROR), True

    def events() -> Iterator[bytes]:
        # The server pulls the events after the view has returned: each is made
        # in the request's context, so what is logged meanwhile carries its id.
        event: bytes | None = f"data: {first_text}\n\n".encode()
        last = False
        sent = 0
        try:
            while event is not None:
                sent += 1
                if record is not None:
                    record.events = sent
                yield event
                if last:
                    return
                event, last = context.run(next_event)
        finally:
            context.run(close)

    return Response(
        events(),
        200,
        {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        mimetype="text/event-stream",
    )


def _error_event(status: int, detail: str) -> bytes:
    return f"data: {dumps({'error': {'message': f'{status}: {detail}'}})}\n\n".encode()
