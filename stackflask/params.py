"""Parameter markers: where a webmethod parameter is read from, and its limits.

Pure, no Flask; read at startup. ``Annotated[int, Query()]`` (or the FastAPI
style ``x: int = Query(3)``) says a parameter comes from the query string,
whatever the HTTP method; ``Body``, ``Path``, ``Form`` and ``File`` likewise.
FastAPI's markers of the same names are read the same way, so APIs written for
Llama Stack (which imports them from ``fastapi``) bind unchanged. pydantic and
annotated-types metadata is left in the type for pydantic to apply; anything
else in ``Annotated`` is refused, never ignored.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

#: Where a parameter's value is read from.
SOURCES = ("path", "query", "body", "form", "file")

#: Constraint names a stackflask marker takes, as pydantic's ``Field`` names them.
CONSTRAINTS = ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern")

_FASTAPI_SOURCES = {"Path": "path", "Query": "query", "Body": "body", "Form": "form", "File": "file"}
_METADATA_PACKAGES = ("pydantic", "pydantic_core", "annotated_types")


class UnsupportedMarker(TypeError):
    """An ``Annotated`` entry or default stackflask cannot honour."""


class Param:
    """A marker saying where a parameter comes from; subclasses name the place.

    ``default`` (``...`` for required) overrides the signature's default;
    ``alias`` is the name on the wire; ``description`` goes into OpenAPI; the
    constraints (``ge``, ``gt``, ``le``, ``lt``, ``min_length``, ``max_length``,
    ``pattern``) are checked after conversion, with pydantic's error codes.
    """

    source: ClassVar[str]

    def __init__(
        self,
        default: Any = ...,
        *,
        alias: str | None = None,
        description: str | None = None,
        ge: float | None = None,
        gt: float | None = None,
        le: float | None = None,
        lt: float | None = None,
        min_length: int | None = None,
        max_length: int | None = None,
        pattern: str | None = None,
    ) -> None:
        self.default = default
        self.alias = alias
        self.description = description
        limits = {"ge": ge, "gt": gt, "le": le, "lt": lt, "min_length": min_length,
                  "max_length": max_length, "pattern": pattern}
        self.constraints = {k: v for k, v in limits.items() if v is not None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Path(Param):
    """A ``{placeholder}`` of the route."""

    source = "path"


class Query(Param):
    """The query string, on any HTTP method."""

    source = "query"


class Body(Param):
    """A key of the JSON body, on any HTTP method."""

    source = "body"


class Form(Param):
    """A field of a ``multipart/form-data`` (or url-encoded) form."""

    source = "form"


class File(Form):
    """An uploaded file of a ``multipart/form-data`` form."""

    source = "file"


@dataclass(frozen=True)
class ParamInfo:
    """What the markers of one parameter say.

    ``hint`` is the type to convert to, with every marker taken out and pydantic
    metadata kept; ``source`` is ``None`` when no marker names one (the default
    binding rules apply); ``default`` is ``inspect.Parameter.empty`` when the
    parameter is required.
    """

    hint: Any
    source: str | None = None
    default: Any = inspect.Parameter.empty
    alias: str | None = None
    description: str | None = None
    constraints: dict[str, Any] = field(default_factory=dict)


def read_param(param: inspect.Parameter, hint: Any) -> ParamInfo:
    """The :class:`ParamInfo` of ``param`` annotated ``hint`` (with extras).

    Raises :class:`UnsupportedMarker` naming what cannot be honoured.
    """
    markers: list[Any] = []
    default = param.default
    if _marker_source(default) is not None:
        markers.append(default)
        default = inspect.Parameter.empty
    if typing.get_origin(hint) is typing.Annotated:
        inner, *metadata = typing.get_args(hint)
        kept = []
        for item in metadata:
            if _marker_source(item) is not None:
                markers.append(item)
            elif _is_type_metadata(item):
                kept.append(item)
            elif type(item).__name__ != "Doc":  # typing_extensions.Doc documents
                raise UnsupportedMarker(
                    f"Annotated entry {item!r} is not understood; use Query, Body, Path, "
                    "Form or File (from stackflask or fastapi), or pydantic constraints"
                )
        hint = annotated(inner, kept) if kept else inner
    if len(markers) > 1:
        raise UnsupportedMarker(f"has {len(markers)} markers ({', '.join(map(repr, markers))}); give one")
    if not markers:
        return ParamInfo(hint=hint, default=default)
    marker = markers[0]
    source = _marker_source(marker)
    assert source is not None
    if isinstance(marker, Param):
        constraints = dict(marker.constraints)
    else:
        # FastAPI's markers are pydantic FieldInfo: their constraints are
        # annotated-types metadata, which pydantic applies.
        constraints = {}
        extra = list(getattr(marker, "metadata", None) or ())
        if extra:
            hint = annotated(hint, extra)
    marker_default = getattr(marker, "default", ...)
    if not _is_required_marker(marker_default):
        default = marker_default
    return ParamInfo(
        hint=hint,
        source=source,
        default=default,
        alias=getattr(marker, "alias", None),
        description=getattr(marker, "description", None),
        constraints=constraints,
    )


def annotated(tp: Any, metadata: list[Any]) -> Any:
    """``Annotated[tp, *metadata]``."""
    args = (tp, *metadata)
    return typing.Annotated[args]  # type: ignore[valid-type]


def _marker_source(value: Any) -> str | None:
    """The source a marker names; ``None`` for anything that is not a marker.

    Raises :class:`UnsupportedMarker` for FastAPI markers stackflask does not serve.
    """
    if isinstance(value, Param):
        return value.source
    for klass in type(value).__mro__:
        if klass.__module__ == "fastapi.params":
            source = _FASTAPI_SOURCES.get(klass.__name__)
            if source is None:
                raise UnsupportedMarker(
                    f"FastAPI's {type(value).__name__}() is not supported; "
                    "use Query, Body, Path, Form or File"
                )
            return source
    return None


def _is_type_metadata(item: Any) -> bool:
    module = type(item).__module__.split(".")[0]
    return module in _METADATA_PACKAGES


def _is_required_marker(default: Any) -> bool:
    return default is ... or type(default).__name__ == "PydanticUndefinedType"
