"""The stackflask app, for ``flask --app app run``, waitress and gunicorn.

``waitress-serve --call app:create_app`` and ``gunicorn 'app:create_app()'``
build it through the factory; ``app:app`` builds it on first access. The run
config is ``$STACKFLASK_CONFIG``, else the embedded default.
"""

from __future__ import annotations

from typing import Any

from stackflask import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
