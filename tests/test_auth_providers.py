"""``server.auth.provider_config``: JWTs against a local JWKS, introspection, GitHub, custom.

Every verifier talks to a real HTTP server on 127.0.0.1 started by the test;
the tokens are real, signed with keys made here. No token may appear in any log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from conftest import free_port, script, server_env
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from stackflask import StartupError, create_app
from stackflask import jwks as jwks_module
from stackflask.auth import VERIFIER_UNAVAILABLE

API = '''
from typing import Protocol

from stackflask import webmethod


class Gate(Protocol):
    @webmethod(route="/gate/whoami", method="GET", required_scope="gate.read")
    async def whoami(self) -> dict: ...

    @webmethod(route="/gate/open", method="GET")
    async def open(self) -> dict: ...

    @webmethod(route="/gate/me", method="GET")
    async def me(self) -> dict: ...
'''

IMPL = '''
from stackflask.compat import get_authenticated_user


class Gate:
    async def whoami(self):
        user = get_authenticated_user()
        return {"principal": user.principal, "attributes": user.attributes}

    async def open(self):
        return {"principal": get_authenticated_user().principal}

    async def me(self):
        return await self.whoami()


def get_provider_impl(config, deps):
    return Gate()
'''

ISSUER = "https://issuer.example"


# -- a local HTTP server that plays JWKS, introspection, GitHub and custom ----


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeService:
    """Routes ``(method, path)`` to ``handler(seen) -> (status, json_body)``;
    ``delay`` seconds before every answer; ``seen`` every request."""

    url: str = ""
    routes: dict[tuple[str, str], Callable[[Seen], tuple[int, Any]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    delay: float = 0.0

    def count(self, path: str) -> int:
        return sum(1 for s in self.seen if urlsplit(s.path).path == path)


@pytest.fixture
def service() -> Iterator[FakeService]:
    fake = FakeService()

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
            fake.seen.append(seen)
            time.sleep(fake.delay)
            route = fake.routes.get((self.command, urlsplit(self.path).path))
            status, body = route(seen) if route else (404, {"message": "Not Found"})
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            except OSError:
                pass  # the client gave up (the slow cases)

        do_GET = do_POST = answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(5)


# -- keys and tokens ----------------------------------------------------------


@dataclass
class Keys:
    rsa1: rsa.RSAPrivateKey
    rsa2: rsa.RSAPrivateKey
    ec1: ec.EllipticCurvePrivateKey

    def jwks(self, *kids: str) -> dict[str, Any]:
        keys = []
        for kid in kids:
            key = getattr(self, kid).public_key()
            algorithm = ECAlgorithm if kid.startswith("ec") else RSAAlgorithm
            keys.append({**algorithm.to_jwk(key, as_dict=True), "kid": kid, "use": "sig"})
        return {"keys": keys}


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256R1()),
    )


CLAIMS = {
    "sub": "alice", "aud": "llama-stack", "iss": ISSUER, "scope": "gate.read other",
    "groups": ["ml", "nlp"], "tenant": "research",
}


@pytest.fixture
def issued(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Every token a test makes; none of them (nor a signature) may be logged."""
    caplog.set_level(logging.DEBUG)
    tokens: list[str] = []
    yield tokens
    for token in tokens:
        assert token not in caplog.text
        signature = token.rsplit(".", 1)[-1]
        assert not signature or signature not in caplog.text


@pytest.fixture
def sign(keys: Keys, issued: list[str]) -> Callable[..., str]:
    def sign(kid: str = "rsa1", alg: str = "RS256", key: str | None = None, **claims: Any) -> str:
        payload = {**CLAIMS, "exp": int(time.time()) + 300, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        token = jwt.encode(payload, getattr(keys, key or kid), algorithm=alg, headers={"kid": kid})
        issued.append(token)
        return token

    return sign


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], secret: bytes | None, issued: list[str]) -> str:
    """A token jwt.encode refuses to make: ``alg: none``, or HMAC keyed with a public key."""
    payload = {**CLAIMS, "exp": int(time.time()) + 300}
    head = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b"" if secret is None else hmac.new(secret, head.encode(), hashlib.sha256).digest()
    token = f"{head}.{b64(signature)}"
    issued.append(token)
    return token


