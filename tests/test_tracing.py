"""OpenTelemetry tracing: the span tree in-process, the OTEL_* variables through a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from conftest import free_port, script, server_env
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import stackflask
from stackflask import StartupError
from stackflask.tracing import build_tracer_provider, span_exporters

API = '''
from typing import AsyncIterator, Protocol

from llama_stack.providers.utils.telemetry.trace_protocol import trace_protocol
from stackflask import Api, InlineProviderSpec, webmethod


def available_providers():
    return [InlineProviderSpec(api=Api.{name}, provider_type="inline::{name}",
                               module="{name}_impl")]


{protocol_decorator}
class Items(Protocol):
    @webmethod(route="/items/{{item_id}}", method="GET", descriptive_name="fetch-item")
    async def get_item(self, item_id: str) -> dict[str, str]: ...

    @webmethod(route="/items", method="POST")
    async def create(self, name: str) -> dict[str, str]: ...

    @webmethod(route="/broken", method="GET")
    async def broken(self) -> dict[str, str]: ...

    @webmethod(route="/stream", method="GET")
    async def stream(self, count: int = 3) -> AsyncIterator[dict[str, int]]: ...
'''

IMPL = '''
import os
import threading

from llama_stack.providers.utils.telemetry.trace_protocol import trace_protocol


{impl_decorator}
class ItemsImpl:
    async def get_item(self, item_id):
        from opentelemetry import trace

        current = trace.get_current_span().get_span_context()
        return {{"id": await self.lookup(item_id), "span_id": format(current.span_id, "016x"),
                "thread": threading.current_thread().name, "pid": str(os.getpid())}}

    async def lookup(self, item_id):
        return item_id.upper()

    async def create(self, name):
        return {{"name": name}}

    async def broken(self):
        raise RuntimeError("the disk is full")

    async def stream(self, count=3):
        for i in range(count):
            yield {{"i": i}}


async def get_provider_impl(config, deps):
    return ItemsImpl()
'''

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"

_exporter = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The in-memory exporter of this process's global tracer provider, emptied.

    The provider is set once, as ``opentelemetry-instrument`` would set it:
    the apps built here find it and export to it.
    """
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "another global tracer provider was set"
    _exporter.clear()
    yield _exporter
    _exporter.clear()


def write_items(stack_files: Any, name: str, where: str = "", tracing: bool = True) -> str:
    """The items API and provider as ``name``; ``@trace_protocol`` on the
    protocol or the provider's class when ``where`` says so."""
    decorate = {w: "@trace_protocol" if w == where else "" for w in ("protocol", "impl")}
    write = stack_files.serve_api(
        name, "Items",
        API.format(name=name, protocol_decorator=decorate["protocol"]),
        IMPL.format(impl_decorator=decorate["impl"]),
    )
    return write(server={"tracing": tracing})  # type: ignore[no-any-return]


def by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    named = {span.name: span for span in finished}
    assert len(named) == len(finished), [span.name for span in finished]
    return named


