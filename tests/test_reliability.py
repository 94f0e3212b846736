"""Faults, hostile input, authentication and CORS: nothing lost, no one let in."""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
import time

import pytest
import requests
from conftest import free_port, script, server_env

API = '''
from typing import Protocol

from stackflask import Api, InlineProviderSpec, webmethod


def available_providers():
    return [InlineProviderSpec(api=Api.vault, provider_type="inline::vault",
                               module="vault_impl_rel")]


class Vault(Protocol):
    @webmethod(route="/vault/echo", method="POST")
    async def echo(self, value: object = None) -> object: ...

    @webmethod(route="/vault/files/{name:path}", method="GET")
    async def read(self, name: str) -> dict[str, str]: ...

    @webmethod(route="/vault/slow", method="GET")
    async def slow(self, seconds: float = 1.0) -> dict[str, bool]: ...

    @webmethod(route="/vault/hang", method="GET")
    async def hang(self) -> None: ...

    @webmethod(route="/vault/cancelled", method="GET")
    async def cancelled(self) -> int: ...

    @webmethod(route="/vault/secret", method="GET", required_scope="vault.read")
    async def secret(self) -> dict[str, str]: ...

    @webmethod(route="/vault/pid", method="GET")
    async def pid(self) -> int: ...
'''

IMPL = '''
import asyncio
import os
import pathlib

import stackflask


class Vault:
    def __init__(self, marker):
        self.marker = marker
        self.hung_cancelled = 0

    async def echo(self, value=None):
        return value

    async def read(self, name):
        return {"name": name}

    async def slow(self, seconds=1.0):
        await asyncio.sleep(seconds)
        return {"done": True}

    async def hang(self):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.hung_cancelled += 1
            raise

    async def cancelled(self):
        return self.hung_cancelled

    async def secret(self):
        principal = stackflask.get_principal()
        return {"principal": principal.name if principal else "-"}

    async def pid(self):
        return os.getpid()

    async def shutdown(self):
        if self.marker:
            pathlib.Path(self.marker).write_text("shut down")


def get_provider_impl(config, deps):
    return Vault(config.get("marker"))
'''

TOKEN = "s3cret-token"
ENTRY = {"provider_id": "v", "provider_type": "inline::vault"}


@pytest.fixture
def vault(stack_files):
    """``vault(server=..., config=...)``: the path of a run config serving the vault."""
    stack_files.module("vault_api_rel", API)
    stack_files.module("vault_impl_rel", IMPL)
    stack_files.api_spec("vault.yaml", {
        "module": "vault_api_rel", "name": "vault", "protocol": "Vault"})

    def write(server=None, config=None, filename="run.yaml"):
        data = {"providers": {"vault": [{**ENTRY, "config": config or {}}]}}
        if server is not None:
            data["server"] = server
        return stack_files.run_config(data, filename)

    return write


# -- faults ------------------------------------------------------------------


def test_a_hanging_provider_times_out_and_is_cancelled(vault, make_app):
    client = make_app(str(vault(server={"request_timeout": 0.2}))).test_client()
    started = time.monotonic()
    response = client.get("/v1/vault/hang")
    assert time.monotonic() - started < 2
    assert response.status_code == 504
    assert response.json == {"detail": "Operation timed out: no result within 0.2 s"}
    deadline = time.monotonic() + 2
    while client.get("/v1/vault/cancelled").json != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.get("/v1/vault/cancelled").json == 1


def test_initialize_failure_stops_startup_with_one_line(stack_files, vault):
    stack_files.module("vault_impl_rel", IMPL + '''

def get_provider_impl(config, deps):
    raise RuntimeError("cannot reach the vault")
''')
    import subprocess

    result = subprocess.run(
        [script("stackflask"), "run", "--config", str(vault()), "--port", str(free_port())],
        env=server_env([stack_files.pkgs]), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: {vault()}: providers.vault[0]: provider 'v' (inline::vault) failed to start: "
        "RuntimeError: cannot reach the vault"
    ]
    assert "Traceback" not in result.stderr


