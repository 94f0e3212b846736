"""The built-in endpoints: health, version, the route table, the providers
and the OpenAPI document.

Request time; registered by the factory as the ``_stackflask`` and
``_stackflask_docs`` Blueprints (``/docs`` is :mod:`stackflask.docspage`'s).
"""

from __future__ import annotations

import asyncio
import inspect
from importlib import metadata
from typing import Any

from flask import Blueprint, Response, current_app, request

from . import loop
from .errors import json_response
from .redaction import mask_url_passwords, redact
from .resolver import ResolvedProvider

HEALTH_TIMEOUT = 5.0

bp = Blueprint("_stackflask", __name__, url_prefix="/v1")
docs_bp = Blueprint("_stackflask_docs", __name__)

#: (method, path as listed) of every built-in route.
BUILTIN_ROUTES = [
    ("GET", "/v1/health"),
    ("GET", "/v1/version"),
    ("GET", "/v1/inspect/routes"),
    ("GET", "/v1/providers"),
    ("GET", "/v1/providers/{provider_id}"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/{name}"),
]


def version() -> str:
    """The installed stackflask distribution's version."""
    try:
        return metadata.version("stackflask")
    except metadata.PackageNotFoundError:
        from . import __version__

        return __version__


async def _health(provider: ResolvedProvider) -> dict[str, Any]:
    """The provider's health, every URL password in it masked."""
    health = await _check_health(provider)
    return {k: mask_url_passwords(v) for k, v in health.items()}


async def _check_health(provider: ResolvedProvider) -> dict[str, Any]:
    check = getattr(provider.impl, "health", None)
    if not callable(check):
        return {"status": "Not Implemented", "message": "Provider does not implement health check"}
    try:
        result = check()
        if inspect.isawaitable(result):
            result = await asyncio.wait_for(result, HEALTH_TIMEOUT)
    except asyncio.TimeoutError:
        return {"status": "Error", "message": f"health check timed out after {HEALTH_TIMEOUT} s"}
    except Exception as exc:
        return {"status": "Error", "message": f"health check failed: {type(exc).__name__}: {exc}"}
    if isinstance(result, dict):
        return result
    return {"status": str(getattr(result, "value", result))}


async def _describe(providers: list[ResolvedProvider]) -> list[dict[str, Any]]:
    healths = await asyncio.gather(*(_health(p) for p in providers))
    return [
        {
            "api": p.api.spec.name,
            "provider_id": p.provider_id,
            "provider_type": p.provider_type,
            "config": redact(p.entry.config, getattr(p.impl, "__provider_config__", None)),
            "health": health,
        }
        for p, health in zip(providers, healths)
    ]


def _stack() -> Any:
    return current_app.extensions["stackflask"]


@bp.get("/health")
def health() -> Response:
    stopped = loop.get_loop_thread().stopped
    if stopped is not None:
        message = mask_url_passwords(f"the event loop has stopped: {stopped}")
        return json_response({"status": "Error", "message": message}, 503)
    return json_response({"status": "OK"})


@bp.get("/version")
def get_version() -> Response:
    return json_response({"version": version()})


@bp.get("/inspect/routes")
def inspect_routes() -> Response:
    data = [
        {"route": r.path, "method": r.method, "provider_types": [r.provider_type]}
        for r in _stack().routes
    ]
    data += [{"route": path, "method": method, "provider_types": []} for method, path in BUILTIN_ROUTES]
    return json_response({"data": data})


@bp.get("/providers")
def list_providers() -> Response:
    return json_response({"data": loop.run(_describe(_stack().providers))})


@bp.get("/providers/<provider_id>")
def get_provider(provider_id: str) -> Response:
    for provider in _stack().providers:
        if provider.provider_id == provider_id:
            return json_response(loop.run(_describe([provider]))[0])
    return json_response({"detail": f"Provider {provider_id} not found"}, 404)


@docs_bp.get("/openapi.json")
def openapi_document() -> Response:
    """The document, its server the app's root as this request reached it
    (``/`` or the mount point), which clients resolve against this URL."""
    servers = [{"url": request.script_root or "/"}]
    return json_response({**_stack().openapi(), "servers": servers})
