"""Real servers on free loopback ports, answered over real HTTP.

Every server here is a subprocess (``stackflask run``, ``python -m stackflask``,
``waitress-serve``, ``flask run``, ``gunicorn``) started from the repository
root or with a run config under ``tmp_path``, polled on ``/v1/health`` until it
answers, and stopped by its PID when the test ends, whatever happens.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import REPO, Server, StackFiles, free_port, script, server_env

WEATHER = b'{"locations":["Paris","Tokyo"]}'


def assert_weather(server: Server) -> None:
    response = requests.get(server.url("/v1/weather/locations"), timeout=5)
    assert response.status_code == 200, server.output()
    assert response.headers["Content-Type"] == "application/json"
    assert response.content == WEATHER


def assert_refused(port: int) -> None:
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=2)


def weather_run_config(path: Path, server: dict[str, Any] | None = None) -> Path:
    """A run config serving the embedded weather API and kaze provider."""
    data: dict[str, Any] = {
        "version": "2",
        "image_name": "servers-test",
        "apis": ["weather"],
        "providers": {
            "weather": [{"provider_id": "kaze", "provider_type": "remote::kaze", "config": {}}]
        },
        "external_apis_dir": str(REPO / "config" / "apis.d"),
        "external_providers_dir": str(REPO / "config" / "providers.d"),
    }
    if server is not None:
        data["server"] = server
    path.write_text(yaml.safe_dump(data))
    return path


# -- stackflask run ---------------------------------------------------------


def test_stackflask_run_embedded_default(start):
    port = free_port()
    server = start([script("stackflask"), "run", "--port", str(port)], port)
    assert_weather(server)
    assert server.stop() == 0, server.output()


def test_python_m_stackflask_run_yaml_config(start, tmp_path):
    config = weather_run_config(tmp_path / "run.yaml")
    port = free_port()
    server = start(
        [sys.executable, "-m", "stackflask", "run", "--yaml-config", str(config), "--port", str(port)],
        port,
    )
    assert_weather(server)
    assert server.stop() == 0, server.output()


@pytest.mark.parametrize(
    ("sources", "winner"),
    [
        (("config",), "config"),
        (("env", "config"), "env"),
        (("flag", "env", "config"), "flag"),
    ],
    ids=["server.port", "STACKFLASK_PORT-beats-server.port", "--port-beats-STACKFLASK_PORT"],
)
def test_port_precedence(start, tmp_path, sources, winner):
    ports = {source: free_port() for source in sources}
    while len(set(ports.values())) < len(ports):
        ports = {source: free_port() for source in sources}
    config = weather_run_config(
        tmp_path / "run.yaml", server={"host": "127.0.0.1", "port": ports["config"]}
    )
    args = [script("stackflask"), "run", "--config", str(config)]
    if "flag" in ports:
        args += ["--port", str(ports["flag"])]
    env = server_env()
    if "env" in ports:
        env["STACKFLASK_PORT"] = str(ports["env"])
    server = start(args, ports[winner], env=env)
    assert_weather(server)
    for source, port in ports.items():
        if source != winner:
            assert_refused(port)
    assert server.stop() == 0, server.output()
    assert f"serving on http://127.0.0.1:{ports[winner]}" in server.output()


@pytest.mark.parametrize(
    ("server_host", "flag"),
    [(None, None), ("localhost", "127.0.0.1")],
    ids=["default-127.0.0.1", "--host-beats-server.host"],
)
def test_host_precedence(start, tmp_path, server_host, flag):
    port = free_port()
    server_block: dict[str, Any] = {"port": port}
    if server_host is not None:
        server_block["host"] = server_host
    config = weather_run_config(tmp_path / "run.yaml", server=server_block)
    args = [script("stackflask"), "run", "--config", str(config)]
    if flag is not None:
        args += ["--host", flag]
    server = start(args, port)
    assert_weather(server)
    assert server.stop() == 0, server.output()
    assert f"serving on http://127.0.0.1:{port}" in server.output()


# -- other WSGI servers, from the repository root ----------------------------


def test_waitress_serve_call_create_app(start):
    port = free_port()
    server = start(
        [script("waitress-serve"), "--listen", f"127.0.0.1:{port}", "--call", "app:create_app"],
        port,
    )
    assert_weather(server)


def test_flask_run(start):
    port = free_port()
    server = start(
        [script("flask"), "--app", "app", "run", "--host", "127.0.0.1", "--port", str(port),
         "--no-reload", "--no-debugger"],
        port,
    )
    assert_weather(server)


def test_gunicorn_two_workers(start):
    port = free_port()
    server = start(
        [script("gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5",
         "app:create_app()"],
        port,
    )
    for _ in range(6):
        assert_weather(server)


# -- the spec's weather example, as the spec writes it ------------------------

SPEC_WEATHER_PY = '''\
from typing import Protocol

from llama_stack.providers.datatypes import (
    AdapterSpec,
    Api,
    ProviderSpec,
    RemoteProviderSpec,
)
from llama_stack.schema_utils import webmethod


def available_providers() -> list[ProviderSpec]:
    return [
        RemoteProviderSpec(
            api=Api.weather,
            provider_type="remote::kaze",
            config_class="llama_stack_provider_kaze.KazeProviderConfig",
            adapter=AdapterSpec(
                adapter_type="kaze",
                module="llama_stack_provider_kaze",
                pip_packages=["llama_stack_provider_kaze"],
                config_class="llama_stack_provider_kaze.KazeProviderConfig",
            ),
        ),
    ]


class WeatherProvider(Protocol):
    """
    A protocol for the Weather API.
    """

    @webmethod(route="/weather/locations", method="GET")
    async def get_available_locations() -> dict[str, list[str]]:
        """
        Get the available locations.
        """
        ...
'''

# The spec imports ``WeatherAPI`` from ``.api``; its protocol is written in
# ``weather.py`` as ``WeatherProvider`` (a known mistake of the spec).
SPEC_API_INIT_PY = '''\
"""Weather API for Llama Stack."""

from .weather import WeatherProvider, available_providers

__all__ = ["WeatherProvider", "available_providers"]
'''

SPEC_KAZE_INIT_PY = '''\
"""Kaze weather provider for Llama Stack."""

from .config import KazeProviderConfig
from .kaze import WeatherKazeAdapter

__all__ = ["KazeProviderConfig", "WeatherKazeAdapter"]


async def get_adapter_impl(config: KazeProviderConfig, _deps):
    from .kaze import WeatherKazeAdapter

    impl = WeatherKazeAdapter(config)
    await impl.initialize()
    return impl
'''

SPEC_KAZE_CONFIG_PY = '''\
from pydantic import BaseModel, Field


class KazeProviderConfig(BaseModel):
    """Configuration for the Kaze weather provider."""

    base_url: str = Field(
        "https://api.kaze.io/v1",
        description="Base URL for the Kaze weather API",
    )
'''

SPEC_KAZE_PY = '''\
from llama_stack_api_weather.weather import WeatherProvider

from .config import KazeProviderConfig


class WeatherKazeAdapter(WeatherProvider):
    """Kaze weather provider implementation."""

    def __init__(
        self,
        config: KazeProviderConfig,
    ) -> None:
        self.config = config

    async def initialize(self) -> None:
        pass

    async def get_available_locations(self) -> dict[str, list[str]]:
        """Get available weather locations."""
        return {"locations": ["Paris", "Tokyo"]}
'''

SPEC_API_YAML = """\
module: llama_stack_api_weather
name: weather
pip_packages: ["llama-stack-api-weather"]
protocol: WeatherProvider

