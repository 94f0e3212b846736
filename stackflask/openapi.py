"""The OpenAPI 3.1 document of everything an app serves.

Built on first request from the same fields the binder uses (apispec with its
marshmallow plugin), so the document and the server cannot disagree. Types that
involve pydantic are described by pydantic's own JSON schema, all of them in
one pass at the end (:mod:`stackflask.pydantic_schemas`). Descriptions come
from parameter markers and from docstrings written as Llama Stack writes them
(``:param name: text``, ``:returns: text``). With ``server.auth``, a bearer
security scheme is required everywhere but on the routes that need no token.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from .binding import Binder, Bound
from .blueprint import Route
from .docstrings import Docstring, parse_docstring
from .errors import dumps
from .fields import Choice, Limit, NoneValue, Union, UnsupportedType
from .hints import FieldFactory
from .pydantic_fields import PydanticField
from .pydantic_schemas import SLOT, Mode, fill_slots
from .uploads import UploadField


def _record(**properties: Any) -> dict[str, Any]:
    """An object schema whose properties are all required."""
    return {"type": "object", "properties": properties, "required": list(properties)}


_STRING = {"type": "string"}
ERROR = _record(detail=_STRING)
VALIDATION_ERROR = _record(error=_record(detail=_record(errors={
    "type": "array",
    "items": _record(
        loc={"type": "array", "items": {"type": ["string", "integer"]}}, msg=_STRING, type=_STRING
    ),
})))
STREAM_ERROR = _record(error=_record(message=_STRING))
_ERROR_STATUSES = {
    "403": "Permission denied",
    "404": "Not found",
    "500": "Internal server error",
    "501": "Not implemented",
    "504": "Operation timed out",
}


#: The name of the bearer security scheme, when ``server.auth`` is on.
BEARER = "bearerAuth"
_BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "A token of server.auth.tokens, sent as 'Authorization: Bearer <token>'.",
}


def _error(description: str) -> dict[str, Any]:
    """A response with the contract's error body."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_BUILTIN: list[tuple[str, str, str, dict[str, Any]]] = [
    ("/v1/health", "health", "Whether the server is up.",
     {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}),
    ("/v1/version", "version", "The stackflask version serving this API.",
     {"type": "object", "properties": {"version": {"type": "string"}}, "required": ["version"]}),
    ("/v1/inspect/routes", "inspect_routes", "Every served route and the provider types behind it.",
     {"type": "object", "properties": {"data": {"type": "array", "items": {"type": "object"}}}}),
    ("/v1/providers", "list_providers", "Every provider, its redacted config and its health.",
     {"type": "object", "properties": {"data": {"type": "array", "items": {"type": "object"}}}}),
]


BINARY = {"type": "string", "format": "binary"}


