"""``server.cors`` as Llama Stack 0.2.19 takes it, served through flask-cors.

Startup time. :class:`CorsField` validates ``cors: true``, ``false`` or a
mapping of Llama Stack's ``CORSConfig`` fields into a :class:`CorsConfig`;
:func:`enable_cors` turns that into flask-cors options once, so that each
response carries the headers Starlette's ``CORSMiddleware`` sends for the
same settings. Flask and flask-cors are imported only by :func:`enable_cors`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates,
    validates_schema,
)

from .problems import StartupError

if TYPE_CHECKING:
    from flask import Flask

#: Request headers Starlette's ``CORSMiddleware`` always allows in a preflight.
SAFELISTED_HEADERS = ("Accept", "Accept-Language", "Content-Language", "Content-Type")
#: What ``allow_methods: ["*"]`` stands for, as Starlette spells it out.
ALL_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
_FLAGS = re.compile(r"\(\?[aiLmsux]+\)")


@dataclass(frozen=True)
class CorsConfig:
    """Llama Stack 0.2.19's ``CORSConfig``, its defaults included."""

    allow_origins: tuple[str, ...] = ()
    allow_origin_regex: str | None = None
    allow_methods: tuple[str, ...] = ("OPTIONS",)
    allow_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    expose_headers: tuple[str, ...] = ()
    max_age: int = 600


#: ``cors: true``: Llama Stack's development setting, localhost on any port.
DEVELOPMENT = CorsConfig(
    allow_origin_regex=r"https?://localhost:\d+",
    allow_methods=("GET", "POST", "PUT", "DELETE", "OPTIONS"),
    allow_headers=("Content-Type", "Authorization", "X-Requested-With"),
)


class CorsSchema(Schema):
    class Meta:
        unknown = RAISE

    allow_origins = fields.List(fields.String(), load_default=list)
    allow_origin_regex = fields.String(allow_none=True, load_default=None)
    allow_methods = fields.List(fields.String(), load_default=lambda: ["OPTIONS"])
    allow_headers = fields.List(fields.String(), load_default=list)
    allow_credentials = fields.Boolean(load_default=False)
    expose_headers = fields.List(fields.String(), load_default=list)
    max_age = fields.Integer(strict=True, load_default=600, validate=validate.Range(min=0))

    @validates("allow_origin_regex")
    def compiles(self, value: str | None, **_: Any) -> None:
        if value is None:
            return
        try:
            re.compile(value)
        except re.error as exc:
            raise ValidationError(f"{value!r} is not a regular expression: {exc}") from None

    @validates_schema
    def no_credentials_for_any_origin(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("allow_credentials") and "*" in data.get("allow_origins", ()):
            raise ValidationError(
                "true cannot go with '*' in allow_origins: browsers refuse credentials "
                "from any origin, and Llama Stack refuses the pair; list the origins in "
                "allow_origins or match them with allow_origin_regex",
                field_name="allow_credentials",
            )

    @post_load
    def make_config(self, data: dict[str, Any], **_: Any) -> CorsConfig:
        return CorsConfig(
            allow_origins=tuple(data["allow_origins"]),
            allow_origin_regex=data["allow_origin_regex"],
            allow_methods=tuple(data["allow_methods"]),
            allow_headers=tuple(data["allow_headers"]),
            allow_credentials=data["allow_credentials"],
            expose_headers=tuple(data["expose_headers"]),
            max_age=data["max_age"],
        )


class CorsField(fields.Field):
    """``server.cors``: ``true`` (:data:`DEVELOPMENT`), ``false`` (off) or a mapping."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> CorsConfig | None:
        if value is True:
            return DEVELOPMENT
        if value is False:
            return None
        if not isinstance(value, dict):
            raise ValidationError("Not a boolean or a mapping.")
        config: CorsConfig = CorsSchema().load(value)
        return config


def flask_cors_options(cors: CorsConfig) -> dict[str, Any]:
    """flask-cors options that answer as Starlette's ``CORSMiddleware`` does.

    Origins and header names are matched exactly, as Starlette does, not by
    flask-cors's guess at which strings are regular expressions: a literal
    origin is case-sensitive, a header name is not, and
    ``allow_origin_regex`` must match the whole origin. Without an ``Origin``
    header a response carries no CORS header at all.
    """
    any_origin = "*" in cors.allow_origins
    origins: list[str | re.Pattern[str]] = ["*"] if any_origin else [
        _whole(re.escape(origin)) for origin in cors.allow_origins
    ]
    if cors.allow_origin_regex is not None and not any_origin:
        origins.append(_whole(cors.allow_origin_regex))
    headers: list[str | re.Pattern[str]] = ["*"] if "*" in cors.allow_headers else [
        _whole(re.escape(name), re.IGNORECASE)
        for name in (*SAFELISTED_HEADERS, *cors.allow_headers)
    ]
    return {
        "origins": origins,
        "methods": list(ALL_METHODS if "*" in cors.allow_methods else cors.allow_methods),
        "allow_headers": headers,
        "expose_headers": list(cors.expose_headers) or None,
        "supports_credentials": cors.allow_credentials,
        # a string: flask-cors leaves out a falsy value, and 0 means "do not cache"
        "max_age": str(cors.max_age),
        "send_wildcard": any_origin,
        "always_send": False,
    }


def _whole(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """``pattern`` as flask-cors's ``match`` must see it to act as ``re.fullmatch``;
    a leading inline flag group, ``(?i)``, stays in front."""
    lead = _FLAGS.match(pattern)
    cut = lead.end() if lead else 0
    return re.compile(f"{pattern[:cut]}(?:{pattern[cut:]})\\Z", flags)


def enable_cors(app: Flask, cors: CorsConfig, source: str) -> None:
    """CORS through flask-cors (6.0 or later: earlier releases have known CVEs)."""
    try:
        version = metadata.version("flask-cors")
    except metadata.PackageNotFoundError:
        version = None
    if version is None or int(version.split(".")[0]) < 6:
        raise StartupError([
            f"{source}: server.cors: needs flask-cors 6.0 or later "
            f"({'not installed' if version is None else f'found {version}'}): "
            "pip install 'stackflask[cors]'"
        ])
    from flask_cors import CORS

    CORS(app, **flask_cors_options(cors))
