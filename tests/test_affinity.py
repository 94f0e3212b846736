"""CPU affinity of real servers: ``stackflask run`` and gunicorn workers, each
pinned, every thread of it, to one allowed CPU (``server.cpu_affinity``, ``--cpus``).

The masks are read from ``/proc/<pid>/task/*/status``. Each test gives its
servers a ``XDG_RUNTIME_DIR`` of its own, so their CPU claims do not meet
those of servers that other tests or other programs run meanwhile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import REPO, free_port, script, server_env

from stackflask.affinity import format_cpus, parse_cpus

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or not Path("/proc/self/task").is_dir(),
    reason="CPU affinity is read from Linux's /proc",
)

ALLOWED = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
TWO_CPUS = pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs this process may use")


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    """A server environment with a home and a runtime folder of its own (short
    paths: gunicorn makes its control socket there)."""
    folder = tempfile.mkdtemp(prefix="sf-cpu-")
    (Path(folder) / "home").mkdir()
    (Path(folder) / "run").mkdir()
    yield server_env(HOME=f"{folder}/home", XDG_RUNTIME_DIR=f"{folder}/run")
    shutil.rmtree(folder, ignore_errors=True)


def run_config(path: Path, server: dict[str, Any]) -> Path:
    """The embedded weather API and kaze provider, with ``server``."""
    path.write_text(yaml.safe_dump({
        "version": "2",
        "apis": ["weather"],
        "providers": {
            "weather": [{"provider_id": "kaze", "provider_type": "remote::kaze", "config": {}}]
        },
        "external_apis_dir": str(REPO / "config" / "apis.d"),
        "external_providers_dir": str(REPO / "config" / "providers.d"),
        "server": server,
    }))
    return path


def masks(pid: int) -> dict[int, str]:
    """``Cpus_allowed_list`` of every thread of ``pid``, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out[int(task.name)] = line.split(":", 1)[1].strip()
    return out


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class Running:
    """A server subprocess, its output in a file, ready when ``/v1/health`` answers."""

    def __init__(self, args: list[str], port: int, env: dict[str, str], log: Path) -> None:
        self.port = port
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{args} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{args} did not answer within 20 s:\n{self.output()}")
            time.sleep(0.05)
        # A request of the API too: every thread a request uses exists now.
        assert requests.get(f"http://127.0.0.1:{port}/v1/weather/locations", timeout=5).ok

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve(tmp_path: Path, env: dict[str, str]) -> Iterator[Any]:
    """``serve(*options)``: a ready ``stackflask run`` with ``options``, stopped at teardown."""
    servers: list[Running] = []

    def serve(*options: str, command: str = "stackflask") -> Running:
        port = free_port()
        if command == "stackflask":
            args = [script("stackflask"), "run", "--port", str(port), *options]
        else:
            args = [script("gunicorn"), "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5",
                    "-c", "python:stackflask.gunicorn_conf", *options, "app:create_app()"]
        server = Running(args, port, env, tmp_path / f"server-{len(servers)}.log")
        servers.append(server)
        return server

    yield serve
    for server in servers:
        server.stop()


def pinned_cpu(pid: int) -> int:
    """The one CPU every thread of ``pid`` is pinned to."""
    found = masks(pid)
    assert len(set(found.values())) == 1, f"threads of {pid} differ: {found}"
    cpus = parse_cpus(next(iter(found.values())))
    assert isinstance(cpus, frozenset) and len(cpus) == 1, found
    (cpu,) = cpus
    return cpu


def test_every_thread_on_one_allowed_cpu(serve):
    server = serve()
    threads = masks(server.proc.pid)
    # waitress's main and 8 worker threads, the event loop's and its watchdog's
    assert len(threads) >= 11, threads
    cpu = pinned_cpu(server.proc.pid)
    assert cpu in ALLOWED
    assert f"pinned to CPU {cpu} of {format_cpus(ALLOWED)}" in server.output()


@TWO_CPUS
def test_two_servers_take_different_cpus(serve):
    first, second = serve(), serve()
    assert pinned_cpu(first.proc.pid) != pinned_cpu(second.proc.pid)


@TWO_CPUS
def test_a_cpu_is_taken_again_once_its_server_stops(serve):
    first = serve()
    cpu = pinned_cpu(first.proc.pid)
    first.stop()
    assert pinned_cpu(serve().proc.pid) == cpu


def test_all_leaves_the_mask_alone(serve):
    server = serve("--cpus", "all")
    assert set(masks(server.proc.pid).values()) == {format_cpus(ALLOWED)}
    assert "not pinned (--cpus: all)" in server.output()


