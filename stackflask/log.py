"""Logging: levels from ``STACKFLASK_LOGGING``, request ids on every line.

Startup time. ``STACKFLASK_LOGGING`` (or Llama Stack's ``LLAMA_STACK_LOGGING``)
holds ``all=debug`` or ``category=level,...``; a category is one of stackflask's
loggers (``config``, ``registry``, ``resolver``, ``request``, ``server``) or any
other logger name, such as a provider package's.
"""

from __future__ import annotations

import logging
import os

from flask import g, has_request_context

ROOT = "stackflask"
CATEGORIES = ("config", "registry", "resolver", "request", "server")
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (``-`` outside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            rid = g.get("request_id") if has_request_context() else None
            record.request_id = rid or "-"
        return True


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


def configure_logging() -> None:
    """Give stackflask's loggers a handler (once) and the levels the environment asks."""
    root = logging.getLogger(ROOT)
    if root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    if not root.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
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
