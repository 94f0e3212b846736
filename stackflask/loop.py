"""The one event loop of the process, and the bridge from WSGI threads into it.

Request time and startup. Every provider coroutine (initialize, requests, health,
shutdown) runs on this loop, so loop-bound objects a provider creates once
(locks, tasks, HTTP client sessions) keep working across requests. The loop
runs in a daemon thread started on first use; after a ``fork`` a new one is
started in the child, so pre-forking servers get one loop per worker.

asgiref's ``async_to_sync`` is not used for the hop: called from a plain WSGI
thread it runs each call on a fresh loop in a new thread, which breaks loop-bound
objects and costs about ten times more than :func:`run`.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class EventLoopThread:
    """An asyncio loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self._thread = threading.Thread(
            target=self._serve, name="stackflask-loop", daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def run(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``awaitable`` on the loop from another thread and return its result.

        The calling thread's context variables are visible to the coroutine. On a
        timeout the task is cancelled and :class:`TimeoutError` raised.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("EventLoopThread.run() called from the loop's own thread")
        done = threading.Event()
        box: list[asyncio.Future[T]] = []

        def start() -> None:
            task = asyncio.ensure_future(awaitable)
            box.append(task)
            task.add_done_callback(lambda _: done.set())

        self.loop.call_soon_threadsafe(start, context=contextvars.copy_context())
        if not done.wait(timeout):
            self.loop.call_soon_threadsafe(lambda: box and box[0].cancel())
            raise TimeoutError(f"no result within {timeout} s")
        return box[0].result()


_current: EventLoopThread | None = None
_lock = threading.Lock()


def get_loop_thread() -> EventLoopThread:
    """The process's loop thread, started on first use (and anew after a fork)."""
    global _current
    current = _current
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = EventLoopThread()
        return _current


def run(awaitable: Awaitable[T], timeout: float | None = None) -> T:
    """Run ``awaitable`` on the process's loop and wait for its result."""
    return get_loop_thread().run(awaitable, timeout)


async def _next(iterator: AsyncIterator[T]) -> T:
    return await iterator.__anext__()


def next_item(iterator: AsyncIterator[T]) -> T:
    """The next item of an async iterator, computed on the loop.

    Raises :class:`StopAsyncIteration` at the end.
    """
    return get_loop_thread().run(_next(iterator))


def close_iterator(iterator: AsyncIterator[Any]) -> None:
    """Close an async generator on the loop so its ``finally`` blocks run there."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        get_loop_thread().run(aclose())
