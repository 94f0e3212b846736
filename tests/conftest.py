"""Fixtures that build real stacks from real files under ``tmp_path``."""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from waitress import wasyncore
from waitress.server import create_server

from stackflask import create_app


class StackFiles:
    """Writes API and provider packages, ``apis.d``, ``providers.d`` and run configs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pkgs = root / "pkgs"
        self.apis_dir = root / "apis.d"
        self.providers_dir = root / "providers.d"
        for d in (self.pkgs, self.apis_dir, self.providers_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.modules: set[str] = set()

    def module(self, dotted: str, source: str) -> Path:
        """Write module ``dotted`` (packages created as needed) with ``source``."""
        parts = dotted.split(".")
        folder = self.pkgs
        for part in parts[:-1]:
            folder = folder / part
            folder.mkdir(exist_ok=True)
            (folder / "__init__.py").touch()
        path = folder / f"{parts[-1]}.py"
        if path.with_suffix("").is_dir():
            path = path.with_suffix("") / "__init__.py"
        path.write_text(textwrap.dedent(source))
        self.modules.add(parts[0])
        return path

    def api_spec(self, filename: str, data: dict[str, Any] | str) -> Path:
        path = self.apis_dir / filename
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return path

    def provider_file(self, kind: str, api: str, name: str, data: dict[str, Any] | str) -> Path:
        folder = self.providers_dir / kind / api
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.yaml"
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return path

    def serve_api(self, name: str, protocol: str, api: str, impl: str) -> Any:
        """Write API package ``{name}_api`` (holding ``protocol``) and provider
        package ``{name}_impl``, declared as ``inline::{name}``; return
        ``write(server=None, config=None, provider_id=name, filename="run.yaml")``,
        which writes a run config serving them and gives its path as a str."""
        self.module(f"{name}_api", api)
        self.module(f"{name}_impl", impl)
        self.api_spec(f"{name}.yaml", {"module": f"{name}_api", "name": name, "protocol": protocol})
        self.provider_file("inline", name, name, {"module": f"{name}_impl"})

        def write(
            server: dict[str, Any] | None = None,
            config: dict[str, Any] | None = None,
            provider_id: str = name,
            filename: str = "run.yaml",
        ) -> str:
            data: dict[str, Any] = {"apis": [name], "providers": {name: [{
                "provider_id": provider_id, "provider_type": f"inline::{name}",
                "config": config or {},
            }]}}
            if server is not None:
                data["server"] = server
            return str(self.run_config(data, filename))

        return write

    def run_config(self, data: dict[str, Any] | str, filename: str = "run.yaml") -> Path:
        path = self.root / filename
        if not isinstance(data, str):
            data = {
                "external_apis_dir": "apis.d",
                "external_providers_dir": "providers.d",
                **data,
            }
            data = yaml.safe_dump(data)
        path.write_text(data)
        return path


def prepend_syspath(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """``monkeypatch.syspath_prepend``, but safe beside threads that import.

    ``importlib.invalidate_caches`` walks ``sys.path_importer_cache``, which a
    thread importing at that moment (the event loop closing an earlier test's
    connections) may grow: "dictionary changed size during iteration".
    """
    monkeypatch.setattr(sys, "path", [str(folder), *sys.path])
    for _ in range(20):
        try:
            importlib.invalidate_caches()
            return
        except RuntimeError:
            time.sleep(0.01)
    importlib.invalidate_caches()


@pytest.fixture
def stack_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    files = StackFiles(tmp_path)
    prepend_syspath(monkeypatch, files.pkgs)
    yield files
    for name in list(sys.modules):
        if name.split(".")[0] in files.modules:
            del sys.modules[name]


@pytest.fixture
def make_app() -> Any:
    """``create_app`` whose apps' providers are shut down after the test."""
    apps = []

    def make(config: Any = None) -> Any:
        app = create_app(config)
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["stackflask"].shutdown()


@pytest.fixture
def app(make_app: Any) -> Any:
    """The embedded default; pytest-flask's ``client`` uses it."""
    return make_app()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def waitress_in_thread(app: Any, threads: int = 4) -> Iterator[str]:
    """Serve ``app`` with waitress in a thread of this process; yield its URL.

    The serving loop is stopped before its sockets are closed, so closing
    never races a ``select`` on them.
    """
    server = create_server(app, host="127.0.0.1", port=0, threads=threads)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            wasyncore.loop(timeout=0.05, map=server._map, count=1)

    thread = threading.Thread(target=run, name="waitress-in-thread", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        stop.set()
        thread.join(5)
        server.task_dispatcher.shutdown(timeout=1)
        wasyncore.close_all(server._map)


# -- real servers: subprocesses on loopback ports -----------------------------

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def script(name: str) -> str:
    """A console script of the running venv."""
    return str(BIN / name)


def server_env(
    pythonpath: Sequence[os.PathLike[str] | str] = (), **extra: str
) -> dict[str, str]:
    """``os.environ`` without stackflask's and Flask's settings, plus ``extra``;
    ``pythonpath`` entries go before any existing ``PYTHONPATH``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STACKFLASK_", "FLASK_", "LLAMA_STACK_"))
    }
    paths = [os.fspath(p) for p in pythonpath]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


class Server:
    """A server subprocess whose output goes to a log file.

    Unless ``env`` names a ``HOME`` of its own, the server gets an empty one,
    removed when it stops: the suite leaves the user's home alone (gunicorn 25.1
    and later make their control socket in ``~/.gunicorn``, or in
    ``$XDG_RUNTIME_DIR``, shared by every gunicorn, so that is unset too).
    """

    def __init__(
        self, args: Sequence[str], port: int, log_path: Path, cwd: Path, env: Mapping[str, str]
    ) -> None:
        self.args = list(args)
        self.port = port
        self.log_path = log_path
        env = dict(env)
        self.home: str | None = None
        if env.get("HOME") == os.environ.get("HOME"):
            # Short, under the temp dir: a Unix socket path holds ~100 bytes.
            self.home = tempfile.mkdtemp(prefix="sf-home-")
            env["HOME"] = self.home
            env.pop("XDG_RUNTIME_DIR", None)
        self._log = open(log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                self.args,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            self._log.close()
            if self.home is not None:
                shutil.rmtree(self.home, ignore_errors=True)
            raise

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll ``/v1/health`` until it answers 200; fail if the process exits
        or the deadline passes."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                pytest.fail(f"{self.args} exited with {code} before answering:\n{self.output()}")
            try:
                answered = requests.get(self.url("/v1/health"), timeout=1).status_code == 200
            except (requests.ConnectionError, requests.Timeout):
                answered = False
            # Alive after answering: the answer came from this process, not
            # from another one that took the port.
            if answered and self.proc.poll() is None:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{self.args} did not answer within {timeout} s:\n{self.output()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` and wait for the exit (killing after a deadline); the exit code."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(STOP_TIMEOUT)
            return self.proc.returncode
        finally:
            self._log.close()
            if self.home is not None:
                shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """``start(args, port, cwd=REPO, env=None)``: a ready :class:`Server`,
    stopped at teardown if the test did not stop it."""
    servers: list[Server] = []

    def start(
        args: Sequence[str],
        port: int,
        cwd: Path = REPO,
        env: Mapping[str, str] | None = None,
    ) -> Server:
        log_path = tmp_path / f"server-{len(servers)}.log"
        server = Server(args, port, log_path, cwd, server_env() if env is None else env)
        servers.append(server)
        server.wait_ready()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
