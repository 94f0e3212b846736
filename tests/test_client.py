"""The typed client against real servers: waitress in a thread, serving the
weather API of the embedded default and a wider API written here."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, waitress_in_thread

from blueprints.weather import WeatherProvider
from stackflask import UploadFile
from stackflask.client import (
    AsyncClient,
    RemoteError,
    RemoteNotFoundError,
    RemoteNotImplementedError,
    RemotePermissionError,
    RemoteTimeoutError,
    RemoteUnavailableError,
    RemoteValueError,
    connect,
    connect_sync,
)

GADGETS_API = """
from __future__ import annotations

import datetime as dt
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import BaseModel

from stackflask import File, Form, UploadFile, webmethod


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Item:
    id: str
    color: Color
    tags: list[str]
    made: dt.datetime


class Note(BaseModel):
    title: str
    stars: int = 0


@runtime_checkable
class Gadgets(Protocol):
    @webmethod(route="/items/{item_id}", method="GET")
    async def get_item(
        self, item_id: str, color: Color = Color.RED, tags: list[str] | None = None
    ) -> Item: ...

    @webmethod(route="/items", method="POST")
    async def add_item(self, item: Item, note: Note | None = None) -> dict[str, Item]: ...

    @webmethod(route="/notes/{name:path}", method="PUT")
    async def put_note(self, name: str, note: Note) -> Note: ...

    @webmethod(route="/items/{item_id}", method="DELETE")
    async def delete_item(self, item_id: str) -> None: ...

    @webmethod(route="/later", method="GET")
    async def later(self, at: dt.datetime, days: int = 1) -> list[dt.datetime]: ...

    @webmethod(route="/count", method="POST")
    async def count(self, n: int, fail_at: int | None = None) -> AsyncIterator[int]: ...

    @webmethod(route="/ticks", method="GET")
    async def ticks(self, n: int) -> AsyncIterator[Note]:
        if False:
            yield Note(title="")

    @webmethod(route="/fail", method="POST")
    async def fail(self, kind: str) -> str: ...

    @webmethod(route="/slow", method="GET")
    async def slow(self, seconds: float) -> str: ...

    @webmethod(route="/provider-data", method="GET")
    async def provider_data(self) -> dict[str, str] | None: ...

    @webmethod(route="/closed", method="GET")
    async def closed(self) -> int: ...

    @webmethod(route="/files", method="POST")
    async def upload_file(
        self,
        file: UploadFile,
        purpose: Annotated[Color, Form()],
        labels: Annotated[list[str] | None, Form()] = None,
    ) -> dict[str, Any]: ...

    @webmethod(route="/blobs", method="POST")
    async def upload_bytes(
        self, data: Annotated[bytes, File()], note: Annotated[Note, Form()], copies: Annotated[int, Form()] = 1
    ) -> dict[str, Any]: ...

    @webmethod(route="/bundles/{name}", method="POST")
    async def upload_many(
        self, name: str, files: Annotated[list[UploadFile], File()], made: Annotated[dt.datetime | None, Form()] = None
    ) -> list[str]: ...
"""

GADGETS_IMPL = """
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib

from werkzeug.exceptions import Conflict, NotFound

from gadgets_api import Color, Item, Note
from stackflask import get_provider_data

MADE = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)


