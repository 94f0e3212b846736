"""The one event loop of the process, and asgiref's bridge from WSGI threads into it.

Request time and startup. Every provider coroutine (initialize, requests,
stream items, health, shutdown, Flask's own ``async`` views) runs on this loop,
so loop-bound objects a provider creates once (locks, queues, HTTP client
sessions) keep working across requests. The loop runs in a daemon thread
started on first use; after a ``fork`` a new one is started in the child, so
pre-forking servers get one loop per worker.

The hop is asgiref's ``AsyncToSync``: the calling thread's
``SyncToAsync.threadlocal`` names this loop, so asgiref schedules the coroutine
there instead of on a new loop, and the calling thread waits in asgiref's
``CurrentThreadExecutor``. So ``await sync_to_async(blocking)()`` inside a
provider runs ``blocking`` on the thread of the request that awaited it, and
concurrent requests' blocking calls run side by side.

A watchdog thread notices when a coroutine blocks the loop (``time.sleep`` in an
``async def``) and logs a warning naming the task and, through the loop's task
factory, the request whose context created it (tasks a provider spawns
included); it also cancels the calls past their timeout. If the loop thread
stops (a provider stopped the loop, or ``SystemExit`` escaped a task of its own),
every call waiting on it and every later call raises :class:`LoopStopped`, and
the process is told to exit so its supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any, TypeVar

from asgiref.sync import AsyncToSync, SyncToAsync

from .log import request_id

T = TypeVar("T")

log = logging.getLogger("stackflask.server")

#: Seconds the loop may be unresponsive before the watchdog warns.
LAG_WARNING = 0.5
#: Called with the loop's lag (seconds) each time the watchdog measures it;
#: for what must be pushed, such as multiprocess metrics.
lag_listeners: list[Callable[[float], None]] = []


class LoopStopped(RuntimeError):
    """The process's event loop is gone; no provider can be called any more."""


#: Seconds a timed-out task gets to end after its cancellation before its
#: caller is answered all the same.
CANCEL_GRACE = 1.0


