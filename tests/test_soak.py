"""A soak test against a real waitress server: 64 clients, thousands of requests.

No unexpected 5xx, no lost or doubled update in a stateful provider, and the
server's memory flat after warm-up.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import requests
from conftest import free_port, script, server_env

API = '''
from dataclasses import dataclass, field
from typing import AsyncIterator, Literal, Protocol

from stackflask import Api, InlineProviderSpec, webmethod


def available_providers():
    return [InlineProviderSpec(api=Api.soak, provider_type="inline::soak", module="soak_impl")]


@dataclass
class Step:
    amount: int
    kind: Literal["add", "noop"] = "add"
    tags: list[str] = field(default_factory=list)


class Soak(Protocol):
    @webmethod(route="/soak/items", method="GET")
    async def items(self, limit: int = 3) -> dict[str, list[str]]: ...

    @webmethod(route="/soak/increment", method="POST")
    async def increment(self, step: Step) -> int: ...

    @webmethod(route="/soak/count", method="GET")
    async def count(self) -> int: ...

    @webmethod(route="/soak/ticks", method="GET")
    async def ticks(self, n: int = 10) -> AsyncIterator[dict[str, int]]: ...

    @webmethod(route="/soak/refuse", method="GET")
    async def refuse(self) -> None: ...
'''

IMPL = '''
import asyncio


class Soak:
    async def initialize(self):
        self.lock = asyncio.Lock()
        self.total = 0

    async def items(self, limit=3):
        return {"items": [f"item-{i}" for i in range(limit)]}

    async def increment(self, step):
        async with self.lock:
            value = self.total
            await asyncio.sleep(0)
            self.total = value + step.amount
            return self.total

    async def count(self):
        return self.total

    async def ticks(self, n=10):
        for i in range(n):
            yield {"i": i}
            await asyncio.sleep(0)

    async def refuse(self):
        raise ValueError("refused on purpose")


async def get_provider_impl(config, deps):
    impl = Soak()
    await impl.initialize()
    return impl
'''

CLIENTS = 64
ROUNDS = 10  # per client, each round 5 requests: 64 x 10 x 5 = 3,200 requests
EXPECTED = {"items": 200, "increment": 200, "ticks": 200, "refuse": 400, "bad": 400}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def load(url: str, statuses: Counter, increments: list[int], lock: threading.Lock) -> None:
    barrier = threading.Barrier(CLIENTS)

    def client() -> None:
        barrier.wait()
        with requests.Session() as session:
            for _ in range(ROUNDS):
                seen = {
                    "items": session.get(url + "/v1/soak/items", timeout=30),
                    "increment": session.post(url + "/v1/soak/increment",
                                              json={"step": {"amount": 1, "tags": ["x"]}},
                                              timeout=30),
                    "ticks": session.get(url + "/v1/soak/ticks", timeout=30),
                    "refuse": session.get(url + "/v1/soak/refuse", timeout=30),
                    "bad": session.post(url + "/v1/soak/increment",
                                        json={"step": {"amount": "many"}}, timeout=30),
                }
                with lock:
                    for name, response in seen.items():
                        statuses[(name, response.status_code)] += 1
                    if seen["increment"].status_code == 200:
                        increments.append(seen["increment"].json())
                    assert seen["ticks"].content.count(b"data: ") == 10

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)


def test_soak(stack_files, start):
    stack_files.module("soak_api", API)
    stack_files.module("soak_impl", IMPL)
    stack_files.api_spec("soak.yaml", {"module": "soak_api", "name": "soak", "protocol": "Soak"})
    config = stack_files.run_config({
        "providers": {"soak": [{"provider_id": "s", "provider_type": "inline::soak"}]},
        "server": {"request_timeout": 30},
    })
    port = free_port()
    server = start([script("stackflask"), "run", "--config", str(config), "--port", str(port),
                    "--threads", "16"], port, env=server_env([stack_files.pkgs]))
    url = server.url("")
    lock = threading.Lock()

    warm: Counter = Counter()
    load(url, warm, [], lock)  # warm-up: the same load once
    before = rss_kib(server.proc.pid)

    statuses: Counter = Counter()
    increments: list[int] = []
    load(url, statuses, increments, lock)
    after = rss_kib(server.proc.pid)

    total = CLIENTS * ROUNDS
    assert statuses == Counter({(name, status): total for name, status in EXPECTED.items()})
    assert sorted(increments) == list(range(total + 1, 2 * total + 1))  # none lost or doubled
    assert requests.get(url + "/v1/soak/count", timeout=5).json() == 2 * total
    assert after - before < 20 * 1024, f"RSS grew from {before} KiB to {after} KiB"
