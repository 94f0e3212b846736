"""Uploaded files: what a parameter annotated ``UploadFile`` receives.

Pure (Werkzeug's ``FileStorage`` in, no Flask); startup recognises upload types,
request time wraps each uploaded part. Werkzeug spools a part to a temporary
file once it passes 500 KiB, so an upload is never held whole in memory, and
the file is closed (and so deleted) when the request ends. A parameter
annotated with FastAPI's or Starlette's ``UploadFile`` gets a real
``starlette.datastructures.UploadFile``; one annotated with stackflask's own
:class:`UploadFile` gets the same interface without Starlette.
"""

from __future__ import annotations

import os
from typing import IO, Any

from marshmallow import ValidationError, fields
from werkzeug.datastructures import FileStorage, Headers

from .fields import Problem

_STARLETTE = ("starlette.datastructures", "UploadFile")


class UploadFile:
    """An uploaded file, with Starlette's ``UploadFile`` interface.

    ``file`` is the underlying binary file object; the ``async`` methods do
    the same as their ``file`` counterparts.
    """

    def __init__(
        self,
        file: IO[bytes],
        *,
        size: int | None = None,
        filename: str | None = None,
        headers: Headers | None = None,
    ) -> None:
        self.file = file
        self.size = size
        self.filename = filename
        self.headers = headers if headers is not None else Headers()

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    async def read(self, size: int = -1) -> bytes:
        return self.file.read(size)

    async def write(self, data: bytes) -> None:
        if self.size is not None:
            self.size += len(data)
        self.file.write(data)

    async def seek(self, offset: int) -> None:
        self.file.seek(offset)

    async def close(self) -> None:
        self.file.close()

    def __repr__(self) -> str:
        return f"UploadFile(filename={self.filename!r}, size={self.size!r})"


def is_upload_type(tp: Any) -> bool:
    """Whether ``tp`` is stackflask's, Starlette's or FastAPI's ``UploadFile``."""
    if not isinstance(tp, type):
        return False
    return any(
        klass is UploadFile or (klass.__module__, klass.__qualname__) == _STARLETTE
        for klass in tp.__mro__
    )


def _size(stream: IO[bytes]) -> int:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    return size


class UploadField(fields.Field):
    """One uploaded part, as an instance of the annotated ``UploadFile`` class
    (or its content, for ``bytes``)."""

    def __init__(self, cls: type, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cls = cls

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, FileStorage):
            raise ValidationError(Problem("Expected an uploaded file.", "upload_file_type"))
        stream = value.stream
        if self.cls in (bytes, bytearray):
            return self.cls(stream.read())
        size = _size(stream)
        if self.cls is UploadFile or issubclass(self.cls, UploadFile):
            return self.cls(stream, size=size, filename=value.filename, headers=value.headers)
        from starlette.datastructures import Headers as StarletteHeaders

        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in value.headers.items()]
        starlette_upload: Any = self.cls
        return starlette_upload(
            file=stream, size=size, filename=value.filename, headers=StarletteHeaders(raw=raw)
        )
