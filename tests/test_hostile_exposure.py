"""Exposure and forgery against a real server: no secret out, no forged log line,
no 500 from a hostile provider-data header, one clear line for an address that
cannot be served."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import (
    REPO,
    Server,
    StackFiles,
    free_port,
    script,
    server_env,
    waitress_in_thread,
)

EXPOSURE_API = '''
from typing import Protocol

from stackflask import Api, InlineProviderSpec, webmethod


def available_providers():
    return [InlineProviderSpec(
        api=Api.exposure, provider_type="inline::vault", module="exposure_impl",
        config_class="exposure_impl.VaultConfig",
        provider_data_validator="exposure_impl.Creds",
    )]


class Exposure(Protocol):
    @webmethod(route="/exposure/data", method="GET")
    async def data(self) -> object: ...

    @webmethod(route="/exposure/plain", method="GET")
    async def plain(self) -> object: ...
'''

SICKLY_API = '''
from typing import Protocol

from stackflask import Api, InlineProviderSpec, webmethod


def available_providers():
    return [InlineProviderSpec(api=Api.sickly, provider_type="inline::sickly",
                               module="sickly_impl")]


class Sickly(Protocol):
    @webmethod(route="/sickly/ping", method="GET")
    async def ping(self) -> str: ...
'''

EXPOSURE_IMPL = '''
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

import stackflask


class VaultConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    dsn: SecretStr = SecretStr("")


class Creds(BaseModel):
    api_key: str = Field(min_length=40)
    region: Literal["eu", "us"]


class Plain:
    def __init__(self, **data):
        raise ValueError(f"bad credentials {data}")


class Vault(stackflask.NeedsRequestProviderData):
    async def data(self):
        found = self.get_request_provider_data()
        return None if found is None else found.model_dump()

    async def plain(self):
        return stackflask.get_provider_data("exposure_impl.Plain")

    async def health(self):
        return {"status": "OK", "message": "connected to https://user:pa55w0rd@vault.example/"}


def get_provider_impl(config, deps):
    return Vault()
'''

SICKLY_IMPL = '''
class Sickly:
    async def ping(self):
        return "pong"

    async def health(self):
        raise ConnectionError("cannot reach postgres://svc:hunter2@db.example:5432/app")


def get_provider_impl(config, deps):
    return Sickly()
'''

#: Every value of the config below that must not leave the server.
SECRETS = [
    "tok-1", "tok-2", "key-3", "BEGIN-4", "bear-4", "pw-5", "Basic-abc", "pa55", "pw-6",
    "opaque-dsn-7", "s-8", "pw-9",
]

CONFIG = {
    "base_url": "https://api.example/v1",
    "token": "tok-1",
    "access_token": "tok-2",
    "apiKey": "key-3",
    "private_key": "-----BEGIN-4-----",
    "credentials": {"bearer": "bear-4"},
    "PassWd": "pw-5",
    "AUTH_HEADER": "Basic-abc",
    "db_url": "postgres://app:pa55@db.example/app",
    "mirrors": ["https://user:pw-6@mirror.example/", "https://mirror2.example/"],
    "dsn": "opaque-dsn-7",
    "retries": 3,
    "nested": {"level": {"Client_Secret": "s-8",
                         "note": "see https://admin:pw-9@h.example:8080/x?to=a@b.example"}},
}

SHOWN = {
    "base_url": "https://api.example/v1",
    "token": "********",
    "access_token": "********",
    "apiKey": "********",
    "private_key": "********",
    "credentials": "********",
    "PassWd": "********",
    "AUTH_HEADER": "********",
    "db_url": "postgres://app:********@db.example/app",
    "mirrors": ["https://user:********@mirror.example/", "https://mirror2.example/"],
    "dsn": "********",  # no secret in its name, but a SecretStr in the config class
    "retries": 3,
    "nested": {"level": {"Client_Secret": "********",
                         "note": "see https://admin:********@h.example:8080/x?to=a@b.example"}},
}

DEEP = '{"a": ' + "[" * 1100 + "]" * 1100 + "}"


def write_stack(files: StackFiles, config: Any = CONFIG) -> Path:
    files.module("exposure_api", EXPOSURE_API)
    files.module("exposure_impl", EXPOSURE_IMPL)
    files.module("sickly_api", SICKLY_API)
    files.module("sickly_impl", SICKLY_IMPL)
    files.api_spec("exposure.yaml", {"module": "exposure_api", "name": "exposure",
                                     "protocol": "Exposure"})
    files.api_spec("sickly.yaml", {"module": "sickly_api", "name": "sickly",
                                   "protocol": "Sickly"})
    return files.run_config({
        "apis": ["exposure", "sickly"],
        "providers": {
            "exposure": [{"provider_id": "vault", "provider_type": "inline::vault",
                          "config": config}],
            "sickly": [{"provider_id": "sick", "provider_type": "inline::sickly",
                        "config": {}}],
        },
    })


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``stackflask run`` serving the exposure and sickly APIs, text logs on."""
    root = tmp_path_factory.mktemp("exposure")
    files = StackFiles(root)
    run_yaml = write_stack(files)
    port = free_port()
    proc = Server([script("stackflask"), "run", "--config", str(run_yaml), "--port", str(port)],
                  port, root / "server.log", REPO, server_env([files.pkgs]))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def lines_of(server: Server, request_id: str) -> list[str]:
    return [line for line in server.output().splitlines() if f"[{request_id}]" in line]