class Gadgets:
    def __init__(self):
        self.closed_streams = 0

    async def get_item(self, item_id, color=Color.RED, tags=None):
        if item_id == "missing":
            raise NotFound(f"no item {item_id!r}")
        return Item(item_id, color, tags or [], MADE)

    async def add_item(self, item, note=None):
        assert isinstance(item, Item) and isinstance(item.color, Color)
        return {note.title if note else "untitled": item}

    async def put_note(self, name, note):
        return Note(title=f"{name}: {note.title}", stars=note.stars + 1)

    async def delete_item(self, item_id):
        return None

    async def later(self, at, days=1):
        return [at + dt.timedelta(days=i) for i in range(days + 1)]

    async def count(self, n, fail_at=None):
        async def numbers():
            try:
                for i in range(n):
                    if i == fail_at:
                        raise ValueError(f"stopped at {i}")
                    yield i
                    await asyncio.sleep(0.02)
            finally:
                self.closed_streams += 1
        return numbers()

    async def ticks(self, n):
        for i in range(n):
            yield Note(title=f"tick {i}", stars=i)

    async def fail(self, kind):
        if kind == "value":
            raise ValueError("no such kind")
        if kind == "permission":
            raise PermissionError("not yours")
        if kind == "not-implemented":
            raise NotImplementedError("later")
        if kind == "timeout":
            raise TimeoutError("too slow")
        if kind == "conflict":
            raise Conflict("already there")
        raise RuntimeError("secret internals")

    async def slow(self, seconds):
        await asyncio.sleep(seconds)
        return "done"

    async def provider_data(self):
        return get_provider_data()

    async def closed(self):
        return self.closed_streams

    async def upload_file(self, file, purpose, labels=None):
        content = await file.read()
        return {
            "filename": file.filename,
            "content_type": file.content_type,
            "size": file.size,
            "content": content.decode(),
            "purpose": repr(purpose),
            "labels": labels,
        }

    async def upload_bytes(self, data, note, copies=1):
        assert isinstance(data, bytes) and isinstance(note, Note)
        return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "note": repr(note), "copies": copies}

    async def upload_many(self, name, files, made=None):
        return [name, repr(made)] + [f"{f.filename}={(await f.read()).decode()}" for f in files]

    async def health(self):
        return {"status": "OK"}


async def get_provider_impl(config, deps):
    return Gadgets()
"""


class Recorder:
    """WSGI middleware noting each request's Authorization header."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.authorization: list[str | None] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.authorization.append(environ.get("HTTP_AUTHORIZATION"))
        return self.app(environ, start_response)


@pytest.fixture
def gadgets(stack_files: Any, make_app: Any) -> Any:
    """``(url, recorder, module)``: the gadgets API served by waitress."""
    write = stack_files.serve_api("gadgets", "Gadgets", GADGETS_API, "")
    stack_files.module("gadgets_impl", GADGETS_IMPL)
    app = make_app(write())
    recorder = Recorder(app)
    import gadgets_api

    with waitress_in_thread(recorder) as url:
        yield url, recorder, gadgets_api


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_weather_round_trip(make_app: Any) -> None:
    async def main(url: str) -> Any:
        async with AsyncClient(WeatherProvider, url) as client:
            return await client.get_available_locations()

    with waitress_in_thread(make_app()) as url:
        assert asyncio.run(main(url)) == {"locations": ["Paris", "Tokyo"]}


def test_every_method_round_trips(gadgets: Any) -> None:
    url, _, api = gadgets
    made = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)

    async def main() -> None:
        async with AsyncClient(api.Gadgets, url) as client:
            item = await client.get_item("a b", color=api.Color.BLUE, tags=["x", "y"])
            assert item == api.Item("a b", api.Color.BLUE, ["x", "y"], made)
            added = await client.add_item(item, note=api.Note(title="first"))
            assert added == {"first": item}
            assert await client.add_item(item) == {"untitled": item}
            note = await client.put_note("dir/name x", api.Note(title="t", stars=2))
            assert note == api.Note(title="dir/name x: t", stars=3)
            assert await client.delete_item("a") is None
            assert await client.later(made, days=2) == [
                made, made + dt.timedelta(days=1), made + dt.timedelta(days=2)
            ]
            assert [i async for i in await client.count(3)] == [0, 1, 2]
            assert [t async for t in client.ticks(2)] == [
                api.Note(title="tick 0", stars=0), api.Note(title="tick 1", stars=1)
            ]
            assert await client.provider_data() is None

    asyncio.run(main())


def test_isinstance_of_runtime_checkable_protocol(gadgets: Any) -> None:
    url, _, api = gadgets
    client = connect(api.Gadgets, url)
    assert isinstance(client, api.Gadgets)
    assert type(client).__name__ == "GadgetsClient"
    asyncio.run(client.aclose())  # type: ignore[attr-defined]


def test_stream_stopped_early_is_closed_at_the_server(gadgets: Any) -> None:
    url, _, api = gadgets

    async def main() -> list[int]:
        async with AsyncClient(api.Gadgets, url) as client:
            stream = await client.count(10_000)
            seen = [await stream.__anext__(), await stream.__anext__()]
            await stream.aclose()
            return seen

    assert asyncio.run(main()) == [0, 1]

    async def closed() -> int:
        async with AsyncClient(api.Gadgets, url) as client:
            return await client.closed()

    wait_for(lambda: asyncio.run(closed()) == 1)


