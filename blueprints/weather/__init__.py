"""The weather API of the External APIs walkthrough: a Protocol and its providers.

Loaded like any third-party API: ``config/apis.d/weather.yaml`` names this
module and its ``WeatherProvider`` protocol.
"""

from __future__ import annotations

from typing import Protocol

from stackflask import AdapterSpec, Api, ProviderSpec, RemoteProviderSpec, webmethod


def available_providers() -> list[ProviderSpec]:
    return [
        RemoteProviderSpec(
            api=Api.weather,
            adapter=AdapterSpec(
                adapter_type="kaze",
                module="blueprints.weather.kaze",
                config_class="blueprints.weather.kaze.KazeProviderConfig",
            ),
        ),
    ]


class WeatherProvider(Protocol):
    """A protocol for the Weather API."""

    @webmethod(route="/weather/locations", method="GET")
    async def get_available_locations(self) -> dict[str, list[str]]:
        """Get the available locations."""
        ...
