"""Binding: one request's path, query, body and form values to keyword arguments.

Startup builds a :class:`Binder` per webmethod record from the Protocol method's
signature, type hints and parameter markers; request time runs it. Without a
marker a parameter comes from the path when the route names it, else from the
query string (GET and DELETE scalars and lists of scalars), else from the JSON
body keyed by parameter name; a method that takes an upload reads its body
parameters from the ``multipart/form-data`` form instead.

A body is parsed as JSON only without a ``Content-Type`` or with a JSON one, so
that a page on another origin cannot send one without a CORS preflight; any
other type is a 415. JSON that Python reads but JSON does not allow is a 400
for the value that holds it (:mod:`stackflask.jsonbody`), and a bad request
lists at most :data:`~stackflask.tally.MAX_PROBLEMS` problems.
"""

from __future__ import annotations

import datetime as dt
import enum
import gc
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import abort, request
from marshmallow import ValidationError, fields
from werkzeug.datastructures import MultiDict

from .errors import unsupported_media_type
from .fields import (
    MISSING,
    Raw,
    UnsupportedType,
    flatten_errors,
    limits,
    parameter_schema,
)
from .hints import FieldFactory
from .jsonbody import load_json, read_json_object
from .params import ParamInfo, UnsupportedMarker, read_param
from .records import prepare
from .tally import MAX_PROBLEMS, ProblemCount, capped
from .uploads import UploadField, is_upload_type
from .webmethod import Endpoint

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})
_SCALARS = (str, int, float, bool, dt.datetime, dt.date)
#: After refusing a body larger than this, collect garbage at once (a full
#: collection takes some 10 ms).
COLLECT_AFTER = 1024 * 1024


