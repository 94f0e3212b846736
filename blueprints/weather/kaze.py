"""The kaze provider of the weather API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class KazeProviderConfig:
    """Configuration for the Kaze weather provider."""

    base_url: str = "https://api.kaze.io/v1"


class WeatherKazeAdapter:
    """Kaze weather provider implementation."""

    def __init__(self, config: KazeProviderConfig) -> None:
        self.config = config

    async def initialize(self) -> None:
        pass

    async def get_available_locations(self) -> dict[str, list[str]]:
        """Get available weather locations."""
        return {"locations": ["Paris", "Tokyo"]}


async def get_adapter_impl(config: KazeProviderConfig, _deps: dict[Any, Any]) -> WeatherKazeAdapter:
    impl = WeatherKazeAdapter(config)
    await impl.initialize()
    return impl