@pytest.mark.parametrize(
    ("kind", "error", "status", "detail"),
    [
        ("value", RemoteValueError, 400, "Invalid value: no such kind"),
        ("permission", RemotePermissionError, 403, "Permission denied: not yours"),
        ("conflict", RemoteError, 409, "already there"),
        ("boom", RemoteError, 500, "Internal server error: An unexpected error occurred."),
        ("not-implemented", RemoteNotImplementedError, 501, "Not implemented: later"),
        ("timeout", RemoteTimeoutError, 504, "Operation timed out: too slow"),
    ],
)
def test_error_mapping(gadgets: Any, kind: str, error: type, status: int, detail: str) -> None:
    url, _, api = gadgets

    async def main() -> None:
        async with AsyncClient(api.Gadgets, url) as client:
            await client.fail(kind)

    with pytest.raises(error) as info:
        asyncio.run(main())
    assert type(info.value) is error
    assert (info.value.status, info.value.detail, str(info.value)) == (status, detail, detail)
    assert info.value.request_id
    assert info.value.url == f"{url}/v1/fail"


def test_builtin_exception_types(gadgets: Any) -> None:
    url, _, api = gadgets

    async def main(call: Any) -> None:
        async with AsyncClient(api.Gadgets, url) as client:
            await call(client)

    for kind, builtin in [("value", ValueError), ("permission", PermissionError),
                          ("not-implemented", NotImplementedError), ("timeout", TimeoutError)]:
        with pytest.raises(builtin):
            asyncio.run(main(lambda c, kind=kind: c.fail(kind)))
    with pytest.raises(LookupError, match="no item 'missing'") as info:
        asyncio.run(main(lambda c: c.get_item("missing")))
    assert isinstance(info.value, RemoteNotFoundError) and info.value.status == 404


def test_bad_request_lists_problems(gadgets: Any) -> None:
    url, _, api = gadgets

    async def main() -> None:
        async with AsyncClient(api.Gadgets, url) as client:
            await client.get_item("a", color="purple")

    with pytest.raises(RemoteValueError) as info:
        asyncio.run(main())
    assert info.value.status == 400
    assert info.value.detail["errors"][0]["loc"] == ["query", "color"]
    assert str(info.value).startswith("Invalid request: query.color: ")


def test_mid_stream_error_raises_from_the_iterator(gadgets: Any) -> None:
    url, _, api = gadgets

    async def main() -> list[int]:
        seen: list[int] = []
        async with AsyncClient(api.Gadgets, url) as client:
            with pytest.raises(RemoteValueError, match="Invalid value: stopped at 2") as info:
                async for i in await client.count(5, fail_at=2):
                    seen.append(i)
            assert info.value.status == 400 and info.value.request_id
        return seen

    assert asyncio.run(main()) == [0, 1]


def test_timeout(gadgets: Any) -> None:
    url, _, api = gadgets

    async def main() -> None:
        async with AsyncClient(api.Gadgets, url, timeout=0.3) as client:
            await client.slow(3)

    started = time.monotonic()
    with pytest.raises(RemoteTimeoutError, match=r"no answer from http://127\.0\.0\.1:\d+ within 0\.3 s"):
        asyncio.run(main())
    assert time.monotonic() - started < 2


def test_unreachable_server() -> None:
    address = f"http://user:pa55@127.0.0.1:{free_port()}"

    async def main() -> None:
        async with AsyncClient(WeatherProvider, address) as client:
            await client.get_available_locations()

    with pytest.raises(RemoteUnavailableError) as info:
        asyncio.run(main())
    assert info.value.status == 503
    assert "cannot reach http://127.0.0.1:" in str(info.value)
    assert "pa55" not in str(info.value) and "user" not in str(info.value)


def test_provider_data_and_token_reach_the_server(gadgets: Any) -> None:
    url, recorder, api = gadgets

    async def main() -> Any:
        async with AsyncClient(
            api.Gadgets, url, provider_data={"kaze_api_key": "k"}, token="t0ken",
            headers={"X-Extra": "1"},
        ) as client:
            return await client.provider_data()

    assert asyncio.run(main()) == {"kaze_api_key": "k"}
    assert recorder.authorization[-1] == "Bearer t0ken"