# -- apps ---------------------------------------------------------------------


@pytest.fixture
def gate(stack_files: Any) -> Callable[..., str]:
    """``gate(provider_config, **auth)``: the path of a run config serving the gate."""
    write = stack_files.serve_api("gate", "Gate", API, IMPL)

    def make(provider_config: dict[str, Any], **auth: Any) -> str:
        return write(server={"auth": {"provider_config": provider_config, "public": ["/v1/health"], **auth}})

    return make


def jwks_config(service: FakeService, **extra: Any) -> dict[str, Any]:
    jwks = {"uri": f"{service.url}/jwks", **extra.pop("jwks", {})}
    return {"type": "oauth2_token", "issuer": ISSUER, "jwks": jwks, **extra}


@pytest.fixture
def jwks_client(gate: Any, make_app: Any, service: FakeService, keys: Keys) -> Any:
    service.routes[("GET", "/jwks")] = lambda seen: (200, keys.jwks("rsa1", "ec1"))
    return make_app(gate(jwks_config(service, jwks={"token": "jwks-access"}))).test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- JWKS ---------------------------------------------------------------------


@pytest.mark.parametrize("kid", ["rsa1", "ec1"])
def test_a_valid_jwt_names_the_principal_scopes_and_attributes(jwks_client, sign, service, kid):
    token = sign(kid, "ES256" if kid == "ec1" else "RS256")
    response = jwks_client.get("/v1/gate/whoami", headers=bearer(token))
    assert response.status_code == 200, response.json
    assert response.json == {"principal": "alice", "attributes": {
        # Llama Stack's default claims_mapping; scopes from the scope claim.
        "roles": ["alice"], "teams": ["ml", "nlp"], "namespaces": ["research"],
        "scopes": ["gate.read", "other"],
    }}
    [fetch] = [s for s in service.seen if s.path == "/jwks"]
    assert fetch.headers["Authorization"] == "Bearer jwks-access"


INVALID = 'Bearer error="invalid_token"'
NO_KID = b64(json.dumps({"alg": "RS256"}).encode()) + ".e30.c2ln"


@pytest.mark.parametrize(
    ("make", "detail"),
    [
        (lambda sign, i: sign(exp=int(time.time()) - 10), "Invalid token: expired"),
        (lambda sign, i: sign(aud="someone-else"), "Invalid token: its audience is not 'llama-stack'"),
        (lambda sign, i: sign(aud=None), "Invalid token: it has no 'aud' claim"),
        (lambda sign, i: sign(iss="https://evil.example"),
         "Invalid token: its issuer is not 'https://issuer.example'"),
        (lambda sign, i: sign(exp=None), "Invalid token: it has no 'exp' claim"),
        (lambda sign, i: sign("rsa1", key="rsa2"), "Invalid token: signature verification failed"),
        (lambda sign, i: sign("rsa2"), "Invalid token: its key id is not in the JWKS"),
        (lambda sign, i: sign("rsa1", "ES256", key="ec1"), "Invalid token: algorithm 'ES256' does not fit its key"),
        (lambda sign, i: forged({"alg": "none", "kid": "rsa1"}, None, i),
         "Invalid token: algorithm 'none' is not accepted (only the JWKS keys' asymmetric algorithms are)"),
        (lambda sign, i: forged({"alg": "HS256", "kid": "rsa1"}, i.pem, i),
         "Invalid token: algorithm 'HS256' is not accepted (only the JWKS keys' asymmetric algorithms are)"),
        (lambda sign, i: "not-a-jwt", "Invalid token: not a JWT"),
        (lambda sign, i: NO_KID, "Invalid token: its header names no key id ('kid')"),
    ],
    ids=["expired", "wrong-audience", "no-audience", "wrong-issuer", "no-exp", "wrong-key",
         "unknown-kid", "alg-key-mismatch", "alg-none", "hs256-public-key", "malformed", "no-kid"],
)
def test_bad_jwts_are_401(jwks_client, sign, keys, issued, make, detail):
    class Issued(list):
        pem = keys.rsa1.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    tokens = Issued()
    token = make(sign, tokens)
    issued.extend(tokens)
    response = jwks_client.get("/v1/gate/whoami", headers=bearer(token))
    assert (response.status_code, response.json) == (401, {"detail": detail})
    assert response.headers["WWW-Authenticate"] == INVALID


