"""The one event loop per process and the bridge into it."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading

import pytest

from stackflask import loop

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


def test_one_loop_thread_per_process():
    first = loop.get_loop_thread()
    assert loop.get_loop_thread() is first
    assert first.thread.is_alive()
    assert first.thread.daemon


def test_run_returns_and_raises():
    async def ok():
        return threading.current_thread().name

    async def boom():
        raise KeyError("x")

    assert loop.run(ok()) == "stackflask-loop"
    with pytest.raises(KeyError):
        loop.run(boom())


def test_caller_context_is_visible():
    async def read():
        return marker.get()

    token = marker.set("from the request thread")
    try:
        assert loop.run(read()) == "from the request thread"
    finally:
        marker.reset(token)


def test_timeout_cancels_the_task():
    cancelled = threading.Event()

    async def hang():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        loop.run(hang(), timeout=0.05)
    assert cancelled.wait(5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_loop():
    parent = loop.get_loop_thread()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether it got a new, working loop
        try:
            child = loop.get_loop_thread()

            async def answer():
                return 42

            ok = child is not parent and loop.run(answer(), timeout=5) == 42
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    result = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert result == b"1"
    assert loop.get_loop_thread() is parent


def test_flask_async_views_and_hooks_run_on_the_same_loop(app):
    loops = []

    async def hook():
        loops.append(asyncio.get_running_loop())

    async def view():
        loops.append(asyncio.get_running_loop())
        return {"ok": True}

    app.before_request(hook)
    app.add_url_rule("/async-view", "async_view", view)
    assert app.test_client().get("/async-view").json == {"ok": True}
    assert loops == [loop.get_loop_thread().loop] * 2


def test_a_blocking_coroutine_is_named_in_a_warning(caplog):
    import time

    async def blocker():
        time.sleep(0.9)

    caplog.set_level(logging.WARNING, logger="stackflask.server")
    loop.run(blocker(), name="weather.get_forecast")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not caplog.records:
        time.sleep(0.05)
    [record] = [r for r in caplog.records if "blocked" in r.getMessage()]
    assert "by weather.get_forecast" in record.getMessage()


def test_a_task_a_request_spawns_that_blocks_is_named_with_the_request_id(app, caplog):
    import time

    async def block() -> None:
        time.sleep(0.9)

    async def view():
        await asyncio.create_task(block(), name="spawned-by-the-view")
        return {"ok": True}

    app.add_url_rule("/spawns", "spawns", view)
    caplog.set_level(logging.WARNING, logger="stackflask.server")
    response = app.test_client().get("/spawns", headers={"X-Request-ID": "spawn-1"})
    assert response.json == {"ok": True}
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not caplog.records:
        time.sleep(0.05)
    [record] = [r for r in caplog.records if "blocked" in r.getMessage()]
    assert "by spawned-by-the-view" in record.getMessage()
    assert record.request_id == "spawn-1"