def _custom_fields(self: Any, field: fields.Field, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """Schemas for stackflask's own fields, which apispec does not know."""
    if isinstance(field, Choice):
        values = [getattr(v, "value", v) for v in field.choices.values()]
        if field.allow_none:
            values.append(None)
        return {"enum": values}
    if isinstance(field, Union):
        options = [self.field2property(c) for c in field.candidates]
        if field.allow_none:
            options.append({"type": "null"})
        return {"anyOf": options}
    if isinstance(field, NoneValue):
        return {"type": "null"}
    if isinstance(field, UploadField):
        return dict(BINARY)
    if isinstance(field, PydanticField):
        return self.pydantic_slot(field)
    return {}


#: A marker constraint's JSON schema keyword; for lengths, of a string and of an array.
_LIMIT_KEYWORDS = {
    "ge": ("minimum",) * 2, "gt": ("exclusiveMinimum",) * 2,
    "le": ("maximum",) * 2, "lt": ("exclusiveMaximum",) * 2, "pattern": ("pattern",) * 2,
    "min_length": ("minLength", "minItems"), "max_length": ("maxLength", "maxItems"),
}


def _limit_fields(self: Any, field: fields.Field, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """A stackflask marker's constraints (``Query(ge=1)``...) as JSON schema keywords."""
    kinds = ret.get("type", [])
    array = "array" in (kinds if isinstance(kinds, list) else [kinds])
    return {
        _LIMIT_KEYWORDS[limit.name][array]: limit.bound
        for limit in field.validators
        if isinstance(limit, Limit)
    }


class DocumentBuilder:
    """Turns routes into an OpenAPI document.

    ``auth`` is ``server.auth``: when set, every operation requires the bearer
    scheme but those of public webmethods and of ``auth.public`` paths.
    """

    def __init__(
        self,
        factory: FieldFactory,
        title: str,
        version: str,
        auth: Mapping[str, Any] | None = None,
    ) -> None:
        self.plugin = MarshmallowPlugin(schema_name_resolver=_schema_name)
        options: dict[str, Any] = {"info": {"description": "Served by stackflask."}}
        if auth is not None:
            options["security"] = [{BEARER: []}]
        self.spec = APISpec(
            title=title,
            version=version,
            openapi_version="3.1.0",
            plugins=[self.plugin],
            **options,
        )
        #: The paths served without a token; ``None`` without auth.
        self.public_paths = None if auth is None else frozenset(auth.get("public") or ())
        if auth is not None:
            self.spec.components.security_scheme(BEARER, dict(_BEARER_SCHEME))
        converter = self.plugin.converter
        assert converter is not None
        converter.add_attribute_function(_custom_fields)
        converter.add_attribute_function(_limit_fields)
        converter.pydantic_slot = self._pydantic_slot  # type: ignore[attr-defined]
        self.spec.components.schema("Error", ERROR)
        self.spec.components.schema("ValidationError", VALIDATION_ERROR)
        self.spec.components.schema("StreamError", STREAM_ERROR)
        self.factory = factory
        #: The pydantic types met so far, each with its JSON schema mode.
        self.pydantic: list[tuple[Mode, Any]] = []
        self._mode: Mode = "validation"

    def _pydantic_slot(self, field: PydanticField) -> dict[str, Any]:
        self.pydantic.append((self._mode, field.adapter))
        return {SLOT: len(self.pydantic) - 1}

    def property(self, field: fields.Field, mode: Mode = "validation") -> dict[str, Any]:
        """The schema of ``field``; ``mode`` is ``serialization`` for results."""
        converter = self.plugin.converter
        assert converter is not None
        self._mode = mode
        try:
            return converter.field2property(field)
        finally:
            self._mode = "validation"

    def add_route(self, route: Route) -> None:
        binder = route.plan.binder
        record = route.endpoint.record
        doc = parse_docstring(route.endpoint.func.__doc__)
        operation: dict[str, Any] = {"operationId": f"{route.api}_{route.name}", "tags": [route.api]}
        if doc.summary:
            operation["summary"] = doc.summary
        if doc.description:
            operation["description"] = doc.description
        parameters = []
        for where, params in (("path", binder.path), ("query", binder.query)):
            for bound in params:
                parameter = {"name": bound.key, "in": where,
                             "required": where == "path" or bound.field.required,
                             "schema": self.property(bound.field)}
                text = bound.description or doc.params.get(bound.name)
                if text:
                    parameter["description"] = text
                parameters.append(parameter)
        if parameters:
            operation["parameters"] = parameters
        body = self._request_body(binder, doc)
        if body is not None:
            if record.request_examples:
                for content in body["content"].values():
                    content["examples"] = _examples(record.request_examples)
            operation["requestBody"] = body
        operation["responses"] = responses = self._responses(route, doc)
        if body is not None:
            responses["413"] = _error("The body is over server.max_request_bytes")
            if binder.raw_body is None:
                responses["415"] = _error(
                    "The body is not of a type the method takes (JSON, or a form for uploads)"
                )
        if record.descriptive_name:
            operation["x-descriptive-name"] = record.descriptive_name
        if record.experimental:
            operation["x-experimental"] = True
        if record.public:
            operation["x-public"] = True
        path = route.path.replace(":path}", "}")
        self._secure(operation, path, record.public, record.required_scope)
        self.spec.path(path=path, operations={route.method.lower(): operation})

    def _secure(
        self, operation: dict[str, Any], path: str, public: bool = False, scope: str | None = None
    ) -> None:
        """What ``operation`` needs of the bearer scheme, and the refusals it adds.

        OpenAPI 3.1 lets a requirement of an ``http`` scheme list the roles it
        needs: the route's ``required_scope``. Without auth, nothing.
        """
        if self.public_paths is None:
            return
        if public or path in self.public_paths:
            operation["security"] = []
            return
        responses = operation["responses"]
        responses["401"] = _error("No valid bearer token")
        if scope:
            operation["security"] = [{BEARER: [scope]}]
            responses["403"] = _error(f"Permission denied: the token lacks scope {scope!r}")
        operation["responses"] = dict(sorted(responses.items()))

    def _request_body(self, binder: Binder, doc: Docstring) -> dict[str, Any] | None:
        """A JSON object keyed by parameter, a form, or the raw body; ``None`` if none."""
        if binder.raw_body is not None:
            raw = {"content": {"application/octet-stream": {"schema": dict(BINARY)}}}
            text = doc.params.get(binder.raw_body)
            return {"description": text, **raw} if text else raw
        params = binder.form if binder.uploads else binder.body_params
        if not params:
            return None
        schema = self._object(params, doc)
        if not binder.uploads:
            media: dict[str, Any] = {"application/json": {"schema": schema}}
        else:
            form: dict[str, Any] = {"schema": schema}
            encoding = {b.key: {"contentType": "application/json"} for b in params if b.json}
            if encoding:
                form["encoding"] = encoding
            media = {"multipart/form-data": form}
            if not any(b.source == "file" for b in params):
                media["application/x-www-form-urlencoded"] = dict(form)
        return {"required": "required" in schema, "content": media}

    def _object(self, params: list[Bound], doc: Docstring) -> dict[str, Any]:
        """An object schema with a property per parameter, keyed as on the wire."""
        properties = {}
        for bound in params:
            prop = self.property(bound.field)
            text = bound.description or doc.params.get(bound.name)
            if text:
                prop["description"] = text
            properties[bound.key] = prop
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        required = [b.key for b in params if b.field.required]
        if required:
            schema["required"] = required
        return schema

    def _responses(self, route: Route, doc: Docstring) -> dict[str, Any]:
        result = route.plan.result
        responses: dict[str, Any] = {}
        ok: dict[str, Any] = {}
        if result.raw:
            media, schema = _raw_content(result.plain)
            ok[media] = {"schema": schema}
        elif result.plain is not None:
            if route.method == "DELETE" and result.plain in (None, type(None)):
                responses["204"] = {"description": "Deleted"}
            else:
                ok["application/json"] = {"schema": self._schema_of(result.plain)}
        if result.item is not None:
            ok["text/event-stream"] = {"schema": self._event_schema(result.item)}
        if ok:
            examples = route.endpoint.record.response_examples
            if examples:
                next(iter(ok.values()))["examples"] = _examples(examples)
            responses["200"] = {"description": doc.returns or "OK", "content": ok}
        responses["400"] = {
            "description": "The request does not fit the parameters, or the provider "
            "refused a value",
            "content": {"application/json": {"schema": {"anyOf": [
                {"$ref": "#/components/schemas/ValidationError"},
                {"$ref": "#/components/schemas/Error"},
            ]}}},
        }
        for status, text in _ERROR_STATUSES.items():
            responses[status] = _error(text)
        return responses

    def _event_schema(self, item: Any) -> dict[str, Any]:
        """One server-sent event: its ``data`` is JSON of an item or the closing error."""
        return {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"anyOf": [
                        self._schema_of(item),
                        {"$ref": "#/components/schemas/StreamError"},
                    ]},
                }
            },
        }

    def _schema_of(self, hint: Any) -> dict[str, Any]:
        """The schema of a result (or stream item) annotated ``hint``."""
        if hint is Any:
            return {}
        try:
            return self.property(self.factory.field(hint), "serialization")
        except UnsupportedType:
            return {}

    def add_builtins(self) -> None:
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for path, name, summary, schema in _BUILTIN:
            operation: dict[str, Any] = {
                "operationId": f"stackflask_{name}",
                "tags": ["stackflask"],
                "summary": summary,
                "responses": {"200": {"description": "OK", "content": {
                    "application/json": {"schema": schema}}}},
            }
            self._secure(operation, path)
            self.spec.path(path=path, operations={"get": operation})
        path = "/v1/providers/{provider_id}"
        operation = {
            "operationId": "stackflask_get_provider",
            "tags": ["stackflask"],
            "summary": "One provider, its redacted config and its health.",
            "parameters": [{"name": "provider_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {
                    "schema": {"type": "object"}}}},
                "404": {"description": "No such provider", **error},
            },
        }
        self._secure(operation, path)
        self.spec.path(path=path, operations={"get": operation})

    def document(self) -> dict[str, Any]:
        """The finished document: pydantic's schemas in place of their slots."""
        document = self.spec.to_dict()
        if not self.pydantic:
            return document
        return fill_slots(document, self.pydantic)


