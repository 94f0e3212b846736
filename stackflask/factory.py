"""``create_app``: run config -> registry -> resolver -> blueprints.

Startup time. The only place that imports APIs, builds providers and registers
blueprints. Everything loaded lives in ``app.extensions["stackflask"]``; a
configuration that cannot be served raises one :class:`StartupError` listing
every problem, and no app is returned.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, request
from flask.ctx import RequestContext
from werkzeug.exceptions import HTTPException
from werkzeug.wsgi import ClosingIterator

from . import builtin, docspage, loop
from .access_policy import RoutePolicy, parse_rules, route_resource
from .auth import BearerAuth
from .blueprint import MethodPlan, Route, build_blueprint, flask_rule
from .config import RunConfig, load_run_config
from .cors import enable_cors
from .errors import error_response, json_response
from .fields import UnsupportedType
from .hints import FieldFactory
from .log import (
    ACCESS_RECORD,
    AccessRecord,
    configure_logging,
    escape_control,
    route_labels,
)
from .log import request_id as log_request_id
from .problems import Problems, StartupError
from .registry import LoadedApi, Registry, build_registry, load_api_specs, load_apis
from .resolver import (
    ResolvedProvider,
    resolve_providers,
    run_bounded,
    served_apis,
    stop_providers,
)
from .streaming import OpenStreams
from .tls import ServedBy, tls_problems
from .tokens import build_verifier

if TYPE_CHECKING:
    from .metrics import Metrics
    from .tracing import Tracing

if sys.version_info >= (3, 12):
    from importlib.resources import as_file, files
else:
    from importlib_resources import as_file, files

log = logging.getLogger("stackflask.server")

CONFIG_ENV = "STACKFLASK_CONFIG"
#: Seconds the open streams' generators get to close when the server stops.
STREAM_CLOSE_TIMEOUT = 2.0
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}\Z")


#: Seconds after a large request's response is closed before the collection:
#: the last of its objects are freed just after (by the server, on the loop).
COLLECT_DELAY = 0.05


class _Collector:
    """A full collection on the loop shortly after a large request.

    Binding a large body makes hundreds of thousands of small objects; when they
    are freed, CPython's free lists keep some of them (dicts, floats, tuples, in
    fresh 1 MiB pymalloc arenas), and each one kept keeps its whole arena
    resident. A full collection empties the free lists, so that the arenas are
    returned (about 8 MiB after 640,000 records; a few ms). Large requests in
    a row share one collection.
    """

    pending = False

    def soon(self) -> None:
        if self.pending:
            return
        self.pending = True
        running = loop.get_loop_thread().loop
        try:
            running.call_soon_threadsafe(running.call_later, COLLECT_DELAY, self._collect)
        except RuntimeError:  # the loop is closed: nothing runs any more
            self.pending = False

    def _collect(self) -> None:
        self.pending = False
        gc.collect()


_collector = _Collector()


class StackFlask(Flask):
    """Flask, with every ``async`` view or hook run on the process's one loop,
    a request id on every response and one access-log line per request.

    The request id and the access log live in :meth:`wsgi_app` rather than in
    request hooks: they read the WSGI environ directly, which costs a fraction
    of a hook on the hot path.
    """

    def wsgi_app(self, environ: dict[str, Any], start_response: Any) -> Any:
        rid = environ.get("HTTP_X_REQUEST_ID", "")
        if not _REQUEST_ID.match(rid):
            rid = os.urandom(16).hex()
        stack = self.extensions["stackflask"]
        record = AccessRecord(environ, rid, stack.route_labels, stack.metrics)
        token = log_request_id.set(rid)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append(("X-Request-ID", rid))
            record.status = status
            record.headers = headers
            return start_response(status, headers, exc_info)

        try:
            if stack.pid != os.getpid():
                try:
                    stack.rebuild_after_fork()
                except StartupError as exc:  # tried again on the next request
                    log.error("this process could not build its providers:\n%s", exc)
                    response = json_response(
                        {"detail": "Service unavailable: the providers failed to start."}, 503
                    )
                    return record.sent_by(response(environ, start))
            body = super().wsgi_app(environ, start)
            if len(environ.get("CONTENT_LENGTH") or "") > 6:  # a body of a megabyte or more
                body = ClosingIterator(body, _collector.soon)
            return record.sent_by(body)
        except BaseException:
            record.end()
            raise
        finally:
            log_request_id.reset(token)

    def request_context(self, environ: dict[str, Any]) -> RequestContext:
        context = super().request_context(environ)
        record = environ.get(ACCESS_RECORD)
        if record is not None:  # for its route, which Flask no longer holds at the end
            record.request = context.request
        return context

    def async_to_sync(
        self, func: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            return loop.run(func(*args, **kwargs))

        return run


@dataclass
class Stack:
    """What one app serves: its config, registry, providers, routes and open streams.

    ``pid`` is the process the providers were built in: a worker forked from
    it (``gunicorn --preload``) builds its own on its first request.
    """

    config: RunConfig
    registry: Registry
    providers: list[ResolvedProvider]
    fields: FieldFactory
    routes: list[Route] = field(default_factory=list)
    streams: OpenStreams = field(default_factory=OpenStreams)
    pid: int = field(default_factory=os.getpid)
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _openapi: dict[str, Any] | None = None
    tracing: Tracing | None = None
    #: Prometheus metrics, when ``server.metrics`` is on.
    metrics: Metrics | None = None
    #: Flask endpoint -> (API, route template), for the access line and the metrics.
    route_labels: dict[str, tuple[str, str]] = field(default_factory=dict)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document of this app, built on first use."""
        if self._openapi is None:
            from .openapi import build_document

            title = self.config.image_name or "stackflask"
            self._openapi = build_document(
                self.routes, self.fields, title, builtin.version(), self.config.server.auth
            )
        return self._openapi

    def rebuild_after_fork(self) -> None:
        """Build this process's own providers, on its own loop (``initialize()``
        included), in place of the ones inherited from the parent process."""
        with self._lock:
            if self.pid == os.getpid():
                return
            problems = Problems()
            built = resolve_providers(self.config, self.registry, problems)
            problems.raise_if_any()
            fresh = {p.provider_id: p for p in built}
            for provider in self.providers:
                provider.impl = fresh[provider.provider_id].impl
            if self.tracing is not None:
                self.tracing.trace_protocols(self.providers)
            self.pid = os.getpid()
            log.info("providers built in process %d", self.pid)

    def shutdown(self) -> None:
        """Close the open streams' generators, then await every provider's
        ``shutdown()`` once, in reverse build order.

        Bounded: the whole takes at most ``server.shutdown_timeout`` plus a
        second, even when a provider blocks the loop or ignores its
        cancellation; the provider that did not stop is named.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self.pid != os.getpid():
            return  # the parent's providers are the parent's to shut down
        timeout = self.config.server.shutdown_timeout
        deadline = time.monotonic() + timeout + 1
        closing = min(STREAM_CLOSE_TIMEOUT, timeout / 2)
        if len(self.streams) and not run_bounded(
            lambda: loop.run(self.streams.close_all(closing)), closing
        ):
            log.error("open streams did not close within %g s", closing)
        stop_providers(self.providers, timeout, deadline)


def default_config() -> Path:
    """The embedded default run config (the ``config/`` folder, installed as
    the package ``stackflask.defaults``)."""
    try:
        resource = files("stackflask.defaults") / "run.yaml"
    except ModuleNotFoundError:
        raise StartupError(
            ["the embedded default config is not installed (pip install -e .); "
             f"pass a config path or set {CONFIG_ENV}"]
        ) from None
    with as_file(resource) as path:
        return Path(path)


def create_app(
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    tracing: bool = False,
    metrics: bool = False,
    served_by: ServedBy | None = None,
) -> StackFlask:
    """Build the app for a run config: a path, a mapping, or by default the
    file named by ``STACKFLASK_CONFIG``, else the embedded default.

    ``tracing`` turns OpenTelemetry tracing on even when ``server.tracing``
    is off (``stackflask run --tracing``); ``metrics``, Prometheus metrics
    when ``server.metrics`` is off (``stackflask run --metrics``).
    ``server.tls_*`` is refused unless stackflask's gunicorn config serves
    it; ``served_by`` is for the ``stackflask`` commands, which know their
    server (see :mod:`stackflask.tls`).

    Raises :class:`StartupError` listing every problem found.
    """
    configure_logging()
    run_config, registry, problems = load_registry(config)
    problems.extend(tls_problems(run_config, served_by))
    apis = registry.apis
    factory = FieldFactory()
    served = [apis[name] for name in served_apis(run_config) if name in apis]
    plans = plan_methods(served, factory, problems)
    tracer = None
    if tracing or run_config.server.tracing:
        where = "--tracing" if tracing else f"{run_config.source}: server.tracing"
        tracer = start_tracing(where, problems)
    meter = None
    if metrics or run_config.server.metrics:
        where = "--metrics" if metrics else f"{run_config.source}: server.metrics"
        meter = start_metrics(where, problems)
    providers = resolve_providers(run_config, registry, problems)
    problems.raise_if_any()
    try:
        stack = Stack(run_config, registry, providers, factory, tracing=tracer, metrics=meter)
        app = _assemble(stack, plans)
    except BaseException:
        stop_providers(providers, run_config.server.shutdown_timeout)
        raise
    atexit.register(app.extensions["stackflask"].shutdown)
    return app


def start_tracing(where: str, problems: Problems) -> Tracing | None:
    """The app's tracing, imported only now; a missing ``stackflask[otel]`` is a problem."""
    try:
        from . import tracing
    except ModuleNotFoundError as exc:
        problems.append(
            f"{where}: tracing needs OpenTelemetry, but {exc.name!r} is not installed: "
            "pip install 'stackflask[otel]'"
        )
        return None
    return tracing.start_tracing(where, problems)