def assert_child(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.context is not None and parent.context is not None
    assert child.context.trace_id == parent.context.trace_id
    assert child.parent is not None and child.parent.span_id == parent.context.span_id


def test_the_call_span_is_a_child_of_the_request_span_across_the_loop(
    make_app: Any, stack_files: Any, spans: InMemorySpanExporter
) -> None:
    client = make_app(write_items(stack_files, "tritems")).test_client()
    response = client.get("/v1/items/abc", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    body = response.json
    named = by_name(spans.get_finished_spans())
    assert set(named) == {"GET /v1/items/<item_id>", "fetch-item"}
    request, call = named["GET /v1/items/<item_id>"], named["fetch-item"]

    assert request.kind is SpanKind.SERVER
    assert request.context.trace_id == int(TRACE_ID, 16)
    assert request.parent is not None and request.parent.is_remote
    assert request.parent.span_id == int(PARENT_ID, 16)
    assert request.attributes["http.route"] == "/v1/items/<item_id>"
    assert request.attributes["stackflask.request_id"] == response.headers["X-Request-ID"]

    assert_child(call, request)
    assert call.kind is SpanKind.INTERNAL
    assert dict(call.attributes) == {
        "stackflask.api": "tritems", "stackflask.method": "get_item",
        "stackflask.provider_id": "tritems", "stackflask.provider_type": "inline::tritems",
    }
    assert call.status.status_code is StatusCode.UNSET
    # The provider ran on the loop's thread, with the call span current there.
    assert body["thread"] == "stackflask-loop"
    assert body["span_id"] == format(call.context.span_id, "016x")


def test_a_call_span_is_named_api_dot_method_without_a_descriptive_name(
    make_app: Any, stack_files: Any, spans: InMemorySpanExporter
) -> None:
    client = make_app(write_items(stack_files, "tritems")).test_client()
    assert client.post("/v1/items", json={"name": "x"}).status_code == 200
    named = by_name(spans.get_finished_spans())
    assert set(named) == {"POST /v1/items", "tritems.create"}
    assert_child(named["tritems.create"], named["POST /v1/items"])
    # Without a traceparent the request span starts a trace of its own.
    assert named["POST /v1/items"].parent is None


def test_a_provider_that_raises_gives_an_error_span(
    make_app: Any, stack_files: Any, spans: InMemorySpanExporter
) -> None:
    client = make_app(write_items(stack_files, "tritems")).test_client()
    assert client.get("/v1/broken").status_code == 500
    named = by_name(spans.get_finished_spans())
    call, request = named["tritems.broken"], named["GET /v1/broken"]
    assert_child(call, request)
    assert call.status.status_code is StatusCode.ERROR
    assert call.status.description == "RuntimeError: the disk is full"
    [event] = call.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "RuntimeError"
    assert event.attributes["exception.message"] == "the disk is full"
    assert request.status.status_code is StatusCode.ERROR
    assert request.attributes["http.status_code"] == 500


def test_a_stream_has_one_span_covering_every_item(
    make_app: Any, stack_files: Any, spans: InMemorySpanExporter
) -> None:
    client = make_app(write_items(stack_files, "tritems")).test_client()
    response = client.get("/v1/stream?count=4")
    assert response.data.count(b"data: ") == 4
    named = by_name(spans.get_finished_spans())
    call, request = named["tritems.stream"], named["GET /v1/stream"]
    assert_child(call, request)
    assert call.attributes["stackflask.stream.items"] == 4
    assert call.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize("where", ["protocol", "impl"])
def test_trace_protocol_gives_method_spans_under_the_call_span(
    make_app: Any, stack_files: Any, spans: InMemorySpanExporter, where: str
) -> None:
    client = make_app(write_items(stack_files, f"tr{where}", where)).test_client()
    body = client.get("/v1/items/abc").json
    assert body["id"] == "ABC"
    named = by_name(spans.get_finished_spans())
    assert set(named) == {
        "GET /v1/items/<item_id>", "fetch-item", "ItemsImpl.get_item", "ItemsImpl.lookup"
    }
    assert_child(named["fetch-item"], named["GET /v1/items/<item_id>"])
    assert_child(named["ItemsImpl.get_item"], named["fetch-item"])
    assert_child(named["ItemsImpl.lookup"], named["ItemsImpl.get_item"])
    assert named["ItemsImpl.lookup"].attributes["code.function.name"] == (
        f"tr{where}_impl.ItemsImpl.lookup"
    )
    # The provider's own code ran with its method's span current.
    assert body["span_id"] == format(named["ItemsImpl.get_item"].context.span_id, "016x")

    spans.clear()
    assert client.get("/v1/stream?count=2").status_code == 200
    named = by_name(spans.get_finished_spans())
    assert_child(named["ItemsImpl.stream"], named[f"tr{where}.stream"])


def test_trace_protocol_wraps_nothing_when_tracing_is_off(
    make_app: Any, stack_files: Any, spans: InMemorySpanExporter
) -> None:
    app = make_app(write_items(stack_files, "troff", "impl", tracing=False))
    impl = app.extensions["stackflask"].providers[0].impl
    assert "get_item" not in vars(impl), "no wrapper on the instance"
    client = app.test_client()
    assert client.get("/v1/items/abc", headers={"traceparent": TRACEPARENT}).status_code == 200
    assert client.get("/v1/broken").status_code == 500
    assert client.get("/v1/stream").status_code == 200
    assert spans.get_finished_spans() == ()


def test_tracing_off_imports_no_opentelemetry(stack_files: Any) -> None:
    """Off, the app neither imports OpenTelemetry nor sets a global provider."""
    config = write_items(stack_files, "trquiet", tracing=False).replace("\\", "/")
    code = f"""
import sys
from stackflask import create_app
app = create_app({config!r})
app.extensions["stackflask"].config.server.tracing is False or sys.exit("tracing on")
response = app.test_client().post("/v1/items", json={{"name": "x"}})
response.status_code == 200 or sys.exit(response.status_code)
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
loaded and sys.exit(f"imported: {{loaded}}")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], env=server_env([stack_files.pkgs]),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (False, (
            "run.yaml: server.tracing: tracing needs OpenTelemetry, but "
            "'opentelemetry.instrumentation.flask' is not installed: "
            "pip install 'stackflask[otel]'"
        )),
        (True, (
            "--tracing: tracing needs OpenTelemetry, but "
            "'opentelemetry.instrumentation.flask' is not installed: "
            "pip install 'stackflask[otel]'"
        )),
    ],
)
def test_tracing_without_the_extra_is_a_startup_error(
    stack_files: Any, monkeypatch: pytest.MonkeyPatch, flag: bool, expected: str
) -> None:
    config = write_items(stack_files, "trmissing", tracing=not flag)
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.flask", None)
    monkeypatch.delitem(sys.modules, "stackflask.tracing", raising=False)
    monkeypatch.delattr(stackflask, "tracing", raising=False)
    with pytest.raises(StartupError) as caught:
        stackflask.create_app(config, tracing=flag)
    assert [line.replace(str(stack_files.root) + "/", "") for line in caught.value.problems] == [
        expected
    ]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin_json"}, (
            "OTEL_TRACES_EXPORTER='zipkin_json': no exporter 'zipkin_json' is installed "
            "(use otlp, console or none)"
        )),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, (
            "OTEL_TRACES_EXPORTER='otlp': no exporter 'otlp_proto_grpc' is installed "
            "(pip install opentelemetry-exporter-otlp-proto-grpc)"
        )),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, (
            "OTEL_EXPORTER_OTLP_PROTOCOL='http/json': not supported for traces; "
            "use http/protobuf (the default) or grpc"
        )),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "x"}, (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='x': not supported for traces; "
            "use http/protobuf (the default) or grpc"
        )),
    ],
)
def test_exporters_that_cannot_be_built(environ: dict[str, str], expected: str) -> None:
    problems: list[str] = []
    assert span_exporters(environ, problems) is None
    assert problems == [expected]


@pytest.mark.parametrize(
    ("setting", "types"),
    [
        (None, [OTLPSpanExporter]),
        ("otlp", [OTLPSpanExporter]),
        ("console", [ConsoleSpanExporter]),
        ("console, otlp", [ConsoleSpanExporter, OTLPSpanExporter]),
        ("none", []),
    ],
)
def test_exporters_follow_otel_traces_exporter(setting: str | None, types: list[type]) -> None:
    environ = {} if setting is None else {"OTEL_TRACES_EXPORTER": setting}
    problems: list[str] = []
    exporters = span_exporters(environ, problems)
    assert problems == []
    assert [type(e) for e in exporters or []] == types
    for exporter in exporters or []:
        exporter.shutdown()


@pytest.mark.parametrize(
    ("environ", "service"),
    [
        ({}, "stackflask"),
        ({"OTEL_SERVICE_NAME": "weather-edge"}, "weather-edge"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,team=a"}, "from-attrs"),
    ],
)
def test_the_service_name(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], service: str
) -> None:
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    provider = build_tracer_provider([])
    try:
        assert provider.resource.attributes["service.name"] == service
    finally:
        provider.shutdown()


# -- a real server exporting by the OTEL_* variables --------------------------


class Receiver:
    """An OTLP/HTTP trace receiver on a loopback port: the spans posted to it."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.services: set[str] = set()
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    for attribute in resource_spans.resource.attributes:
                        if attribute.key == "service.name":
                            received.services.add(attribute.value.string_value)
                    for scope in resource_spans.scope_spans:
                        received.spans += scope.spans
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def test_stackflask_run_tracing_exports_over_otlp_http(
    stack_files: Any, start: Any, receiver: Receiver
) -> None:
    config = write_items(stack_files, "trserved", "protocol", tracing=False)
    port = free_port()
    env = server_env(
        [stack_files.pkgs],
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_SERVICE_NAME="items-under-test",
        OTEL_BSP_SCHEDULE_DELAY="50",
    )
    server = start(
        [script("stackflask"), "run", "--tracing", "--config", config, "--port", str(port)],
        port, env=env,
    )
    response = requests.get(
        server.url("/v1/items/abc"), headers={"traceparent": TRACEPARENT}, timeout=10
    )
    assert response.status_code == 200
    wanted = {"GET /v1/items/<item_id>", "fetch-item", "ItemsImpl.get_item", "ItemsImpl.lookup"}
    deadline = time.monotonic() + 10
    while not wanted <= {span.name for span in receiver.spans} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.stop() == 0, server.output()
    named = {span.name: span for span in receiver.spans if span.name in wanted}
    assert set(named) == wanted, [span.name for span in receiver.spans]
    assert receiver.services == {"items-under-test"}
    request, call = named["GET /v1/items/<item_id>"], named["fetch-item"]
    assert request.trace_id.hex() == TRACE_ID and request.parent_span_id.hex() == PARENT_ID
    assert call.trace_id.hex() == TRACE_ID and call.parent_span_id == request.span_id
    assert named["ItemsImpl.get_item"].parent_span_id == call.span_id


def test_stackflask_run_tracing_prints_spans_with_the_console_exporter(
    stack_files: Any, start: Any
) -> None:
    config = write_items(stack_files, "trconsole", tracing=False)
    port = free_port()
    env = server_env([stack_files.pkgs], OTEL_TRACES_EXPORTER="console")
    server = start(
        [script("stackflask"), "run", "--tracing", "--config", config, "--port", str(port)],
        port, env=env,
    )
    assert requests.post(server.url("/v1/items"), json={"name": "x"}, timeout=10).ok
    assert server.stop() == 0, server.output()
    output = server.output()
    decoder = json.JSONDecoder()
    printed = []
    at = output.find("{\n")
    while at != -1:
        span, end = decoder.raw_decode(output, at)
        printed.append(span)
        at = output.find("{\n", end)
    call = next(span for span in printed if span["name"] == "trconsole.create")
    request = next(span for span in printed if span["name"] == "POST /v1/items")
    assert call["parent_id"] == request["context"]["span_id"]
    assert call["resource"]["attributes"]["service.name"] == "stackflask"


def test_gunicorn_preload_workers_each_export_their_spans(
    stack_files: Any, start: Any, receiver: Receiver
) -> None:
    """The provider built before the fork exports from every worker: the SDK's
    batch processor starts its export thread anew in each."""
    config = write_items(stack_files, "trforked")
    port = free_port()
    env = server_env(
        [stack_files.pkgs], STACKFLASK_CONFIG=config,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="50",
        HOME=str(stack_files.root),  # gunicorn's control socket goes there, not in $HOME
    )
    server = start(
        [script("gunicorn"), "--preload", "-w", "2", "-b", f"127.0.0.1:{port}",
         "--graceful-timeout", "5", "stackflask:create_app()"],
        port, cwd=stack_files.root, env=env,
    )
    call_spans: dict[str, set[str]] = {}
    deadline = time.monotonic() + 20
    while len(call_spans) < 2 and time.monotonic() < deadline:
        with requests.Session() as session:  # a new connection: the kernel picks a worker
            body = session.get(server.url("/v1/items/abc"), timeout=5).json()
        call_spans.setdefault(body["pid"], set()).add(body["span_id"])
    assert len(call_spans) == 2, "one worker answered every request"
    assert str(server.proc.pid) not in call_spans

    def exported() -> set[str]:
        return {span.span_id.hex() for span in receiver.spans if span.name == "fetch-item"}

    wanted = set().union(*call_spans.values())
    while not wanted <= exported() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wanted <= exported(), "spans exported while the workers run, from both"
    server.stop()
