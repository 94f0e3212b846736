"""The typed client's file parts: what a ``File()`` argument may be, as the part
of the ``multipart/form-data`` body that the server's binder reads as a file.

Request time, on the caller's side; pure (no Flask, no httpx: it builds the
``(filename, content, content_type)`` tuples httpx encodes). Werkzeug takes a
part for a file only when it has a filename, so every part gets one:
:data:`DEFAULT_FILENAME` when the value carries none. An ``UploadFile`` (the
server's own, or Starlette's) is sent as received, which is how the passthrough
provider passes an upload on.
"""

from __future__ import annotations

import io
import os
import typing
from typing import IO, Any, Union

from .uploads import is_upload_type

#: The filename of a part whose value has none (``bytes``, an unnamed stream).
DEFAULT_FILENAME = "upload"
_OCTETS = "application/octet-stream"

#: One file part: filename, content (bytes or a binary file read from its
#: start), content type (``None``: guessed from the filename).
FilePart = tuple[str, Union[bytes, IO[bytes]], Union[str, None]]


def file_parts(value: Any, many: bool, where: str) -> list[FilePart]:
    """The parts for one ``File()`` argument (a list of them when ``many``).

    Raises ``TypeError`` naming ``where`` for a value that is not a file.
    """
    if not many:
        return [file_part(value, where)]
    if not isinstance(value, list):
        raise TypeError(f"{where}: expected a list of files, got {type(value).__name__}")
    return [file_part(item, f"{where}[{i}]") for i, item in enumerate(value)]


def file_part(value: Any, where: str) -> FilePart:
    """One file: ``bytes``, a binary file object, an ``UploadFile``, or a
    ``(filename, content)`` / ``(filename, content, content_type)`` tuple whose
    content is ``bytes`` or a binary file object."""
    if isinstance(value, tuple) and len(value) in (2, 3):
        filename, content, *rest = value
        content_type = rest[0] if rest else None
        if not (filename is None or isinstance(filename, str)):
            raise TypeError(f"{where}: the filename must be a string, got {type(filename).__name__}")
        if not (content_type is None or isinstance(content_type, str)):
            raise TypeError(
                f"{where}: the content type must be a string, got {type(content_type).__name__}"
            )
        return filename or DEFAULT_FILENAME, _content(content, where), content_type
    if is_upload_type(type(value)):
        return value.filename or DEFAULT_FILENAME, value.file, value.content_type
    if isinstance(value, (bytes, bytearray, memoryview)):
        return DEFAULT_FILENAME, bytes(value), _OCTETS
    content = _content(value, where)
    name = getattr(value, "name", None)
    filename = os.path.basename(name) if isinstance(name, str) else ""
    return filename or DEFAULT_FILENAME, content, None


def _content(value: Any, where: str) -> bytes | IO[bytes]:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (str, io.TextIOBase)):
        raise TypeError(
            f"{where}: expected bytes or a binary file, got text (send its .encode(), or open "
            "the file with 'rb')"
        )
    if callable(getattr(value, "read", None)):
        return typing.cast(IO[bytes], value)
    raise TypeError(
        f"{where}: expected bytes, a binary file, an UploadFile or a (filename, content"
        f"[, content_type]) tuple, got {type(value).__name__}"
    )