def test_a_jwt_without_the_scope_is_403(jwks_client, sign):
    token = sign(scope="other")
    assert jwks_client.get("/v1/gate/open", headers=bearer(token)).json == {"principal": "alice"}
    response = jwks_client.get("/v1/gate/whoami", headers=bearer(token))
    assert (response.status_code, response.json) == (
        403, {"detail": "Permission denied: scope 'gate.read' required"})


def test_no_token_is_401_with_a_plain_challenge(jwks_client):
    response = jwks_client.get("/v1/gate/open")
    assert response.status_code == 401
    assert response.json == {"detail": "Authentication required: send 'Authorization: Bearer <token>'"}
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert jwks_client.get("/v1/health").status_code == 200


def test_a_rotated_key_is_fetched_once_the_rate_limit_allows(
    gate, make_app, service, keys, sign, monkeypatch
):
    monkeypatch.setattr(jwks_module, "UNKNOWN_KID_REFETCH", 0.3)
    published = {"kids": ("rsa1",)}
    service.routes[("GET", "/jwks")] = lambda seen: (200, keys.jwks(*published["kids"]))
    client = make_app(gate(jwks_config(service))).test_client()
    assert client.get("/v1/gate/open", headers=bearer(sign("rsa1"))).status_code == 200
    published["kids"] = ("rsa2",)
    new = sign("rsa2")
    # Within the rate limit a flood of unknown key ids fetches nothing.
    for _ in range(5):
        assert client.get("/v1/gate/open", headers=bearer(new)).status_code == 401
    assert service.count("/jwks") == 1
    time.sleep(0.35)
    assert client.get("/v1/gate/open", headers=bearer(new)).status_code == 200
    assert service.count("/jwks") == 2
    old = client.get("/v1/gate/open", headers=bearer(sign("rsa1")))
    assert old.json == {"detail": "Invalid token: its key id is not in the JWKS"}


def test_keys_are_cached_until_the_recheck_period(gate, make_app, service, keys, sign):
    service.routes[("GET", "/jwks")] = lambda seen: (200, keys.jwks("rsa1"))
    cached = make_app(gate(jwks_config(service))).test_client()
    for _ in range(3):
        assert cached.get("/v1/gate/open", headers=bearer(sign())).status_code == 200
    assert service.count("/jwks") == 1
    always = make_app(gate(jwks_config(service, jwks={"key_recheck_period": 0}))).test_client()
    for _ in range(3):
        assert always.get("/v1/gate/open", headers=bearer(sign())).status_code == 200
    assert service.count("/jwks") == 4


@pytest.mark.parametrize(
    ("answer", "logged"),
    [
        ((500, {"error": "boom"}), "answered 500"),
        ((200, b"<html>"), "answered 200 with a body that is not JSON"),
        ((200, {"no": "keys"}), "answered no 'keys' list"),
        ((302, {}), "answered 302"),
    ],
    ids=["5xx", "not-json", "no-keys", "redirect"],
)
def test_a_failing_jwks_is_503(gate, make_app, service, sign, caplog, answer, logged):
    service.routes[("GET", "/jwks")] = lambda seen: answer
    client = make_app(gate(jwks_config(service))).test_client()
    for _ in range(2):
        response = client.get("/v1/gate/open", headers=bearer(sign()))
        assert (response.status_code, response.json) == (503, {"detail": VERIFIER_UNAVAILABLE})
    assert f"the JWKS at {service.url}/jwks {logged}" in caplog.text
    # Within the back-off the second request is answered without asking again.
    assert service.count("/jwks") == 1


def test_a_jwks_that_is_down_is_503(gate, make_app, sign, caplog):
    url = f"http://127.0.0.1:{free_port()}"
    client = make_app(gate({"type": "oauth2_token", "jwks": {"uri": f"{url}/jwks"}})).test_client()
    for _ in range(2):
        response = client.get("/v1/gate/open", headers=bearer(sign()))
        assert (response.status_code, response.json) == (503, {"detail": VERIFIER_UNAVAILABLE})
    assert caplog.text.count(f"the JWKS at {url}/jwks cannot be reached") == 2


