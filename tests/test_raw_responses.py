"""Raw responses: ``-> Response`` and ``-> bytes`` send what the provider returns
(issue 9, point 4).

The API's methods are annotated with each response class Llama Stack's APIs
use (FastAPI's and Starlette's ``Response`` family, Flask's ``Response``) and
with ``bytes``; the provider returns one of each. ``/v1/raw/gated`` streams a
body whose second chunk waits for ``/v1/raw/release``, to show through a real
waitress server that the first chunk is sent before the body is complete.
Test-client requests are ``buffered=True`` so that the response is closed after
it is read, as a WSGI server closes it (a ``FileResponse`` holds an open file).
"""

from __future__ import annotations

import mimetypes

import pytest
import requests
from conftest import waitress_in_thread

from stackflask import StartupError, create_app

API = '''
from typing import Any, Protocol

import flask
from fastapi import Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.responses import Response as StarletteResponse

from stackflask import webmethod


class Raw(Protocol):
    @webmethod(route="/raw/plain", method="GET")
    async def plain(self) -> Response: ...

    @webmethod(route="/raw/starlette", method="POST")
    async def starlette(self) -> StarletteResponse: ...

    @webmethod(route="/raw/json", method="GET")
    async def json_response(self) -> JSONResponse: ...

    @webmethod(route="/raw/text", method="GET")
    async def text(self) -> PlainTextResponse: ...

    @webmethod(route="/raw/stream", method="GET")
    async def stream(self) -> StreamingResponse: ...

    @webmethod(route="/raw/file", method="GET")
    async def file(self, path: str, filename: str | None = None) -> FileResponse: ...

    @webmethod(route="/raw/flask", method="GET")
    async def flask_response(self) -> flask.Response: ...

    @webmethod(route="/raw/bytes", method="GET")
    async def raw_bytes(self) -> bytes: ...

    @webmethod(route="/raw/not-a-response", method="GET")
    async def not_a_response(self) -> Response: ...

    @webmethod(route="/raw/gated", method="GET")
    async def gated(self) -> StreamingResponse: ...

    @webmethod(route="/raw/release", method="POST")
    async def release(self) -> None: ...
'''

IMPL = '''
import asyncio

import flask
from fastapi import Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.responses import Response as StarletteResponse


class Impl:
    def __init__(self):
        self.gate = None

    async def plain(self):
        return Response(content=b"hi", media_type="text/plain", status_code=201,
                        headers={"X-Thing": "1"})

    async def starlette(self):
        return StarletteResponse(content=b"<p>ok</p>", media_type="text/html", status_code=202)

    async def json_response(self):
        return JSONResponse({"a": [1, 2]}, status_code=202, headers={"X-Json": "yes"})

    async def text(self):
        return PlainTextResponse("h\\u00e9llo")

    async def stream(self):
        async def body():
            yield b"a"
            yield b"b"

        return StreamingResponse(body(), media_type="application/x-ndjson")

    async def file(self, path, filename=None):
        return FileResponse(path, filename=filename)

    async def flask_response(self):
        return flask.Response(b"from flask", status=203, mimetype="text/x-flask",
                              headers={"X-Flask": "2"})

    async def raw_bytes(self):
        return b"\\x00\\x01"

    async def not_a_response(self):
        return {"not": "a response"}

    async def gated(self):
        gate = self.gate = asyncio.Event()

        async def body():
            yield b"first\\n"
            await gate.wait()
            yield b"second\\n"

        return StreamingResponse(body(), media_type="text/plain")

    async def release(self):
        self.gate.set()


def get_provider_impl(config, deps):
    return Impl()
'''


@pytest.fixture
def raw_config(stack_files):
    return stack_files.serve_api("raw", "Raw", API, IMPL)()


@pytest.fixture
def app(raw_config, make_app):
    return make_app(str(raw_config))


def test_response_status_headers_media_type_and_body(client):
    response = client.get("/v1/raw/plain", buffered=True)
    assert response.status_code == 201
    assert response.mimetype == "text/plain"
    assert response.headers["X-Thing"] == "1"
    assert response.data == b"hi"


