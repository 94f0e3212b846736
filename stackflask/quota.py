"""Quotas: ``server.quota``, requests per client and period, through flask-limiter.

Startup time: :func:`install_quota` gives the app one flask-limiter ``Limiter``
on the configured storage: memory (per process) by default, Redis through
``storage_uri``, or Llama Stack's SQLite ``kvstore`` through
:class:`SQLiteStorage`, shared by the processes of one host. Request time:
once authentication has run, each request to an external API route counts
once against its client: the principal for an authenticated request
(``authenticated_max_requests``), else the client address
(``anonymous_max_requests``). Past the quota, ``429`` with ``Retry-After``; a
storage that fails, ``503``.

This module is the only one that imports flask_limiter and limits (the
``stackflask[quota]`` extra); the factory imports it only when ``server.quota``
is set.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from flask import Flask, Response, g, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from limits.errors import ConfigurationError, StorageError
from limits.storage import Storage

from .errors import json_response
from .problems import StartupError
from .redaction import mask_url_passwords

log = logging.getLogger("stackflask.quota")

SQLITE_SCHEME = "stackflask+sqlite"
#: Seconds a Redis connection or command may take before the request is a 503.
REDIS_TIMEOUT = 5.0
#: Seconds a count waits for another process's count on the SQLite file.
SQLITE_TIMEOUT = 5.0
#: Seconds between two deletions of expired counters from the SQLite file.
SQLITE_SWEEP_INTERVAL = 60.0
#: flask-limiter's name for every counted request: one counter per client, whatever
#: the route (and flask-limiter would exempt an endpoint named ``*.static``).
_SCOPE = "quota"


def install_quota(
    app: Flask, quota: Mapping[str, Any], counted: Collection[str], source: str, base_dir: Path
) -> Limiter:
    """Count requests to the ``counted`` endpoints against ``quota``, ``server.quota``
    of the run config ``source`` (whose folder is ``base_dir``).

    Call it after the authentication hook is installed: the principal it sets
    chooses the key and the limit. Raises :class:`StartupError` when the
    storage cannot be used.
    """
    uri, options, where = _storage(quota, base_dir)
    period = quota["period"]
    anonymous = f"{quota['anonymous_max_requests']} per 1 {period}"
    authenticated = f"{quota['authenticated_max_requests']} per 1 {period}"
    endpoints = frozenset(counted)

    def limit() -> str:
        return authenticated if g.get("stackflask_principal") is not None else anonymous

    def not_counted() -> bool:
        # A CORS preflight is the browser's, not the client's, request.
        return request.method == "OPTIONS" or request.endpoint not in endpoints

    limiter = Limiter(
        client_key,
        application_limits=[limit],
        strategy="fixed-window",
        storage_uri=uri,
        storage_options=options,
        key_prefix=(quota.get("kvstore") or {}).get("namespace") or "",
        request_identifier=lambda: _SCOPE,
        headers_enabled=False,
        swallow_errors=False,
    )
    limiter.request_filter(not_counted)
    if uri.startswith("redis") and importlib.util.find_spec("redis") is None:
        raise StartupError([
            f"{source}: server.quota.storage_uri: Redis needs the redis client, which is "
            "not installed: pip install redis"
        ])
    try:
        limiter.init_app(app)
    except (ConfigurationError, sqlite3.Error, OSError) as exc:
        raise StartupError(
            [f"{source}: server.quota.{where}: cannot be used: {mask_url_passwords(str(exc))}"]
        ) from None

    def exceeded(exc: RateLimitExceeded) -> Response:
        return quota_exceeded(limiter, quota)

    app.register_error_handler(RateLimitExceeded, exceeded)
    app.register_error_handler(StorageError, storage_failed)
    return limiter


def client_key() -> str:
    """Whom the request counts for: its principal, else its client address.

    The address is the WSGI ``REMOTE_ADDR``: the peer, or the client a
    ``ProxyFix`` in front of the app read from ``X-Forwarded-For``.
    """
    principal = g.get("stackflask_principal")
    if principal is not None:
        return f"principal:{principal.name}"
    # Llama Stack's key when the server knows no address (a Unix socket).
    return f"address:{request.remote_addr or 'anonymous'}"


def quota_exceeded(limiter: Limiter, quota: Mapping[str, Any]) -> Response:
    """The 429: Llama Stack's body, the contract's ``detail``, and ``Retry-After``."""
    breached = limiter.current_limit
    reset = breached.window.reset_time if breached is not None else time.time()
    retry_after = max(1, math.ceil(reset - time.time()))
    if g.get("stackflask_principal") is not None:
        allowed = f"{quota['authenticated_max_requests']} requests per {quota['period']} per principal"
    else:
        allowed = f"{quota['anonymous_max_requests']} requests per {quota['period']} per client address"
    return json_response(
        {
            "error": {"message": "Quota exceeded"},
            "detail": f"Quota exceeded: {allowed}; retry after {retry_after} s",
        },
        429,
        {"Retry-After": str(retry_after)},
    )


def storage_failed(exc: StorageError) -> Response:
    """The 503 for a request the quota storage could not count (it is not served)."""
    log.error("server.quota: the quota storage failed: %s", mask_url_passwords(str(exc)))
    return json_response({"detail": "Service unavailable: the quota storage cannot be reached."}, 503)


def _storage(quota: Mapping[str, Any], base_dir: Path) -> tuple[str, dict[str, Any], str]:
    """The limits storage URI, its options, and the field that named it."""
    options: dict[str, Any] = {"wrap_exceptions": True}
    kvstore = quota.get("kvstore")
    if kvstore is not None:
        path = (base_dir / os.path.expanduser(kvstore["db_path"])).resolve()
        return f"{SQLITE_SCHEME}://{quote(os.fspath(path))}", options, "kvstore.db_path"
    uri = quota.get("storage_uri") or "memory://"
    if not uri.startswith("memory:"):
        # Options in the URI (?socket_timeout=...) win over these.
        options.update(socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT)
    return uri, options, "storage_uri"


_CREATE = """
CREATE TABLE IF NOT EXISTS stackflask_quota (
    key TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    expires_at REAL NOT NULL
)
"""
_COUNT = """
INSERT INTO stackflask_quota (key, count, expires_at) VALUES (:key, :amount, :expires_at)
ON CONFLICT (key) DO UPDATE SET
    count = CASE WHEN expires_at <= :now THEN excluded.count ELSE count + excluded.count END,
    expires_at = CASE WHEN expires_at <= :now THEN excluded.expires_at ELSE expires_at END
