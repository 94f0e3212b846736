"""Logging: levels from the environment, text or JSON lines, request ids,
and the access line.

Startup time configures it. ``STACKFLASK_LOGGING`` (or Llama Stack's
``LLAMA_STACK_LOGGING``) holds ``all=debug`` or ``category=level,...``; a
category is one of stackflask's loggers (``config``, ``registry``,
``resolver``, ``request``, ``server``) or any other logger name, such as a
provider package's. ``STACKFLASK_LOG_FORMAT=json`` writes one JSON object per
line, with the fields a caller passed in ``extra=``. Every line logged while a
request is served, on the request's thread or by its provider coroutine on the
event loop, carries the request's id; an exception the app logs before raising
it to the server (:func:`log_raised`) is not logged again by waitress or
gunicorn.

Request time keeps one :class:`AccessRecord` per request, which the access
line and the metrics both read once the whole body has been sent.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

ROOT = "stackflask"
CATEGORIES = ("config", "registry", "resolver", "request", "server")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

#: The id of the request being served in this context, ``-`` outside one.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

#: Where a request's :class:`AccessRecord` is kept in its WSGI environ.
ACCESS_RECORD = "stackflask.access"
#: The (api, route) labels of a request no route matched.
UNMATCHED = ("-", "<unmatched>")

access_log = logging.getLogger("stackflask.request")

#: What every record has; the rest of its attributes came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "request_id", "taskName",
}

_CONVERTER = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")  # <name>, <path:name>, <int(min=1):name>
_UNSAFE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")  # " or \ or not printable ASCII


def escape_control(text: str) -> str:
    """``text`` with each ``"``, ``\\`` and character outside printable ASCII
    written as ``\\xNN``, so that a client's path can neither break a log line
    nor forge another."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text  # the access line's usual case, at a third of the regex's cost
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:  # always so for a WSGI path, which is bytes read as latin-1
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record that has none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


#: The loggers on which waitress and gunicorn log an exception the app raised to them.
SERVER_LOGGERS = ("waitress", "gunicorn.error")
_LOGGED = "_stackflask_logged"


def log_raised(logger: logging.Logger, exc: BaseException, msg: str, *args: object) -> None:
    """Log ``exc`` at ERROR with its traceback, before raising it to the server
    (which aborts the connection): the server's own line for it is dropped by
    :func:`not_logged_yet`, so that it is logged once, with the request's id."""
    logger.error(msg, *args, exc_info=exc)
    setattr(exc, _LOGGED, True)


def not_logged_yet(record: logging.LogRecord) -> bool:
    """A filter of :data:`SERVER_LOGGERS`: false for a record of an exception
    :func:`log_raised` has logged."""
    exc = record.exc_info[1] if record.exc_info else None
    return not getattr(exc, _LOGGED, False)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request_id, message, then
    every field passed with ``extra=`` (a value JSON cannot hold is written as
    its ``repr``; a field named like one of the first five is left out)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        attributes = record.__dict__
        extra = [key for key in attributes if key not in _STANDARD]
        for key in extra:
            entry.setdefault(key, attributes[key])
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        try:
            return json.dumps(entry, ensure_ascii=False, default=repr)
        except (TypeError, ValueError):  # keys JSON cannot hold, or a cycle
            for key in extra:
                entry[key] = _jsonable(entry[key])
            return json.dumps(entry, ensure_ascii=False, default=repr)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, default=repr)
    except (TypeError, ValueError):
        return repr(value)
    return value


class RequestObserver(Protocol):
    """What is told of each request besides the access line (the metrics)."""

    def started(self, record: AccessRecord) -> None: ...

    def finished(self, record: AccessRecord) -> None: ...


class AccessRecord:
    """One request as its access line and the metrics see it.

    Made by the app as a request comes in; :meth:`sent_by` gives the server
    the response's body and ends the record at once, or, for a body sent as
    it is produced (no ``Content-Length``: server-sent events, a streamed raw
    response), once the server closes it, so that the duration and the bytes
    are the whole body's. A stream counts its events in :attr:`events`.
    """

    __slots__ = (
        "environ", "request_id", "started", "status", "headers", "bytes_sent", "events",
        "request", "api", "route", "duration", "_routes", "_observer",
    )

    def __init__(
        self,
        environ: dict[str, Any],
        rid: str,
        routes: dict[str, tuple[str, str]],
        observer: RequestObserver | None = None,
    ) -> None:
        self.started = time.perf_counter()
        self.environ = environ
        self.request_id = rid
        #: The WSGI status line and headers, once the response started.
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.bytes_sent = 0
        #: Server-sent events written, for an event stream; else ``None``.
        self.events: int | None = None
        #: The app's request object, for its matched route; dropped by :meth:`end`.
        self.request: Any = None
        #: The API and route template served, or :data:`UNMATCHED`; set by :meth:`end`.
        self.api, self.route = UNMATCHED
        #: Seconds from the request coming in to its body sent; set by :meth:`end`.
        self.duration: float | None = None
        self._routes = routes
        self._observer = observer
        environ[ACCESS_RECORD] = self
        if observer is not None:
            observer.started(self)

    @property
    def status_code(self) -> str:
        """The three digits of the status, ``-`` if the response never started."""
        return self.status[:3] if self.status else "-"

    def sent_by(self, body: Iterable[bytes]) -> Iterable[bytes]:
        """``body`` as the server should send it, the record ended or to end
        when the server closes it."""
        for name, value in self.headers:
            if name == "Content-Length" or name.lower() == "content-length":
                self.bytes_sent = int(value) if value.isdigit() else 0
                self.end()
                return body
        if self.status is None:
            self.end()
            return body
        return _Streamed(body, self)

    def end(self) -> None:
        """Note the duration and the route served, write the access line and
        tell the observer; the first call only."""
        if self.duration is not None:
            return
        self.duration = time.perf_counter() - self.started
        rule = getattr(self.request, "url_rule", None)
        self.request = None
        if rule is not None:
            labels = self._routes.get(rule.endpoint)
            if labels is None:  # a rule added to the app after create_app
                labels = self._routes[rule.endpoint] = route_labels(rule.endpoint, rule.rule)
            self.api, self.route = labels
        if access_log.isEnabledFor(logging.INFO):
            write_access_line(self)
        if self._observer is not None:
            self._observer.finished(self)
        # The environ holds this record and the request holds the environ:
        # undone, so that reference counting frees them, not the collector.
        self.environ.pop(ACCESS_RECORD, None)