def _raw_content(hint: Any) -> tuple[str, dict[str, Any]]:
    """The media type and schema of a raw result: ``bytes`` are
    ``application/octet-stream``; a response class says its ``media_type``,
    if it has one."""
    if hint in (bytes, bytearray):
        return "application/octet-stream", dict(BINARY)
    media = getattr(hint, "media_type", None)
    if not isinstance(media, str):
        return "*/*", dict(BINARY)
    if media == "application/json":
        return media, {}
    if media.startswith("text/"):
        return media, {"type": "string"}
    return media, dict(BINARY)


def _examples(values: tuple[Any, ...]) -> dict[str, Any]:
    """A webmethod record's examples (objects, not JSON) as named OpenAPI examples."""
    return {f"example{i}": {"value": json.loads(dumps(v))} for i, v in enumerate(values, 1)}


def _schema_name(schema: type[Schema] | Schema) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__
    return name[: -len("Schema")] if name.endswith("Schema") and name != "Schema" else name


def build_document(
    routes: list[Route],
    factory: FieldFactory,
    title: str,
    version: str,
    auth: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes`` and the built-in endpoints.

    ``factory`` is the one that built the routes' fields, so each dataclass is
    one schema component. ``auth`` is ``server.auth``, if set.
    """
    builder = DocumentBuilder(factory, title, version, auth)
    for route in routes:
        builder.add_route(route)
    builder.add_builtins()
    return builder.document()