"""


class SQLiteStorage(Storage):
    """A limits storage in one SQLite file, shared by the processes of one host.

    Each process and thread opens its own connection; a count is one
    immediate transaction, so the workers of a gunicorn never lose one. The
    file is in WAL mode: it must be on a local disk, not on a network share.
    Expired counters are deleted once a minute at most.
    """

    STORAGE_SCHEME = [SQLITE_SCHEME]

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options: float | str | bool) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.path = unquote(urlsplit(uri).path)
        self._local = threading.local()
        self._next_sweep = 0.0
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=SQLITE_TIMEOUT, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_CREATE)
        finally:
            db.close()

    @property
    def base_exceptions(self) -> type[Exception]:
        return sqlite3.Error

    def _db(self) -> sqlite3.Connection:
        local = self._local
        # A connection must not cross a fork (gunicorn --preload).
        if getattr(local, "pid", None) != os.getpid():
            db = sqlite3.connect(self.path, timeout=SQLITE_TIMEOUT, isolation_level=None)
            # WAL with NORMAL: a power cut may lose the last counts, never the file.
            db.execute("PRAGMA synchronous=NORMAL")
            local.db, local.pid = db, os.getpid()
        return local.db

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(_COUNT, {"key": key, "amount": amount, "expires_at": now + expiry, "now": now})
            (count,) = db.execute(
                "SELECT count FROM stackflask_quota WHERE key = ?", (key,)
            ).fetchone()
            if now >= self._next_sweep:
                self._next_sweep = now + SQLITE_SWEEP_INTERVAL
                db.execute("DELETE FROM stackflask_quota WHERE expires_at <= ?", (now,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return int(count)

    def get(self, key: str) -> int:
        row = self._db().execute(
            "SELECT count FROM stackflask_quota WHERE key = ? AND expires_at > ?",
            (key, time.time()),
        ).fetchone()
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        now = time.time()
        row = self._db().execute(
            "SELECT expires_at FROM stackflask_quota WHERE key = ? AND expires_at > ?", (key, now)
        ).fetchone()
        return float(row[0]) if row else now

    def check(self) -> bool:
        try:
            self._db().execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    def reset(self) -> int | None:
        return self._db().execute("DELETE FROM stackflask_quota").rowcount

    def clear(self, key: str) -> None:
        self._db().execute("DELETE FROM stackflask_quota WHERE key = ?", (key,))
