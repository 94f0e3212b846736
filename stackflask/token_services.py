"""Tokens checked by asking a service: OAuth2 introspection, GitHub, a custom endpoint.

Request time. Each token is sent to the service on every request, as Llama
Stack 0.2.16 does: nothing is cached, so a revoked token is refused at once.
The service refusing the token is a ``401``; the service down, slow, answering
``5xx``, a redirect or a body that is not what it should be is a ``503``.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from flask import Request

from .auth import Principal, TokenRejected, VerifierUnavailable
from .token_http import call, shown
from .tokens import principal_from_claims


class IntrospectionVerifier:
    """``oauth2_token`` with ``introspection``: RFC 7662, the client authenticated
    with HTTP Basic or, with ``send_secret_in_body``, in the form."""

    def __init__(self, config: Mapping[str, Any], context: ssl.SSLContext, timeout: float) -> None:
        introspection = config["introspection"]
        self.url: str = introspection["url"]
        self.client_id: str = introspection["client_id"]
        self.client_secret: str = introspection["client_secret"]
        self.in_body: bool = introspection["send_secret_in_body"]
        self.claims_mapping: dict[str, str] = dict(config["claims_mapping"])
        self.context = context
        self.timeout = timeout

    def verify(self, token: str, request: Request) -> Principal:
        form = {"token": token}
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self.in_body:
            form.update(client_id=self.client_id, client_secret=self.client_secret)
        else:
            pair = f"{self.client_id}:{self.client_secret}".encode()
            headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
        answer = call(
            "the introspection endpoint", self.url, timeout=self.timeout, headers=headers,
            data=urlencode(form).encode(), context=self.context,
        )
        if answer.status != 200 or not isinstance(answer.body, dict):
            raise VerifierUnavailable(
                f"the introspection endpoint at {shown(self.url)} answered {answer.status}"
                + ("" if answer.status != 200 else " with a body that is not an object")
            )
        fields = answer.body
        if fields.get("active") is not True:
            raise TokenRejected("Invalid token: not active")
        name = fields.get("sub") or fields.get("username")
        if not isinstance(name, str):
            raise TokenRejected("Invalid token: its introspection names no 'sub' or 'username'")
        return principal_from_claims(name, fields, self.claims_mapping)


class GitHubVerifier:
    """``github_token``: the user (``GET /user``) and their organizations
    (``GET /user/orgs``, first 100) of the GitHub API that the token opens."""

    def __init__(self, config: Mapping[str, Any], timeout: float) -> None:
        self.base = config["github_api_base_url"].rstrip("/")
        self.claims_mapping: dict[str, str] = dict(config["claims_mapping"])
        self.timeout = timeout

    def verify(self, token: str, request: Request) -> Principal:
        user = self._get("/user", token)
        orgs = self._get("/user/orgs?per_page=100", token)
        if not isinstance(user, dict) or not isinstance(user.get("login"), str):
            raise VerifierUnavailable(f"GitHub at {shown(self.base)}: /user named no login")
        if not isinstance(orgs, list):
            raise VerifierUnavailable(f"GitHub at {shown(self.base)}: /user/orgs is not a list")
        data = {
            "login": user["login"],
            "id": str(user.get("id", "")),
            "organizations": [
                org["login"] for org in orgs if isinstance(org, dict) and isinstance(org.get("login"), str)
            ],
        }
        return principal_from_claims(user["login"], data, self.claims_mapping)

    def _get(self, path: str, token: str) -> Any:
        answer = call(
            "GitHub", f"{self.base}{path}", timeout=self.timeout,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"},
        )
        if answer.status == 401:
            raise TokenRejected("Invalid token: GitHub did not accept it")
        if answer.status != 200:
            raise VerifierUnavailable(f"GitHub at {shown(self.base)} answered {answer.status} to {path}")
        return answer.body


class CustomVerifier:
    """``custom``: Llama Stack's request, ``{"api_key", "request": {"path",
    "headers", "params"}}`` (every header but ``Authorization``), POSTed to
    ``endpoint``; a ``200`` answer ``{"principal", "attributes"}`` names the
    principal, a ``4xx`` refuses the token."""

    def __init__(self, config: Mapping[str, Any], timeout: float) -> None:
        self.endpoint: str = config["endpoint"]
        self.timeout = timeout

    def verify(self, token: str, request: Request) -> Principal:
        body = {
            "api_key": token,
            "request": {
                "path": request.path,
                "headers": {k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"},
                "params": {k: request.args.getlist(k) for k in request.args},
            },
        }
        answer = call(
            "the authentication endpoint", self.endpoint, timeout=self.timeout,
            headers={"Content-Type": "application/json"}, data=json.dumps(body).encode(),
        )
        where = f"the authentication endpoint at {shown(self.endpoint)}"
        if 400 <= answer.status < 500:
            raise TokenRejected(f"Invalid token: the authentication endpoint answered {answer.status}")
        if answer.status != 200:
            raise VerifierUnavailable(f"{where} answered {answer.status}")
        return _custom_principal(answer.body, where)


def _custom_principal(body: Any, where: str) -> Principal:
    wrong = VerifierUnavailable(
        f"{where} answered 200 without {{'principal': str, 'attributes': {{str: [str]}} | null}}"
    )
    if not isinstance(body, dict) or not isinstance(body.get("principal"), str):
        raise wrong
    attributes = body.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(
        isinstance(values, list) and all(isinstance(v, str) for v in values)
        for values in attributes.values()
    ):
        raise wrong
    return Principal(
        body["principal"], frozenset(attributes.get("scopes", ())),
        {str(k): list(v) for k, v in attributes.items()},
    )