def test_sigterm_lets_requests_in_flight_finish(vault, stack_files, start, tmp_path):
    marker = tmp_path / "marker"
    port = free_port()
    server = start(
        [script("stackflask"), "run", "--config", str(vault(config={"marker": str(marker)})),
         "--port", str(port)],
        port, env=server_env([stack_files.pkgs]),
    )
    results = []
    thread = threading.Thread(target=lambda: results.append(
        requests.get(server.url("/v1/vault/slow?seconds=1.5"), timeout=10)))
    thread.start()
    time.sleep(0.4)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.4)
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url("/v1/health"), timeout=2)
    thread.join(10)
    assert results and results[0].status_code == 200 and results[0].json() == {"done": True}
    assert server.stop() == 0
    assert marker.read_text() == "shut down"


def test_gunicorn_workers_each_serve_with_their_own_providers(vault, stack_files, start):
    port = free_port()
    server = start(
        [script("gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5",
         "app:create_app()"],
        port, env=server_env([stack_files.pkgs], STACKFLASK_CONFIG=str(vault())),
    )
    pids = set()
    deadline = time.monotonic() + 20
    while len(pids) < 2 and time.monotonic() < deadline:
        with requests.Session() as session:  # a new connection: the kernel picks a worker
            pids.add(session.get(server.url("/v1/vault/pid"), timeout=5).json())
    assert len(pids) == 2
    assert server.proc.pid not in pids


# -- hostile input -----------------------------------------------------------


@pytest.fixture
def client_of(vault, make_app):
    def make(server=None):
        return make_app(str(vault(server=server))).test_client()

    return make


def test_body_over_the_limit_is_413(client_of):
    client = client_of({"max_request_bytes": 1000})
    response = client.post("/v1/vault/echo", data=b'{"value": "' + b"x" * 2000 + b'"}')
    assert response.status_code == 413
    assert response.json == {"detail": "Request Entity Too Large"}
    assert client.post("/v1/vault/echo", json={"value": "x" * 100}).status_code == 200


@pytest.mark.parametrize(
    ("body", "loc_type"),
    [
        (b'{"value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "json_invalid"),
        (b'{"value": ' + b"9" * 20_000 + b"}", "json_invalid"),
        (b'{"value": "\xff\xfe"}', "json_invalid"),
        (b'\x00\x00', "json_invalid"),
    ],
    ids=["deeply-nested", "huge-number", "invalid-utf8", "nul-bytes"],
)
def test_hostile_bodies_are_400(client_of, body, loc_type):
    response = client_of().post("/v1/vault/echo", data=body)
    assert response.status_code == 400
    [error] = response.json["error"]["detail"]["errors"]
    assert error["loc"] == ["body"] and error["type"] == loc_type


def test_nul_in_a_string_is_just_data(client_of):
    response = client_of().post("/v1/vault/echo", json={"value": "a\u0000b"})
    assert response.status_code == 200 and response.json == "a\u0000b"


@pytest.mark.parametrize("path", ["../../etc/passwd", "a/../../b", "%2e%2e/%2e%2e/x"])
def test_dotdot_path_values_reach_the_provider_as_strings(client_of, path):
    response = client_of().get(f"/v1/vault/files/{path}")
    assert response.status_code in (200, 404)
    if response.status_code == 200:
        assert ".." in response.json["name"]


def test_request_id_with_control_characters_is_not_echoed(client_of):
    response = client_of().get("/v1/health", headers={"X-Request-ID": "a\x7fb\x1b[31m"})
    assert response.headers["X-Request-ID"].isalnum()


def test_oversized_headers_are_refused_by_waitress(vault, stack_files, start):
    port = free_port()
    server = start([script("stackflask"), "run", "--config", str(vault()), "--port", str(port)],
                   port, env=server_env([stack_files.pkgs]))
    response = requests.get(server.url("/v1/health"), headers={"X-Big": "x" * 300_000}, timeout=5)
    assert response.status_code == 431
    assert requests.get(server.url("/v1/health"), timeout=5).status_code == 200


def test_config_files_are_read_with_safe_load(stack_files):
    from stackflask import StartupError, create_app

    path = stack_files.run_config("apis: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(StartupError, match="invalid YAML"):
        create_app(str(path))


# -- authentication ----------------------------------------------------------

AUTH = {
    "tokens": [
        {"token": TOKEN, "principal": "alice", "scopes": ["vault.read"]},
        {"sha256": hashlib.sha256(b"other-token").hexdigest(), "principal": "bob"},
    ],
    "public": ["/v1/health"],
}


@pytest.fixture
def auth_client(client_of):
    return client_of({"auth": AUTH})


@pytest.mark.parametrize(
    ("headers", "status", "detail"),
    [
        ({}, 401, "Authentication required: send 'Authorization: Bearer <token>'"),
        ({"Authorization": "Bearer nope"}, 401, "Invalid token"),
        ({"Authorization": f"Basic {TOKEN}"}, 401, "Invalid token"),
        ({"Authorization": "Bearer other-token"}, 403,
         "Permission denied: scope 'vault.read' required"),
    ],
    ids=["no-token", "bad-token", "wrong-scheme", "missing-scope"],
)
def test_auth_refusals(auth_client, headers, status, detail):
    response = auth_client.get("/v1/vault/secret", headers=headers)
    assert response.status_code == status
    assert response.json == {"detail": detail}
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_auth_lets_the_right_token_in(auth_client):
    ok = auth_client.get("/v1/vault/secret", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json == {"principal": "alice"}
    other = auth_client.get("/v1/vault/pid", headers={"Authorization": "Bearer other-token"})
    assert other.status_code == 200


def test_auth_public_paths_and_builtins(auth_client):
    assert auth_client.get("/v1/health").status_code == 200
    assert auth_client.get("/v1/providers").status_code == 401


def test_auth_token_from_the_environment_is_never_logged(vault, make_app, monkeypatch, caplog):
    monkeypatch.setenv("VAULT_TOKEN", "from-env-token")
    caplog.set_level(logging.DEBUG)
    auth = {"tokens": [{"token": "${env.VAULT_TOKEN}", "principal": "env", "scopes": ["vault.read"]}]}
    client = make_app(str(vault(server={"auth": auth}))).test_client()
    response = client.get("/v1/vault/secret", headers={"Authorization": "Bearer from-env-token"})
    assert response.json == {"principal": "env"}
    client.get("/v1/vault/secret", headers={"Authorization": "Bearer wrong-token"})
    assert "from-env-token" not in caplog.text and "wrong-token" not in caplog.text


def test_without_auth_config_everything_is_open(client_of):
    assert client_of().get("/v1/vault/secret").json == {"principal": "-"}


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"tokens": []}, "server.auth.tokens: Shorter than minimum length 1."),
        ({"tokens": [{"principal": "x"}]}, "server.auth.tokens[0]: Give exactly one of"),
        ({"tokens": [{"sha256": "abc", "principal": "x"}]},
         "server.auth.tokens[0].sha256: Not a SHA-256 hex digest."),
    ],
)
def test_bad_auth_config_is_a_startup_error(vault, auth, expected):
    from stackflask import StartupError, create_app

    with pytest.raises(StartupError) as info:
        create_app(str(vault(server={"auth": auth})))
    assert any(expected in line for line in info.value.problems), info.value.problems