"""

SPEC_PROVIDER_YAML = """\
adapter:
  adapter_type: kaze
  pip_packages: ["llama_stack_provider_kaze"]
  config_class: llama_stack_provider_kaze.config.KazeProviderConfig
  module: llama_stack_provider_kaze
optional_api_dependencies: []
"""

SPEC_RUN_YAML = """\
version: "2"
image_name: "llama-stack-api-weather"
apis:
  - weather
providers:
  weather:
  - provider_id: kaze
    provider_type: remote::kaze
    config: {}
external_apis_dir: ~/.llama/apis.d
external_providers_dir: ~/.llama/providers.d
server:
  port: 8321
"""


def write_files(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_spec_weather_example_under_home(start, tmp_path):
    home = tmp_path / "home"
    src = tmp_path / "src"
    port = free_port()
    write_files(home, {
        ".llama/apis.d/weather.yaml": SPEC_API_YAML,
        ".llama/providers.d/remote/weather/kaze.yaml": SPEC_PROVIDER_YAML,
        ".llama/run-byoa.yaml": SPEC_RUN_YAML.replace("port: 8321", f"port: {port}"),
    })
    write_files(src, {
        "llama_stack_api_weather/__init__.py": SPEC_API_INIT_PY,
        "llama_stack_api_weather/weather.py": SPEC_WEATHER_PY,
        "llama_stack_provider_kaze/__init__.py": SPEC_KAZE_INIT_PY,
        "llama_stack_provider_kaze/config.py": SPEC_KAZE_CONFIG_PY,
        "llama_stack_provider_kaze/kaze.py": SPEC_KAZE_PY,
    })
    env = server_env([src], HOME=str(home))
    server = start(
        [script("stackflask"), "run", "--yaml-config", "~/.llama/run-byoa.yaml"],
        port,
        cwd=tmp_path,
        env=env,
    )
    response = requests.get(f"http://127.0.0.1:{port}/v1/weather/locations", timeout=5)
    response.raise_for_status()  # curl -f
    assert response.content == WEATHER
    assert server.stop() == 0, server.output()


# -- shutdown ----------------------------------------------------------------


def shutdown_api(files: StackFiles, module: str, name: str, deps: list[str]) -> None:
    """An API ``name`` in ``module`` whose inline provider ``<module>_impl``
    appends ``name`` to ``config["marker"]`` in its async ``shutdown()``."""
    files.module(module, f"""
        from typing import Protocol

        from stackflask import Api, InlineProviderSpec, webmethod


        def available_providers():
            return [InlineProviderSpec(api=Api.{name}, provider_type="inline::marker",
                                       module="{module}_impl")]


        class Marker(Protocol):
            @webmethod(route="/{name}/deps", method="GET")
            async def dependencies(self) -> list[str]: ...
    """)
    files.module(f"{module}_impl", f"""
        import asyncio


        class MarkerImpl:
            def __init__(self, config, deps):
                self.marker = config["marker"]
                self.deps = sorted(str(api) for api in deps)

            async def dependencies(self):
                return self.deps

            async def shutdown(self):
                await asyncio.sleep(0.05)
                with open(self.marker, "a") as f:
                    f.write("{name}\\n")


        async def get_provider_impl(config, deps):
            return MarkerImpl(config, deps)
    """)
    files.api_spec(f"{name}.yaml", {
        "module": module, "name": name, "protocol": "Marker",
        "api_dependencies": deps, "pip_packages": [],
    })


def marker_entry(marker: Path) -> list[dict[str, Any]]:
    return [{"provider_id": "marker", "provider_type": "inline::marker",
             "config": {"marker": str(marker)}}]


def test_sigterm_awaits_provider_shutdown(start, stack_files, tmp_path):
    marker = tmp_path / "shutdown.txt"
    shutdown_api(stack_files, "shutdown_one_api", "shutone", [])
    config = stack_files.run_config({
        "apis": ["shutone"], "providers": {"shutone": marker_entry(marker)},
    })
    port = free_port()
    server = start(
        [script("stackflask"), "run", "--config", str(config), "--port", str(port)],
        port,
        env=server_env([stack_files.pkgs]),
    )
    assert requests.get(server.url("/v1/shutone/deps"), timeout=5).json() == []
    assert not marker.exists()
    assert server.stop(signal.SIGTERM) == 0, server.output()
    assert marker.read_text() == "shutone\n"


def test_shutdown_in_reverse_build_order(start, stack_files, tmp_path):
    marker = tmp_path / "shutdown.txt"
    # "shuthigh" is listed first but depends on "shutlow": low is built first
    # and must be shut down last.
    shutdown_api(stack_files, "shutdown_order_high", "shuthigh", ["shutlow"])
    shutdown_api(stack_files, "shutdown_order_low", "shutlow", [])
    config = stack_files.run_config({
        "apis": ["shuthigh", "shutlow"],
        "providers": {"shuthigh": marker_entry(marker), "shutlow": marker_entry(marker)},
    })
    port = free_port()
    server = start(
        [script("stackflask"), "run", "--config", str(config), "--port", str(port)],
        port,
        env=server_env([stack_files.pkgs]),
    )
    assert requests.get(server.url("/v1/shuthigh/deps"), timeout=5).json() == ["shutlow"]
    assert server.stop(signal.SIGTERM) == 0, server.output()
    assert marker.read_text() == "shuthigh\nshutlow\n"


# -- one event loop ------------------------------------------------------------


def test_one_event_loop_under_concurrent_clients(start, stack_files):
    stack_files.module("oneloop_api", """
        from typing import Any, Protocol

        from stackflask import Api, InlineProviderSpec, webmethod


        def available_providers():
            return [InlineProviderSpec(api=Api.oneloop, provider_type="inline::counter",
                                       module="oneloop_impl")]


        class Counter(Protocol):
            @webmethod(route="/oneloop/increment", method="POST")
            async def increment(self) -> int: ...

            @webmethod(route="/oneloop/state", method="GET")
            async def state(self) -> dict[str, Any]: ...
    """)
    stack_files.module("oneloop_impl", """
        import asyncio
        import threading


        class CounterImpl:
            async def initialize(self):
                self.lock = asyncio.Lock()
                self.count = 0
                self.ticks = 0
                self.loop_id = id(asyncio.get_running_loop())
                self.thread = threading.get_ident()
                self.loops = set()
                self.threads = set()
                self.task = asyncio.get_running_loop().create_task(self.tick())

            async def tick(self):
                while True:
                    self.ticks += 1
                    await asyncio.sleep(0.005)

            async def increment(self):
                self.loops.add(id(asyncio.get_running_loop()))
                self.threads.add(threading.get_ident())
                async with self.lock:
                    v = self.count
                    await asyncio.sleep(0)
                    self.count = v + 1
                    return self.count

            async def state(self):
                return {
                    "count": self.count,
                    "all_on_initialize_loop": self.loops == {self.loop_id},
                    "all_on_initialize_thread": self.threads == {self.thread},
                    "task_alive": not self.task.done(),
                    "ticks": self.ticks,
                }


        async def get_provider_impl(config, deps):
            impl = CounterImpl()
            await impl.initialize()
            return impl
    """)
    stack_files.api_spec("oneloop.yaml", {
        "module": "oneloop_api", "name": "oneloop", "protocol": "Counter",
        "api_dependencies": [], "pip_packages": [],
    })
    config = stack_files.run_config({
        "apis": ["oneloop"],
        "providers": {"oneloop": [
            {"provider_id": "counter", "provider_type": "inline::counter", "config": {}},
        ]},
    })
    port = free_port()
    server = start(
        [script("stackflask"), "run", "--config", str(config), "--port", str(port)],
        port,
        env=server_env([stack_files.pkgs]),
    )
    clients, per_client = 32, 10
    barrier = threading.Barrier(clients)
    results: list[list[Any]] = [[] for _ in range(clients)]

    def client(i: int) -> None:
        with requests.Session() as session:
            try:
                barrier.wait(10)
                for _ in range(per_client):
                    r = session.post(server.url("/v1/oneloop/increment"), timeout=15)
                    results[i].append((r.status_code, r.json()))
            except Exception as exc:  # reported by the assertions below
                results[i].append(("exception", repr(exc)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads), "clients did not finish within 20 s"

    answers = [answer for result in results for answer in result]
    assert [a for a in answers if a[0] != 200] == []
    assert sorted(count for _, count in answers) == list(range(1, clients * per_client + 1))
    first = requests.get(server.url("/v1/oneloop/state"), timeout=5).json()
    assert first["count"] == clients * per_client
    assert first["all_on_initialize_loop"] is True
    assert first["all_on_initialize_thread"] is True
    assert first["task_alive"] is True
    time.sleep(0.1)
    second = requests.get(server.url("/v1/oneloop/state"), timeout=5).json()
    assert second["task_alive"] is True
    assert second["ticks"] > first["ticks"]  # the background task still runs
    assert server.stop() == 0, server.output()


# -- startup failure ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"apis": ["weather"], "providers": {}},
            ["providers.weather: API 'weather' has no provider"],
        ),
        (
            {"apis": ["weather", "nosuch"], "providers": {}},
            ["providers.weather: API 'weather' has no provider",
             "apis: API 'nosuch' is not defined"],
        ),
        (
            {"apis": ["weather"], "providers": {"weather": [
                {"provider_id": "x", "provider_type": "remote::nope", "config": {}}]}},
            ["'remote::nope' is not available; known: remote::kaze"],
        ),
    ],
    ids=["no-provider", "no-provider-and-unknown-api", "unknown-provider-type"],
)
def test_startup_failure_one_line_per_problem(tmp_path, config, expected):
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump({
        "version": "2",
        "image_name": "broken",
        "external_apis_dir": str(REPO / "config" / "apis.d"),
        "external_providers_dir": str(REPO / "config" / "providers.d"),
        **config,
    }))
    result = subprocess.run(
        [script("stackflask"), "run", "--config", str(path), "--port", str(free_port())],
        cwd=REPO,
        env=server_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(expected), result.stderr
    for text in expected:
        matching = [line for line in errors if text in line]
        assert len(matching) == 1, (text, result.stderr)
        assert str(path) in matching[0]


def test_the_serving_loop_waits_for_the_output_lock_of_a_task_sending(app):
    """While a task thread holds a connection's output lock it sends that
    output itself; waitress's serving loop would give up, poll again at once
    and spin holding the GIL (on two CPUs, 67 requests per second:
    bench/README.md). It waits for the lock and sends what is left."""
    import socket

    from stackflask.serve import listen

    server = listen(app, "127.0.0.1", 0, 1)
    ours, theirs = socket.socketpair()
    channel = server.channel_class(server, ours, ("127.0.0.1", 0), server.adj, map={})
    try:
        channel.requests = [object()]  # a task is running
        held, release = threading.Event(), threading.Event()

        def task() -> None:
            with channel.outbuf_lock:
                channel.outbufs[-1].append(b"left over")
                channel.total_outbufs_len += 9
                held.set()
                release.wait(5)

        sending = threading.Thread(target=task)
        sending.start()
        held.wait(5)
        threading.Timer(0.05, release.set).start()
        channel.handle_write()  # from the serving loop
        sending.join(5)
        assert channel.total_outbufs_len == 0
        assert theirs.recv(100) == b"left over"
    finally:
        release.set()
        channel.close()
        theirs.close()
        server.close()
        server.task_dispatcher.shutdown()
