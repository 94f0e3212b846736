"""The page at ``/docs`` and the assets it loads, under ``/docs/<name>``.

Startup time picks the page: Swagger UI 5 from the assets flask-swagger-ui
vendors (the ``docs`` extra), else stackflask's plain page over
``/openapi.json``. Request time serves the page and its few assets, by name.
Every URL in both pages is relative (``docs/swagger-ui.css``,
``openapi.json``), so they work wherever the app is mounted, and none leaves
the server.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata

from flask import Blueprint, Response, abort, request

if sys.version_info >= (3, 12):
    from importlib.resources import files
else:
    from importlib_resources import files

log = logging.getLogger("stackflask.server")

#: The assets' endpoint. They need no token: they are the packages' own files.
ASSET_ENDPOINT = "_stackflask_docs_page.asset"
_SWAGGER_ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}


@dataclass(frozen=True)
class DocsPage:
    """An HTML page of stackflask's and the assets it loads: files of the
    folder ``assets`` of ``package``, by name, with their media types."""

    page: str
    package: str
    assets: str
    media_types: Mapping[str, str]

    def serve_page(self) -> Response:
        return _send("stackflask", "static", self.page, "text/html")

    def serve_asset(self, name: str) -> Response:
        media_type = self.media_types.get(name)
        if media_type is None:
            abort(404)
        return _send(self.package, self.assets, name, media_type)


PLAIN = DocsPage(
    "docs.html", "stackflask", "static", {"docs.css": "text/css", "docs.js": "text/javascript"}
)


def swagger_ui() -> DocsPage | None:
    """Swagger UI from flask-swagger-ui 5 or later (OpenAPI 3.1); ``None``
    when it is not installed, or is older, or lacks an asset the page loads."""
    try:
        dist = files("flask_swagger_ui") / "dist"
    except ImportError:
        return None
    version = metadata.version("flask-swagger-ui")
    missing = [name for name in _SWAGGER_ASSETS if not (dist / name).is_file()]
    if int(version.split(".")[0]) < 5 or missing:
        log.warning(
            "/docs: flask-swagger-ui %s %s; serving the plain page "
            "(pip install 'stackflask[docs]' for Swagger UI 5)",
            version,
            f"lacks {', '.join(missing)}" if missing else "is older than 5",
        )
        return None
    return DocsPage("swagger-ui.html", "flask_swagger_ui", "dist", _SWAGGER_ASSETS)


def docs_blueprint() -> Blueprint:
    """``GET /docs`` and ``GET /docs/<name>``: Swagger UI with the ``docs``
    extra installed, else the plain page."""
    page = swagger_ui() or PLAIN
    bp = Blueprint("_stackflask_docs_page", __name__)
    bp.add_url_rule("/docs", "page", page.serve_page)
    bp.add_url_rule("/docs/<name>", "asset", page.serve_asset)
    return bp


def _send(package: str, folder: str, name: str, media_type: str) -> Response:
    """The file, with an ETag so that a browser's next visit costs a ``304``."""
    data, etag = _read(package, folder, name)
    response = Response(data, mimetype=media_type)
    response.set_etag(etag)
    response.make_conditional(request)
    return response


@lru_cache(maxsize=16)
def _read(package: str, folder: str, name: str) -> tuple[bytes, str]:
    data = (files(package) / folder / name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:32]