# -- no secrets out ---------------------------------------------------------------


def test_providers_show_no_secret(server: Server) -> None:
    response = requests.get(server.url("/v1/providers"), timeout=10)
    assert response.status_code == 200
    entries = {e["provider_id"]: e for e in response.json()["data"]}
    assert entries["vault"]["config"] == SHOWN
    assert entries["vault"]["health"] == {
        "status": "OK", "message": "connected to https://user:********@vault.example/"}
    assert entries["sick"]["health"] == {
        "status": "Error",
        "message": "health check failed: ConnectionError: "
                   "cannot reach postgres://svc:********@db.example:5432/app",
    }
    one = requests.get(server.url("/v1/providers/vault"), timeout=10)
    assert one.json()["config"] == SHOWN
    for text in (response.text, one.text):
        for secret in [*SECRETS, "pa55w0rd", "hunter2"]:
            assert secret not in text


def test_a_rejected_provider_data_header_is_logged_without_its_values(server: Server) -> None:
    header = json.dumps({"api_key": "pk-LIVE-4242", "region": "mars-secret-region"})
    response = requests.get(
        server.url("/v1/exposure/data"), timeout=10,
        headers={"X-LlamaStack-Provider-Data": header, "X-Request-ID": "reject-1"},
    )
    assert response.status_code == 200 and response.json() is None
    [warning] = [line for line in lines_of(server, "reject-1") if "WARNING" in line]
    assert warning.endswith(
        "ignoring X-LlamaStack-Provider-Data: rejected by exposure_impl.Creds: "
        "ValidationError: 'api_key' (string_too_short), 'region' (literal_error)"
    )
    assert "pk-LIVE" not in server.output() and "mars-secret" not in server.output()


def test_a_validator_that_quotes_the_data_is_logged_by_error_type_only(server: Server) -> None:
    response = requests.get(
        server.url("/v1/exposure/plain"), timeout=10,
        headers={"X-LlamaStack-Provider-Data": '{"api_key": "pk-LIVE-7777"}',
                 "X-Request-ID": "reject-2"},
    )
    assert response.status_code == 200 and response.json() is None
    [warning] = [line for line in lines_of(server, "reject-2") if "WARNING" in line]
    assert warning.endswith("rejected by exposure_impl.Plain: ValueError")
    assert "pk-LIVE-7777" not in server.output()


def test_a_secret_str_in_a_config_mapping_is_masked(
    stack_files: StackFiles, make_app: Any
) -> None:
    from pydantic import SecretStr

    run_yaml = write_stack(stack_files, {})
    config = yaml.safe_load(run_yaml.read_text())
    config["external_apis_dir"] = str(stack_files.apis_dir)
    config["external_providers_dir"] = str(stack_files.providers_dir)
    config["providers"]["exposure"][0]["config"] = {
        "dsn": SecretStr("opaque-dsn-7"), "upstream": {"pin": SecretStr("0000")}}
    with waitress_in_thread(make_app(config)) as url:
        response = requests.get(f"{url}/v1/providers/vault", timeout=10)
    assert response.status_code == 200
    assert response.json()["config"] == {"dsn": "********", "upstream": {"pin": "********"}}


