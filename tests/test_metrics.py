"""Prometheus metrics, scraped from real servers and read by prometheus_client's parser."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from conftest import free_port, script, server_env
from prometheus_client.parser import text_string_to_metric_families

from stackflask import create_app
from stackflask.cli import main
from stackflask.problems import StartupError

API = '''
from collections.abc import AsyncIterator
from typing import Protocol

from stackflask import webmethod


class Gauges(Protocol):
    @webmethod(route="/gauges/things/{thing_id}", method="GET")
    async def get_thing(self, thing_id: str) -> dict[str, str]: ...

    @webmethod(route="/gauges/ticks", method="GET")
    async def ticks(self, n: int, pause: float = 0.0) -> AsyncIterator[dict[str, int]]: ...

    @webmethod(route="/gauges/pid", method="GET")
    async def pid(self) -> int: ...
'''

IMPL = '''
import asyncio
import os


class Gauges:
    async def get_thing(self, thing_id):
        return {"id": thing_id}

    async def ticks(self, n, pause=0.0):
        for i in range(n):
            if i:
                await asyncio.sleep(pause)
            yield {"i": i}

    async def pid(self):
        return os.getpid()


def get_provider_impl(config, deps):
    return Gauges()
'''


@pytest.fixture
def gauges(stack_files: Any) -> Any:
    """``gauges(server=None)``: the path of a run config serving the gauges API."""
    return stack_files.serve_api("gauges", "Gauges", API, IMPL)


def scrape(url: str) -> dict[str, Any]:
    """The metric families ``url`` answers, by name, read by prometheus_client's parser."""
    response = requests.get(url, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def value(families: dict[str, Any], name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels``, if there is one."""
    for family in families.values():
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def test_a_real_server_counts_by_route_template(gauges, stack_files, start):
    port = free_port()
    server = start(
        [script("stackflask"), "run", "--metrics", "--config", gauges(), "--port", str(port)],
        port, env=server_env([stack_files.pkgs]),
    )
    for thing in ("a", "b", "c"):
        assert requests.get(server.url(f"/v1/gauges/things/{thing}"), timeout=5).status_code == 200
    assert requests.get(server.url("/v1/gauges/nowhere"), timeout=5).status_code == 404
    assert requests.delete(server.url("/v1/gauges/things/a"), timeout=5).status_code == 405

    with requests.get(server.url("/v1/gauges/ticks?n=3&pause=0.2"), stream=True, timeout=5) as stream:
        lines = stream.iter_lines()
        assert next(lines) == b'data: {"i":0}'
        during = scrape(server.url("/metrics"))
        assert b"".join(lines) == b'data: {"i":1}data: {"i":2}'
    time.sleep(0.1)  # the stream's end is counted once the server closed its body
    after = scrape(server.url("/metrics"))

    thing = {"api": "gauges", "route": "/v1/gauges/things/{thing_id}", "method": "GET"}
    assert value(after, "stackflask_requests_total", **thing, status="200") == 3
    assert value(after, "stackflask_request_duration_seconds_count", **thing, status="200") == 3
    assert value(
        after, "stackflask_request_duration_seconds_bucket", **thing, status="200", le="+Inf"
    ) == 3
    assert value(after, "stackflask_requests_total", api="-", route="<unmatched>",
                 method="GET", status="404") == 1
    assert value(after, "stackflask_requests_total", api="-", route="<unmatched>",
                 method="DELETE", status="405") == 1
    assert value(after, "stackflask_requests_total", api="_stackflask", route="/v1/health",
                 method="GET", status="200") >= 1
    assert value(after, "stackflask_requests_total", api="_stackflask", route="/metrics",
                 method="GET", status="200") == 1
    routes = {s.labels["route"] for s in after["stackflask_requests"].samples}
    assert not any("/things/a" in r or "/things/b" in r for r in routes), routes

    assert value(after, "stackflask_provider_call_duration_seconds_count",
                 api="gauges", webmethod="get_thing") == 3
    ticks = {"api": "gauges", "route": "/v1/gauges/ticks"}
    assert value(after, "stackflask_stream_events_total", **ticks) == 3
    assert value(after, "stackflask_stream_duration_seconds_count", **ticks) == 1
    assert value(after, "stackflask_stream_duration_seconds_sum", **ticks) >= 0.4
    assert value(after, "stackflask_request_duration_seconds_sum", **ticks, method="GET",
                 status="200") >= 0.4

    # While the stream was open: it and the scrape itself were in flight, and
    # its events were not counted yet.
    assert value(during, "stackflask_requests_in_flight") == 2
    assert value(during, "stackflask_stream_events_total", **ticks) is None
    assert value(after, "stackflask_requests_in_flight") == 1

    lag = value(after, "stackflask_event_loop_lag_seconds")
    assert lag is not None and 0 <= lag < 1
    assert after["stackflask_event_loop_lag_seconds"].type == "gauge"
    assert after["stackflask_request_duration_seconds"].type == "histogram"
    assert value(after, "process_cpu_seconds_total") is not None
    assert "python_info" in after


def test_off_unless_enabled(gauges, make_app):
    app = make_app(gauges())
    assert app.extensions["stackflask"].metrics is None
    assert app.test_client().get("/metrics").status_code == 404


def test_server_metrics_in_the_run_config_turns_them_on(gauges, make_app):
    app = make_app(gauges(server={"metrics": True}))
    client = app.test_client()
    client.get("/v1/gauges/things/x")
    text = client.get("/metrics").text
    assert 'route="/v1/gauges/things/{thing_id}"' in text


def test_two_apps_share_nothing(gauges, make_app):
    first = make_app(gauges(server={"metrics": True})).test_client()
    second = make_app(gauges(server={"metrics": True})).test_client()
    for _ in range(2):
        first.get("/v1/gauges/things/x")
    second.get("/v1/gauges/things/y")

    def count(client: Any) -> float | None:
        families = text_string_to_metric_families(client.get("/metrics").text)
        for family in families:
            for s in family.samples:
                if s.name == "stackflask_requests_total" and s.labels["route"].endswith("{thing_id}"):
                    return s.value
        return None

    assert (count(first), count(second)) == (2, 1)


@pytest.fixture
def without_prometheus(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import prometheus_client`` fails as when it is not installed."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "stackflask.metrics", raising=False)


@pytest.mark.parametrize(
    ("server", "flag", "where"),
    [
        ({"metrics": True}, False, "{config}: server.metrics"),
        (None, True, "--metrics"),
    ],
)
def test_enabled_without_prometheus_client_is_a_startup_error(
    gauges, without_prometheus, server, flag, where
):
    config = gauges(server=server)
    with pytest.raises(StartupError) as caught:
        create_app(config, metrics=flag)
    assert caught.value.problems == [
        f"{where.format(config=config)}: metrics need prometheus_client, but "
        "'prometheus_client' is not installed: pip install 'stackflask[metrics]'"
    ]


def test_run_metrics_without_prometheus_client_exits_1(gauges, without_prometheus):
    result = CliRunner().invoke(main, ["run", "--metrics", "--config", gauges()])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: --metrics: metrics need prometheus_client, but 'prometheus_client' is not "
        "installed: pip install 'stackflask[metrics]'"
    ]


def test_multiproc_dir_that_is_not_a_folder_is_a_startup_error(gauges, tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(missing))
    with pytest.raises(StartupError, match=r"--metrics: PROMETHEUS_MULTIPROC_DIR='.*nowhere' "
                       r"is not a folder; create it, empty, before the server starts"):
        create_app(gauges(), metrics=True)


GUNICORN_CONF = '''
from prometheus_client import multiprocess


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
'''


def test_gunicorn_workers_are_summed(gauges, stack_files, start, tmp_path):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(GUNICORN_CONF)
    port = free_port()
    server = start(
        [script("gunicorn"), "-c", str(conf), "-w", "2", "-b", f"127.0.0.1:{port}",
         "--graceful-timeout", "5", "stackflask:create_app()"],
        port,
        env=server_env(
            [stack_files.pkgs], STACKFLASK_CONFIG=gauges(server={"metrics": True}),
            PROMETHEUS_MULTIPROC_DIR=str(folder), HOME=str(tmp_path),
        ),
    )
    served: dict[int, int] = {}
    deadline = time.monotonic() + 20
    while (len(served) < 2 or sum(served.values()) < 6) and time.monotonic() < deadline:
        with requests.Session() as session:  # a new connection: the kernel picks a worker
            pid = session.get(server.url("/v1/gauges/pid"), timeout=5).json()
        served[pid] = served.get(pid, 0) + 1
    assert len(served) == 2, served

    scraped = scrape(server.url("/metrics"))
    route = {"api": "gauges", "route": "/v1/gauges/pid", "method": "GET", "status": "200"}
    assert value(scraped, "stackflask_requests_total", **route) == sum(served.values())
    assert value(scraped, "stackflask_request_duration_seconds_count", **route) == sum(
        served.values()
    )
    assert value(scraped, "stackflask_provider_call_duration_seconds_count",
                 api="gauges", webmethod="pid") == sum(served.values())
    assert value(scraped, "stackflask_requests_in_flight") == 1
    assert value(scraped, "stackflask_event_loop_lag_seconds") is not None
    assert sorted(p.name.split("_")[-1] for p in folder.glob("counter_*.db")) == sorted(
        f"{pid}.db" for pid in served
    )
