"""``server.quota``: requests per client and period, through flask-limiter.

Per process with memory storage (the test client and a real ``stackflask
run``), and shared by the two workers of a real ``gunicorn -w 2`` through a real
Redis (started here on a loopback port when ``redis-server`` is installed) and
through Llama Stack's SQLite kvstore.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import free_port, script, server_env

from stackflask.problems import StartupError

API = '''
from typing import Protocol

from stackflask import webmethod


class Counted(Protocol):
    @webmethod(route="/counted/pid", method="GET")
    async def pid(self) -> int: ...

    @webmethod(route="/counted/open", method="GET", public=True)
    async def open_pid(self, wait: float = 0.0) -> int: ...
'''

IMPL = '''
import asyncio
import os


class Counted:
    async def pid(self):
        return os.getpid()

    async def open_pid(self, wait=0.0):
        await asyncio.sleep(wait)
        return os.getpid()


def get_provider_impl(config, deps):
    return Counted()
'''

ALICE, ALICE_TOO, BOB, WARM = "alice-token", "alice-second-token", "bob-token", "warm-token"
AUTH = {
    "tokens": [
        {"token": ALICE, "principal": "alice"},
        {"token": ALICE_TOO, "principal": "alice"},
        {"token": BOB, "principal": "bob"},
        {"token": WARM, "principal": "warm"},
    ],
    "public": ["/v1/health"],
}
DAY = 86400


@pytest.fixture
def counted(stack_files: Any) -> Any:
    """``counted(server=None)``: the path of a run config serving the counted API."""
    return stack_files.serve_api("counted", "Counted", API, IMPL)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_exceeded(response: Any, allowed: str, period: int = DAY) -> None:
    """A 429 with Llama Stack's body, the contract's ``detail`` and ``Retry-After``."""
    assert response.status_code == 429
    assert response.headers["Content-Type"] == "application/json"
    retry_after = int(response.headers["Retry-After"])
    assert 0 < retry_after <= period
    assert period < 60 or retry_after > period - 60
    body = response.json() if callable(response.json) else response.json
    assert body == {
        "error": {"message": "Quota exceeded"},
        "detail": f"Quota exceeded: {allowed}; retry after {retry_after} s",
    }


# -- per process, memory storage: the test client ---------------------------


def test_anonymous_clients_are_counted_by_address(counted, make_app):
    app = make_app(counted(server={"quota": {"anonymous_max_requests": 3}}))
    client = app.test_client()
    for _ in range(3):
        assert client.get("/v1/counted/pid").status_code == 200
    assert_exceeded(client.get("/v1/counted/pid"), "3 requests per day per client address")
    # One counter per client, whatever the route.
    assert_exceeded(client.get("/v1/counted/open"), "3 requests per day per client address")

    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert other.get("/v1/counted/pid").status_code == 200


def test_only_external_api_routes_count(counted, make_app):
    app = make_app(counted(server={"quota": {"anonymous_max_requests": 1}}))
    client = app.test_client()
    for path in ("/v1/health", "/v1/version", "/v1/providers", "/v1/inspect/routes",
                 "/openapi.json", "/docs", "/v1/nowhere"):
        for _ in range(3):
            assert client.get(path).status_code in (200, 404), path
    for _ in range(3):  # CORS preflights are the browser's
        assert client.options("/v1/counted/pid").status_code == 200
    assert client.get("/v1/counted/pid").status_code == 200
    assert client.get("/v1/counted/pid").status_code == 429


def test_authenticated_clients_are_counted_by_principal(counted, make_app):
    quota = {"anonymous_max_requests": 1, "authenticated_max_requests": 3}
    app = make_app(counted(server={"auth": AUTH, "quota": quota}))
    client = app.test_client()
    # alice: two tokens, two addresses, one quota.
    assert client.get("/v1/counted/pid", headers=bearer(ALICE)).status_code == 200
    assert client.get("/v1/counted/pid", headers=bearer(ALICE_TOO)).status_code == 200
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "192.0.2.8"
    assert elsewhere.get("/v1/counted/pid", headers=bearer(ALICE)).status_code == 200
    assert_exceeded(
        client.get("/v1/counted/pid", headers=bearer(ALICE_TOO)),
        "3 requests per day per principal",
    )
    for _ in range(3):
        assert client.get("/v1/counted/pid", headers=bearer(BOB)).status_code == 200

    # Requests refused by authentication never reach the quota.
    for _ in range(3):
        assert client.get("/v1/counted/pid").status_code == 401
        assert client.get("/v1/counted/pid", headers=bearer("wrong")).status_code == 401
    # A public route skips authentication: the client counts by address.
    assert client.get("/v1/counted/open").status_code == 200
    assert_exceeded(client.get("/v1/counted/open"), "1 requests per day per client address")


def test_without_auth_every_client_is_anonymous(counted, make_app):
    quota = {"anonymous_max_requests": 2, "authenticated_max_requests": 100}
    client = make_app(counted(server={"quota": quota})).test_client()
    for _ in range(2):
        assert client.get("/v1/counted/pid", headers=bearer(ALICE)).status_code == 200
    assert client.get("/v1/counted/pid", headers=bearer(ALICE)).status_code == 429


def test_a_period_of_a_second_starts_again(counted, make_app):
    quota = {"anonymous_max_requests": 2, "period": "second"}
    client = make_app(counted(server={"quota": quota})).test_client()
    assert client.get("/v1/counted/pid").status_code == 200
    assert client.get("/v1/counted/pid").status_code == 200
    assert_exceeded(client.get("/v1/counted/pid"), "2 requests per second per client address", 1)
    time.sleep(1.1)
    assert client.get("/v1/counted/pid").status_code == 200


def test_a_zero_quota_refuses_every_request(counted, make_app):
    client = make_app(counted(server={"quota": {"anonymous_max_requests": 0}})).test_client()
    assert client.get("/v1/counted/pid").status_code == 429


def test_a_storage_that_cannot_be_reached_is_503(counted, make_app, caplog):
    quota = {"storage_uri": f"redis://:s3cret@127.0.0.1:{free_port()}/0"}
    client = make_app(counted(server={"quota": quota})).test_client()
    response = client.get("/v1/counted/pid")
    assert response.status_code == 503
    assert response.json == {"detail": "Service unavailable: the quota storage cannot be reached."}
    assert "the quota storage failed" in caplog.text
    assert "s3cret" not in caplog.text
    assert client.get("/v1/health").status_code == 200


def test_the_sqlite_kvstore_counts_in_its_file(counted, make_app, tmp_path):
    quota = {"anonymous_max_requests": 2, "kvstore": {"type": "sqlite", "db_path": "state/quota.db"}}
    config = counted(server={"quota": quota})
    client = make_app(config).test_client()
    assert client.get("/v1/counted/pid").status_code == 200
    assert (tmp_path / "state" / "quota.db").is_file()  # relative to the run config
    # A second app on the same file (another worker) shares the count.
    again = make_app(config).test_client()
    assert again.get("/v1/counted/pid").status_code == 200
    assert_exceeded(client.get("/v1/counted/pid"), "2 requests per day per client address")


@pytest.mark.parametrize(
    ("quota", "message"),
    [
        ({"kvstore": {"type": "redis", "host": "localhost", "port": 6379}},
         "server.quota.kvstore.type: 'redis' cannot hold quotas: Llama Stack's quota takes "
         "'sqlite' only; for Redis, give server.quota.storage_uri: redis://HOST:PORT instead "
         "of kvstore"),
        ({"kvstore": {"type": "sqlite"}},
         "server.quota.kvstore.db_path: Missing data for required field."),
        ({"kvstore": {"type": "sqlite", "db_path": "q.db", "db_pth": "x"}},
         "server.quota.kvstore.db_pth: Unknown field."),
        ({"kvstore": {"type": "sqlite", "db_path": "q.db"}, "storage_uri": "memory://"},
         "server.quota: Give at most one of kvstore and storage_uri."),
        ({"storage_uri": "memcached://:pw@localhost:11211"},
         "server.quota.storage_uri: not a storage URI stackflask takes (scheme 'memcached'); "
         "give memory:// or redis://[:PASSWORD@]HOST:PORT[/DB] (or rediss://)"),
        ({"storage_uri": "localhost:6379"},
         "server.quota.storage_uri: not a storage URI stackflask takes (scheme ''); "
         "give memory:// or redis://[:PASSWORD@]HOST:PORT[/DB] (or rediss://)"),
        ({"period": "week"},
         "server.quota.period: Must be one of: second, minute, hour, day."),
        ({"anonymous_max_requests": -1},
         "server.quota.anonymous_max_requests: Must be greater than or equal to 0."),
        ({"authenticated_max_requests": "many"},
         "server.quota.authenticated_max_requests: Not a valid integer."),
        ({"anonymous_max_request": 5}, "server.quota.anonymous_max_request: Unknown field."),
    ],
)
def test_a_quota_config_that_cannot_be_honoured_is_refused(counted, make_app, quota, message):
    config = counted(server={"quota": quota})
    with pytest.raises(StartupError) as info:
        make_app(config)
    assert f"{config}: {message}" in info.value.problems


def test_a_kvstore_file_that_cannot_be_opened_is_refused(counted, make_app, tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    config = counted(server={"quota": {"kvstore": {"type": "sqlite", "db_path": "taken/q.db"}}})
    with pytest.raises(StartupError) as info:
        make_app(config)
    assert str(info.value).startswith(f"{config}: server.quota.kvstore.db_path: cannot be used: ")


# -- real servers --------------------------------------------------------------


def test_stackflask_run_counts_per_process(counted, stack_files, start):
    config = counted(server={"quota": {"anonymous_max_requests": 3}})
    port = free_port()
    server = start(
        [script("stackflask"), "run", "--config", config, "--port", str(port)],
        port,
        env=server_env([stack_files.pkgs]),
    )
    for _ in range(3):
        assert requests.get(server.url("/v1/counted/pid"), timeout=5).status_code == 200
    assert_exceeded(
        requests.get(server.url("/v1/counted/pid"), timeout=5),
        "3 requests per day per client address",
    )
    assert requests.get(server.url("/v1/health"), timeout=5).status_code == 200


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A fresh ``redis-server`` on a free loopback port, nothing saved; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); .ci/run installs it")
    import redis

    port = free_port()
    log = open(tmp_path / "redis.log", "wb")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start:\n{(tmp_path / 'redis.log').read_text()}")
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture(params=["redis", "sqlite"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """``server.quota`` storage settings that gunicorn workers share."""
    if request.param == "redis":
        return {"storage_uri": request.getfixturevalue("redis_url")}
    return {"kvstore": {"type": "sqlite", "db_path": str(tmp_path / "quota.db")}}


def test_gunicorn_workers_share_the_quota(counted, stack_files, start, shared_store, tmp_path):
    limit = 20
    quota = {"anonymous_max_requests": limit, "authenticated_max_requests": 10_000, **shared_store}
    config = counted(server={"auth": AUTH, "quota": quota})
    port = free_port()
    server = start(
        [script("gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5",
         "stackflask:create_app()"],
        port,
        env=server_env([stack_files.pkgs], STACKFLASK_CONFIG=config, HOME=str(tmp_path)),
    )

    def pid(path: str, headers: dict[str, str] | None = None) -> requests.Response:
        with requests.Session() as session:  # a new connection: the kernel picks a worker
            return session.get(server.url(path), headers=headers, timeout=5)

    # Both workers up, counted on another principal's quota.
    warm: set[int] = set()
    deadline = time.monotonic() + 20
    resets = 0
    while len(warm) < 2 and time.monotonic() < deadline:
        try:
            response = pid("/v1/counted/pid", bearer(WARM))
        except requests.ConnectionError:
            # Seen once in a full run on a loaded machine, never alone: a reset
            # while the workers start. Counted, and shown if the test fails.
            resets += 1
            time.sleep(0.2)
            continue
        assert response.status_code == 200, server.output()
        warm.add(response.json())
    assert len(warm) == 2, (resets, server.output())
    assert resets <= 3, server.output()

    def pair() -> list[requests.Response]:
        """Two requests at once: while one worker waits, the other takes the second."""
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(lambda _: pid("/v1/counted/open?wait=0.2"), range(2)))

    served: dict[int, int] = {}
    refused: list[requests.Response] = []
    while not refused:
        for response in pair():
            if response.status_code == 200:
                served[response.json()] = served.get(response.json(), 0) + 1
            else:
                refused.append(response)
        assert sum(served.values()) <= limit, served
    assert_exceeded(refused[0], f"{limit} requests per day per client address")
    assert sum(served.values()) == limit
    assert len(served) == 2, served  # each worker counted fewer than the limit...
    for _ in range(10):  # ...yet neither has any left
        assert pid("/v1/counted/open").status_code == 429
