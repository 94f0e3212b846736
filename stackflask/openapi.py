"""The OpenAPI 3.1 document of everything an app serves.

Built on first request from the same fields the binder uses (apispec with its
marshmallow plugin), so the document and the server cannot disagree.
"""

from __future__ import annotations

import inspect
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from .blueprint import Route
from .fields import Choice, NoneValue, Union, UnsupportedType
from .hints import FieldFactory
from .pydantic_fields import PydanticField, is_pydantic_model

ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
VALIDATION_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "detail": {
                    "type": "object",
                    "properties": {
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "loc": {
                                        "type": "array",
                                        "items": {"type": ["string", "integer"]},
                                    },
                                    "msg": {"type": "string"},
                                    "type": {"type": "string"},
                                },
                                "required": ["loc", "msg", "type"],
                            },
                        }
                    },
                    "required": ["errors"],
                }
            },
            "required": ["detail"],
        }
    },
    "required": ["error"],
}
STREAM_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"message": {"type": "string"}},
            "required": ["message"],
        }
    },
    "required": ["error"],
}
_ERROR_STATUSES = {
    "403": "Permission denied",
    "404": "Not found",
    "500": "Internal server error",
    "501": "Not implemented",
    "504": "Operation timed out",
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
    if isinstance(field, PydanticField):
        return self.pydantic_schema(field)
    return {}


class DocumentBuilder:
    """Turns routes into an OpenAPI document."""

    def __init__(self, factory: FieldFactory, title: str, version: str) -> None:
        self.plugin = MarshmallowPlugin(schema_name_resolver=_schema_name)
        self.spec = APISpec(
            title=title,
            version=version,
            openapi_version="3.1.0",
            plugins=[self.plugin],
            info={"description": "Served by stackflask."},
        )
        converter = self.plugin.converter
        assert converter is not None
        converter.add_attribute_function(_custom_fields)
        converter.pydantic_schema = self._pydantic_schema  # type: ignore[attr-defined]
        self.spec.components.schema("Error", ERROR)
        self.spec.components.schema("ValidationError", VALIDATION_ERROR)
        self.spec.components.schema("StreamError", STREAM_ERROR)
        self.factory = factory

    def _pydantic_schema(self, field: PydanticField) -> dict[str, Any]:
        """pydantic's own JSON schema of the field's type; models become components."""
        schema: dict[str, Any] = field.adapter.json_schema(
            ref_template="#/components/schemas/{model}"
        )
        for name, sub in schema.pop("$defs", {}).items():
            self._add_component(name, sub)
        if not is_pydantic_model(field.type):
            return schema
        name = field.type.__name__
        self._add_component(name, schema)
        return {"$ref": f"#/components/schemas/{name}"}

    def _add_component(self, name: str, schema: dict[str, Any]) -> None:
        if name not in self.spec.components.schemas:
            self.spec.components.schema(name, schema)

    def property(self, field: fields.Field) -> dict[str, Any]:
        converter = self.plugin.converter
        assert converter is not None
        return converter.field2property(field)

    def add_route(self, route: Route) -> None:
        plan = route.plan
        binder = plan.binder
        doc = inspect.cleandoc(route.endpoint.func.__doc__ or "")
        summary, _, description = doc.partition("\n")
        operation: dict[str, Any] = {
            "operationId": f"{route.api}_{route.name}",
            "tags": [route.api],
            "parameters": [],
            "responses": {},
        }
        if summary.strip():
            operation["summary"] = summary.strip()
        if description.strip():
            operation["description"] = description.strip()
        for bound in binder.path:
            operation["parameters"].append(
                {"name": bound.key, "in": "path", "required": True,
                 "schema": self.property(bound.field)}
            )
        for bound in binder.query:
            operation["parameters"].append(
                {"name": bound.key, "in": "query", "required": bound.field.required,
                 "schema": self.property(bound.field)}
            )
        if binder.body is not None:
            body_fields = binder.body.fields
            required = [n for n, f in body_fields.items() if f.required]
            schema: dict[str, Any] = {
                "type": "object",
                "properties": {n: self.property(f) for n, f in body_fields.items()},
            }
            if required:
                schema["required"] = required
            operation["requestBody"] = {
                "required": bool(required),
                "content": {"application/json": {"schema": schema}},
            }
        operation["responses"] = self._responses(route)
        if not operation["parameters"]:
            del operation["parameters"]
        path = route.path.replace(":path}", "}")
        self.spec.path(path=path, operations={route.method.lower(): operation})

    def _responses(self, route: Route) -> dict[str, Any]:
        result = route.plan.result
        responses: dict[str, Any] = {}
        ok: dict[str, Any] = {}
        if result.plain is not None:
            if route.method == "DELETE" and result.plain in (None, type(None)):
                responses["204"] = {"description": "Deleted"}
            else:
                ok["application/json"] = {"schema": self._schema_of(result.plain)}
        if result.item is not None:
            ok["text/event-stream"] = {"schema": self._event_schema(result.item)}
        if ok:
            responses["200"] = {"description": "OK", "content": ok}
        responses["400"] = {
            "description": "The request does not fit the parameters, or the provider "
            "refused a value",
            "content": {"application/json": {"schema": {"anyOf": [
                {"$ref": "#/components/schemas/ValidationError"},
                {"$ref": "#/components/schemas/Error"},
            ]}}},
        }
        for status, text in _ERROR_STATUSES.items():
            responses[status] = {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
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
        if hint is Any:
            return {}
        try:
            return self.property(self.factory.field(hint))
        except UnsupportedType:
            return {}

    def add_builtins(self) -> None:
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for path, name, summary, schema in _BUILTIN:
            self.spec.path(path=path, operations={"get": {
                "operationId": f"stackflask_{name}",
                "tags": ["stackflask"],
                "summary": summary,
                "responses": {"200": {"description": "OK", "content": {
                    "application/json": {"schema": schema}}}},
            }})
        self.spec.path(path="/v1/providers/{provider_id}", operations={"get": {
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
        }})


def _schema_name(schema: type[Schema] | Schema) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__
    return name[: -len("Schema")] if name.endswith("Schema") and name != "Schema" else name


def build_document(
    routes: list[Route], factory: FieldFactory, title: str, version: str
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes`` and the built-in endpoints.

    ``factory`` is the one that built the routes' fields, so each dataclass is
    one schema component.
    """
    builder = DocumentBuilder(factory, title, version)
    for route in routes:
        builder.add_route(route)
    builder.add_builtins()
    return builder.spec.to_dict()
