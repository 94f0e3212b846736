"""The hot path, step by step: each piece of a request timed alone.

    taskset -c 1 python bench/steps.py

Prints one Markdown table row per step, in microseconds per call (best of five
runs of 20,000; 2,000 for a whole request), for bench/README.md: the typed
POST's steps with dataclasses (marshmallow), then those of the same order as
pydantic models. The time is the process's CPU time (every thread of it: the
hop's loop thread counts), so other programs' load on a shared machine does
not count; on a quiet machine it is the wall time. Run with another
checkout's interpreter, it times that checkout's stackflask (bench/README.md,
"Old code against new"); the access-line and ``Response`` steps then time
what this checkout's path does.

    taskset -c 1 python bench/steps.py --gap [ROUNDS]

accounts for the whole difference between stackflask's GET and the floor's
instead: the GET through the WSGI app with one more of stackflask's pieces
taken out at each rung, down to the floor app, so that the rungs add up to
the difference (see :func:`gap`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from stackflask import create_app, loop  # noqa: E402
from stackflask.context import request_context  # noqa: E402
from stackflask.errors import dumps, json_response  # noqa: E402
from flask import Response  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402
app = create_app(Path(__file__).resolve().parent / "config" / "run.yaml")
stack = app.extensions["stackflask"]
routes = {r.name: r for r in stack.routes}
plan = routes["order"].plan
pydantic_plan = routes["order_pydantic"].plan
body = {"order": {"id": 7, "customer": "Ada Lovelace", "email": "ada@example.com", "amount": 12.5,
    "quantity": 3, "express": True, "priority": "high", "tags": ["a", "b", "c"],
    "address": {"street": "1 Analytical Way", "city": "London", "zip": "N1"}, "note": None}}
order = plan.binder.body.load(body)["order"]
pydantic_order = pydantic_plan.binder.body.load(body)["order"]
async def trivial(): return 1
log = logging.getLogger("stackflask.request")
devnull = open(os.devnull, "w")
for handler in logging.getLogger("stackflask").handlers:  # formatted and written, not shown
    if isinstance(handler, logging.StreamHandler): handler.setStream(devnull)
def step(name, fn, n=20000):
    for _ in range(1000): fn()
    best = 1e9
    for _ in range(5):
        t = time.process_time()
        for _ in range(n): fn()
        best = min(best, (time.process_time() - t) / n * 1e6)
    print(f"| {name} | {best:.1f} |")
raw = json.dumps(body).encode()
def post(path, app=app):
    """The whole request through the app's WSGI callable, without a server."""
    environ = EnvironBuilder(path=path, method="POST", data=raw, content_type="application/json").get_environ()
    status = []
    def call():
        b"".join(app(dict(environ, **{"wsgi.input": io.BytesIO(raw)}), lambda s, h, e=None: status.append(s)))
    call()
    assert status == ["200 OK"], (path, status)  # time the request that succeeds, not an error
    return call
def get(path, app=app):
    """A GET through the app's WSGI callable, without a server."""
    environ = EnvironBuilder(path=path).get_environ()
    status = []
    def call():
        b"".join(app(dict(environ), lambda s, h, e=None: status.append(s)))
    call()
    assert status == ["200 OK"], (path, status)
    return call
def gap(rounds):
    """The GET's difference to the floor, rung by rung: the whole request timed
    with one more of stackflask's pieces taken out at each rung, down to the
    floor app, the rungs alternating in every round (median of the rounds).
    The rungs' differences add up to the whole difference by construction."""
    import statistics
    import types

    import flask
    import floor_app
    from asgiref.sync import AsyncToSync

    endpoint = "weather.get_available_locations"
    check = routes["get_available_locations"].plan.result.check
    schema, view, real_run = check.schema, app.view_functions[endpoint], loop.run
    handlers = logging.getLogger("stackflask").handlers
    levels = [h.level for h in handlers], log.level
    async def awaited(awaitable): return await awaitable
    plain = AsyncToSync(awaited)
    def inline(awaitable, timeout=None, name=None):  # the coroutine driven on the request thread
        try:
            awaitable.send(None)
        except StopIteration as done:
            return done.value
        raise RuntimeError("the coroutine suspended")
    rungs = [
        ("stackflask, as served", None),
        ("the access line's handler (format, write)", lambda: [h.setLevel(logging.WARNING) for h in handlers]),
        ("the access line's record, fields and dispatch", lambda: log.setLevel(logging.WARNING)),
        ("the access record, request id, X-Request-ID", lambda: setattr(app, "wsgi_app", flask.Flask.wsgi_app.__get__(app))),
        ("stackflask's part of the hop (`_Bridge`, `_guarded`, the task factory)", lambda: setattr(loop, "run", lambda aw, timeout=None, name=None: plain(aw))),
        ("asgiref's `AsyncToSync` onto the loop and back", lambda: setattr(loop, "run", inline)),
        ("the result check's `Schema.load`", lambda: setattr(check, "schema", types.SimpleNamespace(load=lambda data: data))),
        ("the result check's parse back (`json.loads`)", lambda: setattr(check, "schema", None)),
        ("stackflask's view against the floor's (bind, provider data context, call, `Response`)", lambda: app.view_functions.__setitem__(endpoint, floor_app.locations)),
        ("Flask: a blueprint's route against an app's, the app's hooks", None),
    ]
    def restore():
        for h, level in zip(handlers, levels[0]): h.setLevel(level)
        log.setLevel(levels[1])
        app.__dict__.pop("wsgi_app", None)
        loop.run, check.schema = real_run, schema
        app.view_functions[endpoint] = view
    def loop_thread_ns():  # the loop thread's CPU time, from Linux's schedstat
        try:
            with open(f"/proc/self/task/{loop.get_loop_thread().thread.native_id}/schedstat") as f:
                return int(f.read().split()[0])
        except OSError:
            return 0
    times = [[] for _ in rungs]
    loop_times = [[] for _ in rungs]
    for _ in range(rounds):
        restore()
        for i, (_, strip) in enumerate(rungs):
            if strip is not None and i < len(rungs) - 1:
                strip()
            call = get("/v1/weather/locations", floor_app.app if i == len(rungs) - 1 else app)
            for _ in range(200): call()
            n, ns, t = 2000, loop_thread_ns(), time.process_time()
            for _ in range(n): call()
            times[i].append((time.process_time() - t) / n * 1e6)
            loop_times[i].append((loop_thread_ns() - ns) / n / 1e3)
    restore()
    med = [statistics.median(t) for t in times]
    print("| rung: the whole GET with ... taken out | µs | rung µs | of it, loop thread µs |")
    print("|---|---|---|---|")
    for i, (name, _) in enumerate(rungs):
        if i == 0:
            print(f"| {name} | {med[0]:.1f} | | {statistics.median(loop_times[0]):.1f} |")
            continue
        loop_part = statistics.median(loop_times[i - 1]) - statistics.median(loop_times[i])
        print(f"| {name} | {med[i]:.1f} | {med[i - 1] - med[i]:.1f} | {loop_part:.1f} |")
    print(f"| **stackflask - floor** | | **{med[0] - med[-1]:.1f}** | |")
    print(f"(median of {rounds} rounds of 2,000 requests; round-to-round spread of the whole "
          f"GET {min(times[0]):.1f} to {max(times[0]):.1f} µs)")