def test_a_slow_jwks_is_503_within_the_timeout(gate, make_app, service, keys, sign, caplog):
    service.routes[("GET", "/jwks")] = lambda seen: (200, keys.jwks("rsa1"))
    service.delay = 3.0
    client = make_app(gate(jwks_config(service, timeout=0.3))).test_client()
    started = time.monotonic()
    response = client.get("/v1/gate/open", headers=bearer(sign()))
    assert time.monotonic() - started < 1.5
    assert (response.status_code, response.json) == (503, {"detail": VERIFIER_UNAVAILABLE})
    assert "did not answer within 0.3 s" in caplog.text


def test_jwks_through_a_real_stackflask_run_server(gate, service, keys, sign, issued, start, stack_files):
    service.routes[("GET", "/jwks")] = lambda seen: (200, keys.jwks("rsa1", "ec1"))
    port = free_port()
    config = gate(jwks_config(service))
    env = server_env([stack_files.pkgs], STACKFLASK_LOGGING="all=debug")
    server = start([script("stackflask"), "run", "--config", config, "--port", str(port)], port, env=env)
    ok = requests.get(server.url("/v1/gate/whoami"), headers=bearer(sign("ec1", "ES256")), timeout=10)
    assert ok.status_code == 200 and ok.json()["principal"] == "alice"
    expired = requests.get(server.url("/v1/gate/whoami"), headers=bearer(sign(exp=1)), timeout=10)
    assert (expired.status_code, expired.json()) == (401, {"detail": "Invalid token: expired"})
    assert expired.headers["WWW-Authenticate"] == INVALID
    assert server.stop() == 0
    output = server.output()
    assert "GET /v1/gate/whoami" in output
    assert not any(token in output for token in issued)


# -- introspection ------------------------------------------------------------


def introspect(seen: Seen) -> tuple[int, Any]:
    form = parse_qs(seen.body.decode())
    if form["token"] == ["good-opaque"]:
        return 200, {"active": True, "sub": "carol", "scope": "gate.read", "groups": ["ops"]}
    return 200, {"active": False}


@pytest.mark.parametrize("in_body", [False, True])
def test_introspection(gate, make_app, service, issued, in_body):
    issued += ["good-opaque", "revoked-opaque"]
    service.routes[("POST", "/introspect")] = introspect
    client = make_app(gate({"type": "oauth2_token", "introspection": {
        "url": f"{service.url}/introspect", "client_id": "stack", "client_secret": "s3",
        "send_secret_in_body": in_body,
    }})).test_client()
    response = client.get("/v1/gate/whoami", headers=bearer("good-opaque"))
    assert response.json == {"principal": "carol", "attributes": {
        "roles": ["carol"], "teams": ["ops"], "scopes": ["gate.read"]}}
    refused = client.get("/v1/gate/whoami", headers=bearer("revoked-opaque"))
    assert (refused.status_code, refused.json) == (401, {"detail": "Invalid token: not active"})
    form = parse_qs(service.seen[0].body.decode())
    if in_body:
        assert form["client_secret"] == ["s3"] and "Authorization" not in service.seen[0].headers
    else:
        assert service.seen[0].headers["Authorization"] == f"Basic {base64.b64encode(b'stack:s3').decode()}"


@pytest.mark.parametrize("down", ["unreachable", "5xx", "401"])
def test_a_failing_introspection_endpoint_is_503(gate, make_app, service, issued, down):
    issued.append("good-opaque")
    url = f"http://127.0.0.1:{free_port()}/introspect" if down == "unreachable" else f"{service.url}/introspect"
    service.routes[("POST", "/introspect")] = lambda seen: (int(down.replace("5xx", "502")), {})
    client = make_app(gate({"type": "oauth2_token", "introspection": {
        "url": url, "client_id": "stack", "client_secret": "wrong"}})).test_client()
    response = client.get("/v1/gate/open", headers=bearer("good-opaque"))
    assert (response.status_code, response.json) == (503, {"detail": VERIFIER_UNAVAILABLE})


# -- GitHub -------------------------------------------------------------------


def github(seen: Seen) -> tuple[int, Any]:
    if seen.headers.get("Authorization") != "Bearer gh-good":
        return 401, {"message": "Bad credentials"}
    if urlsplit(seen.path).path == "/user":
        return 200, {"login": "octo", "id": 42}
    return 200, [{"login": "acme"}, {"login": "llamas"}]


