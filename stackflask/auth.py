"""Bearer-token authentication and scopes, off unless ``server.auth`` is set.

Startup hashes the configured tokens; request time checks the ``Authorization``
header of every request (but the public paths and CORS preflights) in constant
time, and a route's ``@webmethod(required_scope=...)`` against the principal's
scopes. Tokens are never logged and never kept in clear.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Response, g, request

from .errors import json_response


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


#: Set in each request's provider context (see :func:`stackflask.context.request_context`).
principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "stackflask_principal", default=None
)


def get_principal() -> Principal | None:
    """The authenticated principal of the current request (``None`` without auth)."""
    return principal_var.get()


class BearerAuth:
    """Checks requests against a table of SHA-256 token digests."""

    def __init__(
        self,
        config: Mapping[str, Any],
        scopes: Mapping[str, str],
        public_endpoints: Iterable[str] = (),
    ) -> None:
        """``config`` is ``server.auth``; ``scopes`` maps endpoints to required
        scopes; ``public_endpoints`` are those of ``@webmethod(public=True)``."""
        self.table = [
            (
                bytes.fromhex(entry["sha256"])
                if entry.get("sha256")
                else hashlib.sha256(entry["token"].encode()).digest(),
                Principal(entry["principal"], frozenset(entry["scopes"])),
            )
            for entry in config["tokens"]
        ]
        self.public = frozenset(config.get("public") or ())
        self.public_endpoints = frozenset(public_endpoints)
        self.scopes = dict(scopes)

    def identify(self, header: str) -> Principal | None:
        """The principal whose token the header carries; every entry is compared."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest()
        found = None
        for expected, principal in self.table:
            if hmac.compare_digest(expected, digest):
                found = principal
        return found

    def check(self) -> Response | None:
        """A ``before_request`` hook: ``None`` to go on, or the 401/403 response."""
        if (
            request.method == "OPTIONS"
            or request.path in self.public
            or request.endpoint in self.public_endpoints
        ):
            return None
        header = request.headers.get("Authorization")
        if not header:
            return _unauthorized("Authentication required: send 'Authorization: Bearer <token>'")
        principal = self.identify(header)
        if principal is None:
            return _unauthorized("Invalid token")
        g.stackflask_principal = principal
        scope = self.scopes.get(request.endpoint or "")
        if scope is not None and scope not in principal.scopes:
            return json_response(
                {"detail": f"Permission denied: scope {scope!r} required"}, 403
            )
        return None


def _unauthorized(detail: str) -> Response:
    return json_response({"detail": detail}, 401, {"WWW-Authenticate": "Bearer"})
