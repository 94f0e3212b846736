"""The one event loop of the process, and the bridge from WSGI threads into it.

Request time and startup. Every provider coroutine (initialize, requests, health,
shutdown) runs on this loop, so loop-bound objects a provider creates once
(locks, tasks, HTTP client sessions) keep working across requests. The loop
runs in a daemon thread started on first use; after a ``fork`` a new one is
started in the child, so pre-forking servers get one loop per worker.

asgiref's ``async_to_sync`` is not used for the hop: called from a plain WSGI
thread it runs each call on a fresh loop in a new thread, which breaks loop-bound
objects and costs about ten times more than :func:`run`.

A watchdog thread notices when a coroutine blocks the loop (``time.sleep`` in an
``async def``) and logs a warning naming the task, so the culprit is found.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("stackflask.server")

#: Seconds the loop may be unresponsive before the watchdog warns.
LAG_WARNING = 0.5


class EventLoopThread:
    """An asyncio loop running forever in a daemon thread, watched for stalls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self.lag_warning = LAG_WARNING
        self._pending: deque[tuple[contextvars.Context, Callable[[], None]]] = deque()
        self._drain_scheduled = False
        self._thread = threading.Thread(target=self._serve, name="stackflask-loop", daemon=True)
        self._thread.start()
        self._beat = time.monotonic()
        threading.Thread(target=self._watch, name="stackflask-watchdog", daemon=True).start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def submit(self, callback: Callable[[], None], context: contextvars.Context) -> None:
        """Run ``callback`` on the loop, in ``context``, soon.

        Submissions queue up and one wake-up of the loop runs all that are
        waiting, so under concurrent requests the loop is woken (a write to its
        self-pipe) far less than once per call.
        """
        self._pending.append((context, callback))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        # Reset before draining: a submit that saw the flag set appended first.
        self._drain_scheduled = False
        pending = self._pending
        while pending:
            context, callback = pending.popleft()
            context.run(callback)

    def _heartbeat(self) -> None:
        self._beat = time.monotonic()

    def _watch(self) -> None:
        """Ping the loop every tenth of a second; warn once per stall."""
        warned = False
        while self._thread.is_alive() and threading.main_thread().is_alive():
            self.loop.call_soon_threadsafe(self._heartbeat)
            time.sleep(0.1)
            stalled = time.monotonic() - self._beat
            if stalled <= self.lag_warning + 0.1:
                warned = False
            elif not warned:
                warned = True
                task = asyncio.current_task(self.loop)
                if task is None:  # no coroutine running: GC or another thread holding the GIL
                    log.debug("the event loop has been unresponsive for %.1f s", stalled)
                    continue
                log.warning(
                    "the event loop has been blocked for %.1f s by %s: blocking code in an "
                    "async def (time.sleep, sync I/O) stops every request; await it or use "
                    "asyncio.to_thread",
                    stalled, task.get_name(),
                )

    def run(self, awaitable: Awaitable[T], timeout: float | None = None, name: str | None = None) -> T:
        """Run ``awaitable`` on the loop from another thread and return its result.

        The calling thread's context variables are visible to the coroutine;
        ``name`` names its task (the watchdog reports it). After ``timeout``
        seconds the task is cancelled and :class:`TimeoutError` raised.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("EventLoopThread.run() called from the loop's own thread")
        done = threading.Lock()
        done.acquire()
        state: dict[str, Any] = {}

        async def runner() -> None:
            # Releasing the caller from the task's last step, not from a done
            # callback, saves the loop an iteration per call.
            try:
                state["result"] = await awaitable
            except BaseException as exc:
                state["error"] = exc
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
            finally:
                done.release()

        def start() -> None:
            if state.get("abandoned"):
                if isinstance(awaitable, Coroutine):
                    awaitable.close()
                return
            state["task"] = self.loop.create_task(runner(), name=name)

        def abandon() -> None:
            task = state.get("task")
            if task is None:
                state["abandoned"] = True
            else:
                task.cancel()

        self.submit(start, contextvars.copy_context())
        if not done.acquire(timeout=-1 if timeout is None else timeout):
            self.loop.call_soon_threadsafe(abandon)
            raise TimeoutError(f"no result within {timeout:g} s")
        if "error" in state:
            raise state["error"]
        return state["result"]  # type: ignore[no-any-return]


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


def run(awaitable: Awaitable[T], timeout: float | None = None, name: str | None = None) -> T:
    """Run ``awaitable`` on the process's loop and wait for its result."""
    return get_loop_thread().run(awaitable, timeout, name)


async def _next(iterator: AsyncIterator[T]) -> T:
    return await iterator.__anext__()


def next_item(iterator: AsyncIterator[T], timeout: float | None = None, name: str | None = None) -> T:
    """The next item of an async iterator, computed on the loop.

    Raises :class:`StopAsyncIteration` at the end.
    """
    return get_loop_thread().run(_next(iterator), timeout, name)


def close_iterator(iterator: AsyncIterator[Any]) -> None:
    """Close an async generator on the loop so its ``finally`` blocks run there."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        get_loop_thread().run(aclose(), timeout=5)
