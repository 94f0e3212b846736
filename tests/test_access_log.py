"""Structured access lines and request ids on every line, read from real servers' stderr."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
from typing import Any

import pytest
import requests
from conftest import free_port, script, server_env

from stackflask.log import make_handler

API = '''
from collections.abc import AsyncIterator
from typing import Protocol

from starlette.responses import Response, StreamingResponse

from stackflask import webmethod


class Journal(Protocol):
    @webmethod(route="/journal/things/{thing_id}", method="GET")
    async def get_thing(self, thing_id: str) -> dict[str, str]: ...

    @webmethod(route="/journal/ticks", method="GET")
    async def ticks(self, n: int, pause: float = 0.0) -> AsyncIterator[dict[str, int]]: ...

    @webmethod(route="/journal/broken", method="GET")
    async def broken(self) -> AsyncIterator[dict[str, int]]: ...

    @webmethod(route="/journal/block", method="GET")
    async def block(self) -> dict[str, bool]: ...

    @webmethod(route="/journal/torn", method="GET")
    async def torn(self) -> StreamingResponse: ...

    @webmethod(route="/journal/chores", method="POST")
    async def chores(self) -> Response: ...
'''

IMPL = '''
import asyncio
import logging
import time

from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

log = logging.getLogger("journal")


class Opaque:
    def __repr__(self):
        return "<opaque>"


class Journal:
    async def get_thing(self, thing_id):
        log.info("looked up %s", thing_id, extra={"user": 7, "thing": Opaque()})
        return {"id": thing_id}

    async def ticks(self, n, pause=0.0):
        for i in range(n):
            if i:
                await asyncio.sleep(pause)
            yield {"i": i}

    async def broken(self):
        yield {"i": 0}
        raise RuntimeError("the source went away")

    async def block(self):
        time.sleep(0.5)  # blocks the loop: the watchdog warns
        return {"done": True}

    async def torn(self):
        async def body():
            yield b"first\\n"
            raise RuntimeError("the body tore")

        return StreamingResponse(body(), media_type="text/plain")

    async def chores(self):
        async def chore():
            raise RuntimeError("the chore failed")

        return Response(b"done", background=BackgroundTask(chore))


def get_provider_impl(config, deps):
    return Journal()
'''

HEADERS = {"User-Agent": "journal-test/1.0"}


@pytest.fixture
def run_journal(stack_files: Any, start: Any) -> Any:
    """``run_journal(log_format, command="stackflask")``: ``stackflask run``, or
    ``gunicorn``, serving the journal API."""
    config = stack_files.serve_api("journal", "Journal", API, IMPL)

    def run(log_format: str, command: str = "stackflask") -> Any:
        port = free_port()
        if command == "gunicorn":
            args = [script("gunicorn"), "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5",
                    "stackflask:create_app()"]
        else:
            args = [script("stackflask"), "run", "--port", str(port)]
        return start(
            args,
            port,
            env=server_env(
                [stack_files.pkgs], STACKFLASK_CONFIG=config(server={"loop_lag_warning": 0.2}),
                STACKFLASK_LOG_FORMAT=log_format, STACKFLASK_LOGGING="journal=info",
            ),
        )

    return run


def get(server: Any, path: str, rid: str) -> requests.Response:
    return requests.get(server.url(path), headers={**HEADERS, "X-Request-ID": rid}, timeout=10)


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_json_lines_have_fields_and_every_line_its_request_id(run_journal):
    server = run_journal("json")
    thing = get(server, "/v1/journal/things/Zürich", "thing-1")
    ticks = get(server, "/v1/journal/ticks?n=3&pause=0.15", "ticks-1")
    broken = get(server, "/v1/journal/broken", "broken-1")
    assert get(server, "/v1/journal/block", "block-1").status_code == 200
    assert get(server, "/v1/journal/nowhere", "missing-1").status_code == 404
    assert server.stop() == 0
    lines = json_lines(server.output())

    def access(rid: str) -> dict[str, Any]:
        [line] = [e for e in lines if "status" in e and e["request_id"] == rid]
        return line

    line = access("thing-1")
    assert line["message"] == '127.0.0.1 "GET /v1/journal/things/Z\\xc3\\xbcrich" 200 ' + (
        f"{line['duration_ms']:.1f}ms"
    )
    assert {k: v for k, v in line.items() if k not in ("time", "duration_ms", "message")} == {
        "level": "INFO", "logger": "stackflask.request", "request_id": "thing-1",
        "method": "GET", "api": "journal", "route": "/v1/journal/things/{thing_id}",
        "path": "/v1/journal/things/Zürich", "status": 200,
        "bytes_sent": len(thing.content), "remote_addr": "127.0.0.1",
        "user_agent": "journal-test/1.0",
    }
    assert 0 < line["duration_ms"] < 5000

    [said] = [e for e in lines if e["logger"] == "journal"]
    assert (said["message"], said["request_id"], said["user"], said["thing"]) == (
        "looked up Zürich", "thing-1", 7, "<opaque>")

    line = access("ticks-1")
    assert (line["route"], line["status"], line["events"]) == ("/v1/journal/ticks", 200, 3)
    assert line["bytes_sent"] == len(ticks.content)
    assert line["duration_ms"] >= 300  # the whole stream, not its first event

    [failed] = [e for e in lines if e["message"] == "journal.broken failed mid-stream"]
    assert failed["request_id"] == "broken-1"
    assert "RuntimeError: the source went away" in failed["traceback"]
    line = access("broken-1")
    assert (line["events"], line["bytes_sent"]) == (2, len(broken.content))

    [blocked] = [e for e in lines if "event loop has been blocked" in e["message"]]
    assert blocked["request_id"] == "block-1"
    assert "by journal.block" in blocked["message"]

    line = access("missing-1")
    assert (line["api"], line["route"], line["status"]) == ("-", "<unmatched>", 404)


def test_text_access_line_keeps_its_format_and_covers_the_whole_stream(run_journal):
    server = run_journal("text")
    get(server, "/v1/journal/ticks?n=3&pause=0.15", "ticks-2")
    get(server, '/v1/journal/things/a"b', "quote-2")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(server, "/v1/journal/torn", "torn-2")
    assert server.stop() == 0
    output = server.output()
    match = re.search(
        r' INFO stackflask\.request \[ticks-2\] 127\.0\.0\.1 '
        r'"GET /v1/journal/ticks\?n=3&pause=0\.15" 200 (\d+\.\d)ms$', output, re.M,
    )
    assert match, output
    assert float(match.group(1)) >= 300
    assert re.search(
        r'\[quote-2\] 127\.0\.0\.1 "GET /v1/journal/things/a\\x22b" 200 \d+\.\dms$', output, re.M
    ), output
    assert re.search(
        r" ERROR stackflask\.request \[torn-2\] journal\.torn failed mid-body\nTraceback", output
    ), output


@pytest.mark.parametrize("command", ["stackflask", "gunicorn"])
def test_a_raw_response_failing_after_its_headers_is_logged_once_with_its_request_id(
    run_journal, command
):
    server = run_journal("json", command)
    with requests.get(server.url("/v1/journal/torn"), stream=True, timeout=10) as torn:
        chunks = torn.iter_content(chunk_size=None)
        assert next(chunks) == b"first\n"
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            b"".join(chunks)  # the connection is aborted: the body is cut short
    chores = requests.post(server.url("/v1/journal/chores"), timeout=10)
    assert chores.content == b"done"
    assert server.stop() == 0
    output = server.output()
    # waitress's and gunicorn's own lines for the same exceptions are dropped
    assert "Exception while serving" not in output, output
    assert "Error handling request" not in output, output
    errors = [e for e in json_lines(output) if e["level"] == "ERROR"]
    assert [(e["logger"], e["request_id"], e["message"]) for e in errors] == [
        ("stackflask.request", torn.headers["X-Request-ID"], "journal.torn failed mid-body"),
        ("stackflask.request", chores.headers["X-Request-ID"],
         "journal.chores failed in its background task"),
    ], output
    assert "RuntimeError: the body tore" in errors[0]["traceback"]
    assert "RuntimeError: the chore failed" in errors[1]["traceback"]


class Cycle(list[Any]):
    def __repr__(self) -> str:
        return "<cycle>"


cycle = Cycle()
cycle.append(cycle)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"user": 1, "tags": ["a"]}, {"user": 1, "tags": ["a"]}),
        ({"when": dt.date(2020, 1, 2)}, {"when": "datetime.date(2020, 1, 2)"}),
        ({"pairs": {(1, 2): "x"}, "ok": {"a": 1}}, {"pairs": "{(1, 2): 'x'}", "ok": {"a": 1}}),
        ({"loop": cycle}, {"loop": "<cycle>"}),
        ({"level": "mine", "logger": "mine"}, {}),
    ],
)
def test_json_lines_hold_the_extra_fields(extra, expected):
    stream = io.StringIO()
    handler = make_handler("json")
    handler.setStream(stream)
    logger = logging.getLogger("test_access_log.extra")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("hello", extra=extra)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    line = json.loads(stream.getvalue())
    assert {k: v for k, v in line.items() if k != "time"} == {
        "level": "WARNING", "logger": "test_access_log.extra", "request_id": "-",
        "message": "hello", **expected,
    }
