"""Import names for packages written against Llama Stack's documented modules.

Startup time. :func:`install` adds a meta path finder, *last* on
``sys.meta_path``, that answers ``llama_stack.providers.datatypes``,
``llama_stack.schema_utils`` and ``llama_stack.distribution.request_headers``
(and their parents) with stackflask's own objects. Being last, it only answers
when no real ``llama_stack`` is installed; when one is, its objects are read
by their field names instead.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence

from . import context, datatypes, webmethod

_EXPORTS: dict[str, dict[str, object]] = {
    "llama_stack.providers.datatypes": {
        "Api": datatypes.Api,
        "AdapterSpec": datatypes.AdapterSpec,
        "InlineProviderSpec": datatypes.InlineProviderSpec,
        "ProviderSpec": datatypes.ProviderSpec,
        "RemoteProviderSpec": datatypes.RemoteProviderSpec,
        "remote_provider_spec": datatypes.remote_provider_spec,
    },
    "llama_stack.schema_utils": {"webmethod": webmethod.webmethod},
    "llama_stack.distribution.request_headers": {
        "NeedsRequestProviderData": context.NeedsRequestProviderData,
    },
    "llama_stack.core.request_headers": {
        "NeedsRequestProviderData": context.NeedsRequestProviderData,
    },
}

_PACKAGES = {
    prefix
    for name in _EXPORTS
    for prefix in (".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1))
}


class CompatFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the compatibility modules when nothing earlier on the path does."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _EXPORTS and fullname not in _PACKAGES:
            return None
        return importlib.machinery.ModuleSpec(
            fullname, self, is_package=fullname in _PACKAGES
        )

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__dict__.update(_EXPORTS.get(module.__name__, {}))
        module.__doc__ = "stackflask compatibility module (no Llama Stack installed)."


def install() -> None:
    """Add the finder at the end of ``sys.meta_path``, once."""
    if not any(isinstance(f, CompatFinder) for f in sys.meta_path):
        sys.meta_path.append(CompatFinder())
