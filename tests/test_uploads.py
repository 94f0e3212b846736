"""File uploads: ``multipart/form-data`` into ``UploadFile`` and ``Form()`` parameters
(issue 9, point 3).

The API takes uploads four ways: stackflask's ``UploadFile``/``File``/``Form``
(``/v1/sf/upload``), FastAPI's (``/v1/fa/upload``), and a bare ``UploadFile``
annotation of each kind with no marker. The provider reads the file through the
Starlette interface (``read(n)``, ``seek``, ``read()``, ``close``) and answers
what it saw; ``/v1/digest`` reads in chunks, yielding to the loop between them,
for the big and concurrent uploads through a real waitress server.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import free_port, script, server_env, waitress_in_thread

API = '''
import enum
from typing import Annotated, Any, Protocol

import fastapi
import starlette.datastructures

from stackflask import File, Form, UploadFile, webmethod


class Purpose(enum.Enum):
    assistants = "assistants"
    batch = "batch"


class Uploads(Protocol):
    @webmethod(route="/sf/upload", method="POST")
    async def sf_upload(
        self,
        file: Annotated[UploadFile, File()],
        purpose: Annotated[Purpose, Form()],
        count: Annotated[int, Form()] = 1,
    ) -> dict[str, Any]: ...

    @webmethod(route="/fa/upload", method="POST")
    async def fa_upload(
        self,
        file: Annotated[fastapi.UploadFile, fastapi.File()],
        purpose: Annotated[Purpose, fastapi.Form()],
        count: Annotated[int, fastapi.Form()] = 1,
    ) -> dict[str, Any]: ...

    @webmethod(route="/bare-sf/upload", method="POST")
    async def bare_sf_upload(self, file: UploadFile) -> dict[str, Any]: ...

    @webmethod(route="/bare-starlette/upload", method="POST")
    async def bare_starlette_upload(
        self, file: starlette.datastructures.UploadFile
    ) -> dict[str, Any]: ...

    @webmethod(route="/digest", method="POST")
    async def digest(self, file: Annotated[UploadFile, File()]) -> dict[str, Any]: ...
'''

IMPL = '''
import asyncio
import hashlib

from starlette.datastructures import UploadFile as StarletteUploadFile


async def describe(file, **form):
    head = await file.read(4)
    await file.seek(0)
    body = await file.read()
    after_end = await file.read()
    await file.close()
    return {
        "starlette": isinstance(file, StarletteUploadFile),
        "filename": file.filename,
        "content_type": file.content_type,
        "size": file.size,
        "header_content_type": {k.lower(): v for k, v in file.headers.items()}.get("content-type"),
        "file_is_readable": callable(getattr(file.file, "read", None)),
        "head": head.hex(),
        "sha256": hashlib.sha256(body).hexdigest(),
        "after_end": after_end.hex(),
        "form": {name: repr(value) for name, value in form.items()},
    }


class Impl:
    async def sf_upload(self, file, purpose, count=1):
        return await describe(file, purpose=purpose, count=count)

    async def fa_upload(self, file, purpose, count=1):
        return await describe(file, purpose=purpose, count=count)

    async def bare_sf_upload(self, file):
        return await describe(file)

    async def bare_starlette_upload(self, file):
        return await describe(file)

    async def digest(self, file):
        digest = hashlib.sha256()
        while chunk := await file.read(64 * 1024):
            digest.update(chunk)
            await asyncio.sleep(0)
        return {"sha256": digest.hexdigest(), "filename": file.filename}


def get_provider_impl(config, deps):
    return Impl()
'''

#: Bytes a careless multipart parser would trip on: CRLF, dashes, NUL, high bytes.
CONTENT = b"hello\r\n--not-the-boundary\r\n\x00\xff\xfe world\r\n"


@pytest.fixture
def uploads_config(stack_files):
    """``uploads_config(server=None)``: the path of a run config serving the uploads API."""
    return stack_files.serve_api("uploads", "Uploads", API, IMPL)


@pytest.fixture
def app(uploads_config, make_app):
    return make_app(str(uploads_config()))


def upload(client, path, content=CONTENT, filename="hello.txt", content_type="text/plain",
           **fields):
    data = {"file": (io.BytesIO(content), filename, content_type), **fields}
    return client.post(path, data=data, content_type="multipart/form-data")


def errors_of(response):
    assert response.status_code == 400, (response.status_code, response.data)
    return response.json["error"]["detail"]["errors"]


def expected_description(starlette, form=None):
    return {
        "starlette": starlette,
        "filename": "hello.txt",
        "content_type": "text/plain",
        "size": len(CONTENT),
        "header_content_type": "text/plain",
        "file_is_readable": True,
        "head": CONTENT[:4].hex(),
        "sha256": hashlib.sha256(CONTENT).hexdigest(),
        "after_end": "",
        "form": form or {},
    }


# -- what the provider gets --------------------------------------------------


def test_stackflask_upload_file(client):
    response = upload(client, "/v1/sf/upload", purpose="assistants", count="3")
    assert response.status_code == 200, response.json
    got = response.json
    expected = expected_description(got["starlette"], {
        "purpose": "<Purpose.assistants: 'assistants'>", "count": "3"})
    assert got == expected


def test_fastapi_upload_file_is_starlettes(client):
    response = upload(client, "/v1/fa/upload", purpose="batch", count="2")
    assert response.status_code == 200, response.json
    assert response.json == expected_description(True, {
        "purpose": "<Purpose.batch: 'batch'>", "count": "2"})


@pytest.mark.parametrize("prefix", ["sf", "fa"])
def test_form_default(client, prefix):
    response = upload(client, f"/v1/{prefix}/upload", purpose="batch")
    assert response.status_code == 200, response.json
    assert response.json["form"] == {"purpose": "<Purpose.batch: 'batch'>", "count": "1"}


@pytest.mark.parametrize(
    ("path", "starlette"),
    [("/v1/bare-sf/upload", None), ("/v1/bare-starlette/upload", True)],
    ids=["stackflask", "starlette"],
)
def test_upload_file_without_marker_is_a_file(client, path, starlette):
    response = upload(client, path)
    assert response.status_code == 200, response.json
    got = response.json
    assert got == expected_description(got["starlette"] if starlette is None else starlette)


# -- bad uploads -------------------------------------------------------------


@pytest.mark.parametrize(
    ("with_file", "fields", "expected"),
    [
        (True, {"purpose": "assistants", "count": "abc"}, [(["body", "count"], None)]),
        (True, {"purpose": "bogus"}, [(["body", "purpose"], None)]),
        (True, {}, [(["body", "purpose"], "missing")]),
        (False, {"purpose": "assistants"}, [(["body", "file"], "missing")]),
        (False, {"count": "abc"}, [(["body", "file"], "missing"), (["body", "purpose"], "missing"),
                                   (["body", "count"], None)]),
    ],
    ids=["count-not-an-int", "purpose-not-a-member", "purpose-missing", "file-missing",
         "three-problems"],
)
@pytest.mark.parametrize("prefix", ["sf", "fa"])
def test_bad_form_is_400_listing_every_problem(client, prefix, with_file, fields, expected):
    path = f"/v1/{prefix}/upload"
    if with_file:
        response = upload(client, path, **fields)
    else:
        response = client.post(path, data=fields, content_type="multipart/form-data")
    errors = errors_of(response)
    assert sorted(e["loc"] for e in errors) == sorted(loc for loc, _ in expected), errors
    for loc, error_type in expected:
        [error] = [e for e in errors if e["loc"] == loc]
        assert error["msg"] and error["type"]
        if error_type is not None:
            assert error["type"] == error_type, error


@pytest.mark.parametrize("prefix", ["sf", "fa"])
def test_no_body_is_400_listing_missing_fields(client, prefix):
    errors = errors_of(client.post(f"/v1/{prefix}/upload"))
    field_errors = [(e["loc"], e["type"]) for e in errors]
    assert sorted(field_errors) == [(["body", "file"], "missing"), (["body", "purpose"], "missing")]


@pytest.mark.parametrize(
    "body", [{"purpose": "assistants"}, {"file": "aGVsbG8=", "purpose": "batch"}],
    ids=["json-body", "json-body-with-file-key"],
)
@pytest.mark.parametrize("prefix", ["sf", "fa"])
def test_a_json_body_is_415(client, prefix, body):
    response = client.post(f"/v1/{prefix}/upload", json=body)
    assert response.status_code == 415
    assert response.json == {"detail": "Unsupported Media Type: the body must be a form, got "
                             "'application/json'; send multipart/form-data"}


def test_upload_over_the_limit_is_413(uploads_config, make_app):
    client = make_app(str(uploads_config({"max_request_bytes": 100_000}))).test_client()
    response = upload(client, "/v1/sf/upload", content=b"x" * 200_000, purpose="batch")
    assert response.status_code == 413
    assert list(response.json) == ["detail"]
    assert upload(client, "/v1/sf/upload", content=b"x" * 50_000, purpose="batch").status_code == 200


# -- through real servers ----------------------------------------------------


@pytest.fixture
def waitress_url(uploads_config, make_app):
    with waitress_in_thread(make_app(str(uploads_config())), threads=8) as url:
        yield url


def post_file(url, content, filename="blob.bin", **fields):
    return requests.post(url, files={"file": (filename, content, "application/octet-stream")},
                         data=fields, timeout=30)


def test_two_megabytes_byte_for_byte_through_waitress(waitress_url):
    content = os.urandom(2 * 1024 * 1024)
    response = post_file(waitress_url + "/v1/digest", content)
    assert response.status_code == 200, response.text
    assert response.json() == {"sha256": hashlib.sha256(content).hexdigest(),
                               "filename": "blob.bin"}
    described = post_file(waitress_url + "/v1/fa/upload", content, purpose="batch")
    assert described.status_code == 200, described.text
    assert described.json()["sha256"] == hashlib.sha256(content).hexdigest()
    assert described.json()["size"] == len(content)


def test_concurrent_uploads_each_get_their_own_bytes(waitress_url):
    payloads = [os.urandom(600_000 + i) for i in range(8)]
    barrier = threading.Barrier(len(payloads))

    def send(i):
        barrier.wait(10)
        return post_file(waitress_url + "/v1/digest", payloads[i], filename=f"f{i}.bin")

    with ThreadPoolExecutor(len(payloads)) as pool:
        responses = list(pool.map(send, range(len(payloads))))
    assert [r.status_code for r in responses] == [200] * len(payloads)
    assert [r.json() for r in responses] == [
        {"sha256": hashlib.sha256(p).hexdigest(), "filename": f"f{i}.bin"}
        for i, p in enumerate(payloads)
    ]


def test_no_temporary_file_outlives_its_request(uploads_config, stack_files, start, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    config = uploads_config({"max_request_bytes": 4 * 1024 * 1024})
    port = free_port()
    server = start(
        [script("stackflask"), "run", "--config", str(config), "--port", str(port)],
        port, env=server_env([stack_files.pkgs], TMPDIR=str(spool)),
    )
    assert os.listdir(spool) == [], "the server left files in TMPDIR before any upload"

    content = os.urandom(3 * 1024 * 1024)
    response = post_file(server.url("/v1/sf/upload"), content, purpose="batch")
    assert response.status_code == 200, response.text
    assert response.json()["sha256"] == hashlib.sha256(content).hexdigest()
    too_big = post_file(server.url("/v1/sf/upload"), os.urandom(5 * 1024 * 1024),
                        purpose="batch")
    assert too_big.status_code == 413

    deadline = time.monotonic() + 3
    while os.listdir(spool) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(spool) == []