def start_metrics(where: str, problems: Problems) -> Metrics | None:
    """The app's metrics, imported only now; a missing ``stackflask[metrics]`` is a problem."""
    try:
        from .metrics import Metrics
    except ModuleNotFoundError as exc:
        problems.append(
            f"{where}: metrics need prometheus_client, but {exc.name!r} is not installed: "
            "pip install 'stackflask[metrics]'"
        )
        return None
    try:
        return Metrics(where)
    except StartupError as exc:
        problems.extend(exc.problems)
        return None


def load_registry(
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
) -> tuple[RunConfig, Registry, Problems]:
    """The run config, every API it can load and every provider spec known.

    Problems found on the way are returned, not raised; only an unreadable or
    invalid run config raises :class:`StartupError`.
    """
    run_config = load_run_config(resolve_config(config))
    problems = Problems()
    specs = load_api_specs(run_config.external_apis_dir, run_config.source, problems)
    registry = build_registry(run_config, load_apis(specs, problems), problems)
    return run_config, registry, problems


def resolve_config(
    config: str | os.PathLike[str] | Mapping[str, Any] | None,
) -> str | os.PathLike[str] | Mapping[str, Any]:
    """``config``, else ``$STACKFLASK_CONFIG``, else the embedded default."""
    if config is not None:
        return config
    return os.environ.get(CONFIG_ENV) or default_config()


