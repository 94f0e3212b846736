"""The loop survives its providers (issue 10, point 3), against real servers.

A provider's ``BaseException`` is that request's 500; a loop that stops anyway
makes every call a 503 at once and the process exit non-zero; ``shutdown()`` is
bounded; open streams are closed before providers shut down; ``gunicorn
--preload`` workers build their own providers on their own loops; a plain
``def`` method is bounded by the request timeout.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from typing import Any

import pytest
import requests
from conftest import free_port, script, server_env

from stackflask import StartupError, create_app

INTERNAL = {"detail": "Internal server error: An unexpected error occurred."}
UNAVAILABLE = {"detail": "Service unavailable: the server is restarting."}

API = '''
from collections.abc import AsyncIterator
from typing import Any, Protocol

from stackflask import Api, InlineProviderSpec, webmethod


def available_providers():
    return [InlineProviderSpec(api=Api.survive, provider_type="inline::survive",
                               module="survive_impl")]


class Survive(Protocol):
    @webmethod(route="/survive/ok", method="GET")
    async def ok(self) -> dict[str, Any]: ...

    @webmethod(route="/survive/raise/{kind}", method="GET")
    async def boom(self, kind: str) -> None: ...

    @webmethod(route="/survive/raise-sync/{kind}", method="GET")
    async def boom_sync(self, kind: str) -> None: ...

    @webmethod(route="/survive/hang", method="GET")
    async def hang(self) -> None: ...

    @webmethod(route="/survive/stop/{how}", method="POST")
    async def stop_loop(self, how: str) -> None: ...

    @webmethod(route="/survive/sleep", method="GET")
    async def sleep(self, seconds: float) -> dict[str, bool]: ...

    @webmethod(route="/survive/events", method="GET")
    async def events(self) -> AsyncIterator[dict[str, int]]: ...

    @webmethod(route="/survive/whoami", method="GET")
    async def whoami(self) -> dict[str, Any]: ...
'''

IMPL = '''
import asyncio
import os
import pathlib
import sys
import time


class ProviderBailedOut(BaseException):
    """Neither an Exception nor SystemExit nor KeyboardInterrupt."""


KINDS = {
    "SystemExit": lambda: SystemExit("a provider called sys.exit"),
    "KeyboardInterrupt": lambda: KeyboardInterrupt("a provider was interrupted"),
    "ProviderBailedOut": lambda: ProviderBailedOut("a provider bailed out"),
}


class SurviveImpl:
    def __init__(self, config):
        self.marker = config.get("marker")
        self.shutdown_mode = config.get("shutdown", "normal")

    def note(self, line):
        if self.marker:
            with open(self.marker, "a") as f:
                f.write(line + "\\n")

    async def initialize(self):
        self.loop = asyncio.get_running_loop()
        self.init_pid = os.getpid()
        self.lock = asyncio.Lock()
        self.queue = asyncio.Queue()
        self.echo = self.loop.create_task(self.echoes())

    async def echoes(self):
        while True:
            future = await self.queue.get()
            future.set_result(os.getpid())

    async def ok(self):
        return {"ok": True}

    async def boom(self, kind):
        await asyncio.sleep(0)
        raise KINDS[kind]()

    def boom_sync(self, kind):
        raise KINDS[kind]()

    async def hang(self):
        await asyncio.Event().wait()

    async def stop_loop(self, how):
        running = asyncio.get_running_loop()
        if how == "exit":
            running.call_soon(sys.exit)
        else:
            running.stop()

    def sleep(self, seconds):
        time.sleep(seconds)
        return {"slept": True}

    async def events(self):
        try:
            yield {"i": 0}
            await asyncio.Event().wait()
            yield {"i": 1}
        finally:
            self.note("stream finally")

    async def whoami(self):
        running = asyncio.get_running_loop()
        async with self.lock:
            answer = running.create_future()
            await self.queue.put(answer)
            echoed = await answer
        return {
            "init_pid": self.init_pid,
            "init_loop": id(self.loop),
            "pid": os.getpid(),
            "loop": id(running),
            "echoed_pid": echoed,
        }

    async def shutdown(self):
        if self.shutdown_mode == "sleep":
            time.sleep(60)
        elif self.shutdown_mode == "swallow":
            while True:
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    pass
        self.echo.cancel()
        self.note("shutdown")


async def get_provider_impl(config, deps):
    impl = SurviveImpl(config)
    await impl.initialize()
    return impl
'''


@pytest.fixture
def survive_config(stack_files: Any) -> Any:
    """``survive_config(server=None, config=None, provider_id="survive", filename="run.yaml")``:
    the path of a run config serving the survive API."""
    return stack_files.serve_api("survive", "Survive", API, IMPL)


@pytest.fixture
def run_survive(survive_config: Any, stack_files: Any, start: Any) -> Any:
    """``run_survive(**survive_config args)``: ``stackflask run`` serving it, ready."""

    def run(**kwargs: Any) -> Any:
        port = free_port()
        return start(
            [script("stackflask"), "run", "--config", survive_config(**kwargs),
             "--port", str(port)],
            port, env=server_env([stack_files.pkgs]),
        )

    return run


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> float | None:
    """Seconds until ``proc`` exits, or ``None`` (and ``proc`` killed) if it is
    still running after ``timeout``."""
    started = time.monotonic()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    return time.monotonic() - started


def get_ignoring_errors(url: str) -> None:
    """A request whose answer does not matter (the server closes it when it stops)."""
    try:
        requests.get(url, timeout=30)
    except requests.RequestException:
        pass


# -- a provider's BaseException is that request's 500 ---------------------------


@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt", "ProviderBailedOut"])
def test_a_providers_base_exception_is_a_500_and_the_server_goes_on(run_survive, kind):
    server = run_survive()
    for route in ("raise", "raise-sync"):
        started = time.monotonic()
        response = requests.get(server.url(f"/v1/survive/{route}/{kind}"), timeout=10)
        assert time.monotonic() - started < 2
        assert response.status_code == 500, (route, response.text)
        assert response.json() == INTERNAL
        for _ in range(3):
            assert requests.get(server.url("/v1/survive/ok"), timeout=5).json() == {"ok": True}
        assert requests.get(server.url("/v1/health"), timeout=5).json() == {"status": "OK"}
        providers = requests.get(server.url("/v1/providers"), timeout=5)
        assert providers.status_code == 200
        assert server.proc.poll() is None
    output = server.output()
    assert "survive.boom failed" in output
    assert "survive.boom_sync failed" in output
    assert "Traceback" in output
    assert f"{kind}: a provider" in output
    assert server.stop() == 0, output


# -- a loop that stops anyway ----------------------------------------------------


@pytest.mark.parametrize("how", ["exit", "stop"])
def test_a_stopped_loop_is_503_at_once_and_the_process_exits_non_zero(run_survive, how):
    server = run_survive(server={"request_timeout": 30, "shutdown_grace": 5})
    answers: dict[str, Any] = {}

    def call(name: str, path: str) -> None:
        try:
            response = requests.get(server.url(path), timeout=20)
            answers[name] = (response.status_code, response.json(), time.monotonic())
        except Exception as exc:  # reported by the assertions below
            answers[name] = exc

    # waiting on the loop when it stops
    waiting = [threading.Thread(target=call, args=(f"hang{i}", "/v1/survive/hang"))
               for i in range(2)]
    # not on the loop: keeps the server draining while the 503s are asked for
    waiting.append(threading.Thread(target=call, args=("sleep", "/v1/survive/sleep?seconds=3")))
    for t in waiting:
        t.start()
    sessions = [requests.Session() for _ in range(3)]
    for session in sessions:  # connected before the loop stops
        assert session.get(server.url("/v1/health"), timeout=5).status_code == 200
    time.sleep(0.5)

    stopped_at = time.monotonic()
    trigger = requests.post(server.url(f"/v1/survive/stop/{how}"), timeout=10)
    assert trigger.status_code in (200, 503)
    later = {}
    for session, path in zip(sessions, ("/v1/health", "/v1/survive/ok", "/v1/providers")):
        started = time.monotonic()
        try:
            response = session.get(server.url(path), timeout=10)
            later[path] = (response.status_code, response.json(), time.monotonic() - started)
        except requests.ConnectionError as exc:
            later[path] = exc
    for t in waiting:
        t.join(20)

    failed = {k: v for k, v in {**later, **answers}.items() if isinstance(v, Exception)}
    assert not failed, f"no answer after the loop stopped: {failed}"
    assert later["/v1/health"][0] == 503, later
    assert later["/v1/health"][1]["status"] == "Error", later
    assert "the event loop has stopped" in later["/v1/health"][1]["message"], later
    for path in ("/v1/survive/ok", "/v1/providers"):
        assert later[path][:2] == (503, UNAVAILABLE), later
    for path, (_, _, took) in later.items():
        assert took < 0.5, (path, later)
    for name in ("hang0", "hang1"):
        status, body, answered_at = answers[name]
        assert (status, body) == (503, UNAVAILABLE), answers
        assert answered_at - stopped_at < 1, answers  # at once, not after the 30 s timeout
    assert answers["sleep"][:2] == (200, {"slept": True}), answers

    took = wait_exit(server.proc, 10)
    assert took is not None, "the server did not exit after its loop stopped"
    assert server.proc.returncode not in (0, None)
    assert "the event loop has stopped" in server.output()


# -- shutdown() is bounded --------------------------------------------------------

GRACE = 1.0
SHUTDOWN_TIMEOUT = 2.0
#: The documented bound after the grace period: server.shutdown_timeout plus a second.
SHUTDOWN_BOUND = SHUTDOWN_TIMEOUT + 1.0
#: The signal's delivery and the interpreter's exit.
SLACK = 1.0


@pytest.mark.parametrize("mode", ["sleep", "swallow"])
def test_a_shutdown_that_does_not_stop_is_bounded_and_named(run_survive, mode):
    """Two servers stopped together: one idle, one with a request still running
    when the grace period ends. Each exits within grace + shutdown_timeout + 1 s."""
    servers = {
        case: run_survive(
            server={"shutdown_grace": GRACE, "shutdown_timeout": SHUTDOWN_TIMEOUT},
            config={"shutdown": mode},
            provider_id=f"stubborn-{case}", filename=f"{case}.yaml",
        )
        for case in ("idle", "busy")
    }
    in_flight = threading.Thread(
        target=get_ignoring_errors, args=(servers["busy"].url("/v1/survive/hang"),))
    in_flight.start()
    time.sleep(0.3)
    for server in servers.values():
        server.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    exited: dict[str, float] = {}
    while len(exited) < len(servers) and time.monotonic() - signalled < GRACE + SHUTDOWN_BOUND + 5:
        for case, server in servers.items():
            if case not in exited and server.proc.poll() is not None:
                exited[case] = time.monotonic() - signalled
        time.sleep(0.05)
    in_flight.join(5)
    for server in servers.values():
        if server.proc.poll() is None:
            server.proc.kill()
    for case, server in servers.items():
        output = server.output()
        assert case in exited, f"{case}: still running {GRACE + SHUTDOWN_BOUND + 5} s after SIGTERM"
        assert exited[case] < GRACE + SHUTDOWN_BOUND + SLACK, (
            f"{case}: exited {exited[case]:.1f} s after SIGTERM "
            f"(bound {GRACE + SHUTDOWN_BOUND:g} s):\n{output}"
        )
        assert f"provider 'stubborn-{case}' did not stop within {SHUTDOWN_BOUND:g} s" in output


# -- streams open at a stop signal -------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_open_streams_are_closed_before_providers_shut_down(run_survive, tmp_path, sig):
    marker = tmp_path / "marker"
    server = run_survive(server={"shutdown_grace": GRACE}, config={"marker": str(marker)})
    with requests.get(server.url("/v1/survive/events"), stream=True, timeout=10) as response:
        assert response.status_code == 200
        first = next(response.iter_lines())
        assert first == b'data: {"i":0}'
        time.sleep(0.2)  # the server is now waiting for the next item
        server.proc.send_signal(sig)
        took = wait_exit(server.proc, 10)
    assert took is not None, server.output()
    assert marker.read_text().splitlines() == ["stream finally", "shutdown"], server.output()


# -- gunicorn --preload: providers built in each worker --------------------------


def test_gunicorn_preload_workers_build_their_providers_on_their_own_loops(
    survive_config, stack_files, start
):
    port = free_port()
    server = start(
        [script("gunicorn"), "--preload", "-w", "2", "-b", f"127.0.0.1:{port}",
         "--graceful-timeout", "5", "app:create_app()"],
        port, env=server_env([stack_files.pkgs], STACKFLASK_CONFIG=survive_config()),
    )
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 20
    answers = 0
    while (len(seen) < 2 or answers < 20) and time.monotonic() < deadline:
        with requests.Session() as session:  # a new connection: the kernel picks a worker
            response = session.get(server.url("/v1/survive/whoami"), timeout=5)
        assert response.status_code == 200, response.text
        body = response.json()
        answers += 1
        assert body["init_pid"] == body["pid"], body  # initialize() ran in this worker
        assert body["init_loop"] == body["loop"], body  # on the loop serving it
        assert body["echoed_pid"] == body["pid"], body  # the loop-bound queue works
        seen.setdefault(body["pid"], body)
    assert len(seen) == 2, f"one worker answered all {answers} requests"
    assert server.proc.pid not in seen


# -- a plain def method is bounded by the request timeout -------------------------


def test_a_plain_def_method_past_the_request_timeout_is_504(survive_config, make_app):
    client = make_app(survive_config(server={"request_timeout": 0.3})).test_client()
    started = time.monotonic()
    response = client.get("/v1/survive/sleep?seconds=1.2")
    assert time.monotonic() - started < 0.9
    assert response.status_code == 504
    assert response.json == {"detail": "Operation timed out: no result within 0.3 s"}
    assert client.get("/v1/survive/sleep?seconds=0").json == {"slept": True}


def test_a_plain_def_call_past_its_timeout_does_not_keep_the_process_alive(run_survive):
    """The thread of a timed-out plain ``def`` call runs on (documented), but
    SIGTERM still ends the process within the shutdown bound."""
    server = run_survive(server={
        "request_timeout": 0.5, "shutdown_grace": GRACE, "shutdown_timeout": SHUTDOWN_TIMEOUT})
    response = requests.get(server.url("/v1/survive/sleep?seconds=60"), timeout=10)
    assert response.status_code == 504
    server.proc.send_signal(signal.SIGTERM)
    took = wait_exit(server.proc, GRACE + SHUTDOWN_BOUND + SLACK)
    assert took is not None, (
        f"still running {GRACE + SHUTDOWN_BOUND + SLACK:g} s after SIGTERM, waiting for "
        f"the timed-out call's thread:\n{server.output()}"
    )


# -- an instance attribute hiding a webmethod --------------------------------------


def test_an_instance_attribute_hiding_a_webmethod_is_a_startup_error(stack_files, survive_config):
    config = survive_config()
    line = '        self.marker = config.get("marker")\n'
    hiding = IMPL.replace(line, line + "        self.ok = 1  # hides the webmethod ok\n")
    assert hiding != IMPL
    stack_files.module("survive_impl", hiding)
    with pytest.raises(StartupError) as info:
        create_app(config)
    assert info.value.problems == [(
        f"{config}: providers.survive[0]: provider 'survive' (inline::survive): instance attribute "
        "'ok' (int) hides the webmethod Survive.ok (class SurviveImpl); rename the attribute"
    )]
