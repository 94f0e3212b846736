"""``remote::stackflask``: one server serving APIs through another, with real
server processes (two, then a chain of three), and the bad upstreams."""

from __future__ import annotations

import json
import logging
import time
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
from flask import Flask, request
from test_client import GADGETS_API, GADGETS_IMPL

WEATHER_APIS = str(REPO / "config" / "apis.d")
WEATHER_PROVIDERS = str(REPO / "config" / "providers.d")


def run_config(files: StackFiles, filename: str, providers: dict[str, Any]) -> str:
    apis = files.root / f"{filename}.apis.d"
    apis.mkdir()
    for spec in (Path(WEATHER_APIS) / "weather.yaml", files.apis_dir / "gadgets.yaml"):
        (apis / spec.name).write_text(spec.read_text())
    data = {
        "apis": list(providers),
        "providers": {
            api: [{"provider_id": pid, "provider_type": ptype, "config": config}]
            for api, (pid, ptype, config) in providers.items()
        },
        "external_apis_dir": str(apis),
        "external_providers_dir": str(files.providers_dir),
    }
    path = files.root / f"{filename}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def passthrough(url: str, **config: Any) -> dict[str, Any]:
    return {
        name: (f"{name}-relay", "remote::stackflask", {"url": url, **config})
        for name in ("weather", "gadgets")
    }


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Servers A (weather by kaze, gadgets inline), B passing through to A, and
    C passing through to B, each a ``stackflask run`` process."""
    root = tmp_path_factory.mktemp("chain")
    files = StackFiles(root)
    files.serve_api("gadgets", "Gadgets", GADGETS_API, GADGETS_IMPL)
    kaze = files.providers_dir / "remote" / "weather"
    kaze.mkdir(parents=True)
    (kaze / "kaze.yaml").write_text((Path(WEATHER_PROVIDERS) / "remote/weather/kaze.yaml").read_text())
    env = server_env([files.pkgs, REPO], UPSTREAM_TOKEN="s3cret")
    servers: list[Server] = []
    configs = [run_config(files, "a", {
        "weather": ("kaze", "remote::kaze", {}), "gadgets": ("gadgets", "inline::gadgets", {}),
    })]
    try:
        for name in ("a", "b", "c"):
            port = free_port()
            if name != "a":
                upstream = servers[-1].url("")
                configs.append(run_config(files, name, passthrough(upstream, token="${env.UPSTREAM_TOKEN}")))
            server = Server(
                [script("stackflask"), "run", "--config", configs[-1], "--port", str(port)],
                port, root / f"{name}.log", REPO, env,
            )
            servers.append(server)
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


REQUESTS = [
    ("GET", "/v1/weather/locations", None),
    ("GET", "/v1/items/a%20b?color=blue&tags=x&tags=y", None),
    ("GET", "/v1/items/missing", None),
    ("GET", "/v1/items/a?color=purple", None),
    ("POST", "/v1/items", {"item": {"id": "i", "color": "red", "tags": [], "made": "2024-05-01T12:30:00+00:00"},
                           "note": {"title": "n"}}),
    ("POST", "/v1/items", {"item": {"id": "i"}}),
    ("PUT", "/v1/notes/dir/x", {"note": {"title": "t", "stars": 1}}),
    ("DELETE", "/v1/items/a", None),
    ("GET", "/v1/later?at=2024-05-01T12:30:00%2B00:00&days=2", None),
    ("POST", "/v1/count", {"n": 3}),
    ("POST", "/v1/count", {"n": 5, "fail_at": 2}),
    ("GET", "/v1/ticks?n=2", None),
    *[("POST", "/v1/fail", {"kind": kind})
      for kind in ("value", "permission", "conflict", "boom", "not-implemented", "timeout")],
]


def answer(server: Server, method: str, path: str, body: Any) -> tuple[int, str, bytes]:
    response = requests.request(method, server.url(path), json=body, timeout=10)
    return response.status_code, response.headers.get("Content-Type", ""), response.content


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS)
def test_every_route_answers_as_upstream(chain: list[Server], method: str, path: str, body: Any) -> None:
    a, b, c = chain
    expected = answer(a, method, path, body)
    assert expected[0] != 404 or path.endswith("missing")
    assert answer(b, method, path, body) == expected
    assert answer(c, method, path, body) == expected


def test_stream_arrives_item_by_item(chain: list[Server]) -> None:
    _, b, _ = chain
    with requests.post(b.url("/v1/count"), json={"n": 10_000}, stream=True, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines) == b"data: 0"


def closed_at(server: Server) -> int:
    return int(requests.get(server.url("/v1/closed"), timeout=5).json())


@pytest.mark.parametrize("client_of", [1, 2])
def test_stream_cancelled_downstream_is_closed_upstream(chain: list[Server], client_of: int) -> None:
    a = chain[0]
    before = closed_at(a)
    with requests.post(chain[client_of].url("/v1/count"), json={"n": 10_000}, stream=True, timeout=10) as response:
        lines = response.iter_lines()
        assert [next(lines), next(lines), next(lines)] == [b"data: 0", b"", b"data: 1"]
    deadline = time.monotonic() + 10
    while closed_at(a) == before:
        assert time.monotonic() < deadline, "A's stream was not closed"
        time.sleep(0.05)


def test_providers_report_upstream_health(chain: list[Server]) -> None:
    a, b, _ = chain
    data = requests.get(b.url("/v1/providers"), timeout=10).json()["data"]
    by_api = {entry["api"]: entry for entry in data}
    assert by_api["gadgets"]["provider_type"] == "remote::stackflask"
    assert by_api["gadgets"]["health"] == {"status": "OK", "upstream": a.url("")}
    assert by_api["gadgets"]["config"]["token"] == "********"
    assert by_api["weather"]["health"]["status"] == "Not Implemented"  # kaze has no health()


# -- bad upstreams: an in-process passthrough in front of a fake upstream -----


class FakeUpstream:
    """A Flask app answering like a stackflask server that breaks its Protocol."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        app = Flask("fake_upstream")

        @app.get("/v1/items/<item_id>")
        def get_item(item_id: str) -> Any:
            self.headers.append(dict(request.headers))
            return {"id": item_id, "color": "green", "tags": [], "made": "2024-05-01T12:30:00"}

        @app.get("/v1/slow")
        def slow() -> Any:
            time.sleep(2)
            return json.dumps("done")

        @app.get("/v1/health")
        def health() -> Any:
            return {"status": "OK"}

        self.app = app


