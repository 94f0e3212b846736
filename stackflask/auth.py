"""Bearer authentication and scopes, off unless ``server.auth`` is set.

Request time. :class:`BearerAuth.check`, a ``before_request`` hook, reads the
``Authorization`` header of every request (but the public paths and CORS
preflights), has the configured :class:`TokenVerifier` (built at startup by
:func:`stackflask.tokens.build_verifier`) name its :class:`Principal`, keeps it
in ``g.stackflask_principal``, and checks a route's
``@webmethod(required_scope=...)`` against the principal's scopes. A rejected
token is a ``401``, a verifier that cannot answer a ``503``. Tokens are never
logged and never kept in clear.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from flask import Request, Response, g, request

from .errors import json_response
from .log import escape_control

log = logging.getLogger("stackflask.auth")

#: The ``401`` of a request without a token.
TOKEN_REQUIRED = "Authentication required: send 'Authorization: Bearer <token>'"
#: The ``503`` of a request whose token could not be checked (the cause is logged).
VERIFIER_UNAVAILABLE = "Authentication service unavailable: try again later"
#: RFC 6750's challenge for a token that was presented and refused.
INVALID_TOKEN_CHALLENGE = 'Bearer error="invalid_token"'


@dataclass(frozen=True)
class Principal:
    """Who a request's token belongs to, and what it may do.

    ``attributes`` are Llama Stack's user attributes (``roles``, ``teams``,
    ``projects``, ``namespaces``...: each a list of values), which access
    policies test; ``scopes`` are what ``@webmethod(required_scope=...)`` checks.
    """

    name: str
    scopes: frozenset[str] = frozenset()
    attributes: Mapping[str, list[str]] = field(default_factory=dict)


class TokenRejected(Exception):
    """The token is not valid: answered ``401`` with ``detail`` and ``challenge``
    as ``WWW-Authenticate``. ``detail`` never holds the token."""

    def __init__(self, detail: str, challenge: str = INVALID_TOKEN_CHALLENGE) -> None:
        super().__init__(detail)
        self.detail = detail
        self.challenge = challenge


class VerifierUnavailable(Exception):
    """The verifier (a JWKS, an introspection, GitHub or a custom endpoint) did
    not answer in time or answered wrongly: the request is answered ``503``,
    and ``reason`` (naming the endpoint, never the token) is logged."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenVerifier(Protocol):
    """Names the principal of a bearer token, or raises :class:`TokenRejected`
    or :class:`VerifierUnavailable`. Called from request threads at once."""

    def verify(self, token: str, request: Request) -> Principal: ...


#: Set in each request's provider context (see :func:`stackflask.context.request_context`).
principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "stackflask_principal", default=None
)


def get_principal() -> Principal | None:
    """The authenticated principal of the current request (``None`` without auth)."""
    return principal_var.get()


class BearerAuth:
    """The ``before_request`` hook around one :class:`TokenVerifier`."""

    def __init__(
        self,
        verifier: TokenVerifier,
        scopes: Mapping[str, str],
        public_paths: Iterable[str] = (),
        public_endpoints: Iterable[str] = (),
    ) -> None:
        """``scopes`` maps endpoints to required scopes; ``public_paths`` are
        ``server.auth.public``, ``public_endpoints`` those of ``@webmethod(public=True)``."""
        self.verifier = verifier
        self.scopes = dict(scopes)
        self.public = frozenset(public_paths)
        self.public_endpoints = frozenset(public_endpoints)

    def check(self) -> Response | None:
        """A ``before_request`` hook: ``None`` to go on, or the 401/403/503 response."""
        if (
            request.method == "OPTIONS"
            or request.path in self.public
            or request.endpoint in self.public_endpoints
        ):
            return None
        header = request.headers.get("Authorization")
        if not header:
            return _unauthorized(TOKEN_REQUIRED, "Bearer")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _unauthorized("Invalid token", "Bearer")
        try:
            principal = self.verifier.verify(token, request)
        except TokenRejected as exc:
            log.debug("%s: token rejected: %s", _where(), exc.detail)
            return _unauthorized(exc.detail, exc.challenge)
        except VerifierUnavailable as exc:
            log.warning("%s: answered 503: %s", _where(), exc.reason)
            return json_response({"detail": VERIFIER_UNAVAILABLE}, 503)
        g.stackflask_principal = principal
        scope = self.scopes.get(request.endpoint or "")
        if scope is not None and scope not in principal.scopes:
            return json_response(
                {"detail": f"Permission denied: scope {scope!r} required"}, 403
            )
        return None


def _unauthorized(detail: str, challenge: str) -> Response:
    return json_response({"detail": detail}, 401, {"WWW-Authenticate": challenge})


def _where() -> str:
    return escape_control(f"{request.method} {request.path}")