def test_github_tokens(gate, make_app, service, issued):
    issued += ["gh-good", "gh-bad"]
    service.routes[("GET", "/user")] = service.routes[("GET", "/user/orgs")] = github
    client = make_app(gate({"type": "github_token", "github_api_base_url": service.url})).test_client()
    response = client.get("/v1/gate/open", headers=bearer("gh-good"))
    assert response.json == {"principal": "octo"}
    assert service.seen[0].headers["Accept"] == "application/vnd.github+json"
    refused = client.get("/v1/gate/open", headers=bearer("gh-bad"))
    assert (refused.status_code, refused.json) == (401, {"detail": "Invalid token: GitHub did not accept it"})
    # No scope from GitHub: the route that needs one is refused.
    assert client.get("/v1/gate/whoami", headers=bearer("gh-good")).status_code == 403


def test_github_attributes_and_outage(gate, make_app, service, issued):
    issued.append("gh-good")
    service.routes[("GET", "/user")] = service.routes[("GET", "/user/orgs")] = github
    client = make_app(gate({"type": "github_token", "github_api_base_url": service.url})).test_client()
    me = client.get("/v1/gate/me", headers=bearer("gh-good"))
    assert me.json == {"principal": "octo", "attributes": {"roles": ["octo"], "teams": ["acme", "llamas"]}}
    service.routes[("GET", "/user/orgs")] = lambda seen: (503, {})
    response = client.get("/v1/gate/open", headers=bearer("gh-good"))
    assert (response.status_code, response.json) == (503, {"detail": VERIFIER_UNAVAILABLE})


# -- custom -------------------------------------------------------------------


def custom(seen: Seen) -> tuple[int, Any]:
    body = json.loads(seen.body)
    if body["api_key"] == "c-good":
        return 200, {"principal": "dave", "attributes": {"roles": ["admin"], "scopes": ["gate.read"]}}
    return 401, {"message": "unknown key"}


def test_custom_endpoint(gate, make_app, service, issued):
    issued += ["c-good", "c-bad"]
    service.routes[("POST", "/auth")] = custom
    client = make_app(gate({"type": "custom", "endpoint": f"{service.url}/auth"})).test_client()
    response = client.get("/v1/gate/whoami?x=1&x=2", headers={**bearer("c-good"), "X-Trace": "t"})
    assert response.json == {"principal": "dave", "attributes": {"roles": ["admin"], "scopes": ["gate.read"]}}
    sent = json.loads(service.seen[0].body)
    assert sent["request"]["path"] == "/v1/gate/whoami"
    assert sent["request"]["params"] == {"x": ["1", "2"]}
    assert sent["request"]["headers"]["x-trace"] == "t"
    assert "authorization" not in sent["request"]["headers"]
    refused = client.get("/v1/gate/open", headers=bearer("c-bad"))
    assert (refused.status_code, refused.json) == (
        401, {"detail": "Invalid token: the authentication endpoint answered 401"})
    assert refused.headers["WWW-Authenticate"] == INVALID


@pytest.mark.parametrize(
    "answer", [(500, {}), (200, {"user": "dave"}), (200, {"principal": "d", "attributes": {"roles": "x"}})],
    ids=["5xx", "no-principal", "bad-attributes"],
)
def test_a_failing_custom_endpoint_is_503(gate, make_app, service, issued, answer):
    issued.append("c-good")
    service.routes[("POST", "/auth")] = lambda seen: answer
    client = make_app(gate({"type": "custom", "endpoint": f"{service.url}/auth"})).test_client()
    response = client.get("/v1/gate/open", headers=bearer("c-good"))
    assert (response.status_code, response.json) == (503, {"detail": VERIFIER_UNAVAILABLE})


def test_a_custom_endpoint_that_is_down_is_503(gate, make_app, issued):
    issued.append("c-good")
    client = make_app(gate({"type": "custom", "endpoint": f"http://127.0.0.1:{free_port()}/auth"})).test_client()
    response = client.get("/v1/gate/open", headers=bearer("c-good"))
    assert (response.status_code, response.json) == (503, {"detail": VERIFIER_UNAVAILABLE})