class _Call:
    """One call: its result future, which asgiref makes in the waiting thread
    and the coroutine on the loop may have to fail; with a timeout, its task
    and when it is due (the watchdog expires it)."""

    __slots__ = ("result", "task", "name", "timeout", "due", "expired")

    def __init__(self) -> None:
        self.result: Future[Any] | None = None
        self.task: asyncio.Task[Any] | None = None
        self.name: str | None = None
        self.timeout = math.inf
        self.due = math.inf
        self.expired = False

    def expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Cancel the task (on the loop); answer the caller if the task has not
        ended :data:`CANCEL_GRACE` seconds later."""
        if self.task is None or self.task.done():
            return
        self.expired = True
        self.task.cancel()
        loop.call_later(CANCEL_GRACE, self._give_up)

    def _give_up(self) -> None:
        result = self.result
        if result is not None and not result.done():
            log.warning(
                "%s ignored its cancellation; its caller got a timeout", self.name or self.task
            )
            result.set_exception(TimeoutError(f"no result within {self.timeout:g} s"))


class _Bridge(AsyncToSync):  # type: ignore[type-arg]
    """asgiref's ``AsyncToSync``, remembering each call's result future so that
    the calls still waiting when the loop dies, or whose task ignores its
    cancellation, can be answered at once."""

    def __init__(self, owner: EventLoopThread) -> None:
        super().__init__(_guarded)
        self.owner = owner
        self.calls = threading.local()

    def main_wrap(self, call_result: Future[Any], *args: Any) -> Any:  # type: ignore[override]
        # Called in the waiting thread, before the coroutine is scheduled.
        call = self.calls.current
        self.calls.current = None  # nothing of the call outlives it (see _Call)
        call.result = call_result
        waiting = self.owner.waiting
        waiting.add(call_result)
        call_result.add_done_callback(waiting.discard)
        if self.owner.stopped is not None:
            call_result.set_exception(LoopStopped(self.owner.stopped))
        return _answered_once(super().main_wrap(call_result, *args))


async def _answered_once(wrapped: Awaitable[None]) -> None:
    # asgiref sets the result when the task ends; a caller already answered
    # (loop stopped, cancellation ignored) makes that a no-op, not an error.
    try:
        await wrapped
    except InvalidStateError:
        pass


async def _guarded(
    awaitable: Awaitable[T],
    timeout: float | None,
    name: str | None,
    call: _Call,
    timed: set[_Call],
) -> T:
    """Await ``awaitable`` in a task named ``name``; cancel it after ``timeout``.

    A task that ignores its cancellation for :data:`CANCEL_GRACE` seconds is
    left to run; its caller gets the :class:`TimeoutError` all the same.
    """
    task = asyncio.current_task()
    if task is None:
        return await awaitable
    if name:
        task.set_name(name)
    if timeout is None:
        return await awaitable
    # The watchdog expires the call when it is due: a timer per call, made
    # and cancelled, cost some 8 µs a call (the loop's heap of cancelled timers).
    call.task, call.name, call.timeout = task, name, timeout
    call.due = time.monotonic() + timeout
    timed.add(call)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if call.expired:
            raise TimeoutError(f"no result within {timeout:g} s") from None
        raise
    finally:
        timed.discard(call)


#: The attribute of each task made on the loop that holds the id of the
#: request whose context made it (a task's context cannot be read before 3.12).
REQUEST_ID = "stackflask_request_id"


def _request_task(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    """The loop's task factory: an ordinary task, marked with the request id of
    the context it will run in, so that the watchdog can name the request of
    any task, including those a provider spawns."""
    task = asyncio.Task(coro, loop=loop, **kwargs)
    context = kwargs.get("context")
    setattr(task, REQUEST_ID, request_id.get() if context is None else context.get(request_id, "-"))
    return task


class EventLoopThread:
    """An asyncio loop running forever in a daemon thread, watched for stalls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_task_factory(_request_task)
        #: The calls with a timeout, while they run.
        self.timed: set[_Call] = set()
        self.pid = os.getpid()
        self.lag_warning = LAG_WARNING
        #: Why the loop stopped, once it has; ``None`` while it runs.
        self.stopped: str | None = None
        self.waiting: set[Future[Any]] = set()
        self.on_stop: Callable[[], None] = _terminate_process
        #: How late the loop ran the watchdog's latest ping; while a ping is
        #: unanswered, how long since the loop last answered one (seconds).
        self.lag = 0.0
        self._bridge = _Bridge(self)
        self._thread = threading.Thread(target=self._serve, name="stackflask-loop", daemon=True)
        self._thread.start()
        self._beat = time.monotonic()
        threading.Thread(target=self._watch, name="stackflask-watchdog", daemon=True).start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        reason = "the loop was stopped"
        try:
            self.loop.run_forever()
        except BaseException as exc:  # SystemExit or KeyboardInterrupt from a callback
            reason = f"{type(exc).__name__} escaped a task: {exc}"
        self._died(reason)

    def _died(self, reason: str) -> None:
        self.stopped = reason
        log.critical(
            "the event loop has stopped (%s): every provider call now fails with 503; "
            "exiting so that the process supervisor restarts the server", reason,
        )
        for future in list(self.waiting):
            if not future.done():
                future.set_exception(LoopStopped(reason))
        self.on_stop()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def _heartbeat(self, sent: float) -> None:
        self._beat = time.monotonic()
        self.lag = self._beat - sent

    def _watch(self) -> None:
        """Ping the loop every tenth of a second, note its lag; warn once per
        stall; expire the calls that are due."""
        warned = False
        while self._thread.is_alive() and threading.main_thread().is_alive():
            sent = time.monotonic()
            try:
                self.loop.call_soon_threadsafe(self._heartbeat, sent)
            except RuntimeError:  # closed
                return
            time.sleep(0.1)
            now = time.monotonic()
            for call in list(self.timed):
                if call.due <= now:
                    call.due = math.inf  # expired once
                    try:
                        self.loop.call_soon_threadsafe(call.expire, self.loop)
                    except RuntimeError:  # closed
                        return
            stalled = now - self._beat
            if self._beat < sent:
                self.lag = stalled
            for listener in lag_listeners:
                listener(self.lag)
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
                    extra={"request_id": getattr(task, REQUEST_ID, "-")},
                )

    def prepare_thread(self) -> None:
        """Make the calling thread's state for :meth:`run`: asgiref told which
        loop to use, the bridge's thread-local."""
        local = SyncToAsync.threadlocal
        local.main_event_loop = self.loop
        local.main_event_loop_pid = self.pid
        self._bridge.calls.current = None

    def run(self, awaitable: Awaitable[T], timeout: float | None = None, name: str | None = None) -> T:
        """Run ``awaitable`` on the loop from another thread and return its result.

        The calling thread's context variables are visible to the coroutine
        (and its changes come back, as asgiref does); ``name`` names its task
        (the watchdog reports it). After ``timeout`` seconds (up to a tenth of
        a second more: the watchdog expires it) the task is cancelled and
        :class:`TimeoutError` raised. Raises :class:`LoopStopped`
        when the loop is gone.
        """
        if self.stopped is not None:
            if hasattr(awaitable, "close"):
                awaitable.close()
            raise LoopStopped(self.stopped)
        if getattr(SyncToAsync.threadlocal, "main_event_loop", None) is not self.loop:
            self.prepare_thread()
        call = _Call()
        self._bridge.calls.current = call
        return self._bridge(awaitable, timeout, name, call, self.timed)  # type: ignore[no-any-return]


def _terminate_process() -> None:
    """Ask the process to stop, as its supervisor would, but exiting non-zero."""
    os.kill(os.getpid(), signal.SIGTERM)


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


def prepare_thread() -> None:
    """Make the calling thread's state for :func:`run` now: a server's worker
    thread calls it when it starts, so that nothing of it is made during a
    request (see :class:`stackflask.serve._Dispatcher`)."""
    get_loop_thread().prepare_thread()


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