def route_labels(endpoint: str, rule: str) -> tuple[str, str]:
    """The API and route template of a Flask endpoint and its URL rule:
    ``weather.get_forecast``, ``/v1/weather/forecast/<city>`` gives
    ``("weather", "/v1/weather/forecast/{city}")``; the built-in routes' API
    is ``_stackflask``."""
    blueprint = endpoint.rpartition(".")[0]
    api = "_stackflask" if not blueprint or blueprint.startswith("_stackflask") else blueprint
    return api, _CONVERTER.sub(_placeholder, rule)


def _placeholder(match: re.Match[str]) -> str:
    return f"{{{match.group(2)}:path}}" if match.group(1) == "path" else f"{{{match.group(2)}}}"


class _Streamed:
    """A body sent as it is produced, its bytes counted; closing it ends its record."""

    __slots__ = ("_body", "_record")

    def __init__(self, body: Iterable[bytes], record: AccessRecord) -> None:
        self._body = body
        self._record = record

    def __iter__(self) -> Iterator[bytes]:
        record = self._record
        for chunk in self._body:
            record.bytes_sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._record.end()


def write_access_line(record: AccessRecord) -> None:
    """``remote "METHOD path?query" status 12.3ms``, with the request's fields
    as the record's ``extra`` (a JSON line holds them)."""
    environ = record.environ
    method = environ.get("REQUEST_METHOD")
    path = environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING")
    remote = environ.get("REMOTE_ADDR") or "-"
    status = record.status_code
    ms = (record.duration or 0.0) * 1000
    sent = f"{method} {path}"
    line = f'{remote} "{escape_control(f"{sent}?{query}" if query else sent)}" {status} {ms:.1f}ms'
    if not path.isascii():  # WSGI gives the path's bytes as latin-1
        path = path.encode("latin-1").decode("utf-8", "replace")
    fields = {
        "request_id": record.request_id,
        "method": method,
        "api": record.api,
        "route": record.route,
        "path": path,
        "status": int(status) if status.isdigit() else None,
        "duration_ms": round(ms, 3),
        "bytes_sent": record.bytes_sent,
        "remote_addr": remote,
        "user_agent": environ.get("HTTP_USER_AGENT"),
    }
    if record.events is not None:
        fields["events"] = record.events
    # makeRecord + handle: the access line skips findCaller's frame walk; the
    # fields are added at once, as none can clash with a record's own.
    entry = access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, line, (), None)
    entry.__dict__.update(fields)
    access_log.handle(entry)


def parse_levels(spec: str) -> dict[str, int]:
    """``"all=debug,request=warning"`` -> ``{"stackflask": 10, "stackflask.request": 30}``.

    Raises ``ValueError`` naming a bad entry.
    """
    levels: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        category, sep, level = item.partition("=")
        number = logging.getLevelName(level.strip().upper())
        if not sep or not isinstance(number, int):
            raise ValueError(f"{item!r} is not category=level (level: debug, info, warning, error)")
        category = category.strip()
        name = ROOT if category == "all" else (
            f"{ROOT}.{category}" if category in CATEGORIES else category
        )
        levels[name] = number
    return levels


def make_handler(fmt: str | None = None) -> logging.Handler:
    """A stderr handler in the format ``STACKFLASK_LOG_FORMAT`` asks (text or json)."""
    fmt = fmt or os.environ.get("STACKFLASK_LOG_FORMAT", "text")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging() -> None:
    """Give stackflask's loggers a handler (once) and the levels the environment asks.

    Nothing is added when the application already configured the root logger.
    The servers' loggers get the :func:`not_logged_yet` filter in any case.
    """
    for name in SERVER_LOGGERS:
        logging.getLogger(name).addFilter(not_logged_yet)  # once: the same function
    root = logging.getLogger(ROOT)
    if root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    if not root.handlers and not logging.getLogger().handlers:
        root.addHandler(make_handler())
    spec = os.environ.get("STACKFLASK_LOGGING") or os.environ.get("LLAMA_STACK_LOGGING") or ""
    try:
        levels = parse_levels(spec)
    except ValueError as exc:
        root.warning("STACKFLASK_LOGGING: %s; ignored", exc)
        return
    for name, level in levels.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not name.startswith(ROOT) and not logger.handlers and root.handlers:
            logger.addHandler(root.handlers[0])


def debug_enabled() -> bool:
    return logging.getLogger(ROOT).isEnabledFor(logging.DEBUG)
