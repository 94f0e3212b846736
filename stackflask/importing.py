"""Import modules and objects named in configuration, with errors that say why.

Startup time (and request time for a provider-data validator, cached).
"""

from __future__ import annotations

import importlib
import logging
from functools import lru_cache
from typing import Any

log = logging.getLogger("stackflask.registry")


class ImportProblem(Exception):
    """A named module or object could not be imported; the message says why."""


def import_module(name: str) -> Any:
    """Import ``name``; an error names the module and the underlying exception."""
    try:
        return importlib.import_module(name)
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        log.debug("importing %s failed", name, exc_info=True)
        raise _problem(name, exc) from exc


def _problem(name: str, exc: BaseException) -> ImportProblem:
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if missing and (name == missing or name.startswith(missing + ".")):
        return ImportProblem(f"module {name!r} is not installed or not on sys.path")
    return ImportProblem(f"importing module {name!r} failed: {_describe(exc)}")


@lru_cache(maxsize=256)
def import_object(path: str) -> Any:
    """The object at ``package.module.Name`` (or ``package.module:Name``)."""
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ImportProblem(f"{path!r} is not a dotted path to an object (module.Name)")
    module = import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportProblem(
                f"{attr!r} is not defined in module {module_name!r}"
            ) from None
    return obj


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
