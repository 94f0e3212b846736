"""Hostile input against ``stackflask run``: bounded cost, JSON only, waitress's limits.

One server with the defaults (but a short ``server.channel_timeout``) takes
every hostile body, content type and slow connection; a second one, with a
small ``connection_limit`` and two threads, shows that those settings reach
waitress. Time and memory are measured on the server process: its resident
memory (``VmRSS``) before and after each request, and its peak (``VmHWM``,
reset before each request through ``/proc/PID/clear_refs``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import REPO, Server, StackFiles, free_port, script, server_env

API = '''
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from stackflask import Api, InlineProviderSpec, webmethod


def available_providers():
    return [InlineProviderSpec(api=Api.hostile, provider_type="inline::hostile",
                               module="hostile_impl")]


@dataclass
class Point:
    x: int
    y: int


class Model(BaseModel):
    x: int
    y: int


class Hostile(Protocol):
    @webmethod(route="/hostile/ints", method="POST")
    async def ints(self, items: list[int]) -> int: ...

    @webmethod(route="/hostile/floats", method="POST")
    async def floats(self, values: list[float]) -> int: ...

    @webmethod(route="/hostile/points", method="POST")
    async def points(self, items: list[Point]) -> int: ...

    @webmethod(route="/hostile/models", method="POST")
    async def models(self, items: list[Model]) -> int: ...

    @webmethod(route="/hostile/count", method="POST")
    async def count(self, value: Any = None) -> int: ...

    @webmethod(route="/hostile/echo", method="POST")
    async def echo(self, value: Any = None) -> Any: ...

    @webmethod(route="/hostile/typed", method="POST")
    async def typed(self, text: str = "", number: float = 0.0, whole: int = 0,
                    names: dict[str, int] | None = None) -> dict[str, Any]: ...

    @webmethod(route="/hostile/ping", method="POST")
    async def ping(self) -> str: ...

    @webmethod(route="/hostile/raw", method="POST", raw_bytes_request_body=True)
    async def raw(self, body: bytes) -> int: ...

    @webmethod(route="/hostile/sleep", method="GET")
    async def sleep(self, seconds: float) -> float: ...
'''

IMPL = '''
import asyncio


class Hostile:
    async def ints(self, items):
        return len(items)

    async def floats(self, values):
        assert all(type(v) is float for v in values)
        return len(values)

    async def points(self, items):
        return len(items)

    async def models(self, items):
        return len(items)

    async def count(self, value=None):
        return len(value) if isinstance(value, (list, dict)) else 1

    async def echo(self, value=None):
        return value

    async def typed(self, text="", number=0.0, whole=0, names=None):
        return {"text": text, "number": number, "whole": whole, "names": names}

    async def ping(self):
        return "pong"

    async def raw(self, body):
        return len(body)

    async def sleep(self, seconds):
        await asyncio.sleep(seconds)
        return seconds


def get_provider_impl(config, deps):
    return Hostile()
'''

#: ``server.channel_timeout`` of the main server: short, so the test is.
CHANNEL_TIMEOUT = 2


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory: pytest.TempPathFactory) -> StackFiles:
    files = StackFiles(tmp_path_factory.mktemp("hostile"))
    files.module("hostile_api", API)
    files.module("hostile_impl", IMPL)
    files.api_spec("hostile.yaml", {"module": "hostile_api", "name": "hostile",
                                    "protocol": "Hostile"})
    return files


def run_server(files: StackFiles, name: str, server: dict[str, Any]) -> Server:
    config = files.run_config({
        "providers": {"hostile": [{"provider_id": "h", "provider_type": "inline::hostile"}]},
        "server": server,
    }, f"{name}.yaml")
    port = free_port()
    running = Server([script("stackflask"), "run", "--config", str(config), "--port", str(port)],
                     port, files.root / f"{name}.log", REPO, server_env([files.pkgs]))
    running.wait_ready()
    return running


@pytest.fixture(scope="module")
def hostile(hostile_files: StackFiles) -> Iterator[Server]:
    """``stackflask run`` with the defaults, but a short ``channel_timeout``."""
    server = run_server(hostile_files, "hostile", {"channel_timeout": CHANNEL_TIMEOUT})
    yield server
    server.stop()


def memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of process ``pid``, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {
        line.split(":")[0]: int(line.split()[1]) * 1024
        for line in status if line.startswith(("VmRSS:", "VmHWM:"))
    }


def raw_exchange(server: Server, request: bytes, timeout: float = 5) -> bytes:
    """Send ``request`` on a new connection; what the server answers until it closes."""
    answer = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:  # waitress closes with the rest unread
            pass
    return answer


def errors_of(response: requests.Response) -> list[dict[str, Any]]:
    assert response.status_code == 400, response.text[:500]
    return response.json()["error"]["detail"]["errors"]


# -- bounded cost --------------------------------------------------------------

MIB = 1024 * 1024


def items(item: bytes, count: int, key: bytes = b"items") -> bytes:
    return b'{"' + key + b'": [' + b",".join([item] * count) + b"]}"


#: (path, body, status, largest peak memory growth as a multiple of the body)
HOSTILE_BODIES = {
    "850k-invalid-items": ("/v1/hostile/ints", lambda: items(b'"abcdefghi"', 850_000), 400, 10),
    "a-million-valid-items": ("/v1/hostile/ints", lambda: items(b"123456789", 1_000_000), 200, 10),
    "5m-tiny-items-into-any": (
        "/v1/hostile/count", lambda: items(b"1", 5_000_000, b"value"), 200, 10),
    "a-million-floats": ("/v1/hostile/floats", lambda: items(b"0.123456", 1_000_000, b"values"), 200, 10),
    "deep-nesting": (
        "/v1/hostile/count", lambda: b'{"value": ' + b"[" * (10 * MIB - 20) + b"}", 400, 10),
    "2.5m-nans": ("/v1/hostile/count", lambda: items(b"NaN", 2_500_000, b"value"), 400, 10),
    # Python objects are large: a 15-byte {"x":12,"y":34} parses into a 200-byte dict and
    # becomes a 100-byte dataclass instance or a 500-byte pydantic model (its __dict__ and
    # fields-set); both trees live while the list is converted.
    "640k-valid-points-dataclass": (
        "/v1/hostile/points", lambda: items(b'{"x":12,"y":34}', 640_000), 200, 25),
    "640k-valid-points-pydantic": (
        "/v1/hostile/models", lambda: items(b'{"x":12,"y":34}', 640_000), 200, 50),
    # Python objects are large: 3 million {} parse into some 200 MB whatever is done next.
    "3m-empty-objects-dataclass": ("/v1/hostile/points", lambda: items(b"{}", 3_000_000), 400, 30),
    "3m-empty-objects-pydantic": ("/v1/hostile/models", lambda: items(b"{}", 3_000_000), 400, 30),
}


@pytest.mark.parametrize(("path", "make_body", "status", "factor"), HOSTILE_BODIES.values(),
                         ids=HOSTILE_BODIES.keys())
def test_a_hostile_body_costs_little_time_and_memory(hostile, path, make_body, status, factor):
    body = make_body()
    assert len(body) <= 10 * MIB
    pid = hostile.proc.pid
    before = memory(pid)["VmRSS"]
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    started = time.monotonic()
    response = requests.post(hostile.url(path), data=body,
                             headers={"Content-Type": "application/json"}, timeout=60)
    elapsed = time.monotonic() - started
    peak = memory(pid)["VmHWM"]
    time.sleep(0.2)
    after = memory(pid)["VmRSS"]
    print(f"{len(body) / MIB:.1f} MiB: {response.status_code} in {elapsed:.2f} s, "
          f"peak +{(peak - before) / MIB:.0f} MiB, after +{(after - before) / MIB:.0f} MiB, "
          f"{len(response.content)} bytes answered")
    assert response.status_code == status, response.text[:500]
    assert elapsed < 5
    assert peak - before < factor * len(body)
    assert after - before < len(body)
    assert len(response.content) < 16 * 1024
    if status == 400:
        errors = response.json()["error"]["detail"]["errors"]
        assert len(errors) <= 101


def test_memory_left_after_many_large_requests_does_not_add_up(hostile):
    """Ten bodies of 640,000 records, one after the other, so that every one of
    the eight waitress threads serves one: what each leaves behind (allocator
    fragmentation: 5 to 8 MiB after the first) does not add up. Before, each
    left about 5 MiB more: 60 MiB after ten, 138 MiB after twenty."""
    body = items(b'{"x":12,"y":34}', 640_000)
    pid = hostile.proc.pid
    before = memory(pid)["VmRSS"]
    growth = []
    for _ in range(10):
        response = requests.post(hostile.url("/v1/hostile/points"), data=body,
                                 headers={"Content-Type": "application/json"}, timeout=60)
        assert response.status_code == 200, response.text[:500]
        time.sleep(0.1)
        growth.append(memory(pid)["VmRSS"] - before)
    print("after each, MiB:", [round(g / MIB, 1) for g in growth])
    assert growth[0] < len(body)
    assert max(growth) < 3 * len(body)


def test_a_bad_request_lists_a_hundred_problems_then_how_many_more(hostile):
    errors = errors_of(requests.post(hostile.url("/v1/hostile/ints"),
                                     json={"items": ["x"] * 150}, timeout=10))
    assert [e["loc"] for e in errors[:100]] == [["body", "items", i] for i in range(100)]
    assert errors[100] == {
        "loc": ["body"],
        "msg": "... and at least 1 more problem (checking stopped there)",
        "type": "too_many_errors",
    }
    errors = errors_of(requests.post(hostile.url("/v1/hostile/ints"),
                                     json={"items": ["x"] * 100}, timeout=10))
    assert len(errors) == 100 and all(e["type"] == "int_parsing" for e in errors)


def test_a_body_of_exactly_max_request_bytes_is_read(hostile):
    body = b'{"value": "' + b"x" * (10 * MIB - 13) + b'"}'
    assert len(body) == 10 * MIB
    response = requests.post(hostile.url("/v1/hostile/count"), data=body, timeout=30)
    assert response.status_code == 200 and response.json() == 1


# -- valid JSON only -----------------------------------------------------------

FINITE = ("Input should be a finite number (JSON has no NaN or Infinity)", "finite_number")
TEXT = ("Input should be Unicode text, without lone surrogates (\\ud800 to \\udfff)",
        "string_unicode")


@pytest.mark.parametrize(
    ("path", "body", "loc", "expected"),
    [
        ("echo", b'{"value": NaN}', ["body", "value"], FINITE),
        ("echo", b'{"value": Infinity}', ["body", "value"], FINITE),
        ("echo", b'{"value": -Infinity}', ["body", "value"], FINITE),
        ("echo", b'{"value": 1e400}', ["body", "value"], FINITE),
        ("echo", b'{"value": [1, {"a": -1e999}]}', ["body", "value", 1, "a"], FINITE),
        ("typed", b'{"number": NaN}', ["body", "number"], FINITE),
        ("typed", b'{"whole": Infinity}', ["body", "whole"], FINITE),
        ("echo", b'{"value": "\\ud800"}', ["body", "value"], TEXT),
        ("echo", b'{"value": ["ok", "a\\udfffb"]}', ["body", "value", 1], TEXT),
        ("echo", b'{"value": {"\\udc00": 1}}', ["body", "value", "\\udc00"], TEXT),
        ("typed", b'{"text": "\\uDBFF"}', ["body", "text"], TEXT),
        ("typed", b'{"names": {"\\ud800": 1}}', ["body", "names", "\\ud800"], TEXT),
        ("typed", b'{"number": 1' + b"0" * 400 + b"}", ["body", "number"],
         ("Special numeric values (nan or infinity) are not permitted.", "float_parsing")),
    ],
    ids=["nan", "infinity", "-infinity", "1e400", "nested", "nan-for-float", "infinity-for-int",
         "lone-high-surrogate", "lone-low-surrogate-in-a-list", "surrogate-key",
         "upper-case-escape", "surrogate-key-of-a-typed-dict", "int-too-large-for-a-float"],
)
def test_values_json_does_not_allow_are_400_for_their_field(hostile, path, body, loc, expected):
    [error] = errors_of(requests.post(hostile.url(f"/v1/hostile/{path}"), data=body, timeout=10))
    assert (error["loc"], error["msg"], error["type"]) == (loc, *expected)


def test_surrogates_encoded_in_utf8_are_invalid_json(hostile):
    [error] = errors_of(requests.post(hostile.url("/v1/hostile/echo"),
                                      data=b'{"value": "\xed\xa0\x80"}', timeout=10))
    assert error["loc"] == ["body"] and error["type"] == "json_invalid"


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'{"value": "\\ud83d\\ude00"}', "\U0001f600"),
        (b'{"value": "NaN Infinity \\\\ud800"}', "NaN Infinity \\ud800"),
        (b'{"value": 1.7976931348623157e308}', 1.7976931348623157e308),
    ],
    ids=["surrogate-pair", "lookalike-text", "largest-float"],
)
def test_what_looks_unfit_but_is_json_is_served(hostile, body, value):
    response = requests.post(hostile.url("/v1/hostile/echo"), data=body, timeout=10)
    assert response.status_code == 200 and response.json() == value


# -- no cross-site writes ------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
     "multipart/form-data; boundary=x"],
)
def test_a_body_a_browser_sends_without_preflight_is_415(hostile, content_type):
    response = requests.post(hostile.url("/v1/hostile/echo"), data=b'{"value": "pwned"}',
                             headers={"Content-Type": content_type}, timeout=10)
    shown = content_type.split(";")[0].lower()
    assert response.status_code == 415
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"detail": f"Unsupported Media Type: the body must be JSON, "
                                         f"got {shown!r}; send application/json"}


@pytest.mark.parametrize(
    ("path", "content_type", "expected"),
    [
        ("echo", None, "ok"),
        ("echo", "application/json; charset=utf-8", "ok"),
        ("echo", "application/problem+json", "ok"),
        ("ping", "text/plain", "pong"),
        ("raw", "text/plain", 15),
    ],
    ids=["no-type", "json-charset", "plus-json", "no-body-parameters", "raw-body"],
)
def test_json_types_and_methods_without_a_json_body_are_served(hostile, path, content_type,
                                                                expected):
    headers = {"Content-Type": content_type} if content_type else {}
    response = requests.post(hostile.url(f"/v1/hostile/{path}"), data=b'{"value": "ok"}',
                             headers=headers, timeout=10)
    assert response.status_code == 200 and response.json() == expected


# -- waitress's limits and its own errors ---------------------------------------


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(hostile):
    started = time.monotonic()
    answer = raw_exchange(hostile, b"POST /v1/hostile/echo HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: 50000000\r\n\r\n")
    assert time.monotonic() - started < 2
    assert answer.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Type: application/json" in head
    assert json.loads(body) == {"detail": "Request Entity Too Large"}  # the contract's 413


def test_a_chunked_body_is_cut_off_at_the_limit(hostile):
    sent = 0
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/hostile/echo HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            while sent < 500 * MIB:
                sock.sendall(chunk)
                sent += 0x10000
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = sock.recv(65536)
    # the limit, plus what the kernel's buffers took before waitress closed
    assert sent < 20 * MIB
    assert answer.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    assert requests.get(hostile.url("/v1/health"), timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400 Bad Request"),
        (b"GET /v1/health HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", b"400 Bad Request"),
        (b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"x" * 300_000 + b"\r\n\r\n",
         b"431 Request Header Fields Too Large"),
        (b"POST /v1/hostile/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
         b"501 Not Implemented"),
    ],
    ids=["bad-request-line", "bad-header", "headers-too-large", "unknown-transfer-encoding"],
)
def test_waitress_answers_malformed_requests_in_the_contracts_form(hostile, request_bytes, status):
    answer = raw_exchange(hostile, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split(b" ", 1)[1] == status
    assert b"Content-Type: application/json" in head
    assert b"Connection: close" in head
    assert json.loads(body) == {"detail": status.split(b" ", 1)[1].decode()}
    assert requests.get(hostile.url("/v1/health"), timeout=5).status_code == 200


# -- connections ---------------------------------------------------------------


def open_slow_connections(server: Server, count: int) -> list[socket.socket]:
    """``count`` connections that each send part of a request, then nothing."""
    slow = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        if i % 2:
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
        else:
            sock.sendall(b"POST /v1/hostile/echo HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"value\": ")
        slow.append(sock)
    return slow


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_slow_connections_do_not_lock_out_a_normal_client(hostile):
    slow = open_slow_connections(hostile, 120)
    try:
        started = time.monotonic()
        assert requests.get(hostile.url("/v1/health"), timeout=30).status_code == 200
        assert time.monotonic() - started < 1
        time.sleep(CHANNEL_TIMEOUT + 1.5)
        assert all(closed_by_server(sock) for sock in slow)
    finally:
        for sock in slow:
            sock.close()


def test_connection_limit_and_threads_reach_waitress(hostile_files):
    server = run_server(hostile_files, "narrow",
                        {"connection_limit": 50, "channel_timeout": 1, "threads": 2})
    try:
        results: list[int] = []

        def sleep() -> None:
            results.append(requests.get(server.url("/v1/hostile/sleep?seconds=0.5"),
                                        timeout=10).status_code)

        started = time.monotonic()
        sleepers = [threading.Thread(target=sleep) for _ in range(4)]
        for thread in sleepers:
            thread.start()
        for thread in sleepers:
            thread.join(10)
        assert results == [200] * 4
        assert time.monotonic() - started >= 0.95  # two threads: two rounds of 0.5 s

        slow = open_slow_connections(server, 120)
        try:
            started = time.monotonic()
            assert requests.get(server.url("/v1/health"), timeout=30).status_code == 200
            waited = time.monotonic() - started
            # locked out until the slow ones time out, a few rounds of them
            assert 0.5 <= waited < 10, waited
        finally:
            for sock in slow:
                sock.close()
    finally:
        server.stop()


def test_connections_past_descriptor_1024_are_served(hostile_files):
    """waitress's ``select()`` loop fails on a descriptor of 1024 or more; ``poll()`` does not."""
    server = run_server(hostile_files, "wide", {"connection_limit": 1300})
    idle: list[socket.socket] = []
    try:
        for _ in range(1100):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        time.sleep(0.5)  # accepted: the server holds descriptors past 1024
        assert len(list(Path(f"/proc/{server.proc.pid}/fd").iterdir())) > 1100
        assert requests.get(server.url("/v1/health"), timeout=10).status_code == 200
        idle[-1].sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle[-1].recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        for sock in idle:
            sock.close()
        server.stop()
    assert server.proc.returncode == 0


def test_json_parse_hooks_leave_ordinary_bodies_alone(hostile):
    body = {"value": {"a": [1, 2.5, "x", None, True], "b": {"c": "é"}}}
    response = requests.post(hostile.url("/v1/hostile/echo"), data=json.dumps(body), timeout=10)
    assert response.status_code == 200 and response.json() == body["value"]
