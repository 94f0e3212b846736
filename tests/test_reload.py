"""``stackflask run --reload``: a real supervisor process, edited files, new answers.

Issue 12, point 4: an edit of a provider's source, of an API spec or of the run
config restarts the server with the same startup checks; a change that breaks
the configuration prints its ``error:`` lines and the supervisor waits for the
next change; SIGTERM stops the server and the supervisor, leaving no process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import Server, StackFiles, free_port, script, server_env

#: Seconds a restart may take: the old server stops, a new interpreter starts.
RESTART_TIMEOUT = 20.0

API = """
from typing import Protocol

from stackflask import webmethod


class Echo(Protocol):
    @webmethod(route="/echo/word", method="GET")
    async def word(self) -> dict[str, str]: ...
"""

IMPL = """
class Impl:
    def __init__(self, config):
        self.greeting = config.get("greeting", "")

    async def word(self):
        return {{"word": {word!r}, "greeting": self.greeting}}


async def get_provider_impl(config, deps):
    return Impl(config)
"""

SPEC = {"module": "echo_api", "name": "echo", "protocol": "Echo"}


def wait_until(check: Callable[[], bool], server: Server, what: str) -> None:
    deadline = time.monotonic() + RESTART_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {RESTART_TIMEOUT} s:\n{server.output()}")
        time.sleep(0.05)


def answer(server: Server) -> Any:
    """The route's JSON, or ``None`` while nothing serves it."""
    try:
        response = requests.get(server.url("/v1/echo/word"), timeout=2)
    except (requests.ConnectionError, requests.Timeout):
        return None
    return response.json() if response.status_code == 200 else None


def children(server: Server) -> list[int]:
    """The pids of the servers the supervisor started, from its log."""
    return [int(pid) for pid in re.findall(r"started the server \(process (\d+)\)", server.output())]


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.fixture
def reloading(tmp_path: Path, stack_files: StackFiles) -> Iterator[Callable[[str], Server]]:
    """``reloading(config)``: ``stackflask run --reload`` serving ``config``, not
    yet ready; stopped at teardown."""
    servers: list[Server] = []

    def start(config: str) -> Server:
        port = free_port()
        server = Server(
            [script("stackflask"), "run", "--reload", "--config", config, "--port", str(port)],
            port, tmp_path / f"reload-{len(servers)}.log", tmp_path,
            server_env([stack_files.pkgs]),
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_edit_break_fix_and_stop(stack_files: StackFiles, reloading: Any) -> None:
    write_config = stack_files.serve_api("echo", "Echo", API, IMPL.format(word="first"))
    server = reloading(write_config(config={"greeting": "hi"}))
    server.wait_ready()
    assert answer(server) == {"word": "first", "greeting": "hi"}

    stack_files.module("echo_impl", IMPL.format(word="second, edited"))
    wait_until(lambda: answer(server) == {"word": "second, edited", "greeting": "hi"},
               server, "the provider's edit served")
    assert "echo_impl.py; restarting the server" in server.output()

    stack_files.api_spec("echo.yaml", {**SPEC, "protocol": "Ecoh"})
    wait_until(lambda: "error: " in server.output(), server, "the broken spec reported")
    assert (
        "apis.d/echo.yaml: protocol: 'Ecoh' is not defined in module 'echo_api'"
        in server.output()
    )
    wait_until(lambda: answer(server) is None, server, "the broken server stopped")
    time.sleep(0.5)
    assert server.proc.poll() is None, server.output()

    stack_files.api_spec("echo.yaml", SPEC)
    wait_until(lambda: answer(server) is not None, server, "the fixed spec served")
    assert answer(server) == {"word": "second, edited", "greeting": "hi"}

    write_config(config={"greeting": "hello"})
    wait_until(lambda: answer(server) == {"word": "second, edited", "greeting": "hello"},
               server, "the run config's edit served")

    pids = children(server)
    assert len(pids) == 5, server.output()
    assert server.stop(signal.SIGTERM) == 0, server.output()
    for pid in pids:
        assert_gone(pid)
    assert "stackflask.reload [-] stopped" in server.output()


def test_broken_at_start_then_fixed(stack_files: StackFiles, reloading: Any) -> None:
    write_config = stack_files.serve_api("echo", "Echo", API, "def get_provider_impl(:\n")
    server = reloading(write_config())
    wait_until(lambda: "error: " in server.output(), server, "the provider's error reported")
    assert "importing module 'echo_impl' failed: SyntaxError" in server.output()
    time.sleep(0.5)
    assert server.proc.poll() is None, server.output()

    stack_files.module("echo_impl", IMPL.format(word="fixed"))
    wait_until(lambda: answer(server) is not None, server, "the fixed provider served")
    assert answer(server) == {"word": "fixed", "greeting": ""}
    assert server.stop(signal.SIGINT) == 0, server.output()
    for pid in children(server):
        assert_gone(pid)


def test_provider_declared_by_the_api_module(stack_files: StackFiles, reloading: Any) -> None:
    """A provider module that only the API's ``available_providers()`` names
    is watched too: the server reports what it loaded."""
    stack_files.module("echo_api", API + """
from stackflask import Api, InlineProviderSpec


def available_providers():
    return [InlineProviderSpec(api=Api.echo, provider_type="inline::pkg",
                               module="echo_pkg.provider")]
""")
    stack_files.module("echo_pkg.provider", IMPL.format(word="packaged"))
    stack_files.api_spec("echo.yaml", SPEC)
    config = stack_files.run_config({"apis": ["echo"], "providers": {"echo": [
        {"provider_id": "pkg", "provider_type": "inline::pkg"}
    ]}})
    server = reloading(str(config))
    server.wait_ready()
    assert answer(server) == {"word": "packaged", "greeting": ""}
    wait_until(lambda: re.search(r"watching .*pkgs/echo_pkg/", server.output()) is not None,
               server, "the reported package watched")
    time.sleep(0.5)  # the log line comes just before the watch starts

    stack_files.module("echo_pkg.provider", IMPL.format(word="packaged, edited"))
    wait_until(lambda: answer(server) == {"word": "packaged, edited", "greeting": ""},
               server, "the provider's edit served")
    assert server.stop() == 0, server.output()


def test_without_watchfiles(stack_files: StackFiles, tmp_path: Path) -> None:
    config = stack_files.serve_api("echo", "Echo", API, IMPL.format(word="x"))()
    hide = "import sys; sys.modules['watchfiles'] = None; from stackflask.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", hide, "run", "--reload", "--config", config],
        capture_output=True, text=True, env=server_env(), timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: --reload needs watchfiles, which is not installed: "
        "pip install 'stackflask[reload]'"
    ]
