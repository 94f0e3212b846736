"""Plain ``def`` provider methods, run on worker threads so a timeout can bound them.

Request time. A call bounded by ``server.request_timeout`` runs on a daemon
worker thread of this process while the request's thread waits for it; after
the timeout the request gets its ``504`` and the call runs on until it returns
(Python cannot stop a thread). Daemon threads never keep the process from
exiting, and a forked child starts threads of its own.
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

T = TypeVar("T")


class DaemonPool:
    """Daemon worker threads, started as calls need them and kept for the next."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, func: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                threading.Thread(target=self._serve, name="stackflask-sync", daemon=True).start()
        self._work.put((future, func))
        return future

    def _serve(self) -> None:
        while True:
            future, func = self._work.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(func())
                except BaseException as exc:  # handed to the waiting request
                    future.set_exception(exc)
            del future, func
            with self._lock:
                self._idle += 1


_pool: DaemonPool | None = None
_lock = threading.Lock()


def call_blocking(func: Callable[[], T], timeout: float | None) -> T:
    """``func()`` in the calling thread's context, on a worker thread when
    ``timeout`` bounds it: after ``timeout`` seconds :class:`TimeoutError` is
    raised and the call runs on in its thread."""
    if timeout is None:
        return func()
    global _pool
    pool = _pool
    if pool is None or pool.pid != os.getpid():
        with _lock:
            if _pool is None or _pool.pid != os.getpid():
                _pool = DaemonPool()
            pool = _pool
    context = contextvars.copy_context()
    future: Future[T] = pool.submit(lambda: context.run(func))
    try:
        return future.result(timeout)
    except FutureTimeout:
        raise TimeoutError(f"no result within {timeout:g} s") from None