# -- CORS --------------------------------------------------------------------


def test_cors_off_by_default(client_of):
    response = client_of().get("/v1/health", headers={"Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_allows_the_configured_origin(client_of):
    client = client_of({"cors": {"allow_origins": ["https://app.example"],
                                 "allow_methods": ["GET", "POST"]}})
    ok = client.get("/v1/health", headers={"Origin": "https://app.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = client.get("/v1/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = client.options("/v1/vault/echo", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]


def test_cors_preflight_passes_auth(client_of):
    client = client_of({"auth": AUTH, "cors": {"allow_origins": ["https://app.example"]}})
    preflight = client.options("/v1/vault/secret", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert json.loads(client.get("/v1/vault/secret").data)["detail"].startswith("Authentication")


def test_a_provider_error_does_not_disturb_the_next_request(stack_files, vault, make_app):
    stack_files.module("vault_impl_rel", IMPL + '''

class Flaky(Vault):
    calls = 0

    async def echo(self, value=None):
        Flaky.calls += 1
        if Flaky.calls == 1:
            raise RuntimeError("first call fails")
        return value


def get_provider_impl(config, deps):
    return Flaky(None)
''')
    client = make_app(str(vault())).test_client()
    assert client.post("/v1/vault/echo", json={"value": 1}).status_code == 500
    assert client.post("/v1/vault/echo", json={"value": 2}).json == 2
