"""The run config: YAML, ``${env...}`` substitution, paths, marshmallow schemas.

Pure (no Flask); startup time. :func:`load_run_config` turns a file or a mapping
into a :class:`RunConfig` or raises :class:`StartupError` listing every problem.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from .problems import StartupError, field_path, validation_problems

log = logging.getLogger("stackflask.config")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8321

#: ``${env.NAME}``, ``${env.NAME:=default}``, ``${env.NAME:+value}``
ENV_PLACEHOLDER = re.compile(
    r"\$\{env\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:=|:\+)(?P<arg>[^}]*))?\}"
)
_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?\Z")


def read_yaml(path: Path, shown: str | None = None) -> Any:
    """Parse one YAML file with ``safe_load``; errors name the file and position."""
    shown = shown or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StartupError([f"{shown}: cannot be read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise StartupError([f"{shown}: not valid UTF-8: {exc.reason}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise StartupError([f"{shown}: invalid YAML: {where}{exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise StartupError([f"{shown}: invalid YAML: {exc}"]) from None


def substitute_env(
    data: Any, shown: str, environ: Mapping[str, str] | None = None
) -> Any:
    """Replace ``${env...}`` placeholders in every string of ``data``.

    A string that held a placeholder is then typed: ``""`` becomes ``None``,
    ``true``/``false`` booleans, integer and float text numbers. An unset
    variable without a default is a :class:`StartupError` naming it.
    """
    env = os.environ if environ is None else environ
    problems: list[str] = []

    def replace(match: re.Match[str], where: list[Any]) -> str:
        name, op, arg = match.group("name", "op", "arg")
        value = env.get(name, "")
        if op == ":=":
            return value or arg
        if op == ":+":
            return arg if value else ""
        if name not in env:
            problems.append(
                f"{shown}: {field_path(where) or '(top level)'}: environment variable "
                f"{name!r} is not set (set it, or give a default: ${{env.{name}:=default}})"
            )
        return value

    def walk(value: Any, where: list[Any]) -> Any:
        if isinstance(value, str):
            if "${env." not in value:
                return value
            return _typed(ENV_PLACEHOLDER.sub(lambda m: replace(m, where), value))
        if isinstance(value, dict):
            return {k: walk(v, [*where, k]) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, [*where, i]) for i, v in enumerate(value)]
        return value

    result = walk(data, [])
    if problems:
        raise StartupError(problems)
    return result


def _typed(text: str) -> Any:
    if text == "":
        return None
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


class TokenSchema(Schema):
    class Meta:
        unknown = RAISE

    token = fields.String(load_default=None)
    sha256 = fields.String(
        load_default=None,
        validate=validate.Regexp(r"\A[0-9a-fA-F]{64}\Z", error="Not a SHA-256 hex digest."),
    )
    principal = fields.String(required=True)
    scopes = fields.List(fields.String(), load_default=list)

    @validates_schema
    def one_secret(self, data: dict[str, Any], **_: Any) -> None:
        if (data.get("token") is None) == (data.get("sha256") is None):
            raise ValidationError("Give exactly one of token and sha256.")


class AuthSchema(Schema):
    class Meta:
        unknown = RAISE

    tokens = fields.List(fields.Nested(TokenSchema), required=True, validate=validate.Length(min=1))
    public = fields.List(fields.String(), load_default=list)
    #: Llama Stack's access rules, handed to inline factories that take ``policy``.
    access_policy = fields.List(fields.Dict(keys=fields.String()), load_default=list)


class CorsSchema(Schema):
    class Meta:
        unknown = RAISE

    allow_origins = fields.List(fields.String(), required=True)
    allow_methods = fields.List(fields.String(), load_default=None)
    allow_headers = fields.List(fields.String(), load_default=None)


class ServerSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    host = fields.String(allow_none=True, load_default=None)
    port = fields.Integer(
        strict=True, allow_none=True, load_default=None, validate=validate.Range(1, 65535)
    )
    request_timeout = fields.Float(load_default=300.0, validate=validate.Range(min=0, min_inclusive=False))
    max_request_bytes = fields.Integer(strict=True, load_default=10 * 1024 * 1024, validate=validate.Range(min=1))
    loop_lag_warning = fields.Float(load_default=0.5, validate=validate.Range(min=0, min_inclusive=False))
    shutdown_grace = fields.Float(load_default=10.0, validate=validate.Range(min=0))
    shutdown_timeout = fields.Float(load_default=10.0, validate=validate.Range(min=0, min_inclusive=False))
    threads = fields.Integer(strict=True, load_default=8, validate=validate.Range(min=1))
    connection_limit = fields.Integer(strict=True, load_default=250, validate=validate.Range(min=1))
    channel_timeout = fields.Integer(strict=True, load_default=60, validate=validate.Range(min=1))
    auth = fields.Nested(AuthSchema, allow_none=True, load_default=None)
    cors = fields.Nested(CorsSchema, allow_none=True, load_default=None)
    tracing = fields.Boolean(load_default=False)
    metrics = fields.Boolean(load_default=False)


class ProviderEntrySchema(Schema):
    class Meta:
        unknown = RAISE

    provider_id = fields.String(required=True)
    provider_type = fields.String(required=True)
    config = fields.Dict(keys=fields.String(), allow_none=True, load_default=None)
    module = fields.String(allow_none=True, load_default=None)


class RunConfigSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    version = fields.Raw(allow_none=True, load_default=None)
    image_name = fields.String(allow_none=True, load_default=None)
    apis = fields.List(fields.String(), allow_none=True, load_default=None)
    providers = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.Raw()),
        allow_none=True,
        load_default=None,
    )
    external_apis_dir = fields.String(allow_none=True, load_default=None)
    external_providers_dir = fields.String(allow_none=True, load_default=None)
    server = fields.Nested(ServerSchema, allow_none=True, load_default=None)


@dataclass(frozen=True)
class ProviderEntry:
    """One entry of ``providers.<api>`` in the run config."""

    api: str
    index: int
    provider_id: str
    provider_type: str
    config: dict[str, Any]
    module: str | None = None

    @property
    def where(self) -> str:
        return f"providers.{self.api}[{self.index}]"


@dataclass(frozen=True)
class ServerConfig:
    """``server:`` of the run config; ``auth`` and ``cors`` as validated mappings."""

    host: str | None = None
    port: int | None = None
    request_timeout: float = 300.0
    max_request_bytes: int = 10 * 1024 * 1024
    loop_lag_warning: float = 0.5
    shutdown_grace: float = 10.0
    shutdown_timeout: float = 10.0
    threads: int = 8
    connection_limit: int = 250
    channel_timeout: int = 60
    auth: dict[str, Any] | None = None
    cors: dict[str, Any] | None = None
    tracing: bool = False
    metrics: bool = False


@dataclass(frozen=True)
class RunConfig:
    """A validated run config. ``source`` is the file as named in messages."""

    source: str
    base_dir: Path
    version: str | None = None
    image_name: str | None = None
    apis: list[str] = field(default_factory=list)
    providers: dict[str, list[ProviderEntry]] = field(default_factory=dict)
    external_apis_dir: Path | None = None
    external_providers_dir: Path | None = None
    server: ServerConfig = field(default_factory=ServerConfig)


def load_run_config(
    source: str | os.PathLike[str] | Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> RunConfig:
    """Read, substitute and validate a run config from a path or a mapping.

    Relative paths in a file resolve against its folder; in a mapping, against
    the working directory.
    """
    if isinstance(source, Mapping):
        shown, base_dir, data = "<run config>", Path.cwd(), dict(source)
    else:
        path = Path(os.path.expanduser(os.fspath(source)))
        shown, base_dir = os.fspath(source), path.resolve().parent
        data = read_yaml(path, shown)
    if data is None:
        raise StartupError([f"{shown}: the file is empty; expected a run config mapping"])
    if not isinstance(data, dict):
        raise StartupError(
            [f"{shown}: expected a mapping at the top level, got {type(data).__name__}"]
        )
    data = substitute_env(data, shown, environ)
    _warn_unknown(data, RunConfigSchema, shown, "")
    if isinstance(data.get("server"), dict):
        _warn_unknown(data["server"], ServerSchema, shown, "server.")
    problems: list[str] = []
    try:
        loaded = RunConfigSchema().load(data)
    except ValidationError as exc:
        problems += validation_problems(exc.messages, shown)
        loaded = None
    providers: dict[str, list[ProviderEntry]] = {}
    for api, entries in ((loaded or data).get("providers") or {}).items():
        if not isinstance(entries, list):
            continue
        providers[api] = []
        for i, entry in enumerate(entries):
            try:
                valid = ProviderEntrySchema().load(entry)
            except ValidationError as exc:
                problems += validation_problems(exc.messages, shown, ["providers", api, i])
                continue
            providers[api].append(
                ProviderEntry(
                    api=api,
                    index=i,
                    provider_id=valid["provider_id"],
                    provider_type=valid["provider_type"],
                    config=valid["config"] or {},
                    module=valid["module"],
                )
            )
    if problems or loaded is None:
        raise StartupError(problems)
    server = loaded["server"] or ServerSchema().load({})
    version = loaded["version"]
    return RunConfig(
        source=shown,
        base_dir=base_dir,
        version=None if version is None else str(version),
        image_name=loaded["image_name"],
        apis=list(loaded["apis"] or []),
        providers=providers,
        external_apis_dir=_resolve(loaded["external_apis_dir"], base_dir),
        external_providers_dir=_resolve(loaded["external_providers_dir"], base_dir),
        server=ServerConfig(**server),
    )


def _resolve(value: str | None, base_dir: Path) -> Path | None:
    if not value:
        return None
    return base_dir / Path(os.path.expanduser(value))


def _warn_unknown(data: dict[str, Any], schema: type[Schema], shown: str, prefix: str) -> None:
    known = schema._declared_fields
    for key in data:
        if key not in known:
            log.warning("%s: %s%s: not used by stackflask; ignored", shown, prefix, key)
