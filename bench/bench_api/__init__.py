"""The bench API: a typed POST and a long stream, beside the weather API."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from stackflask import Api, InlineProviderSpec, webmethod


def available_providers() -> list[InlineProviderSpec]:
    return [InlineProviderSpec(api=Api.bench, provider_type="inline::bench", module="bench_api.impl")]


class Priority(enum.Enum):
    low = "low"
    high = "high"


@dataclass
class Address:
    street: str
    city: str
    zip: str


@dataclass
class Order:
    id: int
    customer: str
    email: str
    amount: float
    quantity: int
    express: bool
    priority: Priority
    tags: list[str]
    address: Address
    note: str | None = None


class Bench(Protocol):
    @webmethod(route="/bench/order", method="POST")
    async def order(self, order: Order) -> Order:
        """Echo a typed order."""
        ...

    @webmethod(route="/bench/ticks", method="GET")
    async def ticks(self, n: int = 1000) -> AsyncIterator[dict[str, float]]:
        """``n`` events, each stamped with the time it was yielded."""
        ...
