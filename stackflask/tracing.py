"""OpenTelemetry tracing: a span per request, per provider call, per traced method.

Startup and request time; imported only when tracing is on (``server.tracing``
or ``stackflask run --tracing``), so that ``import stackflask`` never imports
OpenTelemetry. Startup takes the process's tracer provider (the global one when
something, such as ``opentelemetry-instrument``, set it; else an SDK provider
built from the ``OTEL_*`` environment variables and set as the global one),
instruments the app with ``opentelemetry-instrumentation-flask`` and wraps the
methods of ``@trace_protocol`` providers. At request time each provider call
runs in a span of its own, a child of the request's span; the span is current
while the provider's coroutine runs on the loop, because the loop bridge
carries the request's context variables there.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
from collections.abc import AsyncIterator, Callable, Mapping
from importlib import metadata
from typing import Any, TypeVar, cast

from flask import Flask
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import __version__
from .compat import traced_by_protocol
from .log import request_id as log_request_id
from .problems import Problems
from .resolver import ResolvedProvider

Call = TypeVar("Call", bound=Callable[[dict[str, Any]], Any])

DEFAULT_SERVICE_NAME = "stackflask"
#: ``OTEL_TRACES_EXPORTER`` names that are not entry point names.
_OTLP_EXPORTERS = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_EXPORTER_PACKAGES = {
    "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http",
    "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
}


def start_tracing(where: str, problems: Problems) -> Tracing | None:
    """The process's tracer provider, as a :class:`Tracing`; ``None`` with the
    problems appended when the ``OTEL_*`` variables ask for what is not installed.

    ``where`` names the setting that turned tracing on, for the messages.
    """
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        return Tracing(current)
    found: list[str] = []
    exporters = span_exporters(os.environ, found)
    if exporters is None:
        problems += [f"{where}: {line}" for line in found]
        return None
    provider = build_tracer_provider(exporters)
    trace.set_tracer_provider(provider)
    return Tracing(provider)


def build_tracer_provider(exporters: list[SpanExporter]) -> TracerProvider:
    """An SDK provider exporting to ``exporters`` through batch processors.

    Its resource is the SDK's, from ``OTEL_RESOURCE_ATTRIBUTES`` and
    ``OTEL_SERVICE_NAME``; the service is named ``stackflask`` when neither
    names it. The sampler and span limits follow their ``OTEL_*`` variables
    (the SDK reads them). A provider built before a fork keeps working in the
    child: the SDK's batch processor starts its export thread anew there.
    """
    named = OTELResourceDetector().detect().attributes.get(SERVICE_NAME)
    resource = Resource.create({} if named else {SERVICE_NAME: DEFAULT_SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def span_exporters(environ: Mapping[str, str], problems: list[str]) -> list[SpanExporter] | None:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (default ``otlp``), built;
    ``None`` with the problems appended when one cannot be.

    ``otlp`` is OTLP over HTTP (``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``: over
    gRPC, if its exporter is installed), ``console`` prints each span as JSON,
    ``none`` exports nothing; any other name is an installed exporter's entry
    point (``opentelemetry_traces_exporter``).
    """
    setting = environ.get("OTEL_TRACES_EXPORTER", "otlp")
    protocol_setting = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    if protocol_setting not in environ:
        protocol_setting = "OTEL_EXPORTER_OTLP_PROTOCOL"
    protocol = environ.get(protocol_setting, "http/protobuf")
    exporters: list[SpanExporter] = []
    found = len(problems)
    for name in (part.strip().lower() for part in setting.split(",")):
        if name in ("", "none"):
            continue
        if name == "otlp":
            if protocol not in _OTLP_EXPORTERS:
                problems.append(
                    f"{protocol_setting}={protocol!r}: not supported for traces; "
                    "use http/protobuf (the default) or grpc"
                )
                continue
            name = _OTLP_EXPORTERS[protocol]
        points = metadata.entry_points(group="opentelemetry_traces_exporter", name=name)
        if not points:
            package = _EXPORTER_PACKAGES.get(name)
            problems.append(
                f"OTEL_TRACES_EXPORTER={setting!r}: no exporter {name!r} is installed "
                + (f"(pip install {package})" if package else "(use otlp, console or none)")
            )
            continue
        exporters.append(next(iter(points)).load()())
    return None if len(problems) > found else exporters