def test_sync_wrapper(gadgets: Any) -> None:
    url, _, api = gadgets
    with connect_sync(api.Gadgets, url) as client:
        assert client.get_item("a").color is api.Color.RED
        assert list(client.count(3)) == [0, 1, 2]
        assert [n.stars for n in client.ticks(3)] == [0, 1, 2]
        stream = client.count(10_000)
        assert next(stream) == 0
        stream.close()
        wait_for(lambda: client.closed() == 2)
        with pytest.raises(PermissionError):
            client.fail("permission")


def test_uploads_are_sent_as_the_server_reads_them(gadgets: Any, tmp_path: Path) -> None:
    url, _, api = gadgets
    on_disk = tmp_path / "notes.txt"
    on_disk.write_bytes(b"from disk")
    big = os.urandom(600 * 1024)  # past Werkzeug's 500 KiB: spooled to a file
    made = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)
    resent = UploadFile(io.BytesIO(b"again"), filename="again.txt", headers=None)
    resent.headers["Content-Type"] = "text/x-again"

    def seen(filename: str, content_type: str | None, content: str, labels: Any = None) -> dict[str, Any]:
        return {
            "filename": filename, "content_type": content_type, "size": len(content),
            "content": content, "purpose": "<Color.BLUE: 'blue'>", "labels": labels,
        }

    async def main() -> None:
        async with AsyncClient(api.Gadgets, url) as client:
            blue = api.Color.BLUE
            assert await client.upload_file(b"raw", blue) == seen("upload", "application/octet-stream", "raw")
            assert await client.upload_file(io.BytesIO(b"stream"), blue, labels=["a", "b c"]) == seen(
                "upload", "application/octet-stream", "stream", ["a", "b c"]
            )
            with on_disk.open("rb") as file:
                assert await client.upload_file(file, purpose=blue) == seen("notes.txt", "text/plain", "from disk")
            assert await client.upload_file(("r.csv", b"a,b", "text/csv; charset=utf-8"), blue) == seen(
                "r.csv", "text/csv; charset=utf-8", "a,b"
            )
            assert await client.upload_file(("d.json", io.BytesIO(b"{}")), blue) == seen(
                "d.json", "application/json", "{}"
            )
            assert await client.upload_file(resent, blue) == seen("again.txt", "text/x-again", "again")
            assert await client.upload_bytes(big, api.Note(title="n", stars=2), copies=3) == {
                "size": len(big), "sha256": hashlib.sha256(big).hexdigest(),
                "note": "Note(title='n', stars=2)", "copies": 3,
            }
            assert await client.upload_many("b", [b"one", ("two.txt", b"two")], made=made) == [
                "b", repr(made), "upload=one", "two.txt=two"
            ]
            with pytest.raises(RemoteValueError) as info:
                await client.upload_file(b"x", purpose="green")
            assert info.value.detail["errors"][0]["loc"] == ["body", "purpose"]

    asyncio.run(main())
    with connect_sync(api.Gadgets, url) as client:
        assert client.upload_bytes(b"abc", api.Note(title="s"))["size"] == 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.upload_file("notes.txt", "red"),
         "Gadgets.upload_file: parameter 'file': expected bytes or a binary file, got text"),
        (lambda c: c.upload_file(io.StringIO("x"), "red"), "parameter 'file': expected bytes or a binary file, got text"),
        (lambda c: c.upload_file(42, "red"),
         "parameter 'file': expected bytes, a binary file, an UploadFile or a (filename, content"
         "[, content_type]) tuple, got int"),
        (lambda c: c.upload_file((1, b"x"), "red"), "parameter 'file': the filename must be a string, got int"),
        (lambda c: c.upload_many("b", b"one"), "parameter 'files': expected a list of files, got bytes"),
        (lambda c: c.upload_many("b", [b"ok", 3]), "parameter 'files'[1]: expected bytes, a binary file"),
    ],
)
def test_what_is_not_a_file_is_refused_before_sending(gadgets: Any, call: Any, message: str) -> None:
    url, recorder, api = gadgets

    async def main() -> None:
        async with AsyncClient(api.Gadgets, url) as client:
            await call(client)

    with pytest.raises(TypeError) as info:
        asyncio.run(main())
    assert message in str(info.value)
    assert recorder.authorization == []