def plan_methods(
    served: list[LoadedApi], factory: FieldFactory, problems: Problems
) -> dict[str, dict[str, MethodPlan]]:
    """A plan for every served webmethod, after checking routes do not collide."""
    exact = FieldFactory(exact=True)
    plans: dict[str, dict[str, MethodPlan]] = {}
    owners: dict[tuple[str, str], str] = {
        (method, _shape(path)): "stackflask's built-in endpoints"
        for method, path in builtin.BUILTIN_ROUTES
    }
    for loaded in served:
        plans[loaded.spec.name] = {}
        for endpoint in loaded.endpoints:
            name = f"{loaded.spec.name}.{endpoint.name} ({loaded.spec.source})"
            key = (endpoint.record.method, _shape("/v1" + endpoint.record.route))
            if key in owners:
                problems.append(
                    f"{loaded.spec.source}: protocol: route {key[0]} /v1{endpoint.record.route} "
                    f"is declared by both {owners[key]} and {name}"
                )
                continue
            owners[key] = name
            try:
                plans[loaded.spec.name][endpoint.key] = MethodPlan.for_endpoint(
                    endpoint, factory, exact
                )
            except (UnsupportedType, NameError, TypeError) as exc:
                problems.append(
                    f"{loaded.spec.source}: protocol: {loaded.spec.protocol}.{endpoint.name}: {exc}"
                )
    return plans


