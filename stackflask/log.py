"""Logging: levels from the environment, text or JSON lines, request ids.

Startup time. ``STACKFLASK_LOGGING`` (or Llama Stack's ``LLAMA_STACK_LOGGING``)
holds ``all=debug`` or ``category=level,...``; a category is one of stackflask's
loggers (``config``, ``registry``, ``resolver``, ``request``, ``server``) or any
other logger name, such as a provider package's. ``STACKFLASK_LOG_FORMAT=json``
writes one JSON object per line. Every line logged while a request is served,
on the request's thread or by its provider coroutine on the event loop, carries
the request's id.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import os
import re

ROOT = "stackflask"
CATEGORIES = ("config", "registry", "resolver", "request", "server")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

#: The id of the request being served in this context, ``-`` outside one.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request_id, message."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


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
    """
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