def protocol_parameters(func: Callable[..., Any]) -> list[inspect.Parameter]:
    """The Protocol method's parameters, without ``self`` whether declared or not."""
    params = list(inspect.signature(func).parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    return [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def is_query_scalar(tp: Any) -> bool:
    """Whether ``tp`` is read from one query value (``str | None``, an Enum...)."""
    tp = _strip(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return bool(args) and all(is_query_scalar(a) for a in args)
    return isinstance(tp, type) and (issubclass(tp, _SCALARS) or issubclass(tp, enum.Enum))


def is_query_list(tp: Any) -> bool:
    """Whether ``tp`` is a list of scalars, read from repeated query keys."""
    tp = _strip(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        return len(members) == 1 and is_query_list(members[0])
    args = typing.get_args(tp)
    return origin is list and len(args) == 1 and is_query_scalar(args[0])


def _field_kwargs(default: Any) -> dict[str, Any]:
    if default is inspect.Parameter.empty:
        return {"required": True}
    if isinstance(default, (list, dict, set)):
        return {"load_default": lambda: type(default)(default)}
    return {"load_default": default}


@dataclass(frozen=True)
class Bound:
    """One parameter as bound: its name, its name on the wire, and its field.

    ``many`` reads every value of a repeated query key or form field; ``json``
    parses a form field's text as JSON before converting it.
    """

    name: str
    key: str
    field: fields.Field
    source: str
    many: bool = False
    json: bool = False
    description: str | None = None


class Binder:
    """Turns one request into the keyword arguments of one webmethod."""

    def __init__(self, endpoint: Endpoint, hints: dict[str, Any], factory: FieldFactory) -> None:
        """Raises :class:`UnsupportedType` naming the parameter that cannot be bound."""
        record = endpoint.record
        params = protocol_parameters(endpoint.func)
        infos: dict[str, ParamInfo] = {}
        for param in params:
            try:
                infos[param.name] = read_param(param, hints.get(param.name, Any))
            except UnsupportedMarker as exc:
                raise UnsupportedType(f"parameter {param.name!r}: {exc}") from None
        for placeholder in record.path_params:
            if placeholder not in infos:
                raise UnsupportedType(
                    f"route {record.route!r} names {{{placeholder}}}, which is not a parameter"
                )
        sources = {name: self._source(name, info, record) for name, info in infos.items()}
        self.uploads = any(s in ("form", "file") for s in sources.values())
        if self.uploads:
            if any(i.source == "body" for i in infos.values()):
                raise UnsupportedType("Body() parameters cannot be mixed with Form() or File()")
            sources = {n: "form" if s == "body" else s for n, s in sources.items()}
        self.raw_body: str | None = None
        if record.raw_bytes_request_body:
            self.raw_body = self._raw_body_parameter(sources, infos)
        self.params: list[Bound] = []
        for name, info in infos.items():
            if name == self.raw_body:
                continue
            try:
                self.params.append(self._bind(name, info, sources[name], factory))
            except UnsupportedType as exc:
                raise UnsupportedType(f"parameter {name!r}: unsupported type {exc}") from None
        self.path = [b for b in self.params if b.source == "path"]
        self.query = [b for b in self.params if b.source == "query"]
        self.form = [b for b in self.params if b.source in ("form", "file")]
        body = {b.name: b.field for b in self.params if b.source == "body"}
        self.body_params = [b for b in self.params if b.source == "body"]
        self.body = parameter_schema(body, f"{endpoint.name}Body") if body else None
        prepare([b.field for b in self.params if b.source != "body"])
        if self.body is not None:
            prepare(self.body.fields.values())

    @staticmethod
    def _source(name: str, info: ParamInfo, record: Any) -> str:
        in_route = name in record.path_params
        if info.source == "path" and not in_route:
            raise UnsupportedType(
                f"parameter {name!r} is marked Path() but route {record.route!r} has no {{{name}}}"
            )
        if in_route:
            if info.source not in (None, "path"):
                raise UnsupportedType(
                    f"parameter {name!r} is in route {record.route!r} but marked "
                    f"{info.source.capitalize()}()"
                )
            return "path"
        if info.source == "query":
            if not (is_query_scalar(info.hint) or is_query_list(info.hint)):
                raise UnsupportedType(
                    f"parameter {name!r} is marked Query() but its type is not a scalar "
                    "or a list of scalars"
                )
            return "query"
        if info.source is not None:
            return info.source
        if is_upload_type(_strip(info.hint)):
            return "file"
        if record.method in BODY_METHODS:
            return "body"
        if is_query_scalar(info.hint) or is_query_list(info.hint):
            return "query"
        return "body"

    @staticmethod
    def _raw_body_parameter(sources: dict[str, str], infos: dict[str, ParamInfo]) -> str:
        names = [n for n, s in sources.items() if s in ("body", "form")]
        if len(names) != 1:
            raise UnsupportedType(
                "raw_bytes_request_body needs exactly one body parameter to receive the "
                f"body (found {len(names)}: {', '.join(names) or 'none'})"
            )
        hint = _strip(infos[names[0]].hint)
        if hint not in (bytes, Any):
            raise UnsupportedType(
                f"parameter {names[0]!r} receives the raw body (raw_bytes_request_body) "
                "and must be annotated bytes"
            )
        return names[0]

    @staticmethod
    def _bind(name: str, info: ParamInfo, source: str, factory: FieldFactory) -> Bound:
        kwargs = _field_kwargs(info.default)
        validators = limits(info.constraints)
        if validators:
            kwargs["validate"] = validators
        key = info.alias or name
        hint = info.hint
        if source == "file":
            inner = _strip(hint)
            if inner is bytes or is_upload_type(inner):
                field: fields.Field = UploadField(inner, **kwargs)
            elif typing.get_origin(inner) is list:
                item = _strip(typing.get_args(inner)[0]) if typing.get_args(inner) else Any
                if not (item is bytes or is_upload_type(item)):
                    raise UnsupportedType(f"{hint!r} (File() takes UploadFile, bytes or a list of them)")
                field = fields.List(UploadField(item), **kwargs)
                return Bound(name, key, field, source, many=True, description=info.description)
            else:
                raise UnsupportedType(f"{hint!r} (File() takes UploadFile, bytes or a list of them)")
            return Bound(name, key, field, source, description=info.description)
        if source == "body" and info.alias:
            kwargs["data_key"] = info.alias
        field = factory.field(hint, **kwargs)
        many = source in ("query", "form") and is_query_list(hint)
        as_json = source == "form" and not many and not is_query_scalar(hint) and not isinstance(field, Raw)
        return Bound(name, key, field, source, many, as_json, info.description)

    def bind(self, path_values: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Keyword arguments and the problems found (at most :data:`MAX_PROBLEMS`,
        then one saying how many more); problems empty means valid.

        A body of a type the method does not take aborts with a 415.
        """
        kwargs: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        with ProblemCount() as count:
            for bound in self.path:
                try:
                    kwargs[bound.name] = bound.field.deserialize(path_values[bound.name])
                except ValidationError as exc:
                    errors += flatten_errors(exc.messages, ["path", bound.key])
            if self.query:
                _bind_values(self.query, request.args, "query", kwargs, errors)
            if self.body is not None:
                self._bind_body(kwargs, errors, count)
            if self.form:
                self._bind_form(kwargs, errors)
        if self.raw_body is not None:
            kwargs[self.raw_body] = request.get_data(cache=False)
        if errors and (request.content_length or 0) > COLLECT_AFTER:
            # marshmallow's exceptions keep the parsed body alive in reference
            # cycles (through their tracebacks' frames): free it now, not at the
            # next full collection, whenever that comes.
            gc.collect()
        return kwargs, capped(errors, count.stopped)

    def _bind_body(
        self, kwargs: dict[str, Any], errors: list[dict[str, Any]], count: ProblemCount
    ) -> None:
        assert self.body is not None
        # The request itself, not the proxy: each proxy lookup costs a microsecond.
        current = typing.cast(Any, request)._get_current_object()
        raw = current.get_data(cache=False)
        data: Any = {}
        if raw.strip():
            sent = current.environ.get("CONTENT_TYPE")
            if sent and sent != "application/json" and not is_json_type(current.mimetype):
                abort(unsupported_media_type(current.mimetype, "JSON", "application/json"))
            data, problems = read_json_object(raw)
            if problems:
                errors += problems
                count.stopped = count.stopped or len(problems) > MAX_PROBLEMS
                return
        try:
            kwargs.update(self.body.load(data))
        except ValidationError as exc:
            errors += flatten_errors(exc.messages, ["body"])

    def _bind_form(self, kwargs: dict[str, Any], errors: list[dict[str, Any]]) -> None:
        if request.mimetype in FORM_TYPES:
            values: MultiDict[str, Any] = MultiDict(request.form)
            for key, upload in request.files.items(multi=True):
                values.add(key, upload)
        else:
            if request.mimetype and request.get_data(cache=False):
                abort(unsupported_media_type(request.mimetype, "a form", "multipart/form-data"))
            values = MultiDict()
        _bind_values(self.form, values, "body", kwargs, errors)


def is_json_type(mimetype: str) -> bool:
    """Whether a body of ``mimetype`` (lower case, no parameters) is read as JSON:
    none given, ``application/json`` or ``application/*+json``."""
    return (
        not mimetype
        or mimetype == "application/json"
        or mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def _bind_values(
    params: list[Bound], values: Any, where: str, kwargs: dict[str, Any], errors: list[dict[str, Any]]
) -> None:
    for bound in params:
        found = values.getlist(bound.key)
        raw: Any = found if bound.many else found[-1] if found else MISSING
        if bound.many and not found:
            raw = MISSING
        elif bound.json and isinstance(raw, str):
            try:
                parsed, problems = load_json(raw)
            except (ValueError, RecursionError):
                parsed, problems = raw, []
            if not problems:  # else the field reports the text as the wrong type
                raw = parsed
        try:
            value = bound.field.deserialize(raw)
        except ValidationError as exc:
            errors += flatten_errors(exc.messages, [where, bound.key])
            continue
        if value is not MISSING:
            kwargs[bound.name] = value
