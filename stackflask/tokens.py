"""The token verifier of ``server.auth``, built once at startup.

Startup time: :func:`build_verifier` turns the validated ``server.auth`` into a
:class:`~stackflask.auth.TokenVerifier` or raises one :class:`StartupError`
listing what cannot be honoured (a missing extra, an unreadable ``tls_cafile``).
This module also holds the static tokens and the claims mapping that the other
verifiers (:mod:`stackflask.jwks`, :mod:`stackflask.token_services`) share.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flask import Request

from .auth import Principal, TokenRejected, TokenVerifier
from .problems import StartupError

log = logging.getLogger("stackflask.auth")

WHERE = "server.auth.provider_config"
#: Seconds a verifying request may take by default, as Llama Stack 0.2.16 waits.
JWKS_TIMEOUT = 5.0
SERVICE_TIMEOUT = 10.0


class StaticTokens:
    """Tokens of the run config, kept as SHA-256 digests and compared in constant time."""

    def __init__(self, entries: Iterable[Mapping[str, Any]]) -> None:
        self.table = [
            (
                bytes.fromhex(entry["sha256"])
                if entry.get("sha256")
                else hashlib.sha256(entry["token"].encode()).digest(),
                Principal(
                    entry["principal"],
                    frozenset(entry.get("scopes") or ()),
                    {k: list(v) for k, v in (entry.get("attributes") or {}).items()},
                ),
            )
            for entry in entries
        ]

    def verify(self, token: str, request: Request) -> Principal:
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = None
        for expected, principal in self.table:
            if hmac.compare_digest(expected, digest):
                found = principal
        if found is None:
            # The answer static tokens have always had: a plain challenge.
            raise TokenRejected("Invalid token", "Bearer")
        return found


def build_verifier(auth: Mapping[str, Any], base_dir: Path, source: str) -> TokenVerifier:
    """The verifier ``server.auth`` asks for; ``base_dir`` resolves ``tls_cafile``."""
    config = auth.get("provider_config")
    if config is None:
        return StaticTokens(auth["tokens"])
    kind = config["type"]
    if kind == "static":
        return StaticTokens(config["tokens"])
    if kind == "oauth2_token":
        context = _tls_context(config, base_dir, source)
        if config["jwks"] is not None:
            try:
                from .jwks import JwksVerifier
            except ImportError as exc:
                raise StartupError([
                    f"{source}: {WHERE}.jwks: verifying JWTs needs PyJWT with cryptography "
                    f"({exc}): pip install 'stackflask[jwt]'"
                ]) from None
            return JwksVerifier(config, context, config["timeout"] or JWKS_TIMEOUT)
        from .token_services import IntrospectionVerifier

        return IntrospectionVerifier(config, context, config["timeout"] or SERVICE_TIMEOUT)
    from .token_services import CustomVerifier, GitHubVerifier

    timeout = config["timeout"] or SERVICE_TIMEOUT
    if kind == "github_token":
        return GitHubVerifier(config, timeout)
    return CustomVerifier(config, timeout)


def _tls_context(config: Mapping[str, Any], base_dir: Path, source: str) -> ssl.SSLContext:
    cafile = config["tls_cafile"]
    path = None if cafile is None else base_dir / Path(cafile).expanduser()
    try:
        context = ssl.create_default_context(cafile=None if path is None else str(path))
    except (OSError, ssl.SSLError) as exc:
        raise StartupError([
            f"{source}: {WHERE}.tls_cafile: cannot load {str(path)!r} as CA certificates "
            f"({getattr(exc, 'strerror', None) or exc}): give a readable PEM file"
        ]) from None
    if not config["verify_tls"]:
        log.warning(
            "%s: %s.verify_tls is false: the verifier's certificate is not checked", source, WHERE
        )
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def values_of(claim: Any) -> list[str]:
    """A claim as a list of strings: text is split on whitespace (as Llama Stack
    does: ``"read write"`` is two values), a list keeps its text and numbers."""
    if isinstance(claim, str):
        return claim.split()
    if isinstance(claim, bool):
        return [str(claim).lower()]
    if isinstance(claim, (int, float)):
        return [str(claim)]
    if isinstance(claim, list):
        return [v if isinstance(v, str) else str(v) for v in claim if isinstance(v, (str, int, float))]
    return []


def attributes_from_claims(
    claims: Mapping[str, Any], mapping: Mapping[str, str]
) -> dict[str, list[str]]:
    """Llama Stack's ``get_attributes_from_claims``: each mapped claim's values
    appended to its attribute (two claims may feed one attribute)."""
    attributes: dict[str, list[str]] = {}
    for claim, attribute in mapping.items():
        if claim in claims:
            attributes.setdefault(attribute, []).extend(values_of(claims[claim]))
    return attributes


def principal_from_claims(
    name: str, claims: Mapping[str, Any], mapping: Mapping[str, str]
) -> Principal:
    """The principal ``name`` with the attributes ``mapping`` makes of ``claims``;
    its scopes are those of the OAuth2 ``scope`` claim and of a ``scopes`` attribute
    (how a Llama Stack config maps them)."""
    attributes = attributes_from_claims(claims, mapping)
    scopes = frozenset(values_of(claims.get("scope"))) | frozenset(attributes.get("scopes", ()))
    return Principal(name, scopes, attributes)