if "--gap" in sys.argv[1:]:
    gap(int(sys.argv[sys.argv.index("--gap") + 1]) if sys.argv[-1].isdigit() else 9)
    stack.shutdown()
    sys.exit()
step("hop: loop.run of a trivial coroutine (there and back)", lambda: loop.run(trivial()))
def crossings():
    """The hop's floor: what crossing to the loop and back costs without asgiref."""
    from concurrent.futures import Future

    from asgiref.sync import AsyncToSync

    running = loop.get_loop_thread().loop
    def bare():
        done = Future()
        running.call_soon_threadsafe(done.set_result, 1)
        return done.result()
    async def answer(done):
        done.set_result(await trivial())
    def task():
        done = Future()
        running.call_soon_threadsafe(running.create_task, answer(done))
        return done.result()
    async def awaited(awaitable): return await awaitable
    plain = AsyncToSync(awaited)
    step("  a callback on the loop and a Future back (no task)", bare)
    step("  a task on the loop running the coroutine, a Future back", task)
    step("  asgiref's AsyncToSync alone, on the same loop", lambda: plain(trivial()))
    step("  loop.run with the view's timeout and task name", lambda: loop.run(trivial(), 300.0, "weather.get"))
crossings()
step("parse the JSON body (json.loads)", lambda: json.loads(raw))
step("bind: 10-field typed body (marshmallow load)", lambda: plan.binder.body.load(body))
step("check the result against its annotation", lambda: plan.result.check(order))
step("  of which: serialise the result (compact JSON)", lambda: dumps(order))
text = plan.result.check(order)
step("the Response of the checked text", lambda: Response(text, 200, mimetype="application/json"))
step("the Response object (json_response, old path)", lambda: json_response(order))
step("request context (provider data, principal)", lambda: request_context(None, None))
try:
    from stackflask.log import AccessRecord
    environ = EnvironBuilder(path="/v1/bench/order", method="POST").get_environ()
    def access():
        record = AccessRecord(environ, "0" * 32, stack.route_labels, None)
        record.status, record.headers = "200 OK", [("Content-Length", "120")]
        record.sent_by([b""])
    step("access record and line (to /dev/null)", access)
except ImportError:  # before issue 12: the line alone
    step("access-log line (to /dev/null)", lambda: log.handle(log.makeRecord(log.name, logging.INFO, "", 0, "127.0.0.1 \"GET /v1/x\" 200 0.3ms", None, None, extra={"request_id": "x"})))
step("the whole POST through the WSGI app, no server", post("/v1/bench/order"), 2000)
step("bind: 10-field pydantic body (TypeAdapter in a marshmallow field)", lambda: pydantic_plan.binder.body.load(body))
step("check the pydantic result against its annotation", lambda: pydantic_plan.result.check(pydantic_order))
step("  of which: serialise the pydantic result (model_dump + compact JSON)", lambda: dumps(pydantic_order))
step("the whole pydantic POST through the WSGI app, no server", post("/v1/bench/order_pydantic"), 2000)
locations = routes["get_available_locations"].plan.result.check
step("check the GET's result (dict[str, list[str]])", lambda: locations({"locations": ["Paris", "Tokyo"]}))
step("the whole GET /v1/weather/locations through the WSGI app, no server", get("/v1/weather/locations"), 2000)
import floor_app  # noqa: E402
step("the floor's whole POST through its WSGI app (bench/floor_app.py)", post("/v1/bench/order", floor_app.app), 2000)
step("the floor's whole GET through its WSGI app", get("/v1/weather/locations", floor_app.app), 2000)
stack.shutdown()