# -- nothing forged ---------------------------------------------------------------


def test_a_newline_in_the_path_cannot_forge_an_access_line(server: Server) -> None:
    forged = '127.0.0.1 "GET /v1/admin" 200 0.1ms'
    target = "/v1/nowhere%0a" + forged.replace(" ", "%20").replace('"', "%22") + "?q=%0d%0a"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(
            f"GET {target} HTTP/1.1\r\nHost: x\r\nX-Request-ID: forge-1\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        assert conn.recv(4096).startswith(b"HTTP/1.1 404")
    [line] = lines_of(server, "forge-1")
    shown = '"GET /v1/nowhere\\x0a127.0.0.1 \\x22GET /v1/admin\\x22 200 0.1ms?q=%0d%0a" 404 '
    assert re.search(re.escape(shown) + r"[0-9.]+ms$", line), line
    assert not [ln for ln in server.output().splitlines() if ln.startswith(forged[:9])]


# -- a hostile provider-data header -----------------------------------------------


@pytest.mark.parametrize("route", ["/v1/exposure/data", "/v1/exposure/plain"])
def test_a_deeply_nested_provider_data_header_is_ignored(server: Server, route: str) -> None:
    rid = "deep-" + route.rsplit("/", 1)[1]
    response = requests.get(
        server.url(route), timeout=10,
        headers={"X-LlamaStack-Provider-Data": DEEP, "X-Request-ID": rid},
    )
    assert response.status_code == 200 and response.json() is None
    assert any(line.endswith("ignoring X-LlamaStack-Provider-Data: nested too deeply")
               for line in lines_of(server, rid))
    assert requests.get(server.url("/v1/exposure/data"), timeout=10).status_code == 200


# -- an address that cannot be served ---------------------------------------------


def unprivileged_from() -> int | None:
    """The lowest port anyone may bind on Linux; ``None`` elsewhere."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return None


def run_on(host: str, port: int, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """``stackflask run`` of the embedded default on ``host:port``, expected to fail."""
    return subprocess.run(
        [*(prefix or []), script("stackflask"), "run", "--host", host, "--port", str(port)],
        cwd=REPO, env=server_env(), capture_output=True, text=True, timeout=60,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 1, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {expected}"
    ]
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_one_error_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_on("127.0.0.1", port)
    assert_one_error_line(
        result,
        f"cannot listen on 127.0.0.1:{port}: port {port} is already in use by another "
        "process; stop it, or choose another port (--port, STACKFLASK_PORT, server.port)",
    )


@pytest.mark.parametrize(("host", "why"), [
    ("192.0.2.1", "'192.0.2.1' is not an address of this machine; use 127.0.0.1, 0.0.0.0 "
                  "or one of its own addresses (--host, server.host)"),
    ("no-such-host.invalid", "'no-such-host.invalid' is not a known host name or address; "
                             "use 127.0.0.1, 0.0.0.0 or an address of this machine "
                             "(--host, server.host)"),
], ids=["not-an-address-here", "unknown-host-name"])
def test_an_address_that_is_not_here_is_one_error_line(host: str, why: str) -> None:
    port = free_port()
    assert_one_error_line(run_on(host, port), f"cannot listen on {host}:{port}: {why}")


def test_a_privileged_port_is_one_error_line() -> None:
    start = unprivileged_from()
    if not sys.platform.startswith("linux") or not start:
        pytest.skip("every port may be bound here")
    prefix: list[str] = []
    if os.geteuid() == 0:  # root may bind any port: run without that capability
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to drop CAP_NET_BIND_SERVICE")
        prefix = ["setpriv", "--bounding-set", "-net_bind_service", "--"]
    port = min(start, 1024) - 1
    assert_one_error_line(
        run_on("127.0.0.1", port, prefix),
        f"cannot listen on 127.0.0.1:{port}: permission denied (ports below 1024 need "
        "privileges); choose a port from 1024 up (--port, STACKFLASK_PORT, server.port)",
    )

