"""Prometheus metrics: ``GET /metrics``, fed by every request's access record.

Startup time builds one :class:`Metrics` per app when ``server.metrics`` (or
``stackflask run --metrics``) is on, with its own registry; request time feeds
it from each request's :class:`~stackflask.log.AccessRecord` once the body has
been sent, and from each provider call. This module is the only one that
imports ``prometheus_client`` (the ``stackflask[metrics]`` extra), and it is
imported only when metrics are on.

With ``PROMETHEUS_MULTIPROC_DIR`` set when the server starts (``gunicorn -w
N``), prometheus_client's multiprocess mode is used: each worker writes its
values to files in that folder and ``/metrics``, whichever worker answers,
adds up those of every worker. Those files are per process, not per app.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Flask, Response, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder

from . import loop
from .log import AccessRecord
from .problems import StartupError

Call = TypeVar("Call", bound=Callable[[dict[str, Any]], Any])

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The ``method`` label of a request: one of these, else ``other``, so that
#: clients cannot add series by inventing methods.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Seconds: streams last longer than requests.
STREAM_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

_REQUEST_LABELS = ("api", "route", "method", "status")


class Metrics:
    """An app's metrics and the registry ``/metrics`` exposes.

    Raises :class:`StartupError` when ``PROMETHEUS_MULTIPROC_DIR`` names no folder.
    """

    def __init__(self, where: str) -> None:
        self.registry = CollectorRegistry()
        folder = os.environ.get(MULTIPROC_ENV)
        #: Whether the values are prometheus_client's per-process files.
        self.multiprocess = bool(folder)
        if folder:
            if not os.path.isdir(folder):
                raise StartupError([
                    f"{where}: {MULTIPROC_ENV}={folder!r} is not a folder; create it, "
                    "empty, before the server starts"
                ])
            multiprocess.MultiProcessCollector(self.registry, folder)
            # Process metrics would be the answering worker's alone: left out.
            PlatformCollector(registry=self.registry)
            into: CollectorRegistry | None = None
        else:
            into = self.registry
            ProcessCollector(registry=into)
            PlatformCollector(registry=into)
            GCCollector(registry=into)
        self.requests = Counter(
            "stackflask_requests", "Requests answered, by API, route template, method "
            "and status.", _REQUEST_LABELS, registry=into,
        )
        self.request_duration = Histogram(
            "stackflask_request_duration_seconds", "Seconds from a request coming in to "
            "its whole body sent (a stream's whole duration).", _REQUEST_LABELS, registry=into,
        )
        self.provider_duration = Histogram(
            "stackflask_provider_call_duration_seconds", "Seconds a provider method took "
            "to return, by API and webmethod (streams: see stackflask_stream_*).",
            ("api", "webmethod"), registry=into,
        )
        self.stream_events = Counter(
            "stackflask_stream_events", "Server-sent events written, counted when each "
            "stream ends.", ("api", "route"), registry=into,
        )
        self.stream_duration = Histogram(
            "stackflask_stream_duration_seconds", "Seconds each server-sent event stream "
            "lasted.", ("api", "route"), buckets=STREAM_BUCKETS, registry=into,
        )
        self.in_flight = Gauge(
            "stackflask_requests_in_flight", "Requests being served, open streams included.",
            registry=into, multiprocess_mode="livesum",
        )
        self.loop_lag = Gauge(
            "stackflask_event_loop_lag_seconds", "How late the event loop ran the "
            "watchdog's latest ping (sent every 0.1 s); while unanswered, how long the "
            "loop has been unresponsive. Under several workers, the largest.",
            registry=into, multiprocess_mode="livemax",
        )
        if folder:
            loop.lag_listeners.append(self.loop_lag.set)  # each worker writes its own
        else:
            self.loop_lag.set_function(lambda: loop.get_loop_thread().lag)
        self._children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}

    def register(self, app: Flask) -> None:
        """Serve ``GET /metrics`` on ``app``."""
        app.add_url_rule("/metrics", "metrics", self.expose, methods=["GET"])

    def expose(self) -> Response:
        """The registry in the format the scraper asks for (Prometheus text by default)."""
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encode(self.registry), 200, content_type=content_type)

    def started(self, record: AccessRecord) -> None:
        self.in_flight.inc()

    def finished(self, record: AccessRecord) -> None:
        """Count the request whose body has been sent."""
        self.in_flight.dec()
        method = record.environ.get("REQUEST_METHOD", "")
        key = (
            record.api, record.route, method if method in HTTP_METHODS else "other",
            record.status_code,
        )
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(*key), self.request_duration.labels(*key)
            )
        duration = record.duration or 0.0
        children[0].inc()
        children[1].observe(duration)
        if record.events is not None:
            self.stream_events.labels(record.api, record.route).inc(record.events)
            self.stream_duration.labels(record.api, record.route).observe(duration)

    def timed_call(self, call: Call, api: str, webmethod: str) -> Call:
        """``call``, its duration observed as ``api``'s ``webmethod``."""
        observe = self.provider_duration.labels(api, webmethod).observe

        def timed(kwargs: dict[str, Any]) -> Any:
            started = time.perf_counter()
            try:
                return call(kwargs)
            finally:
                observe(time.perf_counter() - started)

        return cast(Call, timed)