def _shape(path: str) -> str:
    return flask_rule(re.sub(r"\{([A-Za-z0-9_]+)(:path)?\}", r"{_\2}", path))


def _assemble(stack: Stack, plans: dict[str, dict[str, MethodPlan]]) -> StackFlask:
    app = StackFlask("stackflask")
    app.extensions["stackflask"] = stack
    server = stack.config.server
    if stack.tracing is not None:
        stack.tracing.instrument(app)
        stack.tracing.trace_protocols(stack.providers)
    app.config["MAX_CONTENT_LENGTH"] = server.max_request_bytes
    loop.get_loop_thread().lag_warning = server.loop_lag_warning
    for provider in stack.providers:
        bp, routes = build_blueprint(
            provider.api, provider, plans[provider.api.spec.name], stack.streams,
            server.request_timeout, stack.tracing, stack.metrics,
        )
        app.register_blueprint(bp)
        stack.routes += routes
    app.register_blueprint(builtin.bp)
    app.register_blueprint(builtin.docs_bp)
    app.register_blueprint(docspage.docs_blueprint())
    if stack.metrics is not None:
        stack.metrics.register(app)
    if server.auth is not None:
        scopes = {
            f"{route.api}.{route.name}": route.endpoint.record.required_scope
            for route in stack.routes
            if route.endpoint.record.required_scope
        }
        public = {f"{route.api}.{route.name}" for route in stack.routes if route.endpoint.record.public}
        public.add(docspage.ASSET_ENDPOINT)
        verifier = build_verifier(server.auth, stack.config.base_dir, stack.config.source)
        app.before_request(BearerAuth(verifier, scopes, server.auth["public"], public).check)
    if server.auth is not None and server.auth["access_policy"]:
        app.before_request(_access_policy_check(stack.routes, server.auth))
    if server.cors is not None:
        enable_cors(app, server.cors, stack.config.source)
    if server.quota is not None:  # after authentication: the principal is the key
        start_quota(app, stack)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    for rule in app.url_map.iter_rules():  # the access line's labels, known now
        stack.route_labels.setdefault(rule.endpoint, route_labels(rule.endpoint, rule.rule))
    return app


def start_quota(app: Flask, stack: Stack) -> None:
    """``server.quota`` on the external API routes, with flask-limiter imported
    only now; a missing ``stackflask[quota]`` is a :class:`StartupError`."""
    quota, source = stack.config.server.quota, stack.config.source
    assert quota is not None
    try:
        from .quota import install_quota
    except ModuleNotFoundError as exc:
        raise StartupError([
            f"{source}: server.quota: quotas need flask-limiter, but {exc.name!r} is not "
            "installed: pip install 'stackflask[quota]'"
        ]) from None
    counted = {f"{route.api}.{route.name}" for route in stack.routes}
    install_quota(app, quota, counted, source, stack.config.base_dir)


def _access_policy_check(
    routes: list[Route], auth: Mapping[str, Any]
) -> Callable[[], Response | None]:
    """A ``before_request`` hook, run after authentication: ``server.auth.access_policy``
    on each external API route (but the public ones), as :mod:`stackflask.access_policy` says."""
    policy = RoutePolicy(
        parse_rules(auth["access_policy"]),
        {
            f"{route.api}.{route.name}": (route.method, route_resource(route.api, route.endpoint.name))
            for route in routes
            if not route.endpoint.record.public
        },
        auth["public"],
    )

    def check() -> Response | None:
        principal = g.get("stackflask_principal")
        detail = policy.denial(request.method, request.endpoint, request.path, principal)
        return None if detail is None else json_response({"detail": detail}, 403)

    return check


def _http_error(exc: HTTPException) -> Response:
    response = exc.get_response()
    headers = [(k, v) for k, v in response.headers.items() if k.lower() not in ("content-type", "content-length")]
    return json_response({"detail": exc.name}, exc.code or 500, headers)


def _unexpected_error(exc: Exception) -> Response:
    return error_response(exc, escape_control(f"{request.method} {request.path}"))
