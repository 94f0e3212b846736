"""The schemas of ``server.auth``'s tokens and ``provider_config``.

Pure (no Flask); startup time. ``provider_config`` takes Llama Stack 0.2.16's
provider types (``oauth2_token``, ``github_token``, ``custom``) field for field,
plus stackflask's ``static`` tokens and a ``timeout`` on each; any other key is
an error naming it. :mod:`stackflask.tokens` builds the verifier from the result.
"""

from __future__ import annotations

from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

#: Llama Stack's default ``claims_mapping`` of ``oauth2_token``: claim -> attribute.
OAUTH2_CLAIMS_MAPPING = {
    "sub": "roles",
    "username": "roles",
    "groups": "teams",
    "team": "teams",
    "project": "projects",
    "tenant": "namespaces",
    "namespace": "namespaces",
}

#: Llama Stack's default ``claims_mapping`` of ``github_token``.
GITHUB_CLAIMS_MAPPING = {"login": "roles", "organizations": "teams"}

_HTTP_URL = validate.URL(schemes={"http", "https"}, require_tld=False)


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class TokenSchema(_Strict):
    token = fields.String(load_default=None)
    sha256 = fields.String(
        load_default=None,
        validate=validate.Regexp(r"\A[0-9a-fA-F]{64}\Z", error="Not a SHA-256 hex digest."),
    )
    principal = fields.String(required=True)
    scopes = fields.List(fields.String(), load_default=list)
    attributes = fields.Dict(
        keys=fields.String(), values=fields.List(fields.String()), load_default=dict
    )

    @validates_schema
    def one_secret(self, data: dict[str, Any], **_: Any) -> None:
        if (data.get("token") is None) == (data.get("sha256") is None):
            raise ValidationError("Give exactly one of token and sha256.")


def _claims_mapping(default: dict[str, str]) -> fields.Dict:
    return fields.Dict(
        keys=fields.String(validate=validate.Length(min=1)),
        values=fields.String(
            validate=validate.Length(min=1, error="An attribute name cannot be empty.")
        ),
        load_default=lambda: dict(default),
    )


def _timeout() -> fields.Float:
    """stackflask's own: seconds a verifying request may take (``None``: the type's default)."""
    return fields.Float(
        allow_none=True, load_default=None, validate=validate.Range(min=0, min_inclusive=False)
    )


class JwksSchema(_Strict):
    uri = fields.String(required=True, validate=_HTTP_URL)
    token = fields.String(allow_none=True, load_default=None)
    key_recheck_period = fields.Integer(
        strict=True, load_default=3600, validate=validate.Range(min=0)
    )


class IntrospectionSchema(_Strict):
    url = fields.String(required=True, validate=_HTTP_URL)
    client_id = fields.String(required=True)
    client_secret = fields.String(required=True)
    send_secret_in_body = fields.Boolean(load_default=False)


class OAuth2TokenSchema(_Strict):
    type = fields.String(required=True)
    audience = fields.String(load_default="llama-stack")
    verify_tls = fields.Boolean(load_default=True)
    tls_cafile = fields.String(allow_none=True, load_default=None)
    issuer = fields.String(allow_none=True, load_default=None)
    claims_mapping = _claims_mapping(OAUTH2_CLAIMS_MAPPING)
    jwks = fields.Nested(JwksSchema, allow_none=True, load_default=None)
    introspection = fields.Nested(IntrospectionSchema, allow_none=True, load_default=None)
    timeout = _timeout()

    @validates_schema
    def one_method(self, data: dict[str, Any], **_: Any) -> None:
        if (data.get("jwks") is None) == (data.get("introspection") is None):
            raise ValidationError("Give exactly one of jwks and introspection.")


class GitHubTokenSchema(_Strict):
    type = fields.String(required=True)
    github_api_base_url = fields.String(load_default="https://api.github.com", validate=_HTTP_URL)
    claims_mapping = _claims_mapping(GITHUB_CLAIMS_MAPPING)
    timeout = _timeout()


class CustomSchema(_Strict):
    type = fields.String(required=True)
    endpoint = fields.String(required=True, validate=_HTTP_URL)
    timeout = _timeout()


class StaticSchema(_Strict):
    type = fields.String(required=True)
    tokens = fields.List(
        fields.Nested(TokenSchema), required=True, validate=validate.Length(min=1)
    )


PROVIDER_SCHEMAS: dict[str, type[Schema]] = {
    "oauth2_token": OAuth2TokenSchema,
    "github_token": GitHubTokenSchema,
    "custom": CustomSchema,
    "static": StaticSchema,
}


class ProviderConfig(fields.Field):
    """``server.auth.provider_config``: one of :data:`PROVIDER_SCHEMAS`, chosen by ``type``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, dict):
            raise ValidationError("Not a mapping.")
        kind = value.get("type")
        if kind not in PROVIDER_SCHEMAS:
            raise ValidationError({"type": [
                f"Unknown provider type {kind!r}; expected one of: {', '.join(PROVIDER_SCHEMAS)}."
            ]})
        try:
            return PROVIDER_SCHEMAS[kind]().load(value)
        except ValidationError as exc:
            raise ValidationError(exc.messages) from None
