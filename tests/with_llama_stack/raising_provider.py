"""A provider for any of Llama Stack's API protocols: every webmethod raises.

Data for ``tests/test_llama_stack.py``, imported by the server it starts. The
run config names the protocol (``module:Class``); the implementation is a class
built from that protocol's webmethods, each an ``async def`` that raises
``NotImplementedError``.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any


@dataclass
class RaisingConfig:
    protocol: str


def _raising(name: str) -> Any:
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{name} is not implemented by the raising provider")

    method.__name__ = method.__qualname__ = name
    return method


def get_provider_impl(config: RaisingConfig, deps: dict[Any, Any]) -> Any:
    module, _, name = config.protocol.partition(":")
    protocol = getattr(importlib.import_module(module), name)
    methods = {
        attr: _raising(attr)
        for attr, value in inspect.getmembers(protocol, inspect.isfunction)
        if hasattr(value, "__webmethod__")
    }
    return type(f"Raising{name}", (), methods)()
