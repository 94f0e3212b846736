"""Who serves ``server.tls_*``: gunicorn through stackflask's config, or no one.

Pure (no Flask); startup time. waitress has no TLS, and an app cannot see the
server it runs under, so :mod:`stackflask.gunicorn_conf` marks the gunicorn
master's environment (:data:`TLS_ENV`) with the files it serves TLS with,
before any app is loaded; :func:`tls_problems` refuses a run config that asks
for TLS without that mark, rather than serve it in clear text. ``stackflask``'s
own commands know their server and say so (:data:`ServedBy`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Literal

from .config import RunConfig, ServerConfig

#: Set by :mod:`stackflask.gunicorn_conf`: the TLS files gunicorn serves with.
TLS_ENV = "STACKFLASK_GUNICORN_TLS"
#: ``"stackflask run"``: waitress, refused in that command's words; ``"nobody"``:
#: the app is built but not served (``stackflask validate``, ``routes``).
ServedBy = Literal["stackflask run", "nobody"]
GUNICORN_COMMAND = "gunicorn -c python:stackflask.gunicorn_conf 'app:create_app()'"
WHERE_DOCUMENTED = "docs/deployment.md, TLS"


def tls_options(server: ServerConfig) -> list[str]:
    """``server.tls_*`` options the run config sets, as named in messages."""
    return [
        f"server.{name}"
        for name in ("tls_certfile", "tls_keyfile", "tls_cafile")
        if getattr(server, name) is not None
    ]


def tls_mark(server: ServerConfig) -> str:
    """The value of :data:`TLS_ENV` for a gunicorn that serves ``server``'s TLS."""
    files = (server.tls_certfile, server.tls_keyfile, server.tls_cafile)
    return json.dumps([None if path is None else os.fspath(path) for path in files])


def tls_problems(
    config: RunConfig, served_by: ServedBy | None = None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Why ``config``'s TLS cannot be served: nothing when it asks for none, when
    the app is served by ``nobody``, or when the gunicorn config serves exactly
    its files. ``served_by=None``: the server is not known (``waitress-serve``,
    ``flask run``, gunicorn), so only the gunicorn config's mark will do."""
    options = tls_options(config.server)
    if not options or served_by == "nobody":
        return []
    named = f"{config.source}: {', '.join(options)}"
    if served_by == "stackflask run":
        return [
            f"{named}: stackflask run serves with waitress, which has no TLS; serve with "
            f"{GUNICORN_COMMAND}, or terminate TLS at a reverse proxy and remove these "
            f"options ({WHERE_DOCUMENTED})"
        ]
    mark = (os.environ if environ is None else environ).get(TLS_ENV)
    if mark is None:
        return [
            f"{named}: this server cannot serve TLS (waitress-serve, flask run, and gunicorn "
            f"without stackflask's config serve plain HTTP); serve with {GUNICORN_COMMAND}, "
            f"or terminate TLS at a reverse proxy and remove these options ({WHERE_DOCUMENTED})"
        ]
    if mark != tls_mark(config.server):
        return [
            f"{named}: gunicorn's config serves TLS with other files ({mark}); give "
            "stackflask.gunicorn_conf and the app the same run config (STACKFLASK_CONFIG, "
            f"and create_app() without a path) ({WHERE_DOCUMENTED})"
        ]
    return []
