"""``remote::stackflask``: serve any API by calling another stackflask server.

Startup builds the provider (the registry offers this type for every API, and
the resolver hands the factory the API's Protocol); request time runs it. The
provider is the typed client of :mod:`stackflask.client` for the API's
Protocol, whose connection forwards the request id (and, when configured, the
caller's provider data) and turns the other server's answers into this server's:
an error passes through with its status and detail, a stream item by item
(closing this side closes the other), an upload as an upload; an unreachable
server is a 503 naming its address, an answer that does not match the Protocol
a 502 (the field is logged), no answer within ``timeout`` a 504.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from werkzeug.exceptions import HTTPException

from .client import AsyncClient, Connection, RemoteError, ResponseMismatch, client_class
from .context import PROVIDER_DATA_HEADER, get_provider_data
from .datatypes import api_name
from .log import request_id

log = logging.getLogger("stackflask.passthrough")

PROVIDER_TYPE = "remote::stackflask"


@dataclass
class PassthroughConfig:
    """The ``config`` of a ``remote::stackflask`` provider.

    ``url`` is the other server's root (``http://host:8321``); ``token`` a bearer
    token sent to it; ``timeout`` the seconds to wait for it to connect, answer
    or send the next stream event; ``forward_provider_data`` whether the
    caller's ``X-LlamaStack-Provider-Data`` header is passed on.
    """

    url: str
    token: str | None = None
    timeout: float = 30.0
    forward_provider_data: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url: {self.url!r} is not an http:// or https:// URL")
        if self.token is not None and not isinstance(self.token, str):
            raise ValueError("token: must be a string")
        try:
            self.timeout = float(self.timeout)
        except (TypeError, ValueError):
            raise ValueError(f"timeout: {self.timeout!r} is not a number of seconds") from None
        if not self.timeout > 0:
            raise ValueError(f"timeout: {self.timeout!r} must be more than 0 seconds")
        if not isinstance(self.forward_provider_data, bool):
            raise ValueError("forward_provider_data: must be true or false")


class UpstreamError(HTTPException):
    """The other server's error, or its absence, as this server's answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(description=detail)
        self.code = status


class PassthroughConnection(Connection):
    """A connection that speaks for the request being served."""

    def __init__(self, config: PassthroughConfig, where: str) -> None:
        super().__init__(config.url, token=config.token, timeout=config.timeout)
        self.forward_provider_data = config.forward_provider_data
        self.where = where

    def call_headers(self) -> dict[str, str]:
        headers = {}
        current = request_id.get()
        if current != "-":
            headers["X-Request-ID"] = current
        if self.forward_provider_data:
            data = get_provider_data()
            if isinstance(data, dict):
                headers[PROVIDER_DATA_HEADER] = _compact(data)
        return headers

    def failure(self, error: RemoteError) -> BaseException:
        if isinstance(error, ResponseMismatch):
            log.error("%s: upstream %s: %s", self.where, self.address, error)
            return UpstreamError(
                502,
                f"Bad gateway: the answer of {self.address} does not match the API's Protocol",
            )
        detail = error.detail
        if not isinstance(detail, str):
            detail = str(error)
        return UpstreamError(error.status, detail)


def _compact(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


class PassthroughProvider:
    """Mixin of the provider classes: ``health()`` and ``shutdown()``."""

    _connection: Connection

    async def health(self) -> dict[str, Any]:
        """The other server's health: its provider's for this API, when it
        reports one, else its ``/v1/health``."""
        try:
            await self._connection.get_json("/v1/health")
            providers = await self._connection.get_json("/v1/providers")
        except (HTTPException, RemoteError) as exc:
            text = exc.description if isinstance(exc, HTTPException) else str(exc)
            return {"status": "Error", "message": f"upstream {self._connection.address}: {text}"}
        # The resolver names the API it built this provider for.
        api = api_name(getattr(getattr(self, "__provider_spec__", None), "api", ""))
        for entry in providers.get("data", []) if isinstance(providers, dict) else []:
            if isinstance(entry, dict) and entry.get("api") == api and isinstance(entry.get("health"), dict):
                return {**entry["health"], "upstream": self._connection.address}
        return {"status": "OK", "upstream": self._connection.address}

    async def shutdown(self) -> None:
        await self._connection.aclose()


def provider_class(protocol: type) -> type[AsyncClient]:
    """The provider class for ``protocol``: its client, with ``health`` and
    ``shutdown`` unless the Protocol has webmethods of those names."""
    client = client_class(protocol)
    own = {m.name for m in client._methods}
    namespace = {
        name: getattr(PassthroughProvider, name)
        for name in ("health", "shutdown")
        if name not in own
    }
    return type(f"{protocol.__name__}Passthrough", (client,), {**namespace, "__module__": __name__})


async def get_adapter_impl(config: PassthroughConfig, _deps: dict[Any, Any], *, protocol: type) -> Any:
    """The provider for ``protocol``, calling the server at ``config.url``."""
    connection = PassthroughConnection(config, f"{PROVIDER_TYPE} ({protocol.__name__})")
    return provider_class(protocol)(protocol, connection=connection)
