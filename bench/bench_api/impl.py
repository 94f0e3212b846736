"""The bench provider."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any


class BenchProvider:
    async def order(self, order: Any) -> Any:
        return order

    async def order_pydantic(self, order: Any) -> Any:
        return order

    async def ticks(self, n: int = 1000) -> AsyncIterator[dict[str, float]]:
        for i in range(n):
            yield {"i": i, "t": time.time()}


def get_provider_impl(config: Any, deps: Any) -> BenchProvider:
    return BenchProvider()