@pytest.fixture
def relay(stack_files: StackFiles, make_app: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``make(url, **config)``: a test client of an app serving gadgets through ``url``."""
    stack_files.serve_api("gadgets", "Gadgets", GADGETS_API, GADGETS_IMPL)
    monkeypatch.setenv("UPSTREAM_TOKEN", "s3cret")

    def make(url: str, **config: Any) -> Any:
        path = stack_files.run_config({
            "apis": ["gadgets"],
            "providers": {"gadgets": [{
                "provider_id": "relay", "provider_type": "remote::stackflask",
                "config": {"url": url, "token": "${env.UPSTREAM_TOKEN}", **config},
            }]},
        })
        return make_app(str(path)).test_client()

    return make


def test_unreachable_upstream_is_503_without_credentials(relay: Any) -> None:
    port = free_port()
    client = relay(f"http://user:pa55word@127.0.0.1:{port}")
    response = client.get("/v1/items/a")
    assert response.status_code == 503
    detail = response.json["detail"]
    assert detail.startswith(f"Service unavailable: cannot reach http://127.0.0.1:{port} (ConnectError")
    assert "pa55word" not in detail and "user" not in detail


def test_mismatching_upstream_is_502_with_the_field_logged(
    relay: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeUpstream()
    with waitress_in_thread(fake.app) as url:
        client = relay(url)
        with caplog.at_level(logging.ERROR, "stackflask.passthrough"):
            response = client.get(
                "/v1/items/a", headers={"X-LlamaStack-Provider-Data": '{"k": "v"}', "X-Request-ID": "r-1"}
            )
    assert response.status_code == 502
    assert response.json == {
        "detail": f"Bad gateway: the answer of {url} does not match the API's Protocol"
    }
    assert "Gadgets.get_item" in caplog.text and "color" in caplog.text
    sent = fake.headers[-1]
    assert sent["Authorization"] == "Bearer s3cret"
    assert sent["X-Llamastack-Provider-Data"] == '{"k":"v"}'
    assert sent["X-Request-Id"] == "r-1"


def test_provider_data_not_forwarded_when_off(relay: Any) -> None:
    fake = FakeUpstream()
    with waitress_in_thread(fake.app) as url:
        relay(url, forward_provider_data=False).get(
            "/v1/items/a", headers={"X-LlamaStack-Provider-Data": '{"k": "v"}'}
        )
    assert "X-Llamastack-Provider-Data" not in fake.headers[-1]


def test_slow_upstream_is_504_bounded_by_the_timeout(relay: Any) -> None:
    fake = FakeUpstream()
    with waitress_in_thread(fake.app) as url:
        client = relay(url, timeout=0.3)
        started = time.monotonic()
        response = client.get("/v1/slow?seconds=2")
        took = time.monotonic() - started
    assert response.status_code == 504
    assert response.json == {"detail": f"Operation timed out: no answer from {url} within 0.3 s"}
    assert took < 1.5


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"url": "ftp://x"}, "url: 'ftp://x' is not an http:// or https:// URL"),
        ({"url": "http://x", "timeout": "soon"}, "timeout: 'soon' is not a number of seconds"),
        ({"url": "http://x", "wat": 1}, "wat: Unknown field."),
    ],
)
def test_bad_config_fails_at_startup(stack_files: StackFiles, config: dict[str, Any], message: str) -> None:
    from stackflask import StartupError, create_app

    stack_files.serve_api("gadgets", "Gadgets", GADGETS_API, GADGETS_IMPL)
    path = stack_files.run_config({
        "apis": ["gadgets"],
        "providers": {"gadgets": [{"provider_id": "relay", "provider_type": "remote::stackflask", "config": config}]},
    })
    with pytest.raises(StartupError) as info:
        create_app(str(path))
    assert any(message in line for line in info.value.problems), info.value.problems



BIG = b"0123456789abcdef" * 38400  # 600 KiB: spooled to a temporary file at each hop

UPLOADS = [
    ("/v1/files", {"file": ("a.txt", b"hello", "text/plain")}, {"purpose": "blue", "labels": ["x", "y z"]}, 200),
    ("/v1/files", {"file": ("big.txt", BIG, "text/x-big")}, {"purpose": "red"}, 200),
    ("/v1/files", {"file": ("a.txt", b"hello", "text/plain")}, {"purpose": "green"}, 400),
    ("/v1/files", {}, {"purpose": "red"}, 400),
    ("/v1/blobs", {"data": ("b.bin", BIG, "application/octet-stream")},
     {"note": '{"title": "n", "stars": 2}', "copies": "3"}, 200),
    ("/v1/blobs", {"data": ("b.bin", b"x", "application/octet-stream")}, {"note": '{"stars": "many"}'}, 400),
    ("/v1/bundles/b%20c", [("files", ("1.txt", b"one", "text/plain")), ("files", ("2.txt", b"two", "text/plain"))],
     {"made": "2024-05-01T12:30:00+00:00"}, 200),
]


@pytest.mark.parametrize(("path", "files", "data", "status"), UPLOADS)
def test_uploads_pass_through(chain: list[Server], path: str, files: Any, data: dict[str, Any], status: int) -> None:
    def upload(server: Server) -> tuple[int, bytes]:
        response = requests.post(server.url(path), files=files or None, data=data, timeout=10)
        return response.status_code, response.content

    a, b, c = chain
    expected = upload(a)
    assert expected[0] == status, expected
    assert upload(b) == expected
    assert upload(c) == expected
