"""The bench API: typed POSTs (dataclasses, and pydantic models) and a long
stream, beside the weather API."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, Field

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


class AddressModel(BaseModel):
    street: str
    city: str
    zip: str = Field(min_length=1, max_length=10)


class OrderModel(BaseModel):
    """``Order``'s ten fields as a pydantic model, with constraints."""

    id: int = Field(ge=1)
    customer: str
    email: str
    amount: float = Field(gt=0)
    quantity: int = Field(ge=1, le=1000)
    express: bool
    priority: Literal["low", "high"]
    tags: list[str]
    address: AddressModel
    note: str | None = None


class Bench(Protocol):
    @webmethod(route="/bench/order", method="POST")
    async def order(self, order: Order) -> Order:
        """Echo a typed order."""
        ...

    @webmethod(route="/bench/order_pydantic", method="POST")
    async def order_pydantic(self, order: OrderModel) -> OrderModel:
        """Echo an order typed by a pydantic model."""
        ...

    @webmethod(route="/bench/ticks", method="GET")
    async def ticks(self, n: int = 1000) -> AsyncIterator[dict[str, float]]:
        """``n`` events, each stamped with the time it was yielded."""
        ...
