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
    pre_load,
    validate,
    validates_schema,
)

from .access_policy import InvalidPolicy, parse_rules
from .affinity import parse_cpus
from .auth_config import ProviderConfig, TokenSchema
from .cors import CorsConfig, CorsField
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


def _valid_access_policy(rules: list[dict[str, Any]]) -> None:
    try:
        parse_rules(rules)
    except InvalidPolicy as exc:
        raise ValidationError(exc.messages) from None


class AuthSchema(Schema):
    class Meta:
        unknown = RAISE

    #: Llama Stack's token verification (see :mod:`stackflask.auth_config`).
    provider_config = ProviderConfig(allow_none=True, load_default=None)
    #: stackflask's static tokens; the same as ``provider_config: {type: static, tokens}``.
    tokens = fields.List(fields.Nested(TokenSchema), load_default=None, validate=validate.Length(min=1))
    public = fields.List(fields.String(), load_default=list)
    #: Llama Stack's access rules (see :mod:`stackflask.access_policy`).
    access_policy = fields.List(
        fields.Dict(keys=fields.String()), load_default=list, validate=_valid_access_policy
    )

    @validates_schema
    def one_verifier(self, data: dict[str, Any], **_: Any) -> None:
        if (data.get("provider_config") is None) == (data.get("tokens") is None):
            raise ValidationError("Give exactly one of provider_config and tokens.")


#: ``server.quota.period``: Llama Stack 0.2.16 has ``day`` only; the others are stackflask's.
QUOTA_PERIODS = ("second", "minute", "hour", "day")
#: ``server.quota.storage_uri`` schemes: flask-limiter's memory storage and Redis.
QUOTA_STORAGE_SCHEMES = ("memory", "redis", "rediss")


class QuotaKVStoreSchema(Schema):
    """Llama Stack's ``SqliteKVStoreConfig``, the one kvstore its quota takes."""

    class Meta:
        unknown = RAISE

    type = fields.String(required=True)
    db_path = fields.String(required=True)
    namespace = fields.String(allow_none=True, load_default=None)

    @pre_load
    def sqlite_only(self, data: Any, **_: Any) -> Any:
        kind = data.get("type", "sqlite") if isinstance(data, dict) else "sqlite"
        if kind != "sqlite":
            raise ValidationError(
                f"{kind!r} cannot hold quotas: Llama Stack's quota takes 'sqlite' only; "
                "for Redis, give server.quota.storage_uri: redis://HOST:PORT instead of kvstore",
                "type",
            )
        return data


class QuotaSchema(Schema):
    """Llama Stack's ``QuotaConfig``, plus stackflask's ``storage_uri`` and periods."""

    class Meta:
        unknown = RAISE

    kvstore = fields.Nested(QuotaKVStoreSchema, allow_none=True, load_default=None)
    storage_uri = fields.String(allow_none=True, load_default=None)
    anonymous_max_requests = fields.Integer(strict=True, load_default=100, validate=validate.Range(min=0))
    authenticated_max_requests = fields.Integer(strict=True, load_default=1000, validate=validate.Range(min=0))
    period = fields.String(load_default="day", validate=validate.OneOf(QUOTA_PERIODS))

    @validates_schema
    def one_store(self, data: dict[str, Any], **_: Any) -> None:
        uri = data.get("storage_uri")
        if uri is None:
            return
        if data.get("kvstore") is not None:
            raise ValidationError("Give at most one of kvstore and storage_uri.")
        scheme, sep, _rest = uri.partition("://")
        if not sep or scheme not in QUOTA_STORAGE_SCHEMES:
            # The URI itself is not quoted: it may hold a password.
            raise ValidationError(
                f"not a storage URI stackflask takes (scheme {scheme if sep else ''!r}); "
                "give memory:// or redis://[:PASSWORD@]HOST:PORT[/DB] (or rediss://)",
                "storage_uri",
            )


class CpuAffinityField(fields.Field):
    """``server.cpu_affinity``: ``auto``, ``all`` or a CPU list (a number too: ``1``),
    kept as its text."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValidationError(
                "expected auto, all, or CPU numbers such as 1, 0,2 or 0-3; "
                f"got {type(value).__name__}"
            )
        try:
            parse_cpus(str(value))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        return str(value).strip()


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
    cors = CorsField(allow_none=True, load_default=None)
    tls_certfile = fields.String(allow_none=True, load_default=None)
    tls_keyfile = fields.String(allow_none=True, load_default=None)
    tls_cafile = fields.String(allow_none=True, load_default=None)
    quota = fields.Nested(QuotaSchema, allow_none=True, load_default=None)
    tracing = fields.Boolean(load_default=False)
    metrics = fields.Boolean(load_default=False)
    cpu_affinity = CpuAffinityField(load_default="auto")

    @validates_schema
    def tls_files_together(self, data: dict[str, Any], **_: Any) -> None:
        # Llama Stack serves plain HTTP when one of the pair is missing; refused here.
        cert, key = data.get("tls_certfile"), data.get("tls_keyfile")
        if bool(cert) != bool(key):
            missing = "tls_keyfile" if cert else "tls_certfile"
            raise ValidationError(
                "tls_certfile and tls_keyfile go together: give both, or neither for "
                "plain HTTP.", field_name=missing,
            )
        if data.get("tls_cafile") and not cert:
            raise ValidationError(
                "client certificates need the server's own: give tls_certfile and "
                "tls_keyfile too.", field_name="tls_cafile",
            )


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
    """``server:`` of the run config; ``auth`` as a validated mapping."""

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
    cors: CorsConfig | None = None
    #: Resolved against the run config's folder; served by gunicorn only
    #: (:mod:`stackflask.gunicorn_conf`).
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    tls_cafile: Path | None = None
    #: ``server.quota`` as a validated mapping (see :mod:`stackflask.quota`).
    quota: dict[str, Any] | None = None
    tracing: bool = False
    metrics: bool = False
    #: ``auto``, ``all`` or a CPU list (see :mod:`stackflask.affinity`).
    cpu_affinity: str = "auto"


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
    for key in ("tls_certfile", "tls_keyfile", "tls_cafile"):
        server[key] = _resolve(server[key], base_dir)
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