class Tracing:
    """The tracer of one app, and what it wraps in spans."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("stackflask", __version__)

    def instrument(self, app: Flask) -> None:
        """A span per request, through ``opentelemetry-instrumentation-flask``
        (an incoming ``traceparent`` makes it a child of the caller's span).

        Called before any other ``before_request`` hook is registered, so that
        requests a hook answers (a ``401``) have their span too. An app already
        instrumented (``opentelemetry-instrument`` patches Flask itself) is left
        as it is.
        """
        if getattr(app, "_is_instrumented_by_opentelemetry", False):
            return
        FlaskInstrumentor.instrument_app(
            app,
            request_hook=_tag_request_id,
            tracer_provider=self.provider,
            enable_commenter=False,
        )

    def traced_call(
        self,
        call: Call,
        name: str,
        attributes: dict[str, str],
    ) -> Call:
        """``call`` in a span named ``name``, current while the provider runs.

        An exception escaping the provider (a timeout included) sets the span's
        error status and is recorded on it. A stream's span covers the whole
        stream, to its end or its close, and counts its items: one span per item
        would make a trace of thousands of spans for one request, and the time
        of each item is in the stream's own spans when the provider traces it.
        """
        tracer = self.tracer

        def traced(kwargs: dict[str, Any]) -> Any:
            span = tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes)
            current = trace.set_span_in_context(span)
            token = otel_context.attach(current)
            try:
                result = call(kwargs)
            except BaseException as exc:
                _failed(span, exc)
                span.end()
                raise
            finally:
                otel_context.detach(token)
            if isinstance(result, AsyncIterator):
                return TracedStream(result, span, current)
            span.end()
            return result

        return cast(Call, traced)

    def trace_protocols(self, providers: list[ResolvedProvider]) -> None:
        """Give every public method of the providers marked by ``@trace_protocol``
        (on their class, a base or their API's protocol) a span of its own.

        The wrappers are set on each instance, never on its class, so that other
        apps in the process are not traced, and are made again for providers
        rebuilt after a fork.
        """
        for provider in providers:
            impl = provider.impl
            if not traced_by_protocol(impl, provider.api.protocol):
                continue
            cls = type(impl)
            for name in dir(cls):
                if name.startswith("_") or not inspect.isfunction(inspect.getattr_static(cls, name)):
                    continue
                method = getattr(impl, name)
                setattr(impl, name, self._traced_method(method, f"{cls.__name__}.{name}"))

    def _traced_method(self, method: Callable[..., Any], name: str) -> Callable[..., Any]:
        """``method`` in a span; a coroutine, async generator or plain function as it was."""
        tracer = self.tracer
        attributes = {"code.function.name": f"{method.__module__}.{method.__qualname__}"}
        if inspect.iscoroutinefunction(method):

            async def traced_coroutine(*args: Any, **kwargs: Any) -> Any:
                with tracer.start_as_current_span(name, attributes=attributes):
                    return await method(*args, **kwargs)

            return functools.wraps(method)(traced_coroutine)
        if inspect.isasyncgenfunction(method):

            async def traced_generator(*args: Any, **kwargs: Any) -> Any:
                span = tracer.start_span(name, attributes=attributes)
                stream = TracedStream(method(*args, **kwargs), span, trace.set_span_in_context(span))
                try:
                    async for item in stream:
                        yield item
                finally:
                    await stream.aclose()

            return functools.wraps(method)(traced_generator)

        def traced_function(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(name, attributes=attributes):
                return method(*args, **kwargs)

        return functools.wraps(method)(traced_function)


class TracedStream:
    """An async iterator whose items are produced with ``span`` current, and
    which ends ``span`` when it ends, fails or is closed.

    ``span`` is made current for each step alone: each step of a stream runs
    in a task of its own, and a context attached in one task cannot be
    detached in another.
    """

    def __init__(self, iterator: AsyncIterator[Any], span: Span, current: otel_context.Context) -> None:
        self.iterator = iterator
        self.span = span
        self.current = current
        self.items = 0
        self.ended = False

    def __aiter__(self) -> TracedStream:
        return self

    async def __anext__(self) -> Any:
        token = otel_context.attach(self.current)
        try:
            item = await self.iterator.__anext__()
        except StopAsyncIteration:
            self._end()
            raise
        except BaseException as exc:
            _failed(self.span, exc)
            self._end()
            raise
        finally:
            otel_context.detach(token)
        self.items += 1
        return item

    async def aclose(self) -> None:
        """Close the provider's generator (its ``finally`` blocks run), then end the span."""
        try:
            aclose = getattr(self.iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._end()

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.span.set_attribute("stackflask.stream.items", self.items)
            self.span.end()


def _failed(span: Span, exc: BaseException) -> None:
    if isinstance(exc, asyncio.CancelledError):
        span.set_status(Status(StatusCode.ERROR, "cancelled"))
        return
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _tag_request_id(span: Span, environ: dict[str, Any]) -> None:
    if span.is_recording():
        span.set_attribute("stackflask.request_id", log_request_id.get())
