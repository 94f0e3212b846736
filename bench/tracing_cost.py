"""What tracing costs per request: the same requests with tracing off and on.

    taskset -c 1 python bench/tracing_cost.py

Builds the bench config twice in one process, tracing off and on (an SDK
tracer provider with a batch processor whose exporter drops the spans, so the
figure is the cost of making the spans, not of sending them), and times
``GET /v1/weather/locations`` and the typed ``POST /v1/bench/order`` through
each app's WSGI callable, without a server: CPU microseconds per request (the
process's CPU time, so that other processes on a busy machine do not count),
best of five runs of 1,000, the apps alternating. A third app has the request span of
``opentelemetry-instrumentation-flask`` alone, without stackflask's call spans.
Prints Markdown table rows for bench/README.md: off, request span only, on,
and what tracing adds.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from werkzeug.test import EnvironBuilder

from stackflask import create_app
from stackflask.tracing import Tracing

CONFIG = Path(__file__).resolve().parent / "config" / "run.yaml"
BODY = json.dumps({"order": {
    "id": 7, "customer": "Ada Lovelace", "email": "ada@example.com", "amount": 12.5,
    "quantity": 3, "express": True, "priority": "high", "tags": ["a", "b", "c"],
    "address": {"street": "1 Analytical Way", "city": "London", "zip": "N1"}, "note": None,
}}).encode()


class Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def request(app: Any, method: str, path: str, body: bytes = b"") -> Callable[[], None]:
    environ = EnvironBuilder(
        path=path, method=method, data=body, content_type="application/json"
    ).get_environ()
    status: list[str] = []

    def call() -> None:
        environ["wsgi.input"] = io.BytesIO(body)
        b"".join(app(dict(environ), lambda s, h, e=None: status.append(s)))

    call()
    assert status == ["200 OK"], (path, status)
    return call


def cpu(call: Callable[[], None], n: int = 1000) -> float:
    """CPU microseconds per call, all of the process's threads (the loop's
    included): other processes on a busy machine do not count."""
    started = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    trace.set_tracer_provider(provider)
    off, on = create_app(CONFIG), create_app(CONFIG, tracing=True)
    request_span_only = create_app(CONFIG)
    Tracing(provider).instrument(request_span_only)
    devnull = open(os.devnull, "w")  # noqa: SIM115 (for the whole run)
    for handler in logging.getLogger("stackflask").handlers:  # formatted and written, not shown
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)
    cases = [
        ("GET /v1/weather/locations", "GET", "/v1/weather/locations", b""),
        ("POST /v1/bench/order (10 typed fields)", "POST", "/v1/bench/order", BODY),
    ]
    for name, method, path, body in cases:
        apps = {"off": off, "request": request_span_only, "on": on}
        calls = {state: request(app, method, path, body) for state, app in apps.items()}
        for call in calls.values():
            cpu(call, 300)
        times = dict.fromkeys(calls, 1e9)
        for _ in range(5):
            for state, call in calls.items():
                times[state] = min(times[state], cpu(call))
        print(f"| {name} | {times['off']:.1f} | {times['request']:.1f} | {times['on']:.1f} "
              f"| +{times['on'] - times['off']:.1f} |")
    for app in (off, request_span_only, on):
        app.extensions["stackflask"].shutdown()
    provider.shutdown()


if __name__ == "__main__":
    main()