# -- static, and the config ----------------------------------------------------


def test_static_provider_config_is_the_tokens_form(gate, make_app, issued):
    issued += ["st-1", "st-2"]
    client = make_app(gate({"type": "static", "tokens": [
        {"token": "st-1", "principal": "erin", "scopes": ["gate.read"], "attributes": {"roles": ["ops"]}},
        {"sha256": hashlib.sha256(b"st-2").hexdigest(), "principal": "fred"},
    ]})).test_client()
    response = client.get("/v1/gate/whoami", headers=bearer("st-1"))
    assert response.json == {"principal": "erin", "attributes": {"roles": ["ops"], "scopes": ["gate.read"]}}
    assert client.get("/v1/gate/open", headers=bearer("st-2")).json == {"principal": "fred"}
    refused = client.get("/v1/gate/open", headers=bearer("nope"))
    assert (refused.status_code, refused.json) == (401, {"detail": "Invalid token"})


def test_a_llama_stack_0_2_16_server_section_loads(stack_files, make_app, service):
    write = stack_files.serve_api("gate", "Gate", API, IMPL)
    path = write(filename="ls-run.yaml")
    with open(path, "a") as f:
        f.write(f"""
server:
  port: 8321
  auth:
    provider_config:
      type: oauth2_token
      jwks:
        uri: {service.url}/jwks
        key_recheck_period: 3600
      issuer: {ISSUER}
      audience: llama-stack
      verify_tls: true
      tls_cafile: null
      claims_mapping:
        sub: roles
        groups: teams
    access_policy: []
""")
    response = make_app(path).test_client().get("/v1/gate/open")
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"provider_config": {"type": "oauth2_token", "jwks": {"uri": "http://idp/jwks"}, "audiance": "x"}},
         "server.auth.provider_config.audiance: Unknown field."),
        ({"provider_config": {"type": "oauth2_token", "jwks": {"uri": "http://idp/jwks", "tokne": "x"}}},
         "server.auth.provider_config.jwks.tokne: Unknown field."),
        ({"provider_config": {"type": "oauth2_token"}},
         "server.auth.provider_config: Give exactly one of jwks and introspection."),
        ({"provider_config": {"type": "oauth2_token", "jwks": {"uri": "ftp://idp/jwks"}}},
         "server.auth.provider_config.jwks.uri: Not a valid URL."),
        ({"provider_config": {"type": "oauth2_token", "jwks": {"uri": "http://idp/jwks"},
                              "claims_mapping": {"sub": ""}}},
         "server.auth.provider_config.claims_mapping.sub.value: An attribute name cannot be empty."),
        ({"provider_config": {"type": "kubernetes"}},
         "server.auth.provider_config.type: Unknown provider type 'kubernetes'; expected one of: "
         "oauth2_token, github_token, custom, static."),
        ({"provider_config": {"type": "custom"}},
         "server.auth.provider_config.endpoint: Missing data for required field."),
        ({"provider_config": {"type": "static", "tokens": []}},
         "server.auth.provider_config.tokens: Shorter than minimum length 1."),
        ({"provider_config": {"type": "custom", "endpoint": "http://a/b"}, "tokens": [{"token": "t", "principal": "p"}]},
         "server.auth: Give exactly one of provider_config and tokens."),
        ({"public": ["/v1/health"]}, "server.auth: Give exactly one of provider_config and tokens."),
        ({"provider_config": {"type": "oauth2_token", "jwks": {"uri": "http://idp/jwks"},
                              "tls_cafile": "missing-ca.pem"}},
         "server.auth.provider_config.tls_cafile: cannot load "),
    ],
    ids=["unknown-field", "unknown-jwks-field", "no-method", "bad-url", "empty-attribute", "unknown-type",
         "custom-no-endpoint", "static-empty", "both-forms", "neither-form", "missing-cafile"],
)
def test_a_provider_config_that_cannot_be_honoured_is_a_startup_error(stack_files, auth, expected):
    write = stack_files.serve_api("gate", "Gate", API, IMPL)
    with pytest.raises(StartupError) as info:
        create_app(write(server={"auth": auth}))
    assert any(expected in line for line in info.value.problems), info.value.problems