@TWO_CPUS
def test_config_key_honoured_and_cpus_wins(serve, tmp_path):
    lowest = min(ALLOWED)
    config = run_config(tmp_path / "run.yaml", {"cpu_affinity": lowest})
    assert pinned_cpu(serve("--config", str(config)).proc.pid) == lowest
    server = serve("--config", str(config), "--cpus", str(max(ALLOWED)))
    assert pinned_cpu(server.proc.pid) == max(ALLOWED)
    unpinned = run_config(tmp_path / "all.yaml", {"cpu_affinity": "all"})
    server = serve("--config", str(unpinned))
    assert set(masks(server.proc.pid).values()) == {format_cpus(ALLOWED)}


@pytest.mark.parametrize(
    ("cpus", "setting", "message"),
    [
        ("0-", None, "--cpus: '0-' is not a CPU list; give auto, all, or CPU numbers"),
        ("3-1", None, "--cpus: '3-1': the range '3-1' runs backwards"),
        ("4096", None, f"--cpus: CPU 4096 is not allowed to this process (allowed: {format_cpus(ALLOWED)})"),
        (None, "banana", "run.yaml: server.cpu_affinity: 'banana' is not a CPU list"),
        (None, True, "run.yaml: server.cpu_affinity: expected auto, all, or CPU numbers"),
        (None, "4096,4097", "run.yaml: server.cpu_affinity: CPU 4096-4097 are not allowed to this process"),
    ],
)
def test_bad_values_are_one_error_line(tmp_path, env, cpus, setting, message):
    args = [script("stackflask"), "run", "--port", str(free_port())]
    if cpus is not None:
        args += ["--cpus", cpus]
    if setting is not None:
        args += ["--config", str(run_config(tmp_path / "run.yaml", {"cpu_affinity": setting}))]
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert message in errors[0]


# -- gunicorn workers: stackflask.gunicorn_conf's post_fork -------------------


def worker_masks(master: int, count: int) -> dict[int, set[str]]:
    """Each worker's set of thread masks, once ``count`` workers have pinned themselves."""
    deadline = time.monotonic() + 20
    while True:
        found = {pid: set(masks(pid).values()) for pid in children(master)}
        if len(found) == count and all(len(m) == 1 for m in found.values()):
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"workers of {master}: {found}")
        time.sleep(0.1)


@TWO_CPUS
def test_gunicorn_workers_take_different_cpus(serve):
    server = serve("-w", "2", command="gunicorn")
    workers = worker_masks(server.proc.pid, 2)
    cpus = [parse_cpus(next(iter(m))) for m in workers.values()]
    assert all(isinstance(c, frozenset) and len(c) == 1 for c in cpus), workers
    assert cpus[0] != cpus[1], workers
    assert set(masks(server.proc.pid).values()) == {format_cpus(ALLOWED)}  # the master: not pinned
    assert server.output().count("pinned to CPU") == 2


def test_gunicorn_respects_cpu_affinity_all(serve, tmp_path, env):
    config = run_config(tmp_path / "run.yaml", {"cpu_affinity": "all"})
    env["STACKFLASK_CONFIG"] = str(config)
    server = serve("-w", "2", command="gunicorn")
    workers = worker_masks(server.proc.pid, 2)
    assert all(m == {format_cpus(ALLOWED)} for m in workers.values()), workers


def test_gunicorn_refuses_a_disallowed_cpu(tmp_path, env):
    env["STACKFLASK_CONFIG"] = str(run_config(tmp_path / "run.yaml", {"cpu_affinity": 4096}))
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{free_port()}",
         "-c", "python:stackflask.gunicorn_conf", "app:create_app()"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'run.yaml'}: server.cpu_affinity: CPU 4096 is not "
                      f"allowed to this process (allowed: {format_cpus(ALLOWED)}); give CPUs "
                      "of those, auto or all"]


# -- the config's other hook: child_exit for multiprocess metrics ---------------


@pytest.mark.parametrize("multiproc", [True, False], ids=["multiproc", "single"])
def test_child_exit_marks_a_worker_dead_for_prometheus(tmp_path, monkeypatch, multiproc):
    pytest.importorskip("prometheus_client")
    monkeypatch.delenv("STACKFLASK_CONFIG", raising=False)
    from stackflask import gunicorn_conf

    live = tmp_path / "gauge_livesum_4242.db"
    live.write_bytes(b"")
    if multiproc:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    else:
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    gunicorn_conf.child_exit(None, type("Worker", (), {"pid": 4242})())
    assert live.exists() is not multiproc
