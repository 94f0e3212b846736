"""The OpenAPI document: valid, complete, and true to what the server does."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis.generation import GenerationMode


API = '''
from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, field
from typing import AsyncIterator, Literal, Optional, Protocol

from stackflask import Api, InlineProviderSpec, webmethod


def available_providers():
    return [InlineProviderSpec(api=Api.shelf, provider_type="inline::mem",
                               module="shelf_impl_openapi")]


class Kind(enum.Enum):
    paper = "paper"
    cloth = "cloth"


@dataclass
class Book:
    title: str
    year: int
    kind: Kind = Kind.paper
    tags: list[str] = field(default_factory=list)
    note: Optional[str] = None


class Shelf(Protocol):
    """Books on a shelf."""

    @webmethod(route="/books/{book_id}", method="GET")
    async def get_book(self, book_id: int, verbose: bool = False) -> Book:
        """Get one book.

        Looks it up by number.
        """
        ...

    @webmethod(route="/books", method="GET")
    async def list_books(self, kind: Kind | None = None, tags: list[str] | None = None,
                         order: Literal["asc", "desc"] = "asc", limit: int = 10) -> list[Book]:
        """List books."""
        ...

    @webmethod(route="/books", method="POST")
    async def add_book(self, book: Book, when: datetime.datetime | None = None) -> Book:
        """Add a book."""
        ...

    @webmethod(route="/books/{book_id}", method="DELETE")
    async def remove_book(self, book_id: int) -> None:
        """Remove a book."""
        ...

    @webmethod(route="/books/stream", method="GET")
    async def stream_books(self) -> AsyncIterator[Book]:
        """Stream every book."""
        ...

    @webmethod(route="/files/{name:path}", method="GET")
    async def read_file(self, name: str) -> dict[str, str]:
        """A path parameter that takes slashes."""
        ...
'''

IMPL = '''
from werkzeug.exceptions import NotFound

from shelf_api_openapi import Book, Kind


class Shelf:
    def __init__(self):
        self.books = {1: Book("Dune", 1965, Kind.cloth, ["sf"])}

    async def get_book(self, book_id, verbose=False):
        if book_id not in self.books:
            raise NotFound(f"no book {book_id}")
        return self.books[book_id]

    async def list_books(self, kind=None, tags=None, order="asc", limit=10):
        books = sorted(self.books.values(), key=lambda b: b.year, reverse=order == "desc")
        return [b for b in books if kind is None or b.kind == kind][:max(limit, 0)]

    async def add_book(self, book, when=None):
        return book

    async def remove_book(self, book_id):
        self.books.pop(book_id, None) if book_id != 1 else None

    async def stream_books(self):
        for book in list(self.books.values()):
            yield book

    async def read_file(self, name):
        return {"name": name}


def get_provider_impl(config, deps):
    return Shelf()
'''


@pytest.fixture
def shelf_app(stack_files, make_app):
    stack_files.module("shelf_api_openapi", API)
    stack_files.module("shelf_impl_openapi", IMPL)
    stack_files.api_spec("shelf.yaml", {
        "module": "shelf_api_openapi", "name": "shelf", "protocol": "Shelf",
    })
    path = stack_files.run_config({
        "image_name": "shelf",
        "providers": {"shelf": [{"provider_id": "mem", "provider_type": "inline::mem"}]},
    })
    return make_app(str(path))


def test_default_document_is_valid(client):
    document = client.get("/openapi.json").json
    validate(document)
    assert document["openapi"] == "3.1.0"
    op = document["paths"]["/v1/weather/locations"]["get"]
    assert op["summary"] == "Get the available locations."
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "object",
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
    }


def test_typed_document(shelf_app):
    document = shelf_app.test_client().get("/openapi.json").json
    validate(document)
    paths = document["paths"]
    get_book = paths["/v1/books/{book_id}"]["get"]
    assert get_book["summary"] == "Get one book."
    assert get_book["description"] == "Looks it up by number."
    params = {p["name"]: p for p in get_book["parameters"]}
    assert params["book_id"]["in"] == "path" and params["book_id"]["required"] is True
    assert params["book_id"]["schema"]["type"] == "integer"
    assert params["verbose"] == {
        "name": "verbose", "in": "query", "required": False,
        "schema": {"type": "boolean", "default": False},
    }
    listing = {p["name"]: p for p in paths["/v1/books"]["get"]["parameters"]}
    assert listing["kind"]["schema"]["enum"] == ["paper", "cloth", None]
    assert listing["tags"]["schema"]["type"] == ["array", "null"]
    assert listing["order"]["schema"]["enum"] == ["asc", "desc"]
    assert listing["limit"]["schema"] == {"type": "integer", "default": 10}
    body = paths["/v1/books"]["post"]["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    assert schema["required"] == ["book"]
    assert set(schema["properties"]) == {"book", "when"}
    book = document["components"]["schemas"]["Book"]
    assert set(book["required"]) == {"title", "year"}
    assert paths["/v1/books/{book_id}"]["delete"]["responses"]["204"]
    stream = paths["/v1/books/stream"]["get"]["responses"]["200"]["content"]
    assert list(stream) == ["text/event-stream"]
    data = stream["text/event-stream"]["schema"]["properties"]["data"]
    assert data["contentMediaType"] == "application/json"
    assert {"$ref": "#/components/schemas/Book"} in data["contentSchema"]["anyOf"]
    assert "/v1/files/{name}" in paths
    four_hundred = get_book["responses"]["400"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/ValidationError"} in four_hundred["anyOf"]


def test_docs_page_is_offline(client):
    response = client.get("/docs")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "openapi.json" in page
    assert "http://" not in page and "https://" not in page


def fuzz(app, mode):
    """Run schemathesis on every operation of ``app``'s document, in-process:
    valid requests must succeed as documented, invalid ones get a 4xx, never a 5xx.
    Returns how many operations had cases generated."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    tested = 0
    for operation in operations:

        @given(operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate()

        try:
            check()
        except Unsatisfiable:  # no invalid request exists (no inputs, or only free strings)
            assert mode is GenerationMode.NEGATIVE
            continue
        tested += 1
    return tested


MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


def test_schemathesis_default(app):
    assert fuzz(app, GenerationMode.POSITIVE) == 6


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_schemathesis_typed(shelf_app, mode):
    # Negative cases exist for the operations with typed inputs: get, list, add, remove.
    assert fuzz(shelf_app, mode) == (11 if mode is GenerationMode.POSITIVE else 4)
