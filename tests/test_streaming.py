"""Server-sent events through real servers: item by item, and closed on disconnect."""

from __future__ import annotations

import time

import pytest
import requests
from conftest import free_port, script, server_env, waitress_in_thread

API = '''
from typing import AsyncIterator, Protocol

from stackflask import Api, InlineProviderSpec, webmethod


def available_providers():
    return [InlineProviderSpec(api=Api.ticker, provider_type="inline::ticks",
                               module="ticker_impl_stream")]


class Ticker(Protocol):
    @webmethod(route="/ticks", method="GET")
    async def ticks(self, gate: bool = False) -> AsyncIterator[dict[str, int]]:
        """Numbers, one every 20 ms, or one per release when gated."""
        ...

    @webmethod(route="/release", method="POST")
    async def release(self) -> None: ...

    @webmethod(route="/state", method="GET")
    async def state(self) -> dict[str, int]: ...
'''

IMPL = '''
import asyncio
import threading


class Ticker:
    async def initialize(self):
        self.loop = asyncio.get_running_loop()
        self.gate = asyncio.Event()
        self.closed = 0
        self.closed_on_loop = 0
        self.started = 0

    async def ticks(self, gate=False):
        self.started += 1
        try:
            for i in range(500):
                yield {"i": i}
                if gate:
                    await self.gate.wait()
                    self.gate.clear()
                else:
                    await asyncio.sleep(0.02)
        finally:
            self.closed += 1
            self.closed_on_loop += asyncio.get_running_loop() is self.loop

    async def release(self):
        self.gate.set()

    async def state(self):
        return {"started": self.started, "closed": self.closed,
                "closed_on_loop": self.closed_on_loop}


async def get_provider_impl(config, deps):
    impl = Ticker()
    await impl.initialize()
    return impl
'''


@pytest.fixture
def ticker_config(stack_files):
    stack_files.module("ticker_api_stream", API)
    stack_files.module("ticker_impl_stream", IMPL)
    stack_files.api_spec("ticker.yaml", {
        "module": "ticker_api_stream", "name": "ticker", "protocol": "Ticker",
    })
    return stack_files.run_config({
        "apis": ["ticker"],
        "providers": {"ticker": [{"provider_id": "t", "provider_type": "inline::ticks"}]},
    })


@pytest.fixture
def waitress_url(make_app, ticker_config):
    with waitress_in_thread(make_app(str(ticker_config))) as url:
        yield url


@pytest.fixture
def flask_run_url(ticker_config, stack_files, start):
    port = free_port()
    server = start(
        [script("flask"), "--app", "app", "run", "--port", str(port), "--no-reload"],
        port, env=server_env([stack_files.pkgs], STACKFLASK_CONFIG=str(ticker_config)),
    )
    return server.url("")


def _events(response):
    """Yield each SSE ``data:`` payload as soon as its blank line arrives."""
    buffer = b""
    for chunk in response.iter_content(chunk_size=None):
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            yield event


@pytest.mark.parametrize("server", ["waitress_url", "flask_run_url"])
def test_items_arrive_one_by_one(server, request):
    url = request.getfixturevalue(server)
    with requests.get(url + "/v1/ticks", params={"gate": "true"}, stream=True, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = _events(r)
        # The generator is blocked on the gate: the first event can only arrive
        # if it was sent before the second item exists.
        assert next(events) == b'data: {"i":0}'
        requests.post(url + "/v1/release", timeout=5)
        assert next(events) == b'data: {"i":1}'
        requests.post(url + "/v1/release", timeout=5)
        assert next(events) == b'data: {"i":2}'


@pytest.mark.parametrize("server", ["waitress_url", "flask_run_url"])
def test_disconnect_closes_generator_on_the_loop(server, request):
    url = request.getfixturevalue(server)
    with requests.get(url + "/v1/ticks", stream=True, timeout=10) as r:
        events = _events(r)
        next(events)
        next(events)
    deadline = time.monotonic() + 5
    state = {}
    while time.monotonic() < deadline:
        state = requests.get(url + "/v1/state", timeout=5).json()
        if state["closed"]:
            break
        time.sleep(0.05)
    assert state == {"started": 1, "closed": 1, "closed_on_loop": 1}