def test_starlette_response_class(client):
    response = client.post("/v1/raw/starlette", buffered=True)
    assert response.status_code == 202
    assert response.mimetype == "text/html"
    assert response.data == b"<p>ok</p>"


def test_json_response(client):
    response = client.get("/v1/raw/json", buffered=True)
    assert response.status_code == 202
    assert response.mimetype == "application/json"
    assert response.headers["X-Json"] == "yes"
    assert response.json == {"a": [1, 2]}


def test_plain_text_response(client):
    response = client.get("/v1/raw/text", buffered=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.data == "h\u00e9llo".encode()


def test_streaming_response_body(client):
    response = client.get("/v1/raw/stream", buffered=True)
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    assert response.data == b"ab"


def test_file_response(client, tmp_path):
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n1,2\n")
    response = client.get("/v1/raw/file", query_string={"path": str(path)}, buffered=True)
    assert response.status_code == 200
    assert response.data == b"a,b\n1,2\n"
    assert response.mimetype == mimetypes.guess_type(str(path))[0] == "text/csv"
    assert "Content-Disposition" not in response.headers


def test_file_response_with_filename_is_an_attachment(client, tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)))
    response = client.get("/v1/raw/file", buffered=True,
                          query_string={"path": str(path), "filename": "report.bin"})
    assert response.status_code == 200
    assert response.data == bytes(range(256))
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment")
    assert 'filename="report.bin"' in disposition


def test_flask_response(client):
    response = client.get("/v1/raw/flask", buffered=True)
    assert response.status_code == 203
    assert response.mimetype == "text/x-flask"
    assert response.headers["X-Flask"] == "2"
    assert response.data == b"from flask"


def test_bytes_result(client):
    response = client.get("/v1/raw/bytes", buffered=True)
    assert response.status_code == 200
    assert response.mimetype == "application/octet-stream"
    assert response.data == b"\x00\x01"


def test_raw_method_returning_a_dict_is_500(client):
    response = client.get("/v1/raw/not-a-response", buffered=True)
    assert response.status_code == 500
    assert response.json == {"detail": "Internal server error: An unexpected error occurred."}


def test_streaming_response_is_streamed_through_waitress(raw_config, make_app):
    with waitress_in_thread(make_app(str(raw_config))) as url:
        try:
            with requests.get(url + "/v1/raw/gated", stream=True, timeout=5) as response:
                assert response.status_code == 200
                chunks = response.iter_content(chunk_size=None)
                # The body is blocked on the gate: the first chunk can only arrive
                # if it was sent before the second one exists.
                received = b""
                while b"first\n" not in received:
                    received += next(chunks)
                assert received == b"first\n"
                assert requests.post(url + "/v1/raw/release", timeout=5).status_code == 200
                received += b"".join(chunks)
                assert received == b"first\nsecond\n"
        finally:
            # Never leave the provider's body waiting on the gate, even when the test fails.
            requests.post(url + "/v1/raw/release", timeout=5)


# -- return annotations that cannot be served --------------------------------

BAD_API = '''
from typing import Protocol

from stackflask import webmethod


class Proto(Protocol):
    @webmethod(route="/bad/result", method="GET")
    async def method(self) -> {annotation}: ...
'''

BAD_IMPL = '''
class Impl:
    async def method(self):
        return None


def get_provider_impl(config, deps):
    return Impl()
'''


@pytest.mark.parametrize("annotation", ["complex", "set[complex]", "dict[str, complex]"])
def test_unservable_return_annotation_is_a_startup_error(stack_files, annotation):
    stack_files.module("bad_result_api", BAD_API.format(annotation=annotation))
    stack_files.module("bad_result_impl", BAD_IMPL)
    stack_files.api_spec("bad.yaml", {"module": "bad_result_api", "name": "bad",
                                      "protocol": "Proto"})
    stack_files.provider_file("inline", "bad", "impl", {"module": "bad_result_impl"})
    path = stack_files.run_config({
        "providers": {"bad": [{"provider_id": "impl", "provider_type": "inline::impl"}]},
    })
    with pytest.raises(StartupError) as info:
        create_app(str(path))
    assert any("Proto.method" in line and "complex" in line for line in info.value.problems), (
        info.value.problems)
