"""``server.cors`` as Llama Stack 0.2.19 takes it: ``true``, or a mapping of its
``CORSConfig`` fields, each answered as Starlette's ``CORSMiddleware`` answers it."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import yaml
from conftest import REPO, waitress_in_thread

from stackflask.problems import StartupError

ALLOWED = "https://app.example"


def run_config(cors: Any) -> dict[str, Any]:
    """The embedded default (weather with kaze) with ``server.cors``."""
    data = yaml.safe_load((REPO / "config" / "run.yaml").read_text())
    data["external_apis_dir"] = str(REPO / "config" / "apis.d")
    data["external_providers_dir"] = str(REPO / "config" / "providers.d")
    data["server"] = {"cors": cors}
    return data


@pytest.fixture
def cors_client(make_app: Any) -> Any:
    """``cors_client(cors)``: a test client of an app with ``server.cors: cors``."""
    return lambda cors: make_app(run_config(cors)).test_client()


def preflight(client: Any, origin: str, method: str = "GET", headers: str | None = None,
              path: str = "/v1/weather/locations") -> Any:
    sent = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        sent["Access-Control-Request-Headers"] = headers
    return client.options(path, headers=sent)


def cors_headers(response: Any) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


# -- cors: true ---------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["http://localhost:3000", "https://localhost:8443"])
def test_true_allows_localhost_on_any_port(cors_client, origin):
    client = cors_client(True)
    response = client.get("/v1/health", headers={"Origin": origin})
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert "Origin" in response.headers.getlist("Vary")
    answer = preflight(client, origin, "POST", "Content-Type, Authorization")
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == origin
    assert set(answer.headers["Access-Control-Allow-Methods"].split(", ")) == {
        "GET", "POST", "PUT", "DELETE", "OPTIONS"}
    assert answer.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert answer.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in answer.headers


@pytest.mark.parametrize("origin", [
    "http://localhost",                 # no port
    "http://localhost:3000.evil.example",  # the regex must match the whole origin
    "http://127.0.0.1:3000",
    "https://app.example",
])
def test_true_allows_nothing_else(cors_client, origin):
    client = cors_client(True)
    assert cors_headers(client.get("/v1/health", headers={"Origin": origin})) == {}
    assert "Access-Control-Allow-Origin" not in preflight(client, origin).headers


def test_true_does_not_allow_other_request_headers(cors_client):
    answer = preflight(cors_client(True), "http://localhost:3000", "GET", "X-Custom")
    assert "Access-Control-Allow-Headers" not in answer.headers


@pytest.mark.parametrize("cors", [False, None])
def test_false_and_null_are_off(cors_client, cors):
    client = cors_client(cors)
    assert cors_headers(client.get("/v1/health", headers={"Origin": "http://localhost:3000"})) == {}


# -- a mapping ---------------------------------------------------------------------------

FULL = {
    "allow_origins": [ALLOWED],
    "allow_origin_regex": r"https://[a-z]+\.tenant\.example",
    "allow_methods": ["GET", "POST"],
    "allow_headers": ["Authorization", "X-LlamaStack-Provider-Data"],
    "allow_credentials": True,
    "expose_headers": ["X-Request-ID"],
    "max_age": 120,
}


@pytest.mark.parametrize("origin", [ALLOWED, "https://blue.tenant.example"])
def test_allowed_origins_get_every_configured_header(cors_client, origin):
    client = cors_client(FULL)
    simple = client.get("/v1/weather/locations", headers={"Origin": origin})
    assert simple.status_code == 200
    assert simple.headers["Access-Control-Allow-Origin"] == origin
    assert simple.headers["Access-Control-Allow-Credentials"] == "true"
    assert simple.headers["Access-Control-Expose-Headers"] == "X-Request-ID"
    assert "Origin" in simple.headers.getlist("Vary")
    answer = preflight(client, origin, "POST", "content-type, authorization, x-llamastack-provider-data")
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == origin
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    assert answer.headers["Access-Control-Allow-Methods"] == "GET, POST"
    assert answer.headers["Access-Control-Allow-Headers"] == (
        "authorization, content-type, x-llamastack-provider-data")
    assert answer.headers["Access-Control-Max-Age"] == "120"


@pytest.mark.parametrize("origin", [
    "https://evil.example",
    "https://APP.EXAMPLE",                 # origins are compared exactly, as Starlette does
    "https://app.example.evil.example",
    "https://blue.tenant.example.evil.example",  # the regex must match the whole origin
    "http://blue.tenant.example",
])
def test_other_origins_get_no_cors_header(cors_client, origin):
    client = cors_client(FULL)
    simple = client.get("/v1/weather/locations", headers={"Origin": origin})
    assert simple.status_code == 200
    assert cors_headers(simple) == {}
    assert cors_headers(preflight(client, origin, "POST")) == {}


def test_a_method_or_header_not_allowed_gets_no_allow_headers(cors_client):
    """Llama Stack answers such a preflight 400; here it lacks the allow headers,
    which browsers refuse the same way."""
    client = cors_client(FULL)
    assert "Access-Control-Allow-Methods" not in preflight(client, ALLOWED, "DELETE").headers
    assert "Access-Control-Allow-Headers" not in preflight(client, ALLOWED, "GET", "X-Other").headers


def test_no_origin_no_cors_headers(cors_client):
    assert cors_headers(cors_client(FULL).get("/v1/health")) == {}


def test_llama_stacks_defaults(cors_client):
    """allow_methods ["OPTIONS"], no extra allowed headers (the CORS-safelisted
    ones are allowed), no credentials, nothing exposed, max_age 600."""
    client = cors_client({"allow_origins": [ALLOWED]})
    simple = client.get("/v1/health", headers={"Origin": ALLOWED})
    assert cors_headers(simple) == {"Access-Control-Allow-Origin": ALLOWED}
    answer = preflight(client, ALLOWED, "OPTIONS", "Content-Type")
    assert answer.headers["Access-Control-Allow-Methods"] == "OPTIONS"
    assert answer.headers["Access-Control-Allow-Headers"] == "Content-Type"
    assert answer.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Methods" not in preflight(client, ALLOWED, "POST").headers
    # an empty mapping allows no origin
    assert cors_headers(cors_client({}).get("/v1/health", headers={"Origin": ALLOWED})) == {}


def test_any_origin_and_any_method_or_header(cors_client):
    client = cors_client({"allow_origins": ["*"], "allow_methods": ["*"], "allow_headers": ["*"],
                          "max_age": 0})
    simple = client.get("/v1/health", headers={"Origin": "https://anywhere.example"})
    assert simple.headers["Access-Control-Allow-Origin"] == "*"
    answer = preflight(client, "https://anywhere.example", "PATCH", "X-Anything, Authorization")
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert answer.headers["Access-Control-Allow-Methods"] == "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
    assert answer.headers["Access-Control-Allow-Headers"] == "Authorization, X-Anything"
    assert answer.headers["Access-Control-Max-Age"] == "0"


def test_a_regex_with_an_inline_flag(cors_client):
    client = cors_client({"allow_origin_regex": r"(?i)https://app\.example"})
    response = client.get("/v1/health", headers={"Origin": "HTTPS://App.Example"})
    assert response.headers["Access-Control-Allow-Origin"] == "HTTPS://App.Example"
    other = client.get("/v1/health", headers={"Origin": "https://app.example.evil"})
    assert cors_headers(other) == {}


def test_errors_get_cors_headers_too(cors_client):
    client = cors_client(FULL)
    missing = client.get("/v1/nowhere", headers={"Origin": ALLOWED})
    assert missing.status_code == 404
    assert missing.headers["Access-Control-Allow-Origin"] == ALLOWED


# -- refused ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cors", "message"),
    [
        ({"allow_origins": ["*"], "allow_credentials": True},
         "server.cors.allow_credentials: true cannot go with '*' in allow_origins: browsers "
         "refuse credentials from any origin, and Llama Stack refuses the pair; list the "
         "origins in allow_origins or match them with allow_origin_regex"),
        ({"allow_origin_regex": "https://(app"},
         "server.cors.allow_origin_regex: 'https://(app' is not a regular expression: "
         "missing ), unterminated subpattern at position 8"),
        ({"max_age": -1}, "server.cors.max_age: Must be greater than or equal to 0."),
        ({"allow_origin": [ALLOWED]}, "server.cors.allow_origin: Unknown field."),
        ("yes", "server.cors: Not a boolean or a mapping."),
    ],
    ids=["credentials-with-any-origin", "bad-regex", "negative-max-age", "unknown-key", "string"],
)
def test_refused(make_app, cors, message):
    with pytest.raises(StartupError) as info:
        make_app(run_config(cors))
    assert info.value.problems == [f"<run config>: {message}"]


# -- through a real server -------------------------------------------------------------


def test_waitress_sends_the_headers(make_app):
    app = make_app(run_config(FULL))
    with waitress_in_thread(app) as url:
        answer = requests.options(f"{url}/v1/weather/locations", timeout=5, headers={
            "Origin": "https://red.tenant.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization"})
        assert answer.status_code == 200
        assert answer.headers["Access-Control-Allow-Origin"] == "https://red.tenant.example"
        assert answer.headers["Access-Control-Allow-Credentials"] == "true"
        assert answer.headers["Access-Control-Max-Age"] == "120"
        assert answer.headers["Access-Control-Allow-Headers"] == "Authorization"
        simple = requests.get(f"{url}/v1/weather/locations", timeout=5,
                              headers={"Origin": ALLOWED})
        assert simple.json() == {"locations": ["Paris", "Tokyo"]}
        assert simple.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert simple.headers["Access-Control-Expose-Headers"] == "X-Request-ID"
        other = requests.get(f"{url}/v1/weather/locations", timeout=5,
                             headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
