"""Serving an app with waitress, and stopping it gracefully.

Run time of ``stackflask run``. SIGTERM or SIGINT stops accepting connections,
lets the requests in flight finish within ``server.shutdown_grace`` seconds,
closes every connection, then closes open streams and awaits every provider's
``shutdown()``, within ``server.shutdown_timeout`` plus a second. An address
it cannot listen on is one ``error:`` line naming it and the fix, and exit 1.
"""

from __future__ import annotations

import errno
import json
import logging
import signal
import socket
import sys
import threading
import time
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer, create_server
from waitress.task import ErrorTask, ThreadedTaskDispatcher

from . import loop
from .problems import StartupError

log = logging.getLogger("stackflask.server")

#: How often the serving loop looks at the stop flag, in seconds.
POLL = 0.2
#: Seconds the serving loop waits for a connection's output lock (see
#: :meth:`_Channel._flush_some_if_lockable`) before polling again.
OUTPUT_LOCK_WAIT = 0.1


def serve(app: Any, host: str, port: int, threads: int) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then drain and shut providers down."""
    stack = app.extensions["stackflask"]
    try:
        server = listen(app, host, port, threads)
    except StartupError as exc:
        stack.shutdown()
        log.debug("cannot listen", exc_info=exc.__cause__)
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    stopping = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    log.info("serving %s on http://%s:%s", stack.config.source, host, server.effective_port)
    print(f"stackflask: serving on http://{host}:{server.effective_port}", file=sys.stderr, flush=True)
    try:
        while not stopping.is_set():
            wasyncore.loop(timeout=POLL, use_poll=True, map=server._map, count=1)
        drain(server, stack.config.server.shutdown_grace)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        wasyncore.close_all(server._map)
        stack.shutdown()  # bounded: server.shutdown_timeout plus a second
        # Idle worker threads end at once; busy ones past the grace period are
        # daemons, not waited for.
        dispatcher = server.task_dispatcher
        dispatcher.shutdown(timeout=0 if dispatcher.active_count else 1)
        log.info("stopped")
    if loop.get_loop_thread().stopped is not None:
        raise SystemExit(1)  # so that a supervisor restarts the server


def listen(app: Any, host: str, port: int, threads: int) -> TcpWSGIServer:
    """A waitress server bound to ``host:port``.

    Raises :class:`StartupError` naming the address and the fix when it cannot
    listen there: the port is taken, needs privileges, or the host is not an
    address of this machine.
    """
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:  # waitress says only "Invalid host/port specified."
        raise StartupError([
            f"cannot listen on {address}: {host!r} is not a known host name or address; "
            "use 127.0.0.1, 0.0.0.0 or an address of this machine (--host, server.host)"
        ]) from exc
    limits = app.extensions["stackflask"].config.server
    dispatcher = _Dispatcher()
    try:
        server = create_server(
            app, host=host, port=port, threads=threads, ident="stackflask",
            _dispatcher=dispatcher,
            # waitress refuses a body of max_request_body_size bytes or more unread
            max_request_body_size=limits.max_request_bytes + 1,
            connection_limit=limits.connection_limit,
            channel_timeout=limits.channel_timeout,
            cleanup_interval=1,  # an idle connection lasts channel_timeout, not 30 s more
            asyncore_use_poll=True,  # select() takes descriptors below 1024 only
        )
    except OSError as exc:
        raise StartupError([f"cannot listen on {address}: {_why(exc, host, port)}"]) from exc
    assert isinstance(server, TcpWSGIServer)
    dispatcher.set_thread_count(threads)
    server.channel_class = _Channel
    return server


class _ContractError(ErrorTask):
    """waitress's own answer to a request it refuses (malformed, headers or body
    too large) in the contract's form: its status, ``{"detail": reason}``."""

    def execute(self) -> None:
        error = self.request.error
        body = json.dumps({"detail": error.reason}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    error_task_class = _ContractError

    def _flush_some_if_lockable(self, do_close: bool = True) -> None:
        """waitress's, once the output lock is had: waited for, not given up.

        The serving loop calls this for a connection with output pending while
        a task thread serves it. When that thread holds the lock (it sends its
        own output), waitress gives up, and the loop polls, finds the socket
        writable and comes back at once, spinning and holding the GIL; on two
        CPUs the task thread then gets the GIL back only by forcing a switch
        (5 ms), and every request waits so: ``stackflask run --cpus all``
        served 67 requests per second at 16 connections, 1,865 with this
        (bench/README.md). Waiting instead lets the task thread finish: it
        holds the lock only while it sends, never while it waits for the loop.
        """
        if not self.outbuf_lock.acquire(timeout=OUTPUT_LOCK_WAIT):
            return
        try:  # the lock is re-entrant: waitress's own attempt takes it again
            super()._flush_some_if_lockable(do_close)
        finally:
            self.outbuf_lock.release()


class _Dispatcher(ThreadedTaskDispatcher):
    """waitress's worker threads, keeping nothing of a request once it is served.

    After a large request, memory returns only if nothing allocated while its
    objects were alive outlives it: one small object kept there holds a whole
    1 MiB pymalloc arena. A waitress thread holds the last task it served until
    it takes the next, and the task is the connection's channel (its buffers,
    locks, request): queued through a :class:`_Handoff`, the thread holds only
    that. Each thread also makes its per-thread state for the loop's bridge when
    it starts, not during its first request.
    """

    def handler_thread(self, thread_no: int) -> None:
        loop.prepare_thread()
        super().handler_thread(thread_no)

    def add_task(self, task: Any) -> None:
        super().add_task(_Handoff(task))


class _Handoff:
    """A queued task, given up by the thread that serves it once served."""

    __slots__ = ("task",)

    def __init__(self, task: Any) -> None:
        self.task = task

    def service(self) -> None:
        task, self.task = self.task, None
        task.service()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def __repr__(self) -> str:
        return repr(self.task)


def _why(exc: OSError, host: str, port: int) -> str:
    """What went wrong binding ``host:port``, and the fix."""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} is already in use by another process; stop it, or choose "
            "another port (--port, STACKFLASK_PORT, server.port)"
        )
    if exc.errno == errno.EACCES:
        return (
            "permission denied (ports below 1024 need privileges); "
            "choose a port from 1024 up (--port, STACKFLASK_PORT, server.port)"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{host!r} is not an address of this machine; use 127.0.0.1, 0.0.0.0 "
            "or one of its own addresses (--host, server.host)"
        )
    return f"{exc.strerror or exc} (check --host and --port)"


def drain(server: TcpWSGIServer, grace: float) -> None:
    """Stop accepting; serve the requests in flight for up to ``grace`` seconds."""
    server.del_channel()
    server.socket.close()
    dispatcher = server.task_dispatcher
    deadline = time.monotonic() + grace
    while (dispatcher.active_count or dispatcher.queue) and time.monotonic() < deadline:
        wasyncore.loop(timeout=0.05, use_poll=True, map=server._map, count=1)
    if dispatcher.active_count or dispatcher.queue:
        log.warning(
            "%d request(s) still running after the %s s grace period; closing their connections",
            dispatcher.active_count + len(dispatcher.queue), grace,
        )
    for _ in range(5):  # let the last responses leave
        wasyncore.loop(timeout=0.01, use_poll=True, map=server._map, count=1)
